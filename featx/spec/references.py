"""Resolver calls a composed spec node reaches: in the node itself, or in the nodes its ``${...}`` references lead
to (``model: ${s}`` with ``s: ${oc.env:SECRET}`` elsewhere in the config). featx resolves a composed node's
references to its own config, never a resolver: a resolver reads the environment (``oc.env``) or runs code.

Example::

    cfg = OmegaConf.create({"s": "${oc.env:HOME}", "bb": {"model": "${s}"}})
    resolver_reached(cfg.bb)    # ResolverReach(where=('model',), through=('s',))
"""

from __future__ import annotations

import re
from typing import Any, Iterator, List, NamedTuple, Optional, Set, Tuple, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

#: ``${name:...}``: an OmegaConf resolver call (``oc.env`` reads the environment; others may run code)
RESOLVER_CALL = re.compile(r"\$\{\s*[A-Za-z_][\w.]*\s*:")
#: ``${a.b}`` (absolute), ``${.b}`` (beside the value), ``${..b}`` (one node up): a plain reference to a node
_NODE_REFERENCE = re.compile(r"\$\{(\.*)(\w+(?:\.\w+)*)\}")

Path = Tuple[Union[str, int], ...]


class ResolverReach(NamedTuple):
    """``where``: the key path (in the spec node) of the value that leads to a resolver; ``through``: the key path
    (from the config's root) of the referenced node that calls it, or None for a call in the value itself; a
    reference featx cannot follow (nested, indexed) has ``through == ("${...}",)``."""

    where: Tuple[str, ...]
    through: Optional[Tuple[str, ...]]


def _path_in_root(node: DictConfig) -> Path:
    """The key path of ``node`` from the root of its config."""
    path: List[Union[str, int]] = []
    child: Any = node
    parent: Any = child._get_parent()
    while parent is not None:
        keys = range(len(parent)) if isinstance(parent, ListConfig) else list(parent.keys())
        path.insert(0, next(key for key in keys if parent._get_node(key) is child))
        child, parent = parent, parent._get_parent()
    return tuple(path)


def _at(tree: Any, path: Path) -> Any:
    """The value at ``path`` in plain data, or None where the path leads nowhere (OmegaConf reports that itself)."""
    for key in path:
        if isinstance(tree, dict) and key in tree:
            tree = tree[key]
        elif isinstance(tree, list) and str(key).isdigit() and int(key) < len(tree):
            tree = tree[int(key)]
        else:
            return None
    return tree


def _strings(data: Any, path: Path) -> Iterator[Tuple[Path, str]]:
    """Every string value in ``data`` with its key path."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _strings(value, (*path, index))


def _shown(path: Path) -> Tuple[str, ...]:
    return tuple(str(key) for key in path)


def resolver_reached(node: DictConfig) -> Optional[ResolverReach]:
    """The first resolver call ``node`` makes or reaches through references to other nodes of its config, else
    None. A reference whose target is computed (``${a.${b}}``) or indexed (``${a[0]}``) counts as one: featx cannot
    tell where it leads without resolving it."""
    start = _path_in_root(node)
    tree = OmegaConf.to_container(node._get_root(), resolve=False)
    pending: List[Tuple[Path, Tuple[str, ...]]] = [(start, ())]  # (node to scan, the spec value that led there)
    seen: Set[Path] = set()
    while pending:
        path, origin = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for where, text in _strings(_at(tree, path), path):
            led_by = origin or _shown(where[len(start) :])
            if RESOLVER_CALL.search(text):
                return ResolverReach(led_by, None if path == start else _shown(where))
            for dots, target in _NODE_REFERENCE.findall(text):
                base = where[: -len(dots)] if dots else ()
                pending.append(((*base, *target.split(".")), led_by))
            if "${" in _NODE_REFERENCE.sub("", text.replace("\\${", "")):
                return ResolverReach(led_by, ("${...}",))
    return None
