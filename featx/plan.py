"""The structure of a backbone, worked out without allocating weights: the model is built on the meta device,
cut into stages, and probed with a meta forward to find each stage's channels and stride.

Example::

    plan = plan_backbone(load_spec("resnet50"))
    [(s.name, s.channels, s.stride) for s in plan.stages]   # [('c2', 256, 4), ('c3', 512, 8), ...]
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import List, Mapping, Tuple

import torch
from torch import nn

from featx.errors import SpecError
from featx.meta_probe import shape_only_layers
from featx.spec import BackboneSpec, key_path
from featx.stages import StageMembers, resolve_members, stage_containers
from featx.zoo import Registration, create_model

#: Two (height, width) meta inputs: the stride is read from the first; comparing both tells the channel dimension
#: (constant) from the spatial ones (which grow with the input). Meta tensors cost nothing, so they can be generous.
#: A spec with ``input_size`` (a model that takes one size only) is probed at that size alone.
PROBE_SIZES = ((224, 288), (320, 416))


def probe_sizes(spec: BackboneSpec) -> Tuple[Tuple[int, int], ...]:
    """The meta input sizes ``spec`` is probed at."""
    return PROBE_SIZES if spec.input_size is None else (tuple(spec.input_size),)


@dataclass(frozen=True)
class StageInfo(StageMembers):
    """One kept stage: its members, output channels and stride (input size / output size, a power of two)."""

    channels: int
    stride: int


@dataclass(frozen=True)
class BackbonePlan:
    """What ``build`` will make of a spec: the kept stages (up to the last returned one), the input channels, and
    the model on the meta device they were measured on, with its parameter and buffer registrations in
    construction order (what :func:`featx.zoo.create_model_keeping` needs)."""

    spec: BackboneSpec
    stages: Tuple[StageInfo, ...]
    in_channels: int
    meta_model: nn.Module = field(compare=False, repr=False)
    registrations: Tuple[Registration, ...] = field(compare=False, repr=False, default=())

    @property
    def returned(self) -> Tuple[StageInfo, ...]:
        """The stages whose outputs are returned (or fed to the FPN), in stage order."""
        names = set(self.spec.returned_stages)
        return tuple(stage for stage in self.stages if stage.name in names)

    @property
    def kept_paths(self) -> Tuple[str, ...]:
        """Every module path the backbone keeps (the weights it loads)."""
        return tuple(path for stage in self.stages for path in stage.paths)


def input_channels(first_stage: nn.Module) -> int:
    """Channels the first layer takes (the first module with an ``in_channels`` attribute), 3 if none says."""
    for module in first_stage.modules():
        channels = getattr(module, "in_channels", None)
        if isinstance(channels, int):
            return channels
    return 3


def _stage_shapes(containers: Mapping[str, nn.Module], members: List[StageMembers], in_channels: int,
                  size: Tuple[int, int]) -> List[Tuple[int, ...]]:
    """Each stage's output shape for a meta input of ``size``, as the stages produce it."""
    shapes = []
    x = torch.empty(1, in_channels, *size, device="meta")
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


def _measure(stage: StageMembers, shapes: Tuple[Tuple[int, ...], ...], sizes: Tuple[Tuple[int, int], ...],
             layout: str) -> StageInfo:
    """Channels and stride of one stage from its output shapes at the probe ``sizes`` (one or two of them)."""
    channel_dim, height_dim, width_dim = (3, 1, 2) if layout == "nhwc" else (1, 2, 3)
    first, last = shapes[0], shapes[-1]
    if len(shapes) > 1 and first[channel_dim] != last[channel_dim]:
        other = "nchw" if layout == "nhwc" else "nhwc"
        raise SpecError(
            key_path("layout"),
            f"{layout!r} does not fit stage {stage.name!r}: the dimension it reads as channels changes with the input "
            f"size ({first} for {sizes[0]}, {last} for {sizes[-1]}); set layout: {other}",
        )
    if len(shapes) > 1 and (first[height_dim], first[width_dim]) == (last[height_dim], last[width_dim]):
        raise SpecError(
            key_path("stages", stage.name),
            f"output size {first[height_dim]}x{first[width_dim]} does not change with the input size; a stage must "
            "end on a feature map, not after a global pool",
        )
    stride = 2 ** max(0, round(math.log2(sizes[0][0] / first[height_dim])))
    return StageInfo(stage.name, stage.paths, stage.covers, int(first[channel_dim]), int(stride))


def plan_backbone(spec: BackboneSpec) -> BackbonePlan:
    """Check ``spec`` against its model and measure the kept stages, all on the meta device."""
    registrations: List[Registration] = []
    model = create_model(spec.model, device="meta", record=registrations)
    members = resolve_members(model, spec)
    last_returned = spec.returned_stages[-1]
    members = members[: [stage.name for stage in members].index(last_returned) + 1]
    containers = stage_containers(model, members)
    in_channels = input_channels(containers[members[0].name])
    sizes = probe_sizes(spec)
    with shape_only_layers(model):
        per_size = [_stage_shapes(containers, members, in_channels, size) for size in sizes]
    infos = tuple(
        _measure(stage, shapes, sizes, spec.layout) for stage, *shapes in zip(members, *per_size, strict=True)
    )
    plan = BackbonePlan(spec, infos, in_channels, model, tuple(registrations))
    if spec.fpn is not None:
        _check_fpn_levels(list(plan.returned))
    return plan


def _check_fpn_levels(levels: List[StageInfo]) -> None:
    for shallower, deeper in itertools.pairwise(levels):
        if deeper.stride <= shallower.stride:
            raise SpecError(
                key_path("fpn"),
                f"FPN levels need strictly increasing strides, but stage {deeper.name!r} has stride {deeper.stride} "
                f"after {shallower.name!r} with stride {shallower.stride}; choose out_features with distinct strides",
            )
