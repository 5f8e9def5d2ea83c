"""ViTDet's simple feature pyramid (Li et al., 2022): levels ``p2``..``p5`` (strides 4..32) made from one map, the
deepest the backbone returns.

Each level rescales that map by a power of two — up with stride-2 transposed convolutions (LayerNorm and GELU
between them, halving the channels each time), down with a max-pool — then a 1×1 and a 3×3 convolution to
``out_channels``, each followed by a channel LayerNorm. A plain ViT's stride-16 map is rescaled by 4, 2, 1 and ½; a
stride-32 map (patch 32, or a CNN's ``c5``) by 8, 4, 2 and 1. ``extra_blocks`` adds ``p6`` (max-pool of ``p5``) or
``p6``/``p7`` (strided 3×3 convolutions) with torchvision's own blocks.

Example::

    neck = SimpleFeaturePyramid([FeatureInfo("blocks4", 768, 16)], FpnSpec(256, "maxpool", style="simple"))
    [(info.name, info.stride) for info in neck.feature_info]
    # [('p2', 4), ('p3', 8), ('p4', 16), ('p5', 32), ('p6', 64)]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Tuple

from torch import Tensor, nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.ops.misc import Conv2dNormActivation

from featx.nn.feature_info import FeatureInfo
from featx.nn.fpn import extra_block, level_name
from featx.nn.neck_levels import refuse_levels
from featx.spec.schema import FpnSpec

#: the strides of p2..p5
LEVEL_STRIDES = (4, 8, 16, 32)
#: ViTDet's LayerNorm epsilon
_EPS = 1e-6


def _channel_norm(channels: int) -> nn.Module:
    return LayerNorm2d(channels, eps=_EPS)


def _rescale(channels: int, factor: float) -> nn.Sequential:
    """Upsampling by ``factor`` (a power of two > 1: transposed convs halving the channels), or downsampling by
    ``1/factor`` (a max-pool), or nothing (``factor == 1``)."""
    layers: List[nn.Module] = []
    if factor > 1:
        steps = int(factor).bit_length() - 1
        for step in range(steps):
            narrower = max(1, channels // 2)
            layers.append(nn.ConvTranspose2d(channels, narrower, kernel_size=2, stride=2))
            if step + 1 < steps:
                layers += [_channel_norm(narrower), nn.GELU()]
            channels = narrower
    elif factor < 1:
        window = round(1 / factor)
        layers.append(nn.MaxPool2d(kernel_size=window, stride=window))
    return nn.Sequential(*layers)


def _out_channels(rescale: nn.Sequential, channels: int) -> int:
    for layer in rescale:
        if isinstance(layer, nn.ConvTranspose2d):
            channels = layer.out_channels
    return channels


class SimpleFeaturePyramid(nn.Module):
    """The simple feature pyramid on the one map ``inputs`` describes (the backbone's returned stage; its name is the
    key the neck is fed); ``spec.out_channels`` is every level's width. ArgumentError for more than one map, or a
    stride that is no power of two (:func:`~featx.nn.neck_levels.refuse_levels`).
    """

    def __init__(self, inputs: List[FeatureInfo], spec: FpnSpec, torchvision_names: bool = False) -> None:
        super().__init__()
        refuse_levels(inputs, "simple", "SimpleFeaturePyramid()")
        top = inputs[-1]
        self.top_stride = top.stride
        self.input_names = [info.name for info in inputs]
        self.input_info = list(inputs)  # what it takes: checked when it is assigned to a backbone
        self.rescales = nn.ModuleList()
        self.outputs = nn.ModuleList()
        for stride in LEVEL_STRIDES:
            rescale = _rescale(top.channels, top.stride / stride)
            self.rescales.append(rescale)
            width = _out_channels(rescale, top.channels)
            self.outputs.append(
                nn.Sequential(
                    Conv2dNormActivation(
                        width, spec.out_channels, 1, norm_layer=_channel_norm, activation_layer=None, bias=False
                    ),
                    Conv2dNormActivation(
                        spec.out_channels,
                        spec.out_channels,
                        3,
                        norm_layer=_channel_norm,
                        activation_layer=None,
                        bias=False,
                    ),
                )
            )
        self.level_names = [str(i) if torchvision_names else level_name(s) for i, s in enumerate(LEVEL_STRIDES)]
        levels = [FeatureInfo(n, spec.out_channels, s) for n, s in zip(self.level_names, LEVEL_STRIDES, strict=True)]
        self.extra_blocks, extra_levels = extra_block(spec, levels[-1], spec.out_channels, torchvision_names)
        self.feature_info = levels + extra_levels
        self.extra_level_names = [info.name for info in extra_levels]
        self.extra_kind = spec.extra_blocks

    def level_parts(self, stage_names: List[str]) -> List[Tuple[str, List[nn.Module]]]:
        """For each output level: what makes it (for reports) and the modules that hold its parameters."""
        top = stage_names[-1]
        parts: List[Tuple[str, List[nn.Module]]] = []
        for stride, rescale, output in zip(LEVEL_STRIDES, self.rescales, self.outputs, strict=True):
            factor = self.top_stride / stride
            scale = f"x{int(factor)}" if factor >= 1 else f"x1/{round(1 / factor)}"
            parts.append((f"simple pyramid {scale} of {top}", [rescale, output]))
        extra = list(self.extra_blocks.children()) if self.extra_blocks is not None else []
        for index in range(len(self.extra_level_names)):
            parts.append((f"simple pyramid extra level ({self.extra_kind})", extra[index : index + 1]))
        return parts

    def forward(self, features: Dict[str, Tensor]) -> "OrderedDict[str, Tensor]":
        top = features[self.input_names[-1]]
        results = [output(rescale(top)) for rescale, output in zip(self.rescales, self.outputs, strict=True)]
        names = list(self.level_names)
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, [top], names)
        return OrderedDict(zip(names, results, strict=True))
