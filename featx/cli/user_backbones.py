"""The ``backbone`` node the ``featx`` app composes from a backbone file of the user's config folders, for
``featx-list``: a file may extend another (``defaults: [resnet18, _self_]``), which featx's spec reader cannot read on
its own.

Each file passes the app's checks of a chosen backbone (:func:`~featx.cli.override_checks.check_choices` and
:func:`~featx.cli.user_configs.check_user_backbone_files`: featx's reader for it and every file its defaults list brings
in, so a fifo is never opened; no resolver; flags true or false), then Hydra composes the app's config with the folders
on its search path, as ``featx hydra.searchpath=[file://DIR] backbone=NAME`` does. What the app refuses is one
:class:`~featx.errors.FeatxError` in the app's words.

Example::

    nodes = composed_backbones(["resnet18_c3"], [Path("my_configs")])
    featx.load_spec(nodes["resnet18_c3"])  # a FeatxError in its place says why the app refuses the file
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Sequence, Union

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from featx.cli.hydra_errors import hydra_error_line
from featx.cli.override_checks import check_choices
from featx.cli.user_configs import check_user_backbone_files
from featx.errors import FeatxError, first_line
from featx.spec.apps import AppConfig
from featx.spec.config_files import config_dir

#: the app the checks' one line names (``featx-list: error: ...``), which a row leaves out
_APP = "featx-list"


def _quoted(text: str) -> str:
    """``text`` as a quoted value of Hydra's override grammar, which takes any name (spaces, ``=``, ``,``, line breaks):
    a quote, and the backslashes before a quote or the end, escaped."""
    escaped = re.sub(r"(\\*)('|$)", lambda found: found.group(1) * 2 + ("\\'" if found.group(2) else ""), text)
    return f"'{escaped}'"


def composed_backbones(names: Sequence[str], roots: Sequence[Path]) -> Dict[str, Union[DictConfig, FeatxError]]:
    """For each of ``names`` (files ``backbone/<name>.yaml`` of the config folders ``roots``, in search-path order),
    the ``backbone`` node the ``featx`` app composes with ``roots`` on its search path, or the FeatxError saying why
    the app refuses it. Hydra is set up once for them all, and left as it was."""
    searchpath = f"hydra.searchpath=[{','.join(_quoted(f'file://{root.absolute()}') for root in roots)}]"
    found: Dict[str, Union[DictConfig, FeatxError]] = {}
    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for name in names:
            try:
                found[name] = _composed(name, roots, searchpath, parser)
            except FeatxError as error:
                found[name] = error
    return found


def _composed(name: str, roots: Sequence[Path], searchpath: str, parser: OverridesParser) -> DictConfig:
    """The backbone node of ``backbone=<name>`` (Hydra set up), after the app's checks of the choice and its files."""
    argument = f"backbone={_quoted(name)}"
    overrides = [(argument, parser.parse_overrides([argument])[0])]
    try:
        check_choices(_APP, overrides, custom_roots=True)
        check_user_backbone_files(_APP, overrides, roots, AppConfig)
    except SystemExit as refusal:  # the app's checks stop it with their one line
        raise FeatxError(str(refusal.code).removeprefix(f"{_APP}: error: ")) from None
    try:
        node: DictConfig = compose("config", overrides=[searchpath, argument]).backbone
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as error:
        raise FeatxError(hydra_error_line(error)) from None
    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:
        raise FeatxError(f"{type(error).__name__}: {first_line(error)}") from None  # what Hydra's code does not check
    return node
