"""A composed spec node resolved with its ``${...}`` references to other nodes of its config, but no resolver run.

featx resolves a composed node's references (``device: ${device}``) as OmegaConf does, never a resolver: a resolver
reads the environment (``oc.env``) or runs code, and a value it returns would end up in the spec and in error
messages. Every string of the config that calls a resolver is replaced by a marker naming its key path, and the
node is resolved by OmegaConf in that copy, with OmegaConf's own rules for absolute, relative, chained, indexed and
nested references; a marker in the result is a resolver the node reaches. Before that, what the node expands to is
measured with each node resolved once (OmegaConf resolves a reference again wherever it is used, so a chain of nodes
each referring ten times to the one before unrolls 10^n times): past the limits of a spec, SpecError names its key.

Example::

    cfg = OmegaConf.create({"s": "${oc.env:HOME}", "bb": {"model": "${s}"}})
    resolve_without_resolvers(cfg.bb)    # SpecError: backbone.model: refers ... to s, which calls a resolver
"""

from __future__ import annotations

import secrets
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Union

from omegaconf import Container, DictConfig, ListConfig, Node, OmegaConf, grammar_parser
from omegaconf._utils import _get_value, split_key
from omegaconf.errors import GrammarParseError, OmegaConfBaseException
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
from omegaconf.grammar_visitor import GrammarVisitor
from omegaconf.omegaconf import _select_one

from featx.errors import SpecError
from featx.spec.keys import key_path
from featx.spec.limits import MAX_SPEC_BYTES, MAX_SPEC_NODES

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


def _child_path(path: Tuple[str, ...], key: Any, item: bool) -> Tuple[str, ...]:
    """``path`` and a mapping's ``key`` (``a.b``), or a list's item ``key`` (``a.b[0]``)."""
    if not item:
        return (*path, str(key))
    return (*path[:-1], f"{path[-1]}[{key}]") if path else (f"[{key}]",)


def _strings(data: Any, path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], str]]:
    """Every string value in ``data`` with its key path (list items as ``key[i]``)."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, _child_path(path, key, item=False))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _strings(value, _child_path(path, index, item=True))


def resolve_without_resolvers(node: DictConfig) -> Any:
    """``node`` as plain data with its references to its config resolved, as ``OmegaConf.to_container(node,
    resolve=True)`` gives it when no resolver is involved; SpecError naming the value that reaches a resolver (in
    the node, or through references to other nodes) or that expands past :data:`MAX_SPEC_NODES` values and
    references or :data:`MAX_SPEC_BYTES` characters. OmegaConf's errors (a reference to a missing key) propagate.
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
    _Expansion().check(copy)
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
        "or a reference to a node that holds one; or, for a config of your own whose resolvers you trust, build it "
        "resolved: featx.build(OmegaConf.to_container(cfg.backbone, resolve=True))",
    )


#: how many ``${...}`` references in a row a value may go through (OmegaConf itself fails past about 60)
MAX_REFERENCE_DEPTH = 32


class _Unmeasured(Exception):
    """A reference the measure does not follow (a cycle, a missing key): OmegaConf's resolution stops with its own
    error there, before any work past it."""


class _Expansion:
    """What resolving a node of a config unrolls, measured before OmegaConf resolves it. OmegaConf resolves a
    reference again wherever it is used, so nodes that each refer ten times to the one before take 10^n steps for a
    few hundred characters of config. Here each node is resolved once, with OmegaConf's own grammar, key lookup and
    conversion, and what it unrolls remembered: its resolutions, values and characters, counted wherever it is used.
    Past :data:`MAX_SPEC_NODES` values and references or :data:`MAX_SPEC_BYTES` characters, SpecError names the key
    of the spec that reaches them.

    Example: ``_Expansion().check(OmegaConf.create({"t": "x", "s": "${t}${t}", "bb": {"m": "${s}"}}).bb)`` passes.
    """

    def __init__(self) -> None:
        self._where: Tuple[str, ...] = ()  # the key of the spec being measured
        self._resolved: Dict[int, Tuple[Node, int]] = {}  # id(node) -> (what it resolves to, resolutions unrolled)
        self._expanded: Dict[int, Tuple[int, int]] = {}  # id(node) -> (values and resolutions, characters)
        self._strings: Dict[int, int] = {}  # id(container) -> the length of its text in a string
        self._expanding: Set[int] = set()
        self._resolving: List[int] = []  # the references being resolved, outermost first
        self._frames: List[List[int]] = []  # [resolutions, characters] of each of them
        self._kept: List[Node] = []  # the nodes made here: alive while their ids are keys

    def check(self, node: Container) -> None:
        """Raise SpecError if ``node`` expands past the limits. A reference the measure cannot follow is left to
        OmegaConf's own error, which it raises before any work past it (the lookup of its parts raises Python's
        errors where OmegaConf's resolution wraps them: ``${l.x}`` of a list)."""
        try:
            self._expand(node, ())
        except SpecError:  # the refusal itself (a ValueError too)
            raise
        except (_Unmeasured, OmegaConfBaseException, RecursionError, LookupError, TypeError, ValueError):
            return

    def _expand(self, node: Node, where: Optional[Tuple[str, ...]] = None) -> Tuple[int, int]:
        """(values and resolutions, characters) ``node`` expands to, its references resolved and containers walked;
        ``where`` is the key of a node of the spec itself, named in an error (None inside what a reference reaches)."""
        if where is not None:
            self._where = where
        known = self._expanded.get(id(node))
        if known is not None:
            return known
        if id(node) in self._expanding:  # a container that refers to itself: OmegaConf's error
            raise _Unmeasured()
        self._expanding.add(id(node))
        try:
            if node._is_interpolation():
                target, resolutions = self._resolve(node)
                values, characters = self._expand(target)
                size = (resolutions + values, characters)
            elif isinstance(node, (DictConfig, ListConfig)) and not node._is_none() and not node._is_missing():
                size = self._expand_container(node, where)
            else:
                value = _get_value(node)
                size = (1, len(value) if isinstance(value, str) else 0)
        finally:
            self._expanding.discard(id(node))
        if where is None:
            self._expanded[id(node)] = size
        self._bound(*size)
        return size

    def _expand_container(
        self, node: Union[DictConfig, ListConfig], where: Optional[Tuple[str, ...]]
    ) -> Tuple[int, int]:
        """:meth:`_expand` of a container: itself, its keys and its values."""
        values, characters = 1, 0
        item = isinstance(node, ListConfig)
        keys: List[Any] = list(range(len(node))) if item else list(node.keys())
        for key in keys:
            inner = None if where is None else _child_path(where, key, item)
            child_values, child_characters = self._expand(node._get_node(key), inner)  # type: ignore[arg-type]
            values += child_values + (0 if item else 1)
            characters += child_characters + (0 if item else len(str(key)))
            self._bound(values, characters)
        return values, characters

    def _resolve(self, node: Node) -> Tuple[Node, int]:
        """What the interpolation ``node`` resolves to (as OmegaConf resolves it) and how many resolutions that
        unrolls, each reference it reaches resolved once."""
        known = self._resolved.get(id(node))
        if known is not None:
            return known
        parent = node._get_parent_container()
        if id(node) in self._resolving or parent is None:  # a loop of references: OmegaConf's error
            raise _Unmeasured()
        if len(self._resolving) >= MAX_REFERENCE_DEPTH:
            raise SpecError(
                key_path(*self._where),
                f"goes through more than {MAX_REFERENCE_DEPTH} ${{...}} references in a row; a backbone spec refers "
                "to a few nodes of its config",
            )
        self._resolving.append(id(node))
        self._frames.append([1, 0])
        try:
            visitor = GrammarVisitor(
                node_interpolation_callback=lambda key, memo: self._reference(parent, key),
                resolver_interpolation_callback=self._resolver,
                memo=None,
            )
            result = visitor.visit(grammar_parser.parse(_get_value(node)))
        finally:
            self._resolving.pop()
            resolutions = self._frames.pop()[0]
        target = parent._validate_and_convert_interpolation_result(
            parent=parent, value=node, key=node._key(), resolved=result, throw_on_resolution_failure=True
        )
        assert target is not None
        self._kept.append(target)
        self._resolved[id(node)] = (target, resolutions)
        return target, resolutions

    def _reference(self, parent: Container, reference: str) -> Node:
        """The node ``${reference}`` (in a value of ``parent``) names, found as OmegaConf finds it, each node on the
        way resolved once; its resolutions and characters are added to the resolution in progress."""
        root, key = parent._resolve_key_and_root(reference)
        node: Node = root
        resolutions = 1
        for part in split_key(key) if key else ():
            if not isinstance(node, Container):
                raise _Unmeasured()
            child, _ = _select_one(node, part, throw_on_missing=True, throw_on_type_error=True)
            if child is None:
                raise _Unmeasured()
            if child._is_interpolation():
                child, unrolled = self._resolve(child)
                resolutions += unrolled
            node = child
        frame = self._frames[-1]
        frame[0] += resolutions
        frame[1] += self._text_length(node)
        self._bound(*frame)
        return node

    def _text_length(self, node: Node) -> int:
        """The length of ``node`` as text in a string (OmegaConf writes a container unresolved)."""
        if not isinstance(node, Container):
            return len(str(_get_value(node)))
        if id(node) not in self._strings:
            self._strings[id(node)] = len(str(node))
        return self._strings[id(node)]

    @staticmethod
    def _resolver(*_: Any) -> Any:
        raise _Unmeasured()  # none is left: each value that calls one is a marker in the copy measured

    def _bound(self, values: int, characters: int) -> None:
        if values > MAX_SPEC_NODES:
            self._refuse(f"{MAX_SPEC_NODES} values and references")
        if characters > MAX_SPEC_BYTES:
            self._refuse(f"{MAX_SPEC_BYTES} characters")

    def _refuse(self, what: str) -> None:
        raise SpecError(
            key_path(*self._where),
            f"expands to more than {what} (each ${{...}} reference counted wherever it is used, as OmegaConf resolves "
            "it); a backbone spec is a few dozen values",
        )
