"""Hydra-grammar overrides applied to plain spec data, with Hydra's public override parser and OmegaConf's public
``update``, so ``featx.build(..., overrides=[...])`` reads overrides in the grammar of the ``featx`` app's command
line: ``+key=value`` is taken where the app takes it (a key unset or null, or a list or mapping value), and a mapping
value replaces the node, with or without '+' (the apps' composition merges it in, see docs/python.md).

Example::

    apply_overrides({"model": "resnet50", "fpn": None}, ["fpn.out_channels=128", "+seed=1", "~fpn"])
    apply_plain_overrides({"model": "resnet50", "fpn": {"out_channels": 256}}, ["fpn.out_channels=128"])
    # {'model': 'resnet50', 'fpn': {'out_channels': 128}}, as apply_overrides gives it, without OmegaConf
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.overrides_visitor import HydraOverrideVisitor
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from hydra.grammar.gen.OverrideLexer import CommonTokenStream, InputStream, OverrideLexer  # type: ignore[attr-defined]
from hydra.grammar.gen.OverrideParser import OverrideParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from featx.errors import SpecError, first_line
from featx.spec.keys import key_path
from featx.spec.limits import MAX_OVERRIDE_CHARS, MAX_OVERRIDES, quoted


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    """Parse ``overrides`` with Hydra's grammar; a malformed one is a :class:`SpecError` naming it."""
    is_list = isinstance(overrides, Sequence) and not isinstance(overrides, (str, bytes))
    if not is_list or not all(isinstance(line, str) for line in overrides):
        raise SpecError(
            key_path("overrides"), f"expected a list of strings such as ['frozen_stages=1'], got {quoted(overrides)}"
        )
    if len(overrides) > MAX_OVERRIDES:
        raise SpecError(key_path("overrides"), f"{len(overrides)} overrides; at most {MAX_OVERRIDES} are taken")
    long = next((index for index, line in enumerate(overrides) if len(line) > MAX_OVERRIDE_CHARS), None)
    if long is not None:
        raise SpecError(
            key_path("overrides"),
            f"override {long} has {len(overrides[long])} characters; at most {MAX_OVERRIDE_CHARS} are taken "
            f"({quoted(overrides[long])})",
        )
    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed += parser.parse_overrides([line])
        except (HydraException, ValueError, RecursionError) as error:  # RecursionError: brackets nested too deep
            raise SpecError(key_path("overrides"), not_in_grammar(line, error)) from None
        duplicate = duplicated_key(line)
        if duplicate is not None:
            raise SpecError(key_path("overrides"), duplicate)
    return parsed


def duplicated_key(line: str) -> Optional[str]:
    """Why override ``line``, which Hydra's grammar parses, is refused for a mapping in it that gives one key twice
    (Hydra's parser keeps the last value, where a spec file is refused), else None. Keys are compared as Hydra reads
    them (``1`` and ``true`` are a number and a bool). Example: ``duplicated_key("fpn={a:1,a:2}")``."""
    if "{" not in line:
        return None
    tree = OverrideParser(CommonTokenStream(OverrideLexer(InputStream(line)))).override()
    visitor = HydraOverrideVisitor(OverridesParser.create().functions)
    pending: list[Any] = [tree]
    while pending:  # depth first, in the order of the text (a loop: the brackets may nest deeply)
        node = pending.pop()
        if isinstance(node, OverrideParser.DictContainerContext):
            seen = set()
            for pair in node.dictKeyValuePair():
                key = visitor.visitDictKey(pair.dictKey())
                if key in seen:
                    return f"{quoted(line)[1:-1]}: key {quoted(key)} is given twice in a mapping; give each key once"
                seen.add(key)
        pending.extend(reversed(getattr(node, "children", None) or []))
    return None


def deletes_list_item(line: str, list_key: str) -> str:
    """Why the override ``line`` (``~key``), whose key is an item of the list ``list_key``, is refused (OmegaConf's
    ``del`` raises a bare TypeError there). Example: ``deletes_list_item("~fpn.in_stages.0", "fpn.in_stages")``."""
    return (
        f"{line!r} deletes an item of the list {list_key}; an override deletes keys of a mapping only: give the "
        f"whole list ({list_key}=[...])"
    )


def not_in_grammar(line: str, error: BaseException) -> str:
    """Why override ``line`` is refused when Hydra's grammar cannot parse it, with how to quote a value."""
    reason = "nested too deeply" if isinstance(error, RecursionError) else first_line(error)
    return (
        f"{quoted(line)[1:-1]}: not an override in Hydra's grammar ({reason}); quote values holding "
        "special characters (key='a value'), see https://hydra.cc/docs/advanced/override_grammar/basic/"
    )


def _apply(config: DictConfig, override: Override) -> None:
    key = override.key_or_group
    current = OmegaConf.select(config, key, throw_on_missing=False)
    present = current is not None
    if override.is_delete():
        if not present:
            raise SpecError(key_path(key), f"{override.input_line!r} deletes a key that is not set")
        if override.value() is not None and current != override.value():  # ``~key=value``: only while it holds value
            raise SpecError(
                key_path(key),
                f"{override.input_line!r} deletes the key only while its value is {quoted(override.value())}; "
                f"it is {quoted(_plain(current))}",
            )
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(config, parent_key) if parent_key else config
        if isinstance(parent, ListConfig):  # OmegaConf's ``del`` raises a bare TypeError, in Hydra's apps too
            raise SpecError(key_path(key), deletes_list_item(str(override.input_line), parent_key))
        with open_dict(config):
            del parent[leaf]
        return
    value = override.value()
    if override.type is OverrideType.ADD and present and not isinstance(value, (dict, list)):
        # Hydra's rule (its ``_apply_overrides_to_config``): ``+key`` takes a key that is unset or null, or a list
        # or mapping value; a scalar on a key already set is refused
        raise SpecError(
            key_path(key),
            f"{override.input_line!r} adds a key that is already set; drop the '+' "
            "(or write '++' to set it either way)",
        )
    # ``key=value`` (with '+' or '++' too) sets the value: a mapping replaces the mapping (no merge), so
    # stages={c2: ...} means only c2
    OmegaConf.update(config, key, value, merge=False, force_add=True)


def _plain(value: Any) -> Any:
    """A selected node as plain data (for a message)."""
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> DictConfig:
    """``data`` with ``overrides`` applied, untyped (so ``fpn.out_channels=128`` works on ``fpn: null``; the typed
    merge that follows rejects unknown keys and wrong types)."""
    config = OmegaConf.create(data)
    for override in parse_overrides(overrides):
        if override.is_sweep_override():
            raise SpecError(
                key_path(override.key_or_group), f"{override.input_line!r} is a sweep; build takes one value"
            )
        if override.package is not None:
            raise SpecError(key_path(override.key_or_group), f"{override.input_line!r}: a spec override has no package")
        try:
            _apply(config, override)
        except (HydraException, OmegaConfBaseException) as error:
            raise SpecError(key_path(override.key_or_group), first_line(error)) from None
        except RecursionError:  # a value Hydra's parser took, nested deeper than OmegaConf's recursion goes
            raise SpecError(
                key_path(override.key_or_group), f"{quoted(override.input_line)} is nested too deeply"
            ) from None
    return config


#: what :func:`apply_plain_overrides` sets: a key of dotted names (OmegaConf's key grammar has more: ``a[0]``, ``..a``)
_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")
_PRIMITIVES = (str, int, float, bool, type(None))


def _is_plain(data: Any) -> bool:
    """``data`` holds only dicts with string keys, lists, strings, numbers, bools and None (by exact type): what
    ``OmegaConf.create`` takes and ``OmegaConf.to_container(..., resolve=False)`` gives back equal."""
    if type(data) is dict:
        return all(type(key) is str and _is_plain(value) for key, value in data.items())
    if type(data) is list:
        return all(_is_plain(item) for item in data)
    return type(data) in _PRIMITIVES


def apply_plain_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Optional[Dict[str, Any]]:
    """``OmegaConf.to_container(apply_overrides(data, overrides), resolve=False)`` without OmegaConf, where that is
    plainly the same: ``data`` is plain data (dicts with string keys, lists, scalars) and each override is
    ``key=value`` or ``key.sub=value`` (no ``+``, ``~``, sweep or package) of a string (no interpolation), number,
    bool or null, whose parents are mappings or null in the data. None otherwise: call :func:`apply_overrides`.
    Malformed overrides raise as there; ``data`` is not changed."""
    if not _is_plain(data):
        return None
    result = dict(data)
    for override in parse_overrides(overrides):
        key = override.key_or_group
        simple = override.type is OverrideType.CHANGE and override.package is None and not override.is_sweep_override()
        if not simple or not _PLAIN_KEY.fullmatch(key):
            return None
        value = override.value()
        if type(value) not in _PRIMITIVES or (isinstance(value, str) and "${" in value):
            return None  # an interpolation: OmegaConf resolves it where a later override selects the key
        *parents, leaf = key.split(".")
        node = result
        for name in parents:
            child = node.get(name, ...)
            if child is None:  # as OmegaConf.update does: ``fpn.out_channels=128`` on ``fpn: null`` makes a mapping
                child = {}
            if type(child) is not dict:  # a missing key, a scalar, a list: left to OmegaConf
                return None
            node[name] = node = dict(child)  # a copy: the caller's data (and YAML aliases) stay as they were
        node[leaf] = value
    return result
