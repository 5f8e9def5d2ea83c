"""Cutting a model into stages: resolving each stage's members (a slice of ``source``'s children or module
paths from the model root) and wrapping them in ``nn.Sequential`` containers that share the model's modules.

Example::

    members = resolve_members(model, spec)     # [StageMembers(name="c2", paths=("conv1", ..., "layer1")), ...]
    containers = stage_containers(model, members)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from featx.errors import SpecError
from featx.nn.feature_info import StageInfo
from featx.spec.keys import key_path, suggest
from featx.spec.limits import quoted
from featx.spec.schema import BackboneSpec


@dataclass(frozen=True)
class StageMembers:
    """The modules of one stage, as paths from the model root, and how the spec named them."""

    name: str
    paths: Tuple[str, ...]
    covers: str


def _children_list(module: nn.Module) -> str:
    names = [name for name, _ in module.named_children()]
    return ", ".join(names) if names else "(none)"


def find_module(model: nn.Module, path: str, key: str) -> nn.Module:
    """The module at ``path`` (dotted, from the root); SpecError at ``key`` naming the missing child and the
    children there."""
    module = model
    walked: List[str] = []
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            where = f"'{'.'.join(walked)}'" if walked else "the model root"
            raise SpecError(
                key,
                f"{quoted(path)} not found: {where} has no child {quoted(part)}{suggest(part, list(children))} "
                f"(its children: {_children_list(module)})",
            )
        module = children[part]
        walked.append(part)
    return module


def _slice_members(name: str, bounds: List[int], source: nn.Module, source_path: str) -> StageMembers:
    start, end = bounds
    children = [child for child, _ in source.named_children()]
    label = f"'{source_path}'" if source_path else "the model root"
    if end > len(children):
        raise SpecError(
            key_path("stages", name, "slice"), f"end {end} is past the end of {label} ({len(children)} children)"
        )
    prefix = f"{source_path}." if source_path else ""
    paths = tuple(prefix + child for child in children[start:end])
    return StageMembers(name, paths, f"{source_path or 'model'}[{start}:{end}]")


def _check_slice_follows(
    name: str, start: int, previous: "StageMembers | None", children: List[str], prefix: str
) -> None:
    """A slice after a ``modules`` stage that ends on a child of ``source`` must start at the next child."""
    if previous is None or not previous.paths[-1].startswith(prefix):
        return
    last = previous.paths[-1][len(prefix) :]
    if last in children and start != children.index(last) + 1:
        raise SpecError(
            key_path("stages", name, "slice"),
            f"starts at {start} but stage {quoted(previous.name)} ends on child {children.index(last)} "
            f"({quoted(last)}); stages feed each other, so the slice must start right after it",
        )


def _check_disjoint(members: List[StageMembers]) -> None:
    owners: Dict[str, str] = {}
    for stage in members:
        for path in stage.paths:
            for owned, owner in owners.items():
                if path == owned or path.startswith(owned + ".") or owned.startswith(path + "."):
                    where = "listed twice in this stage" if owner == stage.name else f"in stage {quoted(owner)} too"
                    raise SpecError(
                        _member_key(stage),
                        f"{quoted(path)} overlaps {quoted(owned)} ({where}); a module belongs to one stage, once",
                    )
            owners[path] = stage.name


def _member_key(stage: StageMembers) -> str:
    return key_path("stages", stage.name, "slice" if "[" in stage.covers else "modules")


def _check_child_names(members: List[StageMembers]) -> None:
    """A stage's container names each member by its path with ``.`` as ``_``: two paths that give one name would
    keep one module only, and a name ``nn.Sequential`` has as an attribute cannot be a child's."""
    container = nn.Sequential()
    for stage in members:
        named: Dict[str, str] = {}
        for path in stage.paths:
            child = path.replace(".", "_")
            if child in named:
                raise SpecError(
                    _member_key(stage),
                    f"{quoted(named[child])} and {quoted(path)} would both be named {quoted(child)} in the stage (a "
                    "member is named by its path, '.' as '_'); list a module that holds both instead",
                )
            if hasattr(container, child):
                raise SpecError(
                    _member_key(stage),
                    f"{quoted(path)} would be named {quoted(child)} in the stage, a name nn.Sequential uses itself; "
                    "list the module that holds it instead",
                )
            named[child] = path


def resolve_members(model: nn.Module, spec: BackboneSpec) -> List[StageMembers]:
    """Each stage's member paths, checked against ``model``; raises :class:`SpecError` naming the key."""
    source_path = spec.source or ""
    source = find_module(model, source_path, key_path("source")) if source_path else model
    members: List[StageMembers] = []
    children = [child for child, _ in source.named_children()]
    prefix = f"{source_path}." if source_path else ""
    for name, stage in spec.stages.items():
        if stage.slice is not None:
            _check_slice_follows(name, stage.slice[0], members[-1] if members else None, children, prefix)
            members.append(_slice_members(name, list(stage.slice), source, source_path))
            continue
        modules = list(stage.modules or [])
        for position, path in enumerate(modules):
            find_module(model, path, key_path("stages", name, f"modules[{position}]"))
        members.append(StageMembers(name, tuple(modules), ", ".join(modules)))
    _check_disjoint(members)
    _check_child_names(members)
    return members


def stage_containers(
    model: nn.Module,
    members: Sequence[StageMembers | StageInfo],
    embedding: Optional[Callable[[nn.Module], nn.Module]] = None,
    embed_path: str = "",
) -> "OrderedDict[str, nn.Sequential]":
    """One ``nn.Sequential`` per stage holding ``model``'s own member modules (children named by path,
    ``.`` → ``_``). For a token model, the module at ``embed_path`` is replaced by ``embedding(model)`` (the patch
    embedding with its prefix tokens and position embedding)."""

    def member(path: str) -> nn.Module:
        return embedding(model) if embedding is not None and path == embed_path else model.get_submodule(path)

    return OrderedDict(
        (stage.name, nn.Sequential(OrderedDict((path.replace(".", "_"), member(path)) for path in stage.paths)))
        for stage in members
    )
