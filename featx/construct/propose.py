"""``featx.propose``: write the backbone spec of a torchvision classifier or a timm model (``timm:NAME``) by probing
it on the meta device.

The model's modules are run in order on meta inputs, from the root's children down: a plain ``nn.Sequential``
that spans a stride boundary is opened into its children, a ``ModuleList`` always is. The chain ends at the first
module whose output no longer grows with the input (a global pool), grows by no power-of-two stride (timm VGG's
unpadded 7x7 head), switches layout (Swin's final permute) or cannot take the map (the classifier). A module in
between whose output is not a feature map (an auxiliary classifier) is left out. Each stage then ends at the last
module of its stride: ``c2`` at stride 4 up to ``c5`` at stride 32.

Example::

    spec = featx.propose("resnet50")           # {"model": "resnet50", "stages": {"c2": {"modules": [...]}, ...}}
    backbone = featx.build(spec)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import AbstractSet, Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from featx.construct.builder import check_names
from featx.construct.execution_order import has_no_forward, recorded_calls, runs_children_in_order
from featx.construct.plan import check_neck, plan_backbone
from featx.construct.probe import (
    PROBE_SIZES,
    Growth,
    Shape,
    Size,
    channels_of,
    growth_against_stride,
    infer_layout,
    meta_input,
    shape_only_layers,
    stride_of,
)
from featx.construct.propose_tokens import TokenModelRefused, propose_token_stages
from featx.errors import ArgumentError, SpecError
from featx.models.meta_construction import construct_on_meta
from featx.models.registry import check_model_name, default_crop_size
from featx.nn.feature_info import FeatureInfo, StageInfo
from featx.spec.limits import MAX_CHANNELS
from featx.spec.load import load_spec
from featx.spec.schema import BackboneSpec, FpnSpec, StageSpec


@dataclass(frozen=True)
class Proposal:
    """What :func:`analyse` found: the spec and what it is made of.

    ``left_out`` are modules inside the chain that the stages skip (auxiliary classifiers); ``head`` are the
    root-level modules after the chain (pooling, classifier) that a backbone does not run. ``model_features`` is
    the width of the model's own last features where it says (timm's ``num_features``), else ``None``.
    ``chain_end`` says why the chain ends at a module that still returns maps (how they grow with the input: by no
    power-of-two stride), else ``None``.
    """

    spec: BackboneSpec
    stages: Tuple[StageInfo, ...]
    left_out: Tuple[str, ...]
    head: Tuple[str, ...]
    model_features: Optional[int] = None
    chain_end: Optional[str] = None

    @property
    def ends_early(self) -> bool:
        """Whether the deepest stage is narrower or wider than the model's own last features: the chain of maps
        featx found ends before them (LeViT's attention stages work on other shapes than maps)."""
        return self.model_features is not None and self.stages[-1].channels != self.model_features


def _feature_maps(module: nn.Module, inputs: Sequence[Tensor]) -> Optional[List[Tensor]]:
    """``module`` applied to each input, or ``None`` if it fails or does not return 4-D tensors."""
    outputs = []
    for x in inputs:
        try:
            y = module(x)
        except Exception:  # noqa: BLE001 - any failure means "not part of the chain here"
            return None
        if not isinstance(y, Tensor) or y.dim() != 4:
            return None
        outputs.append(y)
    return outputs


def _splits_at_boundary(
    module: nn.Module, xs: List[Tensor], layout: str, low: int, high: int, min_stride: int, size: Size
) -> bool:
    """True if running ``module``'s children one by one reaches a stage boundary (a power of two ``>= min_stride``)
    strictly between strides ``low`` and ``high`` in ``layout``: then the container is worth opening."""
    if max(min_stride, low * 2) >= high:
        return False
    for child in module.children():
        outputs = _feature_maps(child, xs)
        if outputs is None:
            return False
        xs = outputs
        if (
            infer_layout([tuple(x.shape) for x in xs], layout) == layout
            and max(min_stride, low * 2) <= stride_of(tuple(xs[0].shape), layout, size) < high
        ):
            return True
    return False


@dataclass(frozen=True)
class _Chain:
    """The feature chain of a model: one :class:`FeatureInfo` per module (named by its path), the modules inside it
    that it skips, the modules after it, and its layout; and, where the chain ends at a map that grows by no
    power-of-two stride, how it grows."""

    links: Tuple[FeatureInfo, ...]
    left_out: Tuple[str, ...]
    head: Tuple[str, ...]
    layout: str
    irregular: Optional[str] = None
    #: whether the model's own forward ran to its end at the walk's first size (else it could not tell which modules
    #: it calls, and took each for called)
    completed: bool = True


def _irregular_growth(path: str, growth: Growth, sizes: Sequence[Size]) -> str:
    """How the maps of ``path`` grow with the input where no power-of-two stride gives that growth."""
    unit, grown, more = growth
    measured = f"about {round(more / grown)}" if grown else "no stride at all"
    return (
        f"the maps of {path} grow by {grown} {unit} for {more} more input {unit} ({sizes[0][0]}x{sizes[0][1]} and "
        f"{sizes[-1][0]}x{sizes[-1][1]}): a stride of {measured}, not a power of two"
    )


def _forward_inputs(model: nn.Module, size: Size) -> Tuple[Dict[str, Optional[Shape]], bool]:
    """The input shape the model's own forward (eval, a meta input of ``size``) first gives each module it calls,
    and whether the forward ran to its end (then a module missing was not called at all)."""
    inputs: Dict[str, Optional[Shape]] = {}
    calls, failure, _ = recorded_calls(model, size)
    for call in calls:
        inputs.setdefault(call.path, call.input_shape)
    return inputs, failure is None


def _walk(
    model: nn.Module, sizes: Sequence[Size], min_stride: int, called_at_own_size: Optional[AbstractSet[str]] = None
) -> _Chain:
    """The feature chain of ``model`` at the probe ``sizes``. A module the model's own forward gives another input
    than the chain's map (a dropout after the global pool, a norm after a permute), or does not call at all, is not
    part of the chain. Where the forward fails at ``sizes`` (a model of one input size), the modules it calls at
    its own size (``called_at_own_size``, if known) are the ones it calls."""
    forward_inputs, completed = _forward_inputs(model, sizes[0])
    call_order = {path: index for index, path in enumerate(forward_inputs)}
    xs = [meta_input(size) for size in sizes]
    queue: List[Tuple[str, nn.Module]] = list(model.named_children())
    links: List[FeatureInfo] = []
    skipped: List[str] = []
    left_out: List[str] = []
    layout: Optional[str] = None
    irregular: Optional[str] = None
    stride = 1
    while queue:
        path, module = queue.pop(0)
        called = path in forward_inputs or (
            not completed and (called_at_own_size is None or _holds_called(path, called_at_own_size))
        )
        iterated = not called and any(inner.startswith(path + ".") for inner in forward_inputs)
        if (has_no_forward(module) or iterated) and any(True for _ in module.children()):
            # a ModuleList, or a container the forward iterates over instead of calling: its children are the chain
            queue[:0] = [(f"{path}.{name}", child) for name, child in module.named_children()]
            continue
        if links and path in call_order and any(call_order.get(other, -1) > call_order[path] for other in skipped):
            queue.insert(0, (path, module))  # a module skipped after the chain began runs after it: it is head
            break
        given = forward_inputs.get(path, tuple(xs[0].shape))
        outputs = _feature_maps(module, xs) if called and given == tuple(xs[0].shape) else None
        if outputs is None:
            skipped.append(path)
            continue
        shapes = [tuple(y.shape) for y in outputs]
        kind = infer_layout(shapes, layout)
        if kind is None or (layout is not None and kind != layout):
            queue.insert(0, (path, module))
            break
        out_stride = stride_of(shapes[0], kind, sizes[0])
        if (
            runs_children_in_order(module)
            and any(True for _ in module.children())
            and _splits_at_boundary(module, xs, kind, stride, out_stride, min_stride, sizes[0])
        ):
            queue[:0] = [(f"{path}.{name}", child) for name, child in module.named_children()]
            continue
        growth = growth_against_stride(shapes, sizes, kind, out_stride) if len(sizes) > 1 else None
        if growth is not None:
            queue.insert(0, (path, module))  # no power-of-two stride (timm VGG's unpadded 7x7 head): build refuses it
            irregular = _irregular_growth(path, growth, sizes)
            break
        layout, stride, xs = kind, out_stride, outputs
        left_out.extend(skipped)
        skipped = []
        links.append(FeatureInfo(path, channels_of(shapes[0], kind), out_stride))
    head = skipped + [path for path, _ in queue]
    return _Chain(tuple(links), tuple(left_out), tuple(head), layout or "nchw", irregular, completed)


def _holds_called(path: str, called: AbstractSet[str]) -> bool:
    """Whether the module at ``path`` is called, or holds one that is (a container the forward iterates over)."""
    return path in called or any(inner.startswith(path + ".") for inner in called)


def _group_stages(links: Sequence[FeatureInfo], min_stride: int) -> Tuple[StageInfo, ...]:
    """Cut the chain after the last link of each stride ``>= min_stride``."""
    stages: List[StageInfo] = []
    members: List[str] = []
    for index, link in enumerate(links):
        members.append(link.name)
        is_last_of_stride = index + 1 == len(links) or links[index + 1].stride != link.stride
        if is_last_of_stride and link.stride >= min_stride:
            name = f"c{int(math.log2(link.stride))}"
            stages.append(StageInfo(name, link.channels, link.stride, tuple(members), ", ".join(members)))
            members = []
    return tuple(stages)


def _as_slices(
    stages: Sequence[StageInfo], left_out: Sequence[str], model: nn.Module
) -> Optional[Tuple[str, Dict[str, StageSpec]]]:
    """``(source, {stage: StageSpec(slice=[a, b])})`` when every member is a numbered child of one container, in
    order from its first child with none skipped; else ``None`` (the stages then list module paths)."""
    paths = [path for stage in stages for path in stage.paths]
    parents = {path.rpartition(".")[0] for path in paths}
    if left_out or len(parents) != 1 or "" in parents:
        return None
    (source,) = parents
    children = [name for name, _ in model.get_submodule(source).named_children()]
    if not all(name.isdigit() for name in children) or [p.rpartition(".")[2] for p in paths] != children[: len(paths)]:
        return None
    slices, start = {}, 0
    for stage in stages:
        slices[stage.name] = StageSpec(slice=[start, start + len(stage.paths)])
        start += len(stage.paths)
    return source, slices


def _find_chain(model: nn.Module, model_name: str, min_stride: int) -> Tuple[_Chain, Optional[List[int]]]:
    """The chain at the general probe sizes or, for a model that takes one input size only (MaxViT's forward fails
    at the general sizes), at the crop size of its weights; with the ``input_size`` that needs. A chain that broke
    at the general sizes on a map growing by no power-of-two stride is kept (and refused): at one size such a stride
    reads as the nearest power of two (sequencer2d_s's 7 as 8). Without two stages at either, the chain at the crop
    size (a token model's embedding)."""
    with shape_only_layers(model), torch.no_grad():
        chain = _walk(model, PROBE_SIZES, min_stride)
        if len(_group_stages(chain.links, min_stride)) >= 2 and not chain.completed:
            own = default_crop_size(model_name)
            called, completed = _forward_inputs(model, (own, own))
            if completed:  # its forward runs at its own size: a module it never calls there is none of the chain
                chain = _walk(model, PROBE_SIZES, min_stride, set(called))
        if len(_group_stages(chain.links, min_stride)) >= 2:
            return chain, None
        crop = default_crop_size(model_name)
        fixed = _walk(model, ((crop, crop),), min_stride)
    if len(_group_stages(fixed.links, min_stride)) >= 2:
        return (chain, None) if chain.irregular is not None else (fixed, [crop, crop])
    # at its own size the model's forward runs: what it feeds each module is known; a growth by no power-of-two
    # stride found at the general sizes is kept for the refusal (convmixer's stride 7 reads as 8 at one size)
    return dataclasses.replace(fixed, irregular=fixed.irregular or chain.irregular), None


#: featx-propose's option for each of :func:`analyse`'s parameters
_OPTIONS = {"min_stride": "--min-stride", "fpn": "--fpn", "frozen_stages": "--frozen-stages"}


def _out_of_range(name: str, rule: str, value: int, options: bool) -> ArgumentError:
    """The error for parameter ``name``'s ``value`` outside ``rule``: naming featx-propose's option where
    ``options``, else the parameter."""
    return ArgumentError(f"{_OPTIONS[name] if options else f'propose(): {name}'} must be {rule}, got {value}")


def _check_builds(proposal: Proposal) -> Proposal:
    """``proposal`` if featx.build takes its spec: loaded, checked and planned as a build does (on a fresh meta model,
    bypassing the plan cache), else ArgumentError with the build's reason."""
    spec = proposal.spec
    try:
        loaded = load_spec(spec.to_dict())
        check_names(loaded)
        check_neck(loaded, plan_backbone(loaded, construct_on_meta(loaded.model)[0]))
    except SpecError as error:
        stages = ", ".join(stage.name for stage in proposal.stages)
        raise ArgumentError(
            f"propose(): the spec found for {spec.model!r} ({stages}) is one featx.build refuses: {error}"
        ) from None
    return proposal


def analyse(
    model_name: str,
    *,
    min_stride: int = 4,
    fpn: Optional[int] = None,
    frozen_stages: int = 1,
    options: bool = False,
) -> Proposal:
    """Probe ``model_name`` on the meta device and propose a spec (see :func:`propose`); with ``options``, an
    argument out of range is named as featx-propose's option (``--fpn``) instead of the parameter."""
    if not isinstance(model_name, str):
        raise ArgumentError(
            "propose(): model_name must be a model name (str: a torchvision classifier or timm:NAME), got "
            f"{model_name!r:.80}"
        )
    try:
        check_model_name(model_name)
    except SpecError as error:
        raise ArgumentError(f"propose(): {error.message}") from None
    for name, value in (("min_stride", min_stride), ("frozen_stages", frozen_stages), ("fpn", fpn)):
        if not (type(value) is int or (name == "fpn" and value is None)):
            raise ArgumentError(f"propose(): {name} must be an integer, got {value!r:.80}")
    if not 1 <= min_stride <= 64 or min_stride & (min_stride - 1):
        raise _out_of_range("min_stride", "a power of two in 1..64", min_stride, options)
    if fpn is not None and not 1 <= fpn <= MAX_CHANNELS:
        raise _out_of_range("fpn", f"a channel count in 1..{MAX_CHANNELS}{'' if options else ' or None'}", fpn, options)
    model = construct_on_meta(model_name)[0].eval()
    width = getattr(model, "num_features", None)
    model_features = width if type(width) is int else None
    chain, input_size = _find_chain(model, model_name, min_stride)
    stages = _group_stages(chain.links, min_stride)
    try:
        crop = default_crop_size(model_name)
        token_stages = propose_token_stages(model, chain.links, crop) if len(stages) < 2 else None
    except TokenModelRefused as why:
        raise ArgumentError(f"propose(): {model_name!r} is {why}") from None
    if token_stages is not None:
        patch = token_stages.stages[0].stride
        # with a pyramid, the maps are laid out at the next power of two (ViT-H/14's patch 14: stride 16)
        stride = 1 << patch.bit_length() if fpn is not None and patch & (patch - 1) else patch
        if min_stride > stride:
            raise ArgumentError(
                f"propose(): {model_name!r} gives no stage at stride >= {min_stride}: a token model's maps all have "
                f"the {'patch ' if stride == patch else ''}stride {stride}; pass a min_stride (--min-stride) of at "
                f"most {stride}"
            )
        if not 0 <= frozen_stages <= len(token_stages.stages):
            raise _out_of_range("frozen_stages", f"in 0..{len(token_stages.stages)}", frozen_stages, options)
        tokens, stages = token_stages.spec.tokens, token_stages.stages
        if fpn is not None and patch & (patch - 1):  # the pyramid's levels need a power-of-two stride
            tokens = dataclasses.replace(tokens, stride=1 << patch.bit_length())
            stages = tuple(dataclasses.replace(stage, stride=tokens.stride) for stage in stages)
        grid = token_stages.grid  # a model that takes one size: the grid of its position embedding at the stride
        spec = dataclasses.replace(
            token_stages.spec,
            model=model_name,
            tokens=tokens,
            frozen_stages=frozen_stages,
            fpn=None if fpn is None else FpnSpec(out_channels=fpn, style="simple"),
            input_size=None if grid is None else [grid * (tokens.stride or patch)] * 2,
        )
        return _check_builds(Proposal(spec, stages, (), token_stages.head, model_features))
    if len(stages) < 2:
        if chain.irregular is not None:
            found = chain.irregular
        elif chain.links:
            strides = sorted({link.stride for link in chain.links})
            follows = f"what follows ({', '.join(chain.head) or 'nothing'}) works on other shapes"
            found = (
                f"its feature maps ({', '.join(link.name for link in chain.links)}) have stride "
                f"{', '.join(map(str, strides))} only, and {follows}"
            )
        else:
            modules = f" ({', '.join(chain.head)})" if chain.head else ""
            found = f"no module of it{modules} returns a feature map (N x C x H x W) of the image"
        raise ArgumentError(
            f"propose(): {model_name!r} gives fewer than two stages: {found}; a backbone needs at least two strides "
            f">= {min_stride}, or a token model's patch embedding, token parameters and blocks (featx recognises "
            "plain ViTs)"
        )
    if not 0 <= frozen_stages <= len(stages):
        raise _out_of_range("frozen_stages", f"in 0..{len(stages)}", frozen_stages, options)
    slices = _as_slices(stages, chain.left_out, model)
    source, stage_specs = slices if slices else (None, {s.name: StageSpec(modules=list(s.paths)) for s in stages})
    spec = BackboneSpec(
        model=model_name,
        source=source,
        stages=stage_specs,
        frozen_stages=frozen_stages,
        fpn=None if fpn is None else FpnSpec(out_channels=fpn),
        layout=chain.layout,
        input_size=input_size,
    )
    return _check_builds(Proposal(spec, stages, chain.left_out, chain.head, model_features, chain.irregular))


def propose(
    model_name: str, *, min_stride: int = 4, fpn: Optional[int] = None, frozen_stages: int = 1
) -> Dict[str, Any]:
    """A complete backbone spec for ``model_name`` (a torchvision classifier, or ``timm:NAME``) as plain data, with
    one stage per stride from ``min_stride`` (default 4) up to the model's deepest: ``c2`` (stride 4) ... ``c5``
    (stride 32). ``fpn`` adds an FPN of that width; the first ``frozen_stages`` stages are frozen.

    A plain ViT (a token model) gets an ``embed`` stage and its blocks in four stages (``blocks1``..``blocks4``), all
    at the patch stride, returning ``blocks4``; ``fpn`` then adds ViTDet's simple feature pyramid, whose levels are
    ``p2``..``p5`` (strides 4..32) whatever ``min_stride`` is (for a token model it only refuses a stride above its
    maps').

    Raises :class:`~featx.errors.ArgumentError` for an unknown model (with close names), a model with fewer than
    two stages at ``min_stride`` or above, a token model whose patch stride is below ``min_stride``, or a spec that
    featx.build would refuse (it is checked as a build plans it, on the meta device). Example::

        featx.build(featx.propose("convnext_tiny", fpn=256))
    """
    return analyse(model_name, min_stride=min_stride, fpn=fpn, frozen_stages=frozen_stages).spec.to_dict()
