"""A composed spec node resolved with its ``${...}`` references to other nodes of its config, but no resolver run.

featx resolves a composed node's references (``device: ${device}``) as OmegaConf does, never a resolver: a resolver
reads the environment (``oc.env``) or runs code, and a value it returns would end up in the spec and in error
messages. Every string of the config that calls a resolver is replaced by a marker naming its key path, and the
node is resolved by OmegaConf in that copy, with OmegaConf's own rules for absolute, relative, chained, indexed and
nested references; a marker in the result is a resolver the node reaches.

Example::

    cfg = OmegaConf.create({"s": "${oc.env:HOME}", "bb": {"model": "${s}"}})
    resolve_without_resolvers(cfg.bb)    # SpecError: backbone.model: refers ... to s, which calls a resolver
"""

from __future__ import annotations

import secrets
from typing import Any, Iterator, List, Tuple, Union

from omegaconf import DictConfig, ListConfig, OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError, OmegaConfBaseException
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

from featx.errors import SpecError
from featx.spec.keys import key_path

Path = Tuple[Union[str, int], ...]


def calls_resolver(text: str) -> bool:
    """Whether OmegaConf would call a resolver to resolve ``text``, read with OmegaConf's own grammar: ``${name:...}``
    whatever builds the name (``${${r}:x}``, ``${oc.${r}:x}``, ``${my-res:x}``); escaped ``\\${`` is literal text.
    Text the grammar cannot read counts as a call (OmegaConf would not resolve it either)."""
    if "${" not in text:
        return False
    try:
        tree = grammar_parser.parse(text)
    except GrammarParseError:
        return True
    return _has_resolver(tree)


def _has_resolver(tree: Any) -> bool:
    if isinstance(tree, OmegaConfGrammarParser.InterpolationResolverContext):
        return True
    return any(_has_resolver(child) for child in getattr(tree, "children", None) or ())


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


def _marked(data: Any, path: Path, marker: str) -> Any:
    """``data`` with each string that calls a resolver replaced by ``marker<its key path>marker``."""
    if isinstance(data, str):
        return f"{marker}{'.'.join(map(str, path))}{marker}" if calls_resolver(data) else data
    if isinstance(data, dict):
        return {key: _marked(value, (*path, key), marker) for key, value in data.items()}
    if isinstance(data, list):
        return [_marked(value, (*path, index), marker) for index, value in enumerate(data)]
    return data


def _strings(data: Any, path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], str]]:
    """Every string value in ``data`` with its key path (list items as ``key[i]``)."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _strings(value, (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",))


def resolve_without_resolvers(node: DictConfig) -> Any:
    """``node`` as plain data with its references to its config resolved, as ``OmegaConf.to_container(node,
    resolve=True)`` gives it when no resolver is involved; SpecError naming the value that reaches a resolver (in
    the node, or through references to other nodes). OmegaConf's errors (a reference to a missing key) propagate.
    A node without references is returned as it is, without copying its config."""
    plain = OmegaConf.to_container(node, resolve=False)
    if not any("${" in text for _, text in _strings(plain)):
        return plain
    marker = f"<featx-resolver-{secrets.token_hex(8)}>"
    root = _marked(OmegaConf.to_container(node._get_root(), resolve=False), (), marker)
    copy: Any = OmegaConf.create(root, flags={"allow_objects": True})  # objects beside the spec stay as they are
    path = _path_in_root(node)
    for key in path:
        copy = copy[key]
    try:
        resolved = OmegaConf.to_container(copy, resolve=True)
    except OmegaConfBaseException as error:  # its key from the node, as the spec's keys are named
        prefix = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".") + "."
        full_key = str(getattr(error, "full_key", "") or "")
        if len(prefix) > 1 and full_key.startswith(prefix):
            full_key = error.full_key = full_key[len(prefix) :]
        if marker in str(error):  # a reference computed from a node that calls a resolver (${a.${b}})
            raise _reaches_resolver((full_key,) if full_key else (), str(error).split(marker)[1]) from None
        raise
    for where, text in _strings(resolved):
        if marker in text:
            raise _reaches_resolver(where, text.split(marker)[1])
    return resolved


def _reaches_resolver(where: Tuple[str, ...], reached: str) -> SpecError:
    return SpecError(
        key_path(*where),
        f"refers (directly or through other nodes) to {reached}, which calls an OmegaConf resolver (${{name:...}}); a "
        "backbone spec is data, and featx runs no resolver (they can read the environment). Put the value itself, "
        "or a reference to a node that holds one",
    )
