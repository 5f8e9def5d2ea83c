"""The structure of a backbone, worked out without allocating weights: the model on the meta device is cut into
stages, and the stages are probed with meta inputs to find each one's channels and stride.

Example::

    spec = load_spec("resnet50")
    plan = plan_backbone(spec, MetaModel.create(spec.model).model)
    [(s.name, s.channels, s.stride) for s in plan.stages]   # [('c2', 256, 4), ('c3', 512, 8), ...]
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from featx.construct.execution_order import check_execution_order
from featx.construct.members import StageMembers, resolve_members, stage_containers
from featx.construct.probe import (
    PROBE_SIZES,
    Shape,
    Size,
    channels_of,
    growth_against_stride,
    infer_layout,
    input_channels,
    meta_input,
    shape_only_layers,
    stride_of,
)
from featx.construct.token_layout import TokenLayout, resolve_tokens
from featx.errors import SpecError, first_line
from featx.models.registry import default_crop_size
from featx.nn.feature_info import StageInfo
from featx.nn.neck_levels import level_problem, pooling_remedy
from featx.nn.tokens import tokens_to_map
from featx.spec.keys import key_path
from featx.spec.limits import quoted
from featx.spec.schema import BackboneSpec


def evaluation_size(spec: BackboneSpec) -> Size:
    """The size the model's own forward is checked at: ``input_size``, else its weights' square crop size."""
    if spec.input_size is not None:
        return spec.input_size[0], spec.input_size[1]
    crop = default_crop_size(spec.model)
    return crop, crop


@dataclass(frozen=True)
class BackbonePlan:
    """What ``build`` will make of a spec: the kept stages (up to the last returned one), the input channels, the
    kept layers' parameter count (BatchNorm's affine included, the neck not) and, for a token model, its token
    layout. ``fixed_input_size`` is the one size a fixed-size model takes when the spec left ``input_size`` out.
    ``changed_later`` names the stages whose output a later stage changes in place (one that starts with
    ``ReLU(inplace=True)``): the backbone returns a copy of such an output."""

    stages: Tuple[StageInfo, ...]
    in_channels: int
    parameters: int
    tokens: Optional[TokenLayout] = None
    fixed_input_size: Optional[Size] = None
    changed_later: Tuple[str, ...] = ()

    def built_spec(self, spec: BackboneSpec) -> BackboneSpec:
        """``spec`` as built: a fixed-size model's ``input_size`` filled in."""
        if self.fixed_input_size is None:
            return spec
        return dataclasses.replace(spec, input_size=list(self.fixed_input_size))

    def returned(self, spec: BackboneSpec) -> Tuple[StageInfo, ...]:
        """The stages whose outputs ``spec`` returns (or feeds to the FPN), in stage order."""
        names = set(spec.returned_stages)
        return tuple(stage for stage in self.stages if stage.name in names)

    @property
    def kept_paths(self) -> Tuple[str, ...]:
        """Every module (and token parameter) path the backbone keeps: the weights it loads."""
        token_parameters = self.tokens.parameter_paths if self.tokens is not None else ()
        return tuple(path for stage in self.stages for path in stage.paths) + token_parameters

    def stage_containers(self, model: nn.Module) -> "OrderedDict[str, nn.Sequential]":
        """The stages as containers of ``model``'s own modules (a token model's patch embedding wrapped)."""
        return _containers(model, self.stages, self.tokens)


def _containers(
    model: nn.Module, members: Sequence[StageMembers | StageInfo], tokens: Optional[TokenLayout]
) -> "OrderedDict[str, nn.Sequential]":
    if tokens is None:
        return stage_containers(model, members)
    return stage_containers(model, members, tokens.embedding, tokens.spec.embed)


class _StageRun(NamedTuple):
    """The stages run once on a meta input: each one's output shape (a token model's tokens as the map they become),
    and the stages whose output a later stage changed in place (one that starts with ``ReLU(inplace=True)``)."""

    shapes: List[Shape]
    changed_later: Tuple[str, ...]


def _stage_shapes(
    containers: Mapping[str, nn.Module],
    members: Sequence[StageMembers],
    in_channels: int,
    size: Size,
    tokens: Optional[TokenLayout],
    size_blamed: bool = False,
) -> _StageRun:
    """The stages run in turn on a meta input of ``size`` (see :class:`_StageRun`); ``size_blamed``: they ran at
    the probe sizes, so a stage failing at this one is refused as the spec's ``input_size``."""
    shapes = []
    outputs: List[Tuple[str, torch.Tensor, int]] = []  # each stage's output and its version when the stage returned
    # inference_mode off: a build inside ``torch.inference_mode()`` sees in-place changes too (tensors keep versions)
    with torch.inference_mode(False):
        x = meta_input(size, in_channels)
    with torch.inference_mode(False), torch.no_grad():
        for stage in members:
            try:
                x = containers[stage.name](x)
            except Exception as error:  # noqa: BLE001 - any failure here means the stages do not chain
                if size_blamed:
                    raise SpecError(
                        key_path("input_size"),
                        f"stage {quoted(stage.name)} ({stage.covers}) fails at {size[0]}x{size[1]}, though the "
                        f"stages run at other sizes: {type(error).__name__}: {first_line(error)}; the model needs "
                        "another size (a larger one, or a multiple of its largest stride)",
                    ) from None
                raise SpecError(
                    key_path("stages", stage.name),
                    f"running the stages in order fails at this stage ({stage.covers}): "
                    f"{type(error).__name__}: {first_line(error)}. Hint: each stage receives the previous "
                    "stage's output, so members must be listed in execution order with nothing left out"
                    + (
                        "; with tokens, every module after the patch embedding receives token sequences "
                        "(N x tokens x channels)"
                        if tokens is not None
                        else ""
                    ),
                ) from None
            if tokens is not None:
                shapes.append(_token_map_shape(stage, x, tokens, size))
            elif not isinstance(x, torch.Tensor) or x.dim() != 4:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise SpecError(key_path("stages", stage.name), f"output is not a 4-D feature map (got {shape})")
            else:
                shapes.append(tuple(x.shape))
            outputs.append((stage.name, x, x._version))
    return _StageRun(shapes, tuple(name for name, output, version in outputs if output._version != version))


def _token_map_shape(stage: StageMembers, x: object, tokens: TokenLayout, size: Size) -> Shape:
    """The shape of the map a token stage's output becomes; SpecError unless it is the token sequence."""
    grid = (size[0] // tokens.patch, size[1] // tokens.patch)
    expected = tokens.prefix_count + grid[0] * grid[1]
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != expected:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise SpecError(
            key_path("stages", stage.name),
            f"output is not the token sequence (expected 1 x {expected} x channels: {tokens.prefix_count} prefix "
            f"tokens and {grid[0]}x{grid[1]} patches for a {size[0]}x{size[1]} input, got {shape})",
        )
    return tuple(tokens_to_map(x, grid).shape)


def _measure(
    stage: StageMembers, shapes: Sequence[Shape], sizes: Sequence[Size], layout: str, patch: Optional[int]
) -> StageInfo:
    """Channels and stride of one stage from its output shapes at the probe ``sizes`` (one or two of them); a token
    stage's stride is the patch stride ``patch``."""
    if len(shapes) > 1:
        found = infer_layout(shapes)
        if found is None:
            height, width = shapes[0][1:3] if layout == "nhwc" else shapes[0][2:]
            raise SpecError(
                key_path("stages", stage.name),
                f"output size {height}x{width} does not change with the input size; a stage must end on a feature "
                "map, not after a global pool",
            )
        if found != layout:
            raise SpecError(
                key_path("layout"),
                f"{layout!r} does not fit stage {stage.name!r}: the dimension it reads as channels changes with the "
                f"input size ({shapes[0]} for {sizes[0]}, {shapes[-1]} for {sizes[-1]}); set layout: {found}",
            )
    else:  # one probe size (a fixed-size model): the shape's form, and equal strides along height and width
        found = infer_layout(shapes, layout)
        spatial = shapes[0][1:3] if layout == "nhwc" else shapes[0][2:]
        ratios = {round(math.log2(side / extent)) for side, extent in zip(sizes[0], spatial, strict=True) if extent}
        if (found is not None and found != layout) or len(ratios) > 1:
            raise SpecError(
                key_path("layout"),
                f"{layout!r} does not fit stage {stage.name!r}: read as {layout}, its output {shapes[0]} at "
                f"{sizes[0][0]}x{sizes[0][1]} has height and width {spatial[0]}x{spatial[1]}, different strides; "
                f"set layout: {'nhwc' if layout == 'nchw' else 'nchw'}",
            )
    first = shapes[0]
    stride = patch if patch is not None else stride_of(first, layout, sizes[0])
    if patch is None and len(sizes) > 1:
        _check_growth(stage.name, shapes, sizes, layout, stride)
    return StageInfo(stage.name, channels_of(first, layout), stride, stage.paths, stage.covers)


def _check_growth(name: str, shapes: Sequence[Shape], sizes: Sequence[Size], layout: str, stride: int) -> None:
    """SpecError unless the stage's maps grow with the input as its power-of-two ``stride`` says: a stride that is no
    power of two would otherwise be read as the nearest one, and the levels named and sized by it."""
    growth = growth_against_stride(shapes, sizes, layout, stride)
    if growth is not None:
        unit, grown, more = growth
        measured = f"about {round(more / grown)}" if grown else "no stride at all"
        raise SpecError(
            key_path("stages", name),
            f"its maps grow by {grown} {unit} for {more} more input {unit} ({sizes[0][0]}x{sizes[0][1]} and "
            f"{sizes[-1][0]}x{sizes[-1][1]}): a stride of {measured}, not a power of two (stride {stride} would "
            f"grow them by {more / stride:g}); featx measures strides as powers of two, which name and size the "
            "levels (p2 = stride 4 ... p5 = stride 32)",
        )


def _probe(
    spec: BackboneSpec,
    containers: Mapping[str, nn.Module],
    members: Sequence[StageMembers],
    in_channels: int,
    tokens: Optional[TokenLayout],
) -> Tuple[Tuple[Size, ...], List[List[Shape]], bool, Tuple[str, ...]]:
    """The probe sizes and each stage's output shape at each; whether the model turned out to take one size
    only (it fails at the general probe sizes but runs at its weights' crop size, as MaxViT does); and the stages
    whose output a later stage changes in place (at any of those sizes).

    A model that takes any size is measured at :data:`PROBE_SIZES` even when the spec sets ``input_size``: at one
    small or odd size its maps collapse (ResNet's at 33x33: 9, 5, 3, 2) and the strides cannot be read from them.
    The stages must still run at ``input_size``. A model that fails at the probe sizes is measured at its one size.
    """
    declared = None if spec.input_size is None else (spec.input_size[0], spec.input_size[1])
    try:
        runs = [_stage_shapes(containers, members, in_channels, size, tokens) for size in PROBE_SIZES]
    except SpecError:
        fixed = declared or (tokens.stage_size if tokens is not None else evaluation_size(spec))
        try:
            run = _stage_shapes(containers, members, in_channels, fixed, tokens)
            return (fixed,), [run.shapes], declared is None, run.changed_later
        except SpecError:
            if declared is not None:
                raise  # the error at the size the spec declares
        raise
    if declared is not None:
        runs.append(_stage_shapes(containers, members, in_channels, declared, tokens, size_blamed=True))
    changed = {name for run in runs for name in run.changed_later}
    shapes = [run.shapes for run in runs[: len(PROBE_SIZES)]]
    return PROBE_SIZES, shapes, False, tuple(stage.name for stage in members if stage.name in changed)


def plan_backbone(spec: BackboneSpec, meta_model: nn.Module) -> BackbonePlan:
    """Check ``spec`` against its model (on the meta device) and measure the kept stages; reads only the keys in
    :data:`~featx.construct.plan_cache.PLAN_KEYS` (the neck is checked by :func:`check_neck`)."""
    members = resolve_members(meta_model, spec)
    last_returned = spec.returned_stages[-1]
    members = members[: [stage.name for stage in members].index(last_returned) + 1]
    in_channels = input_channels(stage_containers(meta_model, members[:1])[members[0].name])
    tokens = None
    if spec.tokens is not None:
        tokens = resolve_tokens(meta_model, spec, members, in_channels, evaluation_size(spec))
        _check_patch_multiple(spec, tokens.patch)
    containers = _containers(meta_model, members, tokens)

    def run_stages(x: torch.Tensor) -> None:
        for container in containers.values():
            x = container(x)

    check_execution_order(
        meta_model,
        members,
        tokens.native_size if tokens is not None else evaluation_size(spec),
        reproduced=tokens.reproduced_containers if tokens is not None else (),
        run_stages=run_stages,
        stage_size=tokens.stage_size if tokens is not None else None,
        resized=tokens.resized_modules if tokens is not None else (),
        declared=tokens.parameter_paths if tokens is not None else (),
        declared_size=tokens is None and spec.input_size is not None,
        chained=tokens is None,
    )
    with shape_only_layers(meta_model):
        sizes, per_size, fixed_size, changed_later = _probe(spec, containers, members, in_channels, tokens)
    patch = tokens.patch if tokens is not None else None
    infos = tuple(
        _measure(stage, shapes, sizes, spec.layout, patch) for stage, *shapes in zip(members, *per_size, strict=True)
    )
    parameters = _parameter_count(meta_model, [path for info in infos for path in info.paths], tokens)
    return BackbonePlan(infos, in_channels, parameters, tokens, sizes[0] if fixed_size else None, changed_later)


def _check_patch_multiple(spec: BackboneSpec, patch: int) -> None:
    """SpecError for a token model's ``input_size`` whose sides are not multiples of its patch stride: the backbone
    would be built, then refuse every input."""
    if spec.input_size is not None and any(side % patch for side in spec.input_size):
        height, width = spec.input_size
        rounded = "x".join(str(-(-side // patch) * patch) for side in (height, width))  # rounded up
        raise SpecError(
            key_path("input_size"),
            f"{height}x{width}: a token model takes sides that are multiples of its patch stride {patch} "
            f"(e.g. {rounded})",
        )


def _parameter_count(model: nn.Module, paths: Sequence[str], tokens: Optional[TokenLayout]) -> int:
    """The number of parameters in the modules at ``paths`` and the token parameters (each counted once)."""
    parameters = {id(p): p.numel() for path in paths for p in model.get_submodule(path).parameters()}
    for path in tokens.parameter_paths if tokens is not None else ():
        parameter = model.get_parameter(path)
        parameters[id(parameter)] = parameter.numel()
    return sum(parameters.values())


def check_neck(spec: BackboneSpec, plan: BackbonePlan) -> None:
    """SpecError unless the stages ``spec`` returns suit its neck (``fpn``): strides that name levels; and, named
    for torchvision's detectors (``output_names: torchvision``), strides their default pooler takes."""
    if spec.fpn is not None:
        _check_fpn_levels(plan.returned(spec), spec.fpn.style, plan.tokens is not None)
    if spec.output_names == "torchvision":  # a simple pyramid's one stage has a power-of-two stride, checked above
        _check_torchvision_levels(plan.returned(spec))


def _check_torchvision_levels(levels: Sequence[StageInfo]) -> None:
    """The maps named ``'0'``, ``'1'``, ... (the returned stages, or an FPN's levels of their strides) are what the
    R-CNNs' default ``MultiScaleRoIAlign`` pools: a layout it pools wrongly (a box of a skipped level as zeros) is
    refused, as :func:`featx.detection.roi_pooler` refuses it."""
    remedy = pooling_remedy([level.stride for level in levels])
    if remedy is None:
        return
    named = ", ".join(f"'{index}' ({level.name}, stride {level.stride})" for index, level in enumerate(levels))
    raise SpecError(
        key_path("output_names"),
        "torchvision: torchvision's detectors pool these maps with their default MultiScaleRoIAlign, which needs "
        f"strides that are powers of two, doubling from one map to the next (else a box is pooled from the wrong "
        f"map, or as zeros), got {named}; {remedy}, or keep output_names: featx",
    )


def _check_fpn_levels(levels: Sequence[StageInfo], style: str, token_model: bool) -> None:
    problem = level_problem(levels, style)
    if problem is None:
        return
    if problem.kind == "several":
        remedy = f"return only the one it uses (out_features: [{levels[-1].name}])"
    elif problem.kind == "stride" and token_model:  # a token model's stages share the patch stride
        stride = 1 << levels[-1].stride.bit_length()
        remedy = (
            f"run the patch embedding at stride {stride} (tokens.stride: {stride}; the image is resized first), "
            "or drop the neck (fpn: null)"
        )
    elif problem.kind == "stride":
        remedy = "return stages whose strides are powers of two, or drop the neck (fpn: null)"
    elif token_model:
        remedy = "a token model's stages share one stride: use fpn.style: simple (one map, strides 4..32)"
    else:
        remedy = "choose out_features with distinct strides"
    raise SpecError(key_path("fpn"), f"{'stage ' if problem.kind == 'stride' else ''}{problem.text}; {remedy}")
