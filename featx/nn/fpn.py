"""The FPN neck: torchvision's ``FeaturePyramidNetwork`` with levels named ``p{log2 stride}``.

The backbone hands it an ordered dict already keyed ``p2``..``p5``; the extra blocks below name their levels
after their strides too (torchvision calls them ``pool`` and ``p6``/``p7`` whatever the top level is).

Example::

    neck = FeaturePyramid([FeatureInfo("p4", 1024, 16), FeatureInfo("p5", 2048, 32)], FpnSpec(256, "maxpool"))
    [info.name for info in neck.feature_info]   # ['p4', 'p5', 'p6']
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from featx.nn.feature_info import FeatureInfo
from featx.spec.schema import FpnSpec


def level_name(stride: int) -> str:
    """``p{log2(stride)}``: ``level_name(32) == "p5"``."""
    return f"p{stride.bit_length() - 1}"


class _NamedLevels:
    """Mixin for torchvision's extra FPN blocks: rename the levels they append to ``level_names``."""

    level_names: List[str]

    def forward(self, results: List[Tensor], x: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        results, names = super().forward(results, x, names)  # type: ignore[misc]
        return results, names[: len(names) - len(self.level_names)] + self.level_names


class MaxPoolLevel(_NamedLevels, LastLevelMaxPool):
    """``LastLevelMaxPool`` (torchvision's detection layout) whose level is named after its stride."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.level_names = [name]


class P6P7Levels(_NamedLevels, LastLevelP6P7):
    """``LastLevelP6P7`` (RetinaNet/FCOS) from the top backbone level, its two levels named after their strides."""

    def __init__(self, in_channels: int, out_channels: int, names: List[str]) -> None:
        super().__init__(in_channels, out_channels)
        self.level_names = names


def extra_block(spec: FpnSpec, top: FeatureInfo, in_channels: int) -> Tuple[Optional[ExtraFPNBlock], List[int]]:
    """``spec.extra_blocks`` above the ``top`` level, and the strides of the levels it adds. ``p6p7`` convolves the
    top input map when it has ``in_channels != out_channels`` (torchvision's rule), else the top output level."""
    if spec.extra_blocks == "maxpool":
        return MaxPoolLevel(level_name(top.stride * 2)), [top.stride * 2]
    if spec.extra_blocks == "p6p7":
        strides = [top.stride * 2, top.stride * 4]
        return P6P7Levels(in_channels, spec.out_channels, [level_name(s) for s in strides]), strides
    return None, []


class FeaturePyramid(FeaturePyramidNetwork):
    """torchvision's FPN plus ``feature_info`` of its outputs."""

    def __init__(self, inputs: List[FeatureInfo], spec: FpnSpec) -> None:
        block, extra_strides = extra_block(spec, inputs[-1], inputs[-1].channels)
        super().__init__([info.channels for info in inputs], spec.out_channels, extra_blocks=block)
        self.input_names = [info.name for info in inputs]
        self.extra_kind = spec.extra_blocks
        strides = [info.stride for info in inputs] + extra_strides
        self.feature_info = [FeatureInfo(level_name(stride), spec.out_channels, stride) for stride in strides]
        # levels made by the extra block (pooled or convolved from the top level), not from a backbone stage
        self.extra_level_names = [level_name(stride) for stride in extra_strides]

    def level_parts(self, stage_names: List[str]) -> List[Tuple[str, List[nn.Module]]]:
        """For each output level: what makes it (for reports) and the modules that hold its parameters;
        ``stage_names`` are the returned stages feeding the levels."""
        parts: List[Tuple[str, List[nn.Module]]] = [
            (f"fpn lateral+3x3 on {stage}", [self.inner_blocks[index], self.layer_blocks[index]])
            for index, stage in enumerate(stage_names)
        ]
        extra = list(self.extra_blocks.children()) if self.extra_blocks is not None else []
        for index in range(len(self.extra_level_names)):
            parts.append((f"fpn extra level ({self.extra_kind})", extra[index : index + 1]))
        return parts
