"""An app's overrides read with Hydra's grammar and checked against the app's config schema before Hydra composes.

- A config group choice that leaves the config roots (``backbone=../../x``, an absolute path, an interpolation) is
  refused, and an unknown ``backbone=`` choice is answered with the close names.
- A plain override of a key the schema lacks (``input.heigth=300``) or of a value its type cannot hold
  (``run=maybe``) is one featx error line (Hydra's own spans lines and suggests the ``+`` form); each value of a
  sweep is checked (Hydra would stop the sweep midway), keys below ``backbone.fpn`` and ``backbone.tokens`` too; a
  bool key takes true or false (or an interpolation), not OmegaConf's ``2`` or ``yes``.
- ``~`` of a list's item and a mapping that gives a key twice are refused.
- ``backbone.fpn.out_channels=128`` works as typed on a backbone without a neck (``fpn: null``): Hydra cannot set a
  key below a null node, so plain overrides below ``backbone.fpn`` and ``backbone.tokens`` are passed on as ``++``
  (set or add).

Example::

    overrides = parsed_overrides("featx", ["backbone=resnet18", "input.height=64"])
    check_plain_keys("featx", overrides, AppConfig)       # exits with one error line if a key or value is wrong
    plain_nested_overrides(["backbone.fpn.out_channels=128"])   # ['++backbone.fpn.out_channels=128']
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import typing
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.conf import HydraConf
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    Override,
    OverrideType,
    QuotedString,
)
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import (
    ValidationError,
)

from featx.cli.errors import fail
from featx.errors import first_line
from featx.spec.apps import BackboneNode
from featx.spec.config_files import backbone_names
from featx.spec.keys import suggest
from featx.spec.limits import quoted
from featx.spec.load import is_true_or_false, list_item, null_item_refusal, null_refusal
from featx.spec.overrides import deletes_list_item, duplicated_key, not_in_grammar
from featx.spec.schema import BackboneSpec, FpnSpec, TokenSpec

#: spec nodes that are null unless set: a plain override below them is passed to Hydra as ``++`` (set or add)
_NULLABLE_NODES = ("backbone.fpn.", "backbone.tokens.")
#: the schemas of those nodes (typed ``Any`` in the spec's schema, see :class:`~featx.spec.schema.BackboneSpec`)
_NULLABLE_SCHEMAS: Dict[str, type] = {"backbone.fpn": FpnSpec, "backbone.tokens": TokenSpec}
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


def choice_values(override: Override) -> List[str]:
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


def leaves_config_roots(choice: str) -> bool:
    path = PurePosixPath(choice.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or choice.startswith("~")


def parsed_overrides(app: str, arguments: Sequence[str]) -> List[Tuple[str, Override]]:
    """Each override of the command line with its parse by Hydra's grammar: the ``key=value`` ones, and each ``~key``
    one the grammar reads (a flag's value such as ``-cd '~/x'`` is none); flags left out. One whose mapping gives a
    key twice is refused (:func:`~featx.spec.overrides.duplicated_key`): Hydra's parser keeps the last value."""
    parsed = []
    for argument in arguments:
        if not argument.startswith("-") and "=" in argument:
            parsed.append((argument, _parsed(app, argument)))
            duplicate = duplicated_key(as_typed(argument))
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
        for choice in choice_values(override):
            if "${" in choice and (group == "backbone" or "/" in group):  # Hydra resolves it after this check
                fail(
                    app,
                    f"{where}{group}={choice}: a config choice is a name, not an interpolation; write the name "
                    f"(e.g. {group}=resnet50)",
                )
            if leaves_config_roots(choice):
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


def problem_with(key: str, schema: type, values: Sequence[object]) -> Optional[str]:
    """Why ``key`` cannot be set to ``values`` in ``schema`` (an app's config dataclass; ``backbone`` holds a
    :class:`BackboneNode`), or None: an unknown key, or a value OmegaConf refuses for its type, as Hydra's
    composition would, and null for a key (or a list's item) that takes none, naming the choices or what it takes
    (:func:`~featx.spec.load.null_refusal`; the spec layer checks the rest after composing). Keys below an untyped node
    are not judged."""
    parts = key.split(".")
    owner: Any = schema
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(owner)
        if part not in hints:
            return unknown_key(".".join(parts[: depth + 1]), list(hints))
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
        spec_key = parts[1:] if parts[0] == "backbone" else parts
        refusal = null_refusal(spec_key, hints[parts[-1]]) if value is None else None
        if refusal is not None:  # OmegaConf's "field 'norm' is not Optional" names no choice nor type
            return f"{key}: {refusal}"
        item_type = list_item(hints[parts[-1]])
        if isinstance(value, list) and item_type is not None and None in value:  # OmegaConf's "Invalid type assigned"
            return f"{key}[{value.index(None)}]: {null_item_refusal(item_type)}"
        if hints[parts[-1]] is bool and not is_true_or_false(value):  # OmegaConf takes 2, "yes" and "on" as true
            return f"{key}: must be true or false, got {quoted(value)}"
        try:
            node[parts[-1]] = value
        except (ValidationError, ValueError) as error:
            return f"{key}: {first_line(error)}"
    return None


def null_list_indexed(arguments: Sequence[str], schema: type) -> List[Tuple[str, str]]:
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


def override_values(override: Override) -> List[object]:
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
        problem = problem_with(key, schema, override_values(override))
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


def unknown_key(name: str, valid: Sequence[str]) -> str:
    """The refusal of the key ``name``, with a suggestion and the keys ``valid`` there (Hydra's ``_target_`` left
    out: featx sets it)."""
    keys = [key for key in valid if not key.startswith("_")]
    last = name.rpartition(".")[2]
    return f"{name}: unknown key{suggest(last, keys)} (valid here: {', '.join(keys)})"


def as_typed(argument: str) -> str:
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
