"""The structure of a backbone, worked out without allocating weights: the model on the meta device is cut into
stages, and the stages are probed with meta inputs to find each one's channels and stride.

Example::

    spec = load_spec("resnet50")
    plan = plan_backbone(spec, MetaModel.create(spec.model).model)
    [(s.name, s.channels, s.stride) for s in plan.stages]   # [('c2', 256, 4), ('c3', 512, 8), ...]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Mapping, Sequence, Tuple

import torch
from torch import nn

from featx.construct.execution_order import check_execution_order
from featx.construct.members import StageMembers, resolve_members, stage_containers
from featx.construct.probe import (
    PROBE_SIZES,
    Shape,
    Size,
    channels_of,
    infer_layout,
    input_channels,
    meta_input,
    shape_only_layers,
    stride_of,
)
from featx.errors import SpecError
from featx.models.registry import default_crop_size
from featx.nn.feature_info import StageInfo
from featx.spec.keys import key_path
from featx.spec.schema import BackboneSpec


def evaluation_size(spec: BackboneSpec) -> Size:
    """The size the model's own forward is checked at: ``input_size``, else its weights' square crop size."""
    if spec.input_size is not None:
        return spec.input_size[0], spec.input_size[1]
    crop = default_crop_size(spec.model)
    return crop, crop


def probe_sizes(spec: BackboneSpec) -> Tuple[Size, ...]:
    """The meta input sizes ``spec`` is probed at: :data:`PROBE_SIZES`, or its ``input_size`` alone."""
    return PROBE_SIZES if spec.input_size is None else ((spec.input_size[0], spec.input_size[1]),)


@dataclass(frozen=True)
class BackbonePlan:
    """What ``build`` will make of a spec: the kept stages (up to the last returned one) and the input channels."""

    spec: BackboneSpec
    stages: Tuple[StageInfo, ...]
    in_channels: int

    @property
    def returned(self) -> Tuple[StageInfo, ...]:
        """The stages whose outputs are returned (or fed to the FPN), in stage order."""
        names = set(self.spec.returned_stages)
        return tuple(stage for stage in self.stages if stage.name in names)

    @property
    def kept_paths(self) -> Tuple[str, ...]:
        """Every module path the backbone keeps (the weights it loads)."""
        return tuple(path for stage in self.stages for path in stage.paths)


def _stage_shapes(
    containers: Mapping[str, nn.Module], members: Sequence[StageMembers], in_channels: int, size: Size
) -> List[Shape]:
    """Each stage's output shape for a meta input of ``size``, as the stages produce it."""
    shapes = []
    x = meta_input(size, in_channels)
    with torch.no_grad():
        for stage in members:
            try:
                x = containers[stage.name](x)
            except Exception as error:  # noqa: BLE001 - any failure here means the stages do not chain
                raise SpecError(
                    key_path("stages", stage.name),
                    f"running the stages in order fails at this stage ({stage.covers}): "
                    f"{type(error).__name__}: {str(error).splitlines()[0]}. Hint: each stage receives the previous "
                    "stage's output, so members must be listed in execution order with nothing left out",
                ) from None
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise SpecError(key_path("stages", stage.name), f"output is not a 4-D feature map (got {shape})")
            shapes.append(tuple(x.shape))
    return shapes


def _measure(stage: StageMembers, shapes: Sequence[Shape], sizes: Sequence[Size], layout: str) -> StageInfo:
    """Channels and stride of one stage from its output shapes at the probe ``sizes`` (one or two of them)."""
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
    first = shapes[0]
    return StageInfo(
        stage.name, channels_of(first, layout), stride_of(first, layout, sizes[0]), stage.paths, stage.covers
    )


def plan_backbone(spec: BackboneSpec, meta_model: nn.Module) -> BackbonePlan:
    """Check ``spec`` against its model (on the meta device) and measure the kept stages."""
    members = resolve_members(meta_model, spec)
    last_returned = spec.returned_stages[-1]
    members = members[: [stage.name for stage in members].index(last_returned) + 1]
    containers = stage_containers(meta_model, members)
    in_channels = input_channels(containers[members[0].name])
    check_execution_order(meta_model, members, evaluation_size(spec))
    sizes = probe_sizes(spec)
    with shape_only_layers(meta_model):
        per_size = [_stage_shapes(containers, members, in_channels, size) for size in sizes]
    infos = tuple(
        _measure(stage, shapes, sizes, spec.layout) for stage, *shapes in zip(members, *per_size, strict=True)
    )
    plan = BackbonePlan(spec, infos, in_channels)
    if spec.fpn is not None:
        _check_fpn_levels(plan.returned)
    return plan


def _check_fpn_levels(levels: Sequence[StageInfo]) -> None:
    for shallower, deeper in itertools.pairwise(levels):
        if deeper.stride <= shallower.stride:
            raise SpecError(
                key_path("fpn"),
                f"FPN levels need strictly increasing strides, but stage {deeper.name!r} has stride {deeper.stride} "
                f"after {shallower.name!r} with stride {shallower.stride}; choose out_features with distinct strides",
            )
