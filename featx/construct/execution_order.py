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

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor, nn

from featx.construct.members import StageMembers
from featx.construct.probe import Size, input_channels, meta_input, shape_only_layers
from featx.errors import SpecError, first_line
from featx.spec.keys import key_path
from featx.spec.limits import shortened


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
                    owned = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
                    held = ", ".join(repr(f"{ancestor}.{name}") for name, _ in owned)
                    raise SpecError(
                        key_path("stages", stage.name),
                        f"{path!r} is inside {ancestor!r} ({type(module).__name__}), whose forward does more than run "
                        f"its children in order (e.g. a residual connection), so {path!r} cannot run on its own; "
                        f"list {ancestor!r} as a whole"
                        + (
                            f"; or, if its extra step adds {held} (held by it itself) as a token model's position "
                            "embedding, declare that as tokens.position"
                            if owned
                            else ""
                        ),
                    )
                containers.add(ancestor)
    return containers


def _check_members_hold_no_token_parameter(
    model: nn.Module, members: Sequence[StageMembers], declared: Sequence[str]
) -> None:
    """SpecError for a member that holds a token model's declared parameter (torchvision's ``encoder``, which owns
    the position embedding): featx's token embedding applies it, and the member's own forward would again."""
    for stage in members:
        for path in stage.paths:
            held = next((name for name in declared if name.startswith(path + ".")), None)
            if held is not None:
                inside = [f"{path}.{name}" for name, _ in model.get_submodule(path).named_children()]
                raise SpecError(
                    key_path("stages", stage.name),
                    f"{path!r} holds {held!r}, a token parameter declared under tokens, which featx's token "
                    f"embedding applies itself: run as a member, {path!r} would apply it a second time; list the "
                    f"modules inside it instead ({shortened(', '.join(inside))})",
                )


def _check_owned_tensors(
    model: nn.Module, members: Sequence[StageMembers], containers: Set[str], declared: Sequence[str]
) -> None:
    """SpecError for a parameter or buffer held by the model root or a container above the members itself (not by a
    child) that ``declared`` (a token model's prefix and position parameters) does not name: the forward uses it
    between the modules it calls (a position embedding added to a stage's output), which the stages would skip."""
    for owner in ["", *sorted(containers)]:
        module = model.get_submodule(owner)
        owned = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        undeclared = [f"{owner}.{name}" if owner else name for name, _ in owned]
        undeclared = [path for path in undeclared if path not in declared]
        if undeclared:
            raise SpecError(
                key_path("stages", members[0].name),
                f"{'the model root' if not owner else repr(owner)} holds {', '.join(map(repr, undeclared))} itself: "
                "its forward uses them between the modules it calls (e.g. a position embedding added to a stage's "
                "output), which the stages would skip; a token model declares its prefix and position parameters "
                "under tokens, other models cannot be sliced there",
            )


Shape = Tuple[int, ...]


#: which tensor, in which state: ``(id, version)`` of a tensor while the recorded forward holds it
TensorState = Tuple[int, int]


@dataclass(frozen=True)
class Call:
    """One module call of a recorded forward: the module's path, the shapes of its first input and of its output
    (``None`` where they are not tensors), and the other arguments it was given (``1``, ``rope``), None and False
    left out; which tensor its first input and its output were (:data:`TensorState`)."""

    path: str
    input_shape: Optional[Shape]
    output_shape: Optional[Shape]
    extra_arguments: Tuple[str, ...] = ()
    input_state: Optional[TensorState] = None
    output_state: Optional[TensorState] = None


def _shape(value: object) -> Optional[Shape]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _input_shape(inputs: tuple) -> Optional[Shape]:
    return _shape(inputs[0]) if inputs else None


def _extra_arguments(arguments: tuple, keywords: Dict[str, Any]) -> Tuple[str, ...]:
    """The arguments after the first that are not None or False (a rotary embedding, a grid size, a flag), by
    position (``"1"``) or keyword (``"rope"``): the stages would call the module without them."""

    def given(value: object) -> bool:
        return value is not None and value is not False

    positional = [str(index) for index, value in enumerate(arguments) if index and given(value)]
    return (*positional, *(name for name, value in keywords.items() if given(value)))


class Recording(NamedTuple):
    """The model's own forward, recorded: every module call in call order; the exception that stopped the forward,
    if one did (a classifier may not take every size: what ran still counts); which tensor the input was."""

    calls: List[Call]
    failure: Optional[Exception]
    input_state: Optional[TensorState]


def recorded_calls(model: nn.Module, size: Size) -> Recording:
    """The model's own forward on a meta input of ``size`` (eval mode), recorded. Each call's input is recorded
    before the module's own forward pre-hooks run (the stages run them too)."""
    calls: List[Call] = []
    handles = []
    held: List[object] = []  # every tensor seen stays alive during the forward, so no two share an id

    def state(value: object) -> Optional[TensorState]:
        if not isinstance(value, torch.Tensor) or value.is_inference():  # an inference tensor has no version
            return None
        held.append(value)
        return id(value), value._version

    def before(path: str, arguments: tuple, keywords: Dict[str, Any]) -> None:  # returning a value would replace them
        first = arguments[0] if arguments else None
        calls.append(
            Call(path, _input_shape(arguments), None, _extra_arguments(arguments, keywords), input_state=state(first))
        )
        opened.append(len(calls) - 1)

    def after(output: object) -> None:
        position = opened.pop()
        calls[position] = dataclasses.replace(calls[position], output_shape=_shape(output), output_state=state(output))

    opened: List[int] = []
    for path, module in model.named_modules():
        if path:
            handles.append(
                module.register_forward_pre_hook(
                    lambda _module, args, kwargs, path=path: before(path, args, kwargs), with_kwargs=True, prepend=True
                )
            )
            handles.append(module.register_forward_hook(lambda _module, _args, output: after(output)))
    training = model.training
    failure: Optional[Exception] = None
    input_state: Optional[TensorState] = None
    try:
        model.eval()
        # inference_mode off: a build inside ``torch.inference_mode()`` records the same (tensors keep versions)
        with shape_only_layers(model), torch.inference_mode(False), torch.no_grad():
            x = meta_input(size, input_channels(model))
            input_state = state(x)
            model(x)
    except Exception as error:  # noqa: BLE001 - reported by the caller if it stopped before what it needs
        failure = error
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return Recording(calls, failure, input_state)


def _stage_inputs(
    model: nn.Module, paths: Sequence[str], run_stages: Callable[[Tensor], object], size: Size
) -> Dict[str, Any]:
    """The shape of each member's first input when the stages run on a meta input of ``size``."""
    inputs: Dict[str, Any] = {}

    def record(path: str, arguments: tuple) -> None:  # a pre-hook's return value would replace the inputs
        inputs.setdefault(path, _input_shape(arguments))

    handles = [
        model.get_submodule(path).register_forward_pre_hook(
            lambda _module, args, path=path: record(path, args), prepend=True
        )
        for path in paths
    ]
    try:
        with shape_only_layers(model), torch.no_grad():
            run_stages(meta_input(size, input_channels(model)))
    except Exception:  # noqa: BLE001 - the stage probe reports stages that fail; here only what ran is compared
        pass
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def frontier(calls: Sequence[str], containers: Set[str], members: Optional[Set[str]] = None) -> List[str]:
    """The calls at the members' level: modules whose parent is the root or a container above a member, that are
    neither such containers themselves nor inside a member; each once, in the order first called."""
    seen: Dict[str, None] = {}
    for path in calls:
        parent = path.rpartition(".")[0]
        inside_member = members is not None and any(ancestor in members for ancestor in _ancestors(path))
        if path in containers or inside_member or (parent and parent not in containers):
            continue
        seen.setdefault(path, None)
    return list(seen)


def check_execution_order(
    model: nn.Module,
    members: Sequence[StageMembers],
    size: Size,
    reproduced: Sequence[str] = (),
    run_stages: Optional[Callable[[Tensor], object]] = None,
    stage_size: Optional[Size] = None,
    resized: Sequence[str] = (),
    declared: Sequence[str] = (),
    declared_size: bool = False,
    chained: bool = False,
) -> None:
    """Raise :class:`SpecError` unless the stages' modules are what ``model``'s own forward runs, in its order, from
    the input to the last member (see the module docstring). ``reproduced`` names containers whose extra work
    featx does itself (a token model's position embedding is added by featx's token embedding). With
    ``run_stages`` (the stages applied in turn), each member must also get inputs of the shape the model's own
    forward gives it: a forward that reshapes between two modules (flattening, picking the class token) is refused
    where the stages would skip that. The stages run at ``stage_size`` (default ``size``); ``resized`` are members
    whose input featx resizes on purpose (a token model's embedding at ``tokens.stride``). The root and the
    containers above the members may hold no parameter or buffer themselves beyond ``declared`` (a token model's).
    ``declared_size``: ``size`` is the spec's ``input_size``, which a forward that fails before a member is blamed
    on. ``chained``: each member must get the very tensor the member before it returned, unchanged (a model that is a
    chain of modules; a token model's forward reshapes between its modules, which featx reproduces)."""
    _check_members_hold_no_token_parameter(model, members, declared)
    containers = _check_containers(model, members, reproduced)
    _check_owned_tensors(model, members, containers, declared)
    listed = [(stage.name, path) for stage in members for path in stage.paths]
    recorded, failure, input_state = recorded_calls(model, size)
    own_inputs: Dict[str, Any] = {}
    listed_paths = {path for _, path in listed}
    for call in recorded:
        own_inputs.setdefault(call.path, call.input_shape)
        if call.path in listed_paths and call.extra_arguments:
            stage = next(stage for stage, path in listed if path == call.path)
            raise SpecError(
                key_path("stages", stage),
                f"the model's own forward calls {call.path!r} with more than its input (arguments: "
                f"{', '.join(call.extra_arguments)}, e.g. a rotary position embedding); the stages give each module "
                "the previous one's output only, so it would run without them",
            )
    ran = frontier([call.path for call in recorded], containers, {path for _, path in listed})
    for position, (stage, path) in enumerate(listed):
        key = key_path("stages", stage)
        found = ran[position] if position < len(ran) else None
        if found == path:
            continue
        if path not in ran:
            if failure is not None and declared_size:
                raise SpecError(
                    key_path("input_size"),
                    f"the model's own forward fails at {size[0]}x{size[1]} before it runs {path!r} "
                    f"({type(failure).__name__}: {shortened(first_line(failure))}); the model may take one input "
                    "size only, or need a larger one",
                )
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
    if run_stages is not None:
        checked = [(stage, path) for stage, path in listed if path not in resized]
        _check_member_inputs(model, checked, own_inputs, run_stages, size, stage_size or size)
    if chained:  # after the shapes, whose message says more where they differ
        _check_handed_on(recorded, listed, input_state)


def _check_handed_on(
    recorded: Sequence[Call], listed: Sequence[Tuple[str, str]], input_state: Optional[TensorState]
) -> None:
    """SpecError unless the model's own forward gives the first member the model's input and each later member the
    tensor the member before it returned, unchanged: an operation between them that keeps the shape (an activation,
    a scaling, a flip, an in-place add) would be skipped by the stages, which pass each output straight on."""
    first: Dict[str, Call] = {}
    for call in recorded:
        first.setdefault(call.path, call)
    handed = [("the model's input", input_state)] + [
        (f"the output of {path!r}", first[path].output_state) for _, path in listed
    ]
    for (what, returned), (stage, following) in zip(handed, listed, strict=False):
        given = first[following].input_state
        if returned is not None and given is not None and returned != given:
            change = f"changes {what} in place" if returned[0] == given[0] else f"computes on {what}"
            raise SpecError(
                key_path("stages", stage),
                f"the model's own forward {change} before it calls {following!r} (an operation that is not a "
                "module: an activation, a scaling, a flip); the stages pass each module's output straight to the "
                "next, so they would skip it",
            )


def _check_member_inputs(
    model: nn.Module,
    listed: Sequence[Tuple[str, str]],
    own_inputs: Dict[str, Any],
    run_stages: Callable[[Tensor], object],
    size: Size,
    stage_size: Size,
) -> None:
    stage_inputs = _stage_inputs(model, [path for _, path in listed], run_stages, stage_size)
    for stage, path in listed:
        own, ours = own_inputs.get(path), stage_inputs.get(path)
        if own is not None and ours is not None and own != ours:
            raise SpecError(
                key_path("stages", stage),
                f"the model's own forward at {size[0]}x{size[1]} gives {path!r} an input of shape {own}, the stages "
                f"give it {ours}: the forward does more before it than call the listed modules (a reshape, a "
                "selection of the class token), which the stages would skip",
            )
