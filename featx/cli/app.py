"""What the three Hydra apps (``featx``, ``featx-export``, ``featx-extract``) share around their task function.

- Before Hydra composes anything, a config group choice that leaves the config roots (``backbone=../../x`` or an
  absolute path) is refused, and an unknown ``backbone=`` choice is answered with the close names.
- Before Hydra composes, an override (or a file of the user's primary config) that removes or changes featx's
  callback ``hydra.callbacks.output_folders`` (the run folders' checks), or gives ``hydra.hydra_logging`` a log
  file (Hydra opens it as it composes), is refused; so are ``~`` of a list's item and a mapping giving a key twice.
- Before Hydra composes, a plain override of a key the app's schema lacks (``input.heigth=300``) or of a value its
  type cannot hold (``run=maybe``) is one featx error line (Hydra's own spans lines and suggests the ``+`` form).
- A key the app's schema lacks (``+input.heigth=300``, which Hydra would add and the app ignore) is refused, and
  so are a ``backbone=`` choice naming two files on the config search path (Hydra would silently take the first)
  and ``hydra.job.chdir=true`` (the apps' paths are relative to where they are run).
- Every FeatxError in a job becomes one line ``<app>: error: <message>``, and so do Hydra's and OmegaConf's errors
  (``HYDRA_FULL_ERROR=1`` while Hydra runs; a user's ``HYDRA_FULL_ERROR=1``, the only value Hydra takes as asking,
  shows Hydra's full error instead); the composed config's own keys are checked present, set and resolvable before
  the task runs, and a chosen backbone file in the user's config folders is read with featx's reader first (Hydra's
  loader answers a tab with a traceback).
- A ``--config-name`` that is a path, a schema or a config group is refused, and an empty ``TMPDIR`` is unset (as
  Python's ``tempfile`` takes it): Hydra would otherwise write its files in the working directory or under ``/``.
- Each value of a sweep is type-checked before Hydra composes (it would stop the sweep), keys below
  ``backbone.fpn`` and ``backbone.tokens`` too, and so is each of a config file's ``hydra.sweeper.params`` (a
  second command line); bool keys take true or false (or an interpolation), not OmegaConf's ``2`` or ``yes``, and a
  config file of the user's holds no unquoted ``yes``/``no``/``on``/``off`` (Hydra's loader reads them as bools).
- ``--hydra-help`` takes Hydra's settings only (Hydra composes it without the app's config), and an error raised in
  Hydra's own code names the Hydra settings given.
- In a sweep (``-m``) a failing job does not stop the others: each failure is reported when it happens, and when
  every job has run the app exits with status 1 and a summary of the failed jobs.
- ``backbone.fpn.out_channels=128`` works as typed on a backbone without a neck (``fpn: null``): Hydra cannot set a
  key below a null node, so plain overrides below ``backbone.fpn`` and ``backbone.tokens`` are passed on as
  ``++`` (set or add).
- Other libraries' log messages below WARNING (Hydra's logging shows INFO) are silenced unless ``-v`` is given.

Example::

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
    @app_task("featx-export", ExportAppConfig)
    def run(cfg: DictConfig) -> None: ...

    def main() -> None:
        run_app("featx-export", run, ExportAppConfig)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.resources
import io
import itertools
import os
import re
import signal
import sys
import threading
import traceback
import typing
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

import hydra
import yaml
from hydra._internal.utils import get_args, get_args_parser
from hydra.conf import HydraConf
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    Glob,
    Override,
    OverrideType,
    QuotedString,
)
from hydra.errors import HydraException
from hydra.plugins.completion_plugin import CompletionPlugin
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from featx.cli.errors import fail, reported_errors
from featx.cli.logs import VERBOSE_FLAGS, quiet_other_loggers, set_verbose
from featx.cli.output import reader_may_stop, reader_went_away, stdout_lost
from featx.cli.output_folders import register_user_resolver, sweeps_started
from featx.cli.sweeps import (
    MAX_BATCH_SIZE,
    SWEEPER_PARAMS,
    batch_size_problem,
    check_sweep_size,
    check_sweeper_params,
    group_options,
)
from featx.errors import ArgumentError, SpecError, first_line
from featx.spec.apps import BackboneNode
from featx.spec.config_files import backbone_names
from featx.spec.keys import suggest
from featx.spec.limits import MAX_SPEC_BYTES, quoted, shortened
from featx.spec.load import check_spec_values, is_true_or_false, refuse_resolvers
from featx.spec.overrides import deletes_list_item, duplicated_key, not_in_grammar
from featx.spec.schema import BackboneSpec, FpnSpec, StageSpec, TokenSpec
from featx.spec.yaml_file import read_spec_file, yaml_problem
from featx.version import __version__

Result = TypeVar("Result")
#: the sweep jobs that failed in this process, as "#<num> <overrides>": <message>
_failed_jobs: List[str] = []
_jobs_run: List[int] = []
#: the sweep's jobs stopped or not run because the reader of stdout went away (the app then ends quietly, status 1)
_jobs_unread: List[int] = []
#: spec nodes that are null unless set: a plain override below them is passed to Hydra as ``++`` (set or add)
_NULLABLE_NODES = ("backbone.fpn.", "backbone.tokens.")
#: the schemas of those nodes (typed ``Any`` in the spec's schema, see :class:`~featx.spec.schema.BackboneSpec`)
_NULLABLE_SCHEMAS: Dict[str, type] = {"backbone.fpn": FpnSpec, "backbone.tokens": TokenSpec}
#: Hydra's options of which a command line takes one
_MODES = ("run", "multirun", "cfg", "info", "shell_completion")
#: the exit status of an app stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
INTERRUPTED = 130
#: Hydra's switch that raises its errors instead of printing them (featx makes them one line)
FULL_ERROR = "HYDRA_FULL_ERROR"
#: the lines OmegaConf adds below its message (where in the config): left out of the one line
_CONTEXT_LINES = ("full_key:", "object_type=", "reference_type=")
#: Hydra's answer to ``backbone.stages.c3.slice=...`` for a stage its file gives by ``modules`` (or the reverse),
#: whose hint (``+backbone.stages.c3.slice``) gives a stage with both
_OTHER_STAGE_FORM = re.compile(r"Could not override '((backbone\.stages\.([^.']+))\.(slice|modules))'")
#: the values of a sweep checked before Hydra composes (a range may be long)
MAX_CHECKED_VALUES = 1000


def _parsed(app: str, argument: str) -> Override:
    """``argument`` parsed by Hydra's override parser; a grammar error is one featx error line naming it."""
    try:
        (override,) = OverridesParser.create().parse_overrides([argument])
    except (HydraException, ValueError, RecursionError) as error:  # RecursionError: brackets nested too deep
        fail(app, not_in_grammar(argument, error))
    return override


def _names(value: object) -> List[str]:
    """The config names in a group override's value: a name, or each name of a list (a group takes several)."""
    if isinstance(value, QuotedString):  # as Hydra uses it: quotes and escapes removed
        return [value.text]
    if isinstance(value, str):
        return [value]
    return [name for item in value for name in _names(item)] if isinstance(value, list) else []


def _choice_values(override: Override) -> List[str]:
    """The config names a config-group override gives (one, a list of them, or those of each value of a choice
    sweep); none for other overrides."""
    if "." in override.key_or_group or override.is_delete():
        return []
    if override.is_sweep_override():
        try:
            values = list(override.sweep_iterator())
        except (HydraException, ValueError, TypeError):
            return []
        return [name for value in values for name in _names(value)]
    return _names(override.value())


def _escapes(choice: str) -> bool:
    path = PurePosixPath(choice.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or choice.startswith("~")


def hydra_flags(arguments: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """The command line's options as Hydra's own argument parser reads them (``--config-n`` is ``--config-name``,
    as argparse takes any unambiguous abbreviation), and the arguments it cannot place (an unknown option, overrides
    on both sides of a flag); none where it cannot parse them (Hydra then says why)."""
    parser = get_args_parser()
    try:  # --version and a parse error print (and exit) here too: Hydra says it once
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return parser.parse_known_args(list(arguments))
    except SystemExit:
        return parser.parse_known_args([])[0], []


def check_unplaced(app: str, unplaced: Sequence[str]) -> None:
    """Refuse what Hydra's parser cannot place (argparse's usage block and "unrecognized arguments")."""
    if not unplaced:
        return
    option = next((argument for argument in unplaced if argument.startswith("-")), None)
    if option is not None:
        fail(app, f"{shortened(option)}: not an option of {app} (see {app} --help)")
    fail(
        app,
        f"{shortened(unplaced[0])}: Hydra reads the overrides as one group, before or after its options "
        "(--cfg, -m, ...); put them together",
    )


def check_config_name(app: str, flags: argparse.Namespace) -> None:
    """Refuse a ``--config-name`` that leaves the config roots (Hydra would read, and ``--cfg job`` print, any YAML
    file the user can read), and one naming a schema, a backbone or a Hydra group: without an app config's run
    folders and checks, Hydra would write its files into the working directory (``outputs/``)."""
    name = flags.config_name
    if name is None:
        return
    if _escapes(name):
        fail(
            app,
            f"--config-name {shortened(name)}: a config name is a name inside the config roots, not a "
            "path; put the file in a folder and pass that folder with --config-dir",
        )
    first = PurePosixPath(name).parts[0].removesuffix(".yaml") if PurePosixPath(name).parts else ""
    not_apps = set(_schema_names()) | {"backbone"}
    if first in not_apps:
        fail(
            app,
            f"--config-name {shortened(name)}: not an app config (a schema or a config group); the apps' configs "
            "are config, extract and export, or a file of yours in --config-dir whose defaults start from one",
        )


#: each app's packaged config, which a config of the user's (``--config-name``) must start from
APP_CONFIGS = {"featx": "config", "featx-extract": "extract", "featx-export": "export"}


def _first_default(path: Path, group: str) -> Optional[str]:
    """The config the defaults list of the config file ``path`` in ``group`` (``""``: the root) starts from
    (``_self_`` and ``override`` entries passed over; ``/config`` and ``config@_global_`` read as ``config``), or
    None."""
    try:
        content = read_spec_file(path)
    except SpecError:
        return None  # Hydra names what is wrong with the file when it composes it
    chosen = [name for name, overriding in _defaults_entries(content, group) if not overriding]
    return chosen[0] if chosen else None


def _schema_names() -> List[str]:
    """The names of the configs featx stores in Hydra's ConfigStore (its schemas: ``featx_app_schema``, ...)."""
    return [entry.removesuffix(".yaml") for entry in ConfigStore.instance().repo]


def check_primary_config(app: str, flags: argparse.Namespace, folders: Sequence[Path]) -> List[Path]:
    """The primary config in the user's folders (``folders``). One named by ``--config-name`` must start from this
    app's config, directly or through files of the user's: the app's run folders and their checks come with it;
    without them, Hydra writes its files into the working directory (``outputs/``). A file named like an app config
    and meant for featx (it starts from an app config or a schema of featx's) is refused: Hydra reads featx's own
    and ignores it (a project's own ``config.yaml`` beside its ``backbone/`` is left alone). A file of the chain that
    featx's reader refuses is named with why (:func:`_read_users_config`). Returns the user's files of the chain."""
    own, apps = APP_CONFIGS[app], set(APP_CONFIGS.values())
    name = (flags.config_name or own).removesuffix(".yaml")
    seen: List[Path] = []  # the user's files of the chain, in order
    while name not in apps:
        found = _users_config(folders, name)
        if found is not None and found not in seen:
            _read_users_config(app, found)
        first = None if found is None or found in seen else _first_default(found, name.rpartition("/")[0])
        if found is not None and found not in seen:
            seen.append(found)
        if first is None:
            if seen:
                fail(
                    app,
                    f"--config-name {shortened(str(flags.config_name))}: {seen[-1]} does not start from {app}'s "
                    f"config: the first entry of its defaults list must be {own} (or a file of yours that starts "
                    "from it), whose run folders and checks the app needs (without them Hydra writes into the "
                    "working directory)",
                )
            return seen  # not a file of the user's: Hydra says it finds no such config
        name = first
    shadow = _users_config(folders, name)
    if shadow is not None and _first_default(shadow, "") in apps | set(_schema_names()):
        fail(
            app,
            f"{shadow} is named like featx's app config {name}.yaml, which Hydra reads instead and ignores yours; "
            f"rename it (e.g. my_{name}.yaml) and pass --config-name my_{name}",
        )
    if name != own:
        fail(
            app,
            f"--config-name {shortened(str(flags.config_name))}: {f'{seen[-1]} starts from' if seen else 'it is'} "
            f"{name}, the config of {next(key for key, value in APP_CONFIGS.items() if value == name)}; {app} runs "
            f"from {own}",
        )
    return seen


def _leaves(content: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, object]]:
    """(dotted key, value) of each value of a config file's mapping that is not itself a mapping."""
    for key, value in content.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _holds_nothing(path: Path) -> bool:
    """Whether the config file ``path`` holds no value at all (empty, or comments only), which Hydra reads as an
    empty config; a file featx's reader refuses unread (a fifo, a file too large) holds something."""
    try:
        small = path.is_file() and path.stat().st_size <= MAX_SPEC_BYTES
        return small and yaml.load(path.read_bytes(), Loader=yaml.SafeLoader) is None
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        return False


def _read_users_config(app: str, path: Path) -> Dict[str, Any]:
    """The keys of a config file of the user's, read as featx reads a spec file; what that reader refuses is one
    error naming the file: ``run: off``, which Hydra's loader reads as false where the command line's ``run=off`` is
    the string ``'off'`` (refused), an octal ``017`` (15, and 17 on the command line), a tab (Hydra's traceback). A
    file without values (comments only) is an empty config, as Hydra reads it."""
    try:
        return read_spec_file(path)
    except SpecError as error:
        if _holds_nothing(path):
            return {}
        fail(app, f"{path}: {error.message}" if error.origin is not None else error.message)  # a fifo's names it


def check_sweeper_file(
    app: str,
    path: Path,
    sweeper: Mapping[str, Any],
    overrides: Sequence[Tuple[str, Override]],
    folders: Sequence[Path],
    schema: type,
) -> None:
    """The ``hydra.sweeper`` node of the user's config file ``path``: its ``params`` (a sweep, the sweeper reads
    each as the override ``KEY=VALUE``) pass the command line's checks of its overrides (``extract.overwrite: 2``
    there replaced a folder of features), and a ``max_batch_size`` below 1 is refused. A key the command line
    (``overrides``) sets too is left out: the sweeper takes the command line's."""
    problem = batch_size_problem(sweeper.get("max_batch_size"))
    if problem is not None:
        fail(app, f"{path}: {MAX_BATCH_SIZE}: {problem}")
    params = sweeper.get("params")
    given = {override.get_key_element() for _, override in overrides}
    swept = []
    for key, value in params.items() if isinstance(params, Mapping) else ():
        if value is None or isinstance(value, (Mapping, list)):  # Hydra refuses them: a param is a string
            continue
        argument = f"{key}={value}"
        try:
            (override,) = OverridesParser.create().parse_overrides([argument])
        except (HydraException, ValueError, RecursionError) as error:
            fail(app, f"{path}: {SWEEPER_PARAMS}: {not_in_grammar(argument, error)}")
        duplicate = duplicated_key(argument)
        if duplicate is not None:
            fail(app, f"{path}: {SWEEPER_PARAMS}: {duplicate}")
        if override.get_key_element() not in given:
            swept.append((argument, override))
    check_hydra_settings(app, swept, where=f"{path}: {SWEEPER_PARAMS}: ")
    check_choices(app, swept, True, where=f"{path}: {SWEEPER_PARAMS}: ")
    check_plain_keys(app, swept, schema, where=f"{path}: {SWEEPER_PARAMS}: ")
    check_user_backbone_files(app, swept, folders, schema)


def check_file_values(
    app: str,
    files: Sequence[Path],
    folders: Sequence[Path],
    schema: type,
    overrides: Sequence[Tuple[str, Override]] = (),
) -> None:
    """The values in the user's config ``files`` (the primary config's chain) and in each file of the user's
    ``folders`` their defaults lists bring in (``defaults: [config, extra, _self_]``; ``input/small`` holds
    ``input.*``; backbone files are :func:`check_user_backbone_files`'s) pass the checks of the command line's
    (:func:`_problem_with`): a flag (``run``, ``extract.overwrite``, a ``backbone:`` node's ``channels_last``) holds
    true or false, where OmegaConf takes ``2``, ``yes`` or ``on`` as true as Hydra composes (``extract.overwrite: 2``
    replaced a folder of features); a key the app lacks, or a value its type cannot hold, is named with the file,
    and so is what featx's reader refuses (:func:`_read_users_config`), and a ``hydra`` node or defaults entry that
    removes featx's callback or gives Hydra's own logging a file (:func:`_hydra_file_problem`). A file's
    ``hydra.sweeper`` is :func:`check_sweeper_file`'s (``overrides``: the command line's). What else is wrong with a
    file Hydra names."""
    queue: List[Tuple[Path, str]] = [(path, "") for path in files]  # (file, its group)
    read: List[Path] = []
    while queue:
        path, group = queue.pop(0)
        if path in read:
            continue
        if len(read) == _MAX_DEFAULTS_FILES:
            fail(app, f"{path}: the defaults lists of your config files bring in more than {_MAX_DEFAULTS_FILES} files")
        read.append(path)
        content = _read_users_config(app, path)
        problem = _hydra_file_problem(content, group)
        if problem is not None:
            fail(app, f"{path}: {problem}")
        for name, _ in _defaults_entries(content, group):
            found = _users_config(folders, name)
            if found is not None and name.split("/")[0] not in ("backbone", "hydra"):
                queue.append((found, name.rpartition("/")[0]))
        backbone = content.get("backbone")
        try:
            if not group and isinstance(backbone, Mapping):
                check_spec_values(backbone)
        except SpecError as error:
            fail(app, str(error.with_origin(str(path))))
        hydras = content.get("hydra")
        sweeper = hydras.get("sweeper") if isinstance(hydras, Mapping) and not group else None
        if isinstance(sweeper, Mapping):
            check_sweeper_file(app, path, sweeper, overrides, folders, schema)
        skipped = ("defaults",) if group else ("defaults", "hydra", "backbone")
        values = {key: value for key, value in content.items() if key not in skipped}
        for key, value in _leaves(values, group.replace("/", ".") + "." if group else ""):
            problem = _problem_with(key, schema, [value])
            if problem is not None:
                fail(app, f"{path}: {problem}")


def _users_config(folders: Sequence[Path], name: str) -> Optional[Path]:
    """The first ``<name>.yaml`` in the user's config folders (:func:`_is_config_file`), or None."""
    return next((folder / f"{name}.yaml" for folder in folders if _is_config_file(folder / f"{name}.yaml")), None)


def _is_config_file(path: Path) -> bool:
    """Whether a config file of the user's is at ``path``: a file, or something else but a folder (a fifo, a device)
    in its place, which Hydra passes over ("Could not find") and featx's reader names without opening it."""
    return path.exists() and not path.is_dir()


def check_package(app: str, flags: argparse.Namespace, schema: type) -> None:
    """Refuse a ``--cfg ... --package`` (``-p``) key that the shown config lacks: Hydra says so without featx's
    prefix or the valid keys. Keys below a node the schema does not type (a stage's name) are left to Hydra."""
    package = flags.package
    if not flags.cfg or package in (None, "", "_global_"):  # Hydra shows the whole config for these
        return
    keys = list(typing.get_type_hints(schema))
    shown = {"job": keys, "hydra": ["hydra"]}.get(flags.cfg, [*keys, "hydra"])
    first = package.split(".")[0]
    if first not in shown:
        where = f"no such key in the --cfg {flags.cfg} config{suggest(first, shown)}"
        fail(app, f"--package (-p) {shortened(package)}: {where} (valid: {', '.join(shown)})")
    problem = None if first == "hydra" else _problem_with(package, schema, [])
    if problem is not None:
        fail(app, f"--package (-p) {problem}")


def parsed_overrides(app: str, arguments: Sequence[str]) -> List[Tuple[str, Override]]:
    """Each override of the command line with its parse by Hydra's grammar: the ``key=value`` ones, and each ``~key``
    one the grammar reads (a flag's value such as ``-cd '~/x'`` is none); flags left out. One whose mapping gives a
    key twice is refused (:func:`~featx.spec.overrides.duplicated_key`): Hydra's parser keeps the last value."""
    parsed = []
    for argument in arguments:
        if not argument.startswith("-") and "=" in argument:
            parsed.append((argument, _parsed(app, argument)))
            duplicate = duplicated_key(_as_typed(argument))
            if duplicate is not None:
                fail(app, duplicate)
        elif argument.startswith("~"):
            with contextlib.suppress(HydraException, ValueError, RecursionError):
                parsed.append((argument, OverridesParser.create().parse_overrides([argument])[0]))
    return parsed


def check_choices(app: str, overrides: Sequence[Tuple[str, Override]], custom_roots: bool, where: str = "") -> None:
    """Refuse a group choice outside the config roots, and name close backbones for an unknown ``backbone=``
    (``custom_roots``: the command line adds config roots, so featx cannot know every backbone name); ``where``
    comes before each message (the file that gives the overrides)."""
    for argument, override in overrides:
        group = argument.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if group == "backbone" and not override.is_delete() and not override.is_sweep_override():
            if not isinstance(override.value(), str):
                fail(
                    app,
                    f"{where}{argument}: a backbone is chosen by its name, e.g. backbone=resnet50 (featx-list lists "
                    "them)",
                )
        for choice in _choice_values(override):
            if "${" in choice and (group == "backbone" or "/" in group):  # Hydra resolves it after this check
                fail(
                    app,
                    f"{where}{group}={choice}: a config choice is a name, not an interpolation; write the name "
                    f"(e.g. {group}=resnet50)",
                )
            if _escapes(choice):
                fail(
                    app,
                    f"{where}{group}={choice}: a config choice is a name inside the config roots, not a path; put the "
                    f"file in a folder {group}/ and pass that folder's parent with --config-dir (or hydra.searchpath)",
                )
            if group == "backbone" and not custom_roots and choice not in backbone_names():
                fail(
                    app,
                    f"{where}backbone={choice}: no such packaged backbone{suggest(choice, backbone_names())} "
                    "(featx-list lists them; your own files need --config-dir)",
                )


def config_dirs(flags: argparse.Namespace, overrides: Sequence[Tuple[str, Override]]) -> List[Path]:
    """The folders the command line adds to the config search path: ``--config-dir``/``-cd`` and the ``file://``
    entries (or plain paths) of ``hydra.searchpath``."""
    folders = [Path(flags.config_dir)] if flags.config_dir is not None else []
    for _, override in overrides:
        value = override.value()
        if override.key_or_group == "hydra.searchpath" and isinstance(value, list):
            for entry in map(str, value):
                path = entry.removeprefix("file://")
                if "://" not in path:  # pkg:// and other sources are not folders of the user's
                    folders.append(Path(path))
    return folders


def check_user_backbone_files(
    app: str, overrides: Sequence[Tuple[str, Override]], folders: Sequence[Path], schema: type
) -> None:
    """Read each chosen ``backbone/<name>.yaml`` of the user's config folders as featx reads a spec file: Hydra's
    loader answers a tab, a duplicate key or bytes that are not UTF-8 with a traceback. A resolver call is refused
    before Hydra composes (and tab completion prints) the file's values, and a value its key's type cannot hold is
    named with its key (Hydra names only the file: "Value 'abc' of type 'str' could not be converted to Integer")."""
    backbone_overrides = [
        override for argument, override in overrides if argument.lstrip("+").split("=", 1)[0] == "backbone"
    ]
    choices = [choice for override in backbone_overrides for choice in _choice_values(override)]
    values: List[object] = [override.value() for override in backbone_overrides]  # Override.value()'s type lacks Glob
    patterns = [value for value in values if isinstance(value, Glob)]
    chosen: List[Tuple[str, Optional[Path]]] = [(f"backbone/{choice}", None) for choice in choices]  # (file, named in)
    for folder in folders:
        names = sorted(path.stem for path in (folder / "backbone").glob("*.yaml")) if patterns else []
        chosen += [(f"backbone/{name}", None) for pattern in patterns for name in pattern.filter(names)]
    read: List[str] = []
    while chosen:  # each chosen file, and the config files their defaults lists bring in (of any group)
        config, named_in = chosen.pop(0)
        if config in read:
            continue
        if "${" in config:
            fail(
                app,
                f"{named_in}: its defaults list chooses {shortened(config)} by an interpolation, whose file featx "
                "cannot read before Hydra composes it (to refuse a resolver in it); write the name",
            )
        if len(read) == _MAX_DEFAULTS_FILES:
            fail(
                app, f"{named_in}: the defaults lists of backbone files bring in more than {_MAX_DEFAULTS_FILES} files"
            )
        read.append(config)
        for path in (folder / f"{config}.yaml" for folder in folders):
            if _is_config_file(path):
                try:
                    content = read_spec_file(path)
                except SpecError as error:  # one without origin names the file itself: a fifo in its place
                    fail(app, str(error) if error.origin is not None else error.message)
                try:
                    refuse_resolvers(content)
                    if config.startswith("backbone/"):  # OmegaConf would take channels_last: 2 as true
                        check_spec_values(content)
                except SpecError as error:
                    fail(app, str(error if error.origin is not None else error.with_origin(str(path))))
                if config.startswith("backbone/"):
                    for key, value in content.items():
                        problem = None if key == "defaults" else _problem_with(f"backbone.{key}", schema, [value])
                        if problem is not None:
                            fail(app, f"{path}: {problem}")
                chosen += [(name, path) for name, _ in _defaults_entries(content, config.rpartition("/")[0])]


#: the most config files the resolver check follows through defaults lists (Hydra's own composition is bounded too)
_MAX_DEFAULTS_FILES = 1000


def _defaults_entries(content: Dict[str, Any], group: str) -> List[Tuple[str, bool]]:
    """The config files (``group/name``, from the config root) the defaults list of a file in ``group`` names, each
    with whether it is an ``override`` entry, read as Hydra reads them: ``other`` and ``sub: other`` relative to
    ``group``, ``/frag/t`` and ``/frag: t`` from the root; in a key, the words before the group are keywords
    (``override``, ``optional``) and a package (``@...``) is dropped; ``_self_`` is left out. A choice made by
    interpolation (``${...}``) is kept as written: the caller cannot read its file."""
    defaults = content.get("defaults")
    entries: List[Tuple[str, bool]] = []
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, str) and entry != "_self_":
            entries.append((entry, False))
        elif isinstance(entry, dict):
            for key, options in entry.items():
                *keywords, key = str(key).split() or [""]
                for option in options if isinstance(options, list) else [options]:
                    if isinstance(option, str):
                        entries.append((f"{key.split('@', 1)[0]}/{option}", "override" in keywords))
    named = [(name.split("@", 1)[0].removesuffix(".yaml"), overriding) for name, overriding in entries]
    return [(name[1:] if name.startswith("/") else f"{group}/{name}".lstrip("/"), o) for name, o in named]


def _problem_with(key: str, schema: type, values: Sequence[object]) -> Optional[str]:
    """Why ``key`` cannot be set to ``values`` in ``schema`` (an app's config dataclass; ``backbone`` holds a
    :class:`BackboneNode`), or None: an unknown key, or a value OmegaConf refuses for its type, as Hydra's
    composition would (the spec layer checks the rest after composing). Keys below an untyped node are not judged."""
    parts = key.split(".")
    owner: Any = schema
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(owner)
        if part not in hints:
            return _unknown_key(".".join(parts[: depth + 1]), list(hints))
        if depth == len(parts) - 1:
            break
        owner = BackboneNode if (depth, part) == (0, "backbone") else hints[part]
        owner = _NULLABLE_SCHEMAS.get(".".join(parts[: depth + 1]), owner)
        if not dataclasses.is_dataclass(owner):
            return None
    if dataclasses.is_dataclass(hints[parts[-1]]):
        return None
    node = OmegaConf.structured(owner)
    for value in values:
        if hints[parts[-1]] is bool and not is_true_or_false(value):  # OmegaConf takes 2, "yes" and "on" as true
            return f"{key}: must be true or false, got {quoted(value)}"
        try:
            node[parts[-1]] = value
        except (ValidationError, ValueError) as error:
            return f"{key}: {first_line(error)}"
    return None


def _null_list_indexed(arguments: Sequence[str], schema: type) -> List[Tuple[str, str]]:
    """``(override key, list key)`` for each override in ``arguments`` that sets an element of a list key that may be
    null (``backbone.out_features.0=c5``: Hydra's composition fails on a null one with a bare AssertionError)."""
    try:
        overrides = OverridesParser.create().parse_overrides(list(arguments))
    except (HydraException, ValueError):
        return []
    indexed = []
    for override in overrides:
        parts = override.key_or_group.split(".")
        owner: Any = schema
        for depth, part in enumerate(parts[:-1]):
            hints = typing.get_type_hints(owner) if dataclasses.is_dataclass(owner) else {}
            if part not in hints:
                break
            hint = BackboneNode if (depth, part) == (0, "backbone") else hints[part]
            options = typing.get_args(hint)  # Optional[List[str]]: (List[str], NoneType)
            if type(None) in options and any(typing.get_origin(option) is list for option in options):
                indexed.append((override.key_or_group, ".".join(parts[: depth + 1])))
                break
            owner = hint
    return indexed


def _values(override: Override) -> List[object]:
    """The values an override sets: one, or each of a choice or range sweep (the first :data:`MAX_CHECKED_VALUES`);
    none for a sweep that cannot be listed (``interval``, ``glob``)."""
    if not override.is_sweep_override():
        return [override.value()]
    try:
        values = list(itertools.islice(override.sweep_iterator(), MAX_CHECKED_VALUES))
    except (HydraException, ValueError, TypeError, ArithmeticError):  # ArithmeticError: range(1,nan)
        return []
    return [value.text if isinstance(value, QuotedString) else value for value in values]


def check_plain_keys(app: str, overrides: Sequence[Tuple[str, Override]], schema: type, where: str = "") -> None:
    """Refuse, before Hydra composes (whose message spans lines and suggests the ``+`` form), a plain override
    (``input.heigth=300``) of a key ``schema`` lacks, or of a value its type cannot hold (``run=maybe``,
    ``backbone.frozen_stages=true``), each value of a sweep included: Hydra would stop the sweep while composing.
    ``++key=...`` sets a key as a plain override does (and adds none to a typed config): checked alike. ``where``
    comes before each message (the file that gives the overrides)."""
    for _, override in overrides:
        key = override.key_or_group
        setting = override.type in (OverrideType.CHANGE, OverrideType.FORCE_ADD)
        if not setting or key == "backbone" or key.startswith("hydra") or "/" in key:
            continue
        problem = _problem_with(key, schema, _values(override))
        if problem is not None:
            fail(app, f"{where}{problem}")


def _unwrapped(hint: Any) -> Any:
    """``X`` for the type hint ``Optional[X]``, else ``hint``."""
    options = [option for option in typing.get_args(hint) if option is not type(None)]
    return options[0] if typing.get_origin(hint) is typing.Union and len(options) == 1 else hint


def _list_of(key: str, schema: type) -> Optional[str]:
    """The list of which ``key`` is an item (``backbone.stages.c2.modules`` for ``backbone.stages.c2.modules.0``), by
    the types of ``schema`` (an app's config dataclass; its backbone node typed by the spec's schema) and of Hydra's
    config, or None (not a list's item, or below a node they do not type)."""
    *parents, _ = key.split(".")
    hint: Any = schema
    for depth, part in enumerate(parents):
        hint = _unwrapped(hint)
        if dataclasses.is_dataclass(hint):
            roots = {"backbone": BackboneSpec, "hydra": HydraConf} if depth == 0 else {}
            hints = {**typing.get_type_hints(hint), **roots}
            hint = _NULLABLE_SCHEMAS.get(".".join(parents[: depth + 1]), hints.get(part))
        elif typing.get_origin(hint) is dict:
            hint = typing.get_args(hint)[1]
        else:
            return None
    return ".".join(parents) if parents and typing.get_origin(_unwrapped(hint)) is list else None


def check_deleted_keys(app: str, overrides: Sequence[Tuple[str, Override]], schema: type) -> None:
    """Refuse a ``~key`` override whose key is an item of a list (``~backbone.stages.c2.modules.0``): OmegaConf's
    ``del`` raised a bare TypeError as Hydra composed. The message is featx.build's for the same override."""
    for argument, override in overrides:
        listed = _list_of(override.key_or_group, schema) if override.is_delete() else None
        if listed is not None:
            fail(app, f"{override.key_or_group}: {deletes_list_item(argument, listed)}")


#: featx's Hydra callback that checks the run folders before Hydra writes there (the apps' configs register it)
FEATX_CALLBACK = "hydra.callbacks.output_folders"
#: Hydra's logging of its own, which Hydra configures (opening its log files) as it composes, before any callback
HYDRA_LOGGING = "hydra.hydra_logging"
#: Hydra's own ``hydra/hydra_logging`` options that open no file (``hydra_debug`` writes one in the working directory)
HYDRA_LOGGING_CHOICES = ("default", "disabled", "none")
_CALLBACK_REFUSED = (
    f"featx's callback {FEATX_CALLBACK} checks the run folders before Hydra writes there (it refuses to replace a "
    "file of yours): it is not removed or changed; add a callback of yours beside it "
    "(+hydra.callbacks.NAME={_target_: ...})"
)
_LOG_FILE_REFUSED = (
    f"Hydra opens {HYDRA_LOGGING}'s log files as it composes, before featx can check where they lie: it takes no "
    "handler with a filename (nor an interpolation, which may give one) and hydra/hydra_logging= takes "
    f"{', '.join(HYDRA_LOGGING_CHOICES[:-1])} or {HYDRA_LOGGING_CHOICES[-1]}; a log file of the run goes in "
    "hydra.job_logging"
)


def _below(key: str, node: str) -> bool:
    """Whether ``key`` is the config node ``node`` or a key below it."""
    return key == node or key.startswith(node + ".")


def _hydra_node_problem(key: str, value: object, deleting: bool = False) -> Optional[str]:
    """Why setting the config node ``key`` to ``value`` (a mapping is merged in: each key it gives is set), or
    deleting it, is refused before Hydra composes, or None: it removes or changes featx's callback
    (:data:`FEATX_CALLBACK`), or gives Hydra's own logging (:data:`HYDRA_LOGGING`) a file or an interpolation (which
    may give one): Hydra opens that file as it composes, before the callback could check where it lies."""
    nodes: List[Tuple[str, object]] = [(key, value)]
    while nodes:
        name, below = nodes.pop()
        replaced = name == "hydra" and (deleting or not isinstance(below, (Mapping, type(None))))  # null: Hydra's
        replaced |= name == "hydra.callbacks" and (deleting or not isinstance(below, Mapping))  # a mapping merges in
        if replaced or _below(name, FEATX_CALLBACK):
            return _CALLBACK_REFUSED
        if deleting:
            return None
        interpolated = isinstance(below, str) and "${" in below
        if _below(name, HYDRA_LOGGING) and (name.rpartition(".")[2] == "filename" or interpolated):
            return _LOG_FILE_REFUSED
        if isinstance(below, Mapping):
            nodes += [(f"{name}.{sub}", item) for sub, item in below.items()]
    return None


def _hydra_group_problem(group: str, package: Optional[str], choices: Sequence[str]) -> Optional[str]:
    """Why choosing ``choices`` of the config group ``group`` (placed at ``package``, else at the group's own node) is
    refused before Hydra composes, or None: a ``hydra/hydra_logging`` choice other than
    :data:`HYDRA_LOGGING_CHOICES`, or a file placed at Hydra's logging or at ``hydra.callbacks`` (featx does not read
    it before Hydra composes; :func:`_hydra_node_problem`)."""
    target = (group.replace("/", ".") if package is None else package).removeprefix("_global_.")
    if group == "hydra/hydra_logging" and package is None:
        return None if all(choice in HYDRA_LOGGING_CHOICES for choice in choices) else _LOG_FILE_REFUSED
    if _below(target, HYDRA_LOGGING):
        return _LOG_FILE_REFUSED
    return _CALLBACK_REFUSED if target == "hydra" or _below(target, "hydra.callbacks") else None


def check_hydra_settings(app: str, overrides: Sequence[Tuple[str, Override]], where: str = "") -> None:
    """Refuse, before Hydra composes, an override that removes or changes featx's callback (``~``, ``+``, ``++`` or
    plain) or gives Hydra's own logging a file (:func:`_hydra_node_problem`, :func:`_hydra_group_problem`); a callback
    of the user's beside featx's is taken. ``where`` comes before each message (the file that gives the overrides)."""
    for argument, override in overrides:
        key = override.key_or_group
        if "/" in key or override.package is not None:  # a config group: hydra/hydra_logging=disabled
            glob = isinstance(override.value(), Glob)  # its names unlisted: taken as a name of none of the choices
            problem = _hydra_group_problem(key, override.package, ["glob()"] if glob else _choice_values(override))
        else:  # a key: the values of one of Hydra's config are listed (an app's key is judged by its name alone)
            values = [] if override.is_delete() or not _below(key, "hydra") else _values(override)
            problems = (_hydra_node_problem(key, value, override.is_delete()) for value in values or [None])
            problem = next((problem for problem in problems if problem is not None), None)
        if problem is not None:
            fail(app, f"{where}{shortened(argument)}: {problem}")


def _hydra_file_problem(content: Dict[str, Any], group: str) -> Optional[str]:
    """Why the user's config file ``content`` (of the config group ``group``) is refused before Hydra composes, or
    None: the ``hydra`` node of a file at the root, or a file its defaults list brings in (by its group, or placed by
    a package: ``- /hydra/job_logging@hydra.hydra_logging: default``), removes or changes featx's callback or gives
    Hydra's own logging a file (:func:`_hydra_node_problem`, :func:`_hydra_group_problem`)."""
    if not group and "hydra" in content:
        problem = _hydra_node_problem("hydra", content["hydra"])
        if problem is not None:
            return problem
    for name, _ in _defaults_entries(content, group):
        problem = _hydra_group_problem(name.rpartition("/")[0], None, [name.rpartition("/")[2]])
        if problem is not None:
            return problem
    defaults = content.get("defaults")
    for entry in defaults if isinstance(defaults, list) else []:
        for text in entry if isinstance(entry, dict) else [entry]:
            package = str(text).partition("@")[2] if "@" in str(text) else None
            problem = None if package is None else _hydra_group_problem("", package, [])
            if problem is not None:
                return problem
    return None


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> List[Tuple[str, List[str]]]:
    """``(dotted key, the keys valid there)`` for each key of ``cfg`` that ``schema`` (an app's config dataclass) does
    not define, ``backbone`` aside (the spec layer checks it). Hydra lets ``+input.heigth=300`` add a key to a schema
    node; featx refuses it rather than ignore it."""
    hints = typing.get_type_hints(schema)
    unknown: List[Tuple[str, List[str]]] = []
    for key in map(str, cfg.keys()):
        name = f"{prefix}{key}"
        if name == "backbone":
            continue
        if key not in hints:
            unknown.append((name, list(hints)))
        elif dataclasses.is_dataclass(hints[key]) and OmegaConf.is_dict(cfg[key]):
            unknown += unknown_keys(cfg[key], hints[key], prefix=f"{name}.")
    return unknown


def _unknown_key(name: str, valid: Sequence[str]) -> str:
    """The refusal of the key ``name``, with a suggestion and the keys ``valid`` there (Hydra's ``_target_`` left
    out: featx sets it)."""
    keys = [key for key in valid if not key.startswith("_")]
    last = name.rpartition(".")[2]
    return f"{name}: unknown key{suggest(last, keys)} (valid here: {', '.join(keys)})"


def _check_keys(cfg: DictConfig, schema: type) -> None:
    for name, valid in unknown_keys(cfg, schema)[:1]:
        raise ArgumentError(_unknown_key(name, valid))


def _check_values(cfg: DictConfig, schema: type) -> None:
    """Each key of ``schema`` present and set, and the app's own ones resolvable to their types: ``~input`` deletes a
    node, ``input.height=???`` unsets it and ``${oc.env:HOME}`` may resolve to a string; the task would stop on
    OmegaConf's traceback. The backbone node is the spec layer's to check."""
    for name in typing.get_type_hints(schema):
        if name not in cfg:
            raise ArgumentError(f"{name}: missing (deleted with ~{name}?); the app needs it")
        if OmegaConf.is_missing(cfg, name):
            hint = "; choose one: backbone=<name> (featx-list lists them)" if name == "backbone" else ""
            raise ArgumentError(f"{name}: missing value{hint}")
        if name == "backbone":
            continue
        try:  # read in place: an interpolation may refer to another node (${backbone.device})
            value = cfg[name]
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            key = error.full_key or name
            raise ArgumentError(f"{key}: missing; give it on the command line ({key}=...)") from None
        except InterpolationResolutionError as error:  # the value it resolved to is not echoed: it may be a secret
            raise ArgumentError(
                f"{error.full_key or name}: its interpolation cannot be resolved to a value of its type "
                f"({type(error).__name__})"
            ) from None


def _config_roots() -> List[Path]:
    """The directories of Hydra's config search path, in its order (file:// and pkg:// sources)."""
    roots = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema == "file":
            roots.append(Path(source.path))
        elif source.schema == "pkg":
            try:
                roots.append(Path(str(importlib.resources.files(source.path))))
            except ModuleNotFoundError:
                continue
    return roots


def _refuse_shadowed_backbone() -> None:
    """Two ``backbone/<choice>.yaml`` on the search path (``choice`` may name a subfolder: ``sub/x``): Hydra silently
    takes the first; featx refuses."""
    choice = HydraConfig.get().runtime.choices.get("backbone")
    candidates = [root / "backbone" / f"{choice}.yaml" for root in _config_roots()] if choice is not None else []
    files: Dict[Path, Path] = {}  # by the file it is: a root on the search path twice gives one file twice
    for path in candidates:
        if path.is_file():
            files.setdefault(path.resolve(), path)
    if len(files) > 1:
        used, *ignored = files.values()
        folder, _, name = str(choice).rpartition("/")
        raise ArgumentError(
            f"backbone={choice} names {len(files)} files on the config search path: {used} (which "
            f"Hydra would use) and {', '.join(map(str, ignored))} (ignored). Rename your file, e.g. to "
            f"{folder + '/' if folder else ''}my_{name}.yaml"
        )


def _refuse_changed_directory() -> None:
    """featx's apps read and write paths relative to where they are run; Hydra's ``job.chdir`` would move them."""
    if HydraConfig.get().job.chdir:
        raise ArgumentError(
            "hydra.job.chdir: featx's apps never change the working directory (paths such as export.path and "
            "extract.input are relative to where you run them); remove hydra.job.chdir=true"
        )


def app_task(
    app: str, schema: type
) -> Callable[[Callable[[DictConfig], Result]], Callable[[DictConfig], Optional[Result]]]:
    """Wrap an app's task function (under ``@hydra.main``): keys ``schema`` lacks refused, FeatxErrors reported on
    one line; in a sweep, a failed job is recorded and the next one runs."""

    def wrap(task: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Optional[Result]]:
        def checked(cfg: DictConfig) -> Result:
            quiet_other_loggers()
            _refuse_changed_directory()
            _check_values(cfg, schema)
            _check_keys(cfg, schema)
            _refuse_shadowed_backbone()
            try:
                return task(cfg)
            except Exception:  # Hydra would report it (and go on with a sweep): one that came of a dropped Ctrl-C
                _stop_if_interrupted()  # (numpy's ImportError, imported again) is no error of the job's
                raise

        @functools.wraps(task)
        def run(cfg: DictConfig) -> Optional[Result]:
            if not _in_sweep():
                with reported_errors(app):
                    return checked(cfg)  # run_app looks for a dropped Ctrl-C when the app ends
            job = HydraConfig.get().job
            _jobs_run.append(job.num)
            if reader_went_away():  # quietly, as a single run ends: the reader asked for no more
                _jobs_unread.append(job.num)
                return None
            lost = stdout_lost()
            if lost is not None:  # an earlier job found stdout gone: this job's results would be lost too
                overrides = _job_overrides()
                print(f"{app}: job #{job.num} ({overrides}) not run: standard output is lost ({lost})", file=sys.stderr)
                _failed_jobs.append(f"#{job.num} ({overrides})")
                return None
            try:
                with reported_errors(app):
                    result = checked(cfg)
            except SystemExit as stop:
                _stop_if_interrupted()  # the job's error may come of the Ctrl-C: the sweep ends, with no job failed
                if reader_went_away():  # this job's reader went away as it wrote
                    _jobs_unread.append(job.num)
                    return None
                overrides = _job_overrides()
                reason = str(stop.code).removeprefix(f"{app}: error: ")  # said once, by the line's own prefix
                print(f"{app}: job #{job.num} ({overrides}) failed: {reason}", file=sys.stderr, flush=True)
                _failed_jobs.append(f"#{job.num} ({overrides})")
                return None
            _stop_if_interrupted()  # the sweep's later jobs are not run
            return result

        return run

    return wrap


#: the height and width of an app's example input for a backbone that takes any size
DEFAULT_SIDE = 224


def input_size(height: Optional[int], width: Optional[int], fixed: Optional[Sequence[int]]) -> Tuple[int, int]:
    """An app's example input size: ``height`` and ``width`` where given (not null), else the backbone's own
    ``input_size`` (``fixed``, a model that takes one size), else :data:`DEFAULT_SIDE`. Example:
    ``input_size(None, None, [384, 384])`` is ``(384, 384)``; ``input_size(None, 96, None)`` is ``(224, 96)``."""
    default = (DEFAULT_SIDE, DEFAULT_SIDE) if fixed is None else (fixed[0], fixed[1])
    return (default[0] if height is None else height, default[1] if width is None else width)


def _job_overrides() -> str:
    """The running sweep job's overrides as the command line gives them: a value that is not swept as typed (Hydra
    writes ``run=false`` as ``run=False``), and without the ``++`` featx puts before a key below a nullable node
    (:func:`plain_nested_overrides`)."""
    typed: Dict[str, str] = {}
    for argument in sys.argv[1:]:
        try:
            (override,) = OverridesParser.create().parse_overrides([argument])
        except (HydraException, ValueError):
            continue
        if not override.is_sweep_override():
            typed[override.key_or_group] = argument
    shown = []
    for argument in HydraConfig.get().overrides.task:
        key = argument.lstrip("+~").split("=", 1)[0]
        shown.append(_as_typed(typed.get(key, argument)))
    return " ".join(shown)


def _as_typed(argument: str) -> str:
    """The override ``argument`` as typed: without the ``++`` :func:`plain_nested_overrides` puts before a key below
    a nullable node."""
    return argument[2:] if argument.startswith("++") and argument[2:].startswith(_NULLABLE_NODES) else argument


def plain_nested_overrides(arguments: Sequence[str]) -> List[str]:
    """``arguments`` with each plain override below a nullable spec node (``backbone.fpn.out_channels=128``) made a
    ``++`` override, which Hydra applies whether the node is null or not; everything else unchanged."""
    rewritten = []
    for argument in arguments:
        if argument.startswith(_NULLABLE_NODES) and "=" in argument:
            try:
                (override,) = OverridesParser.create().parse_overrides([argument])
            except (HydraException, ValueError):
                override = None
            if override is not None and override.type == OverrideType.CHANGE:
                argument = "++" + argument
        rewritten.append(argument)
    return rewritten


def _unknown_stage(error: BaseException) -> Optional[str]:
    """The refusal of ``backbone.stages.c9.modules=...`` for a stage the backbone's file lacks (Hydra's answer, "Key
    'c9' is not in struct", points to ``+``, which adds a stage), naming the file's stages, or of a key a stage
    lacks (``backbone.stages.c3.modlues``); else None."""
    cause = error.__cause__
    key = str(getattr(cause, "full_key", ""))
    stages = getattr(cause, "parent_node", None)
    refused = isinstance(cause, (ConfigKeyError, ConfigAttributeError))  # setting a key below it, or it
    if not (refused and key.startswith("backbone.stages.") and isinstance(stages, DictConfig)):
        return None
    if not str(error).startswith((f"Could not override '{key}.", f"Could not override '{key}'")):
        return None
    if key.count(".") == 3:  # a key of a stage the file has (slice.0 of a stage given by modules: Hydra's words)
        keys = [field.name for field in dataclasses.fields(StageSpec)]
        return None if key.rpartition(".")[2] in keys else _unknown_key(key, keys)
    if key.count(".") != 2:
        return None
    name, known = key.rpartition(".")[2], [str(stage) for stage in stages.keys()]
    return (
        f"{key}: the backbone has no stage {quoted(name)}{suggest(name, known)} (stages: {', '.join(known)}); "
        f"+{key}={{modules: [...]}} adds one"
    )


def hydra_error_line(error: BaseException) -> str:
    """One line for an error of Hydra's (composing the config) or OmegaConf's: its message's lines joined, the
    OmegaConf error it wraps, and the options Hydra lists for a config group it cannot find (the config search path
    it also lists left out)."""
    other_form = _OTHER_STAGE_FORM.search(str(error))
    missing = getattr(error.__cause__, "full_key", None)  # the key OmegaConf did not find: the form, not the stage
    if other_form is not None and missing == other_form.group(1):
        _, stage, name, given = other_form.groups()
        written = "modules" if given == "slice" else "slice"
        return (
            f"{stage}.{given}: the stage {name} is given by '{written}' in its file, and a stage takes one of "
            f"'slice' or 'modules': replace it with ~{stage}.{written} +{stage}.{given}=..."
        )
    stage = _unknown_stage(error)
    if stage is not None:
        return stage
    message, options, listing = [], [], False
    for text in str(error).splitlines():
        if text.startswith(("Available options in", "Config search path")):
            listing = text.startswith("Available options in")
        elif text.startswith("\t"):
            if listing:
                options.append(text.strip())
        elif text.strip() and not text.strip().startswith(_CONTEXT_LINES):
            listing = False
            message.append(text.strip())
    if isinstance(error, yaml.YAMLError):  # a config file of a search path featx does not read itself
        mark = getattr(error, "problem_mark", None)
        return f"{getattr(mark, 'name', 'a config file')}: not valid YAML: {yaml_problem(error)}"
    line = " ".join(message) or type(error).__name__
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and first_line(cause) not in line:
        line = f"{line.rstrip('.')}: {first_line(cause)}"
    unknown = next((e for e in (error, cause, error.__context__) if isinstance(e, ConfigKeyError)), None)
    schema = getattr(unknown, "object_type", None)
    if unknown is not None and dataclasses.is_dataclass(schema):  # a typo in a file of a config folder
        valid = list(typing.get_type_hints(schema))
        line = f"{line}{suggest(str(unknown.key), valid)} (valid keys: {', '.join(valid)})"
    return f"{line} (available: {', '.join(options)})" if options else line


#: Hydra's shell completion commands (``--shell-completion install=bash``) and the shells it completes for
COMPLETION_COMMANDS = ("install", "uninstall", "query")
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def check_completion_command(app: str, commands: Sequence[str]) -> None:
    """Refuse a ``--shell-completion`` (``-sc``) without exactly one of Hydra's commands: ``install=bash``,
    ``uninstall=zsh`` or ``query=fish`` (Hydra raises a ValueError with a traceback), or a query outside a
    completion (Hydra's KeyError for COMP_LINE). ``commands``: what Hydra's parser read as overrides (featx's
    override checks do not apply: these are no overrides)."""
    known = len(commands) == 1 and commands[0].partition("=")[::2] in {
        (command, shell) for command in COMPLETION_COMMANDS for shell in COMPLETION_SHELLS
    }
    if not known:
        fail(
            app,
            f"--shell-completion takes one of {', '.join(f'{command}=SHELL' for command in COMPLETION_COMMANDS)} "
            f'(SHELL: {", ".join(COMPLETION_SHELLS)}), e.g. eval "$({app} -sc install=bash)"; got '
            f"{' '.join(commands) or 'none'}",
        )
    if commands[0].startswith("query=") and "COMP_LINE" not in os.environ:
        fail(app, f"--shell-completion {commands[0]} is what the installed completion runs (it sets COMP_LINE)")


#: the options of a command line that say which configs Hydra reads
_LOADER_OPTIONS = ("config_dir", "config_name")


def check_completed_line(app: str, flags: argparse.Namespace, schema: type) -> List[str]:
    """For ``-sc query=SHELL``: the line being completed (``COMP_LINE``, read as Hydra's completion reads it) passes
    the checks of a command line, its options (``--config-dir``, ``--config-name``; where it gives none, the
    ``flags`` of the ``-sc`` call's own) and its words but the one being typed, else nothing is offered (exit 1,
    nothing printed over the user's prompt). Hydra composes the config from those words and prints values from it: a
    file outside the config roots, a resolver in a user's file or an alias bomb would be read unchecked. Nor is
    anything offered for a config group choice typed as a path (``backbone=../``, ``backbone=/``), whose folder's
    files Hydra would list: a group's options are names in the config roots. Returns the line's options for the
    ``-sc`` call's command line (Hydra's completion composes with the options of its own call)."""
    try:
        line = CompletionPlugin.strip_python_or_app_name(os.environ["COMP_LINE"])
        with contextlib.redirect_stderr(io.StringIO()):
            completed = get_args(line.split())
            words = completed.overrides
            if line and not line.endswith(" ") and words:
                key, equals, choice = words.pop().lstrip("+~").partition("=")
                if equals and "." not in key and (_escapes(choice) or choice.startswith(".")):
                    raise SystemExit(1)
            for name in _LOADER_OPTIONS:
                if getattr(completed, name) is None:
                    setattr(completed, name, getattr(flags, name))
            if completed.config_dir is not None and not Path(completed.config_dir).is_dir():
                raise SystemExit(1)  # Hydra's error, over the prompt
            check_flags(app, completed, [])
            check_command_line(app, completed, words, schema)
    except (SystemExit, RuntimeError):  # a featx refusal; argparse's or Hydra's failure to read the line
        raise SystemExit(1) from None
    given = {name: getattr(completed, name) for name in _LOADER_OPTIONS}
    return [f"--{name.replace('_', '-')}={value}" for name, value in given.items() if value is not None]


def _hydras(argument: str) -> bool:
    """Whether the override ``argument`` sets Hydra's own config (``hydra.run.dir=...``, ``hydra/job_logging=...``,
    ``hydra=...``), not the app's."""
    key = argument.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def check_hydra_help(app: str, flags: argparse.Namespace) -> None:
    """Refuse an override of the app's config with ``--hydra-help``: Hydra composes its help without the app's
    config, and answered ``backbone=resnet18`` with advice to append it (``+backbone=resnet18``)."""
    apps = [argument for argument in flags.overrides if not _hydras(argument)]
    if flags.hydra_help and apps:
        fail(
            app,
            f"{shortened(apps[0])}: --hydra-help shows Hydra's own options, composed without the app's config, so it "
            f"takes Hydra's settings only (hydra.*, hydra/...); the app's options: {app} --help",
        )


def _raised_in_featx(error: BaseException) -> bool:
    """Whether ``error`` was raised in (or passed through) featx's own code, an app's task or a callback, below the
    call of the Hydra app: else Hydra's own code (or a library it calls, such as logging) raised it."""
    package = Path(__file__).resolve().parent.parent
    frames = traceback.extract_tb(error.__traceback__)[1:]  # the first: run_app's own call of the Hydra app
    return any(Path(frame.filename).resolve().is_relative_to(package) for frame in frames)


def check_command_line(app: str, flags: argparse.Namespace, given: Sequence[str], schema: type) -> None:
    """The checks of a command line's package and overrides against ``schema``, before Hydra composes."""
    check_package(app, flags, schema)
    overrides = parsed_overrides(app, given)
    check_sweeper_params(app, overrides)
    check_sweep_size(app, overrides, functools.partial(group_options, folders=config_dirs(flags, overrides)))
    check_hydra_settings(app, overrides)
    check_deleted_keys(app, overrides, schema)
    custom_roots = flags.config_dir is not None
    searchpath = any(override.key_or_group == "hydra.searchpath" for _, override in overrides)
    check_choices(app, overrides, custom_roots or searchpath)
    check_plain_keys(app, overrides, schema)
    check_user_backbone_files(app, overrides, config_dirs(flags, overrides), schema)
    folders = config_dirs(flags, overrides)
    check_file_values(app, check_primary_config(app, flags, folders), folders, schema, overrides)


@contextlib.contextmanager
def shown_package(app: str, flags: argparse.Namespace) -> Iterator[None]:
    """For ``--cfg ... -p KEY``: Hydra's own line for a key the composed config lacks or leaves without a value
    (``package 'KEY' not found in config``, on stderr, then exit 1) as a featx error; nothing otherwise."""
    if not flags.cfg or not flags.package:
        yield
        return
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            yield
    except SystemExit:
        if errors.getvalue().startswith("package "):
            fail(
                app,
                f"--package (-p) {shortened(flags.package)}: not in the --cfg {flags.cfg} config, or without a value "
                "there (null, or ??? for one still to give)",
            )
        raise
    finally:
        if not errors.getvalue().startswith("package "):
            sys.stderr.write(errors.getvalue())


#: the Ctrl-Cs (SIGINT) that arrived while an app ran (:func:`_on_interrupt`)
_interrupts: List[int] = []


def _on_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """SIGINT's handler while an app runs: Python's own (raise KeyboardInterrupt), the signal recorded first. C code
    may drop the KeyboardInterrupt (torch's, importing numpy as torch is imported, goes on without it): the record
    still ends the app (:func:`_stop_if_interrupted`)."""
    _interrupts.append(signum)
    raise KeyboardInterrupt


def _stop_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived while the app ran, though the one its handler raised was dropped."""
    if _interrupts:
        raise KeyboardInterrupt


def run_app(app: str, hydra_main: Callable[[], object], schema: type) -> None:
    """Check the command line (``sys.argv``) against the app's config ``schema``, run the Hydra app, and after a
    sweep exit 1 if any of its jobs failed. ``-v`` is featx's: it keeps other libraries' INFO messages.

    Ctrl-C ends the app with ``<app>: interrupted`` and status 130, what was written whole (atomic writes), no
    traceback. One whose KeyboardInterrupt C code dropped (torch's import) ends it when the job it came in ends,
    whatever that job or Hydra raised then (numpy's "cannot load module more than once per process"), a sweep's
    later jobs not run. A SIGINT the process started with ignored (a script's background job), or given a handler
    of a program's own, is left so."""
    _interrupts.clear()
    ours = threading.current_thread() is threading.main_thread()  # signal.signal works in the main thread only
    ours = ours and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ours:
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        _run_app(app, hydra_main, schema)
        _stop_if_interrupted()
    except BaseException as error:
        if not (isinstance(error, KeyboardInterrupt) or _interrupts):
            raise
        print(f"{app}: interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def check_flags(app: str, flags: argparse.Namespace, unplaced: Sequence[str]) -> None:
    """The checks of a command line's options (Hydra's parser read them into ``flags``; ``unplaced``: the arguments
    it could not place) before its overrides'."""
    if flags.resolve and not (flags.cfg or flags.help):  # read as Hydra reads them: --cfg=job, -cjob, --cf job
        fail(app, "--resolve shows a config resolved: use it with --cfg job (or --cfg hydra, --cfg all) or --help")
    modes = [f"--{name.replace('_', '-')}" for name in _MODES if getattr(flags, name)]
    if len(modes) > 1:  # Hydra's own check raises a ValueError with a traceback
        fail(app, f"{' and '.join(modes)}: give one of --run, --multirun (-m), --cfg, --info, --shell-completion")
    check_unplaced(app, unplaced)
    if flags.experimental_rerun is not None:  # Hydra unpickles the file: reading it may run any code
        fail(
            app,
            "--experimental-rerun: featx does not read Hydra's pickled configs (unpickling a file runs code it holds); "
            "run the command again with the overrides the run's .hydra/overrides.yaml lists",
        )
    if flags.config_path is not None:  # the primary config's folder in place of featx's: none of its checks hold
        fail(
            app,
            f"--config-path: {app} reads its own configs; add a folder of yours with --config-dir (-cd) and name a "
            "config of yours in it with --config-name (-cn)",
        )
    check_config_name(app, flags)
    check_hydra_help(app, flags)


def _run_app(app: str, hydra_main: Callable[[], object], schema: type) -> None:
    """:func:`run_app`'s work, Ctrl-C left to it."""
    given = sys.argv[1:]
    if "--version" in given:  # Hydra's own flag prints Hydra's version alone
        with reader_may_stop(app):
            print(f"{app} {__version__} (Hydra {hydra.__version__})")
        raise SystemExit(0)
    set_verbose(any(flag in given for flag in VERBOSE_FLAGS))
    given = plain_nested_overrides([argument for argument in given if argument not in VERBOSE_FLAGS])
    flags, unplaced = hydra_flags(given)
    check_flags(app, flags, unplaced)
    if flags.shell_completion:
        check_completion_command(app, flags.overrides)
        if flags.overrides[0].startswith("query="):
            given = [*given, *check_completed_line(app, flags, schema)]
    else:
        check_command_line(app, flags, given, schema)
    sys.argv[1:] = given
    if os.environ.get("TMPDIR") == "":  # unset, as Python's tempfile takes it: the run folders go under /tmp
        del os.environ["TMPDIR"]
    if not Path(os.environ.get("TMPDIR", "/")).is_absolute():  # the run folders would land in the working directory
        fail(
            app,
            f"TMPDIR={quoted(os.environ['TMPDIR'])}: the run folders go below it; give an absolute path, or unset it",
        )
    register_user_resolver()
    _failed_jobs.clear()
    _jobs_run.clear()
    _jobs_unread.clear()
    sweeps_started.clear()
    users_value = os.environ.get(FULL_ERROR)
    full_error = users_value == "1"  # Hydra's own rule: only 1 asks for the full error (0 or empty do not)
    os.environ[FULL_ERROR] = "1"  # Hydra raises its errors instead of printing them over several lines
    try:
        with reader_may_stop(app), shown_package(app, flags):  # Hydra's output too: --cfg, --help, -sc install=bash
            hydra_main()
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as error:
        if full_error:  # the user asked for Hydra's full error
            raise
        fail(app, hydra_error_line(error))
    except OSError as error:  # Hydra's own file work (a run folder it cannot make where the path check cannot tell)
        if full_error:
            raise
        where = f"{error.filename}: " if error.filename else ""
        fail(app, f"{where}{error.strerror or first_line(error)}")
    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:
        if full_error:  # what Hydra's own code raises for values it does not check (range step 0, a foreign launcher)
            raise
        hydras = isinstance(error, AssertionError) and "Unexpected type" in str(error)  # OmegaConf's, composing
        indexed = _null_list_indexed(flags.overrides, schema) if hydras else []
        if indexed:
            keys, lists = ", ".join(key for key, _ in indexed), " and ".join(dict.fromkeys(key for _, key in indexed))
            fail(
                app,
                f"{keys}: Hydra cannot set an element of a list that is null in this config, as {lists} may be (the "
                f"backbone's file leaves it null unless it sets one); give the whole list: "
                + ", ".join(f"{key}=[...]" for key in dict.fromkeys(key for _, key in indexed)),
            )
        reason = quoted(first_line(error))[1:-1]
        cause = error.__cause__  # logging's "Unable to configure handler 'file'" hides the file's own error
        if isinstance(cause, OSError) and cause.strerror:
            reason += f" ({cause.strerror}: {cause.filename})" if cause.filename else f" ({cause.strerror})"
        elif cause is not None and first_line(cause) not in reason:  # logging's "Unable to configure root logger"
            reason += f" ({quoted(first_line(cause))[1:-1]})"
        settings = [shortened(argument) for argument in flags.overrides if _hydras(argument)]
        if settings and not isinstance(cause, OSError) and not _raised_in_featx(error):  # a file explains itself
            reason += f", raised by Hydra's own code given the Hydra settings {' '.join(settings)}"
        fail(app, f"{type(error).__name__}{': ' if reason else ''}{reason} (HYDRA_FULL_ERROR=1 shows where)")
    finally:
        if users_value is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = users_value
    if sweeps_started and not _jobs_run:  # -m, or hydra.mode=MULTIRUN
        fail(app, "the sweep has no jobs (a glob() that matches no name, an empty range()?); nothing ran")
    if _failed_jobs:
        fail(app, f"{len(_failed_jobs)} of {len(_jobs_run)} jobs failed: {'; '.join(_failed_jobs)}")
    if _jobs_unread:
        raise SystemExit(1)
