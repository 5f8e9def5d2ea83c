"""Checking a spec's stages against the model's own forward: the modules the stages run must be exactly the ones
the model runs, in the order it runs them, up to the last stage kept.

Two checks, both on the meta device:

- every container above a member must run its children in order (``nn.Sequential``, or a ``ModuleList`` iterated
  by its parent): a member inside a block whose forward does more (a residual add, a concatenation) would run
  without the rest of that block;
- the model's own forward (eval mode, at its evaluation size) is recorded, and the modules it calls at the level of
  the members must be the members, in their order, with nothing between them or before the first. Side branches the
  model runs in training only (Inception's ``AuxLogits``) are not called in eval mode, so they may be left out.

A token model's ``tokens`` spec declares what its forward does beyond calling modules (flattening the patch map,
the prefix tokens, the position embedding): featx reproduces those steps, so the module that owns the position
embedding (torchvision's ``encoder``) is accepted as a container.

Example::

    check_execution_order(model, members, (224, 224))
    # SpecError: backbone.stages.c2: the model's forward runs 'layer1' after 'maxpool', but no stage lists it ...
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set

import torch
from torch import nn

from featx.construct.members import StageMembers
from featx.construct.probe import Size, input_channels, meta_input, shape_only_layers
from featx.errors import SpecError
from featx.spec.keys import key_path


def runs_children_in_order(module: nn.Module) -> bool:
    """True for containers whose forward is exactly "each child in turn" (``nn.Sequential`` not overriding it)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def has_no_forward(module: nn.Module) -> bool:
    """True for pure containers (``nn.ModuleList``, ``nn.ModuleDict``) that cannot be called themselves."""
    return type(module).forward is nn.Module.forward


def _ancestors(path: str) -> List[str]:
    parts = path.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _check_containers(model: nn.Module, members: Sequence[StageMembers], reproduced: Sequence[str]) -> Set[str]:
    """The containers above the members (their paths); SpecError for one whose forward is more than a chain,
    unless featx reproduces what it does beyond that (``reproduced``: a token model's position embedding owner)."""
    containers: Set[str] = set()
    for stage in members:
        for path in stage.paths:
            for ancestor in _ancestors(path):
                module = model.get_submodule(ancestor)
                if not (runs_children_in_order(module) or has_no_forward(module) or ancestor in reproduced):
                    raise SpecError(
                        key_path("stages", stage.name),
                        f"{path!r} is inside {ancestor!r} ({type(module).__name__}), whose forward does more than run "
                        f"its children in order (e.g. a residual connection), so {path!r} cannot run on its own; "
                        f"list {ancestor!r} as a whole",
                    )
                containers.add(ancestor)
    return containers


def _recorded_calls(model: nn.Module, size: Size) -> tuple[List[str], Optional[Exception]]:
    """The paths of the modules the model's own forward calls, in order, on a meta input of ``size`` (eval mode);
    and the exception that stopped it, if one did (a classifier may not take every size: what ran still counts)."""
    calls: List[str] = []
    handles = []
    for path, module in model.named_modules():
        if path:
            handles.append(module.register_forward_pre_hook(lambda _module, _inputs, path=path: calls.append(path)))
    training = model.training
    failure: Optional[Exception] = None
    try:
        model.eval()
        with shape_only_layers(model), torch.no_grad():
            model(meta_input(size, input_channels(model)))
    except Exception as error:  # noqa: BLE001 - reported by the caller if it stopped before the last member
        failure = error
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return calls, failure


def _frontier(calls: Sequence[str], containers: Set[str], members: Set[str]) -> List[str]:
    """The calls at the members' level: modules whose parent is the root or a container above a member, that are
    neither such containers themselves nor inside a member; each once, in the order first called."""
    seen: Dict[str, None] = {}
    for path in calls:
        parent = path.rpartition(".")[0]
        inside_member = any(ancestor in members for ancestor in _ancestors(path))
        if path in containers or inside_member or (parent and parent not in containers):
            continue
        seen.setdefault(path, None)
    return list(seen)


def check_execution_order(
    model: nn.Module, members: Sequence[StageMembers], size: Size, reproduced: Sequence[str] = ()
) -> None:
    """Raise :class:`SpecError` unless the stages' modules are what ``model``'s own forward runs, in its order, from
    the input to the last member (see the module docstring). ``reproduced`` names containers whose extra work
    featx does itself (a token model's position embedding is added by featx's token embedding)."""
    containers = _check_containers(model, members, reproduced)
    listed = [(stage.name, path) for stage in members for path in stage.paths]
    calls, failure = _recorded_calls(model, size)
    ran = _frontier(calls, containers, {path for _, path in listed})
    for position, (stage, path) in enumerate(listed):
        key = key_path("stages", stage)
        found = ran[position] if position < len(ran) else None
        if found == path:
            continue
        if path not in ran:
            stopped = f" (it stopped with {type(failure).__name__})" if failure is not None else ""
            raise SpecError(
                key,
                f"the model's own forward at {size[0]}x{size[1]} (eval mode) never runs {path!r}{stopped}; a stage "
                "may only list modules the model runs on its way from the input",
            )
        before = f"after {listed[position - 1][1]!r}" if position else "first"
        if found is not None and found not in {p for _, p in listed}:
            raise SpecError(
                key,
                f"the model's forward runs {found!r} {before}, but no stage lists it: the stages would skip it. "
                "List every module the forward runs, in its order (a stage may end after any of them)",
            )
        raise SpecError(
            key,
            f"{path!r} is listed {before}, but the model's forward runs {found!r} there: list the modules in the "
            "order the forward runs them",
        )
