"""The FPN neck: torchvision's ``FeaturePyramidNetwork`` with levels named ``p{log2 stride}``.

The backbone hands it an ordered dict already keyed ``p2``..``p5``; the extra blocks below name their levels
after their strides too (torchvision calls them ``pool`` and ``p6``/``p7`` whatever the top level is).

Example::

    neck = FeaturePyramid([FeatureInfo("p4", 1024, 16), FeatureInfo("p5", 2048, 32)], FpnSpec(256, "maxpool"))
    [info.name for info in neck.feature_info]   # ['p4', 'p5', 'p6']
    # with torchvision_names=True (inputs named "0", "1"): ['0', '1', 'pool']
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from featx.nn.feature_info import FeatureInfo
from featx.nn.neck_levels import refuse_levels
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


#: what torchvision's detection backbones call the extra levels (``output_names: torchvision``)
TORCHVISION_EXTRA_NAMES = {"maxpool": ["pool"], "p6p7": ["p6", "p7"]}


def extra_block(
    spec: FpnSpec, top: FeatureInfo, in_channels: int, torchvision_names: bool = False
) -> Tuple[Optional[ExtraFPNBlock], List[FeatureInfo]]:
    """``spec.extra_blocks`` above the ``top`` level, and the levels it adds (named after their strides, or as
    torchvision names them). ``p6p7`` convolves the top input map when it has ``in_channels != out_channels``
    (torchvision's rule), else the top output level."""
    if spec.extra_blocks is None:
        return None, []
    count = 1 if spec.extra_blocks == "maxpool" else 2
    strides = [top.stride * 2**step for step in range(1, count + 1)]
    names = TORCHVISION_EXTRA_NAMES[spec.extra_blocks] if torchvision_names else [level_name(s) for s in strides]
    levels = [FeatureInfo(name, spec.out_channels, stride) for name, stride in zip(names, strides, strict=True)]
    if spec.extra_blocks == "maxpool":
        return MaxPoolLevel(names[0]), levels
    return P6P7Levels(in_channels, spec.out_channels, names), levels


class FeaturePyramid(FeaturePyramidNetwork):
    """torchvision's FPN plus ``feature_info`` of its outputs: one level per input, named as the input (the
    builder names them ``p{log2 stride}``, or ``'0'``, ``'1'``, ... as torchvision does), then the extra levels."""

    def __init__(self, inputs: List[FeatureInfo], spec: FpnSpec, torchvision_names: bool = False) -> None:
        refuse_levels(inputs, "fpn", "FeaturePyramid()")
        block, extra_levels = extra_block(spec, inputs[-1], inputs[-1].channels, torchvision_names)
        super().__init__([info.channels for info in inputs], spec.out_channels, extra_blocks=block)
        self.input_names = [info.name for info in inputs]
        self.input_info = list(inputs)  # what it takes: checked when it is assigned to a backbone
        self.extra_kind = spec.extra_blocks
        self.feature_info = [FeatureInfo(info.name, spec.out_channels, info.stride) for info in inputs] + extra_levels
        # levels made by the extra block (pooled or convolved from the top level), not from a backbone stage
        self.extra_level_names = [info.name for info in extra_levels]

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
