"""The module ``featx.build`` returns: stages run in order, named feature maps out, channels and strides known.

Example::

    bb = featx.build("resnet50_fpn")
    feats = bb(torch.randn(2, 3, 224, 224))
    {name: tuple(t.shape) for name, t in feats.items()}
    # {'p2': (2, 256, 56, 56), 'p3': (2, 256, 28, 28), 'p4': (2, 256, 14, 14), 'p5': (2, 256, 7, 7)}
    bb.feature_info   # [FeatureInfo(name='p2', channels=256, stride=4), ...]
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

from torch import Tensor, nn

from featx.errors import InputShapeError
from featx.freezing import set_norm_eval

if TYPE_CHECKING:
    from featx.plan import BackbonePlan, StageInfo
    from featx.spec import BackboneSpec


@dataclass(frozen=True)
class FeatureInfo:
    """One output of a backbone: its name, channel count and stride (input size / output size)."""

    name: str
    channels: int
    stride: int


class Backbone(nn.Module):
    """Stages (``self.stages``, an ``nn.ModuleDict``) applied in order, plus an optional FPN (``self.neck``).

    Built by :func:`featx.build`; ``forward(x)`` takes ``N×C×H×W`` and returns an ``OrderedDict`` of
    ``N×C×h×w`` maps, shallow to deep, described by :attr:`feature_info`.
    """

    def __init__(self, stages: Mapping[str, nn.Module], plan: "BackbonePlan", neck: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.neck = neck
        self.spec: "BackboneSpec" = plan.spec
        self.stage_info: Tuple["StageInfo", ...] = plan.stages
        self.in_channels = plan.in_channels
        self.frozen_stage_names: Tuple[str, ...] = tuple(self.stages)[: plan.spec.frozen_stages]
        returned = [info for info in plan.stages if info.name in plan.spec.returned_stages]
        if neck is not None:
            self.feature_info: List[FeatureInfo] = list(neck.feature_info)
            output_names = [info.name for info in neck.feature_info[: len(returned)]]
        else:
            self.feature_info = [FeatureInfo(info.name, info.channels, info.stride) for info in returned]
            output_names = [info.name for info in returned]
        self._output_names: Dict[str, str] = {info.name: out for info, out in zip(returned, output_names)}
        self._nhwc = plan.spec.layout == "nhwc"

    @property
    def out_channels(self) -> Optional[int]:
        """The channel count shared by all outputs (what torchvision's detection models read), else ``None``."""
        channels = {info.channels for info in self.feature_info}
        return channels.pop() if len(channels) == 1 else None

    def train(self, mode: bool = True) -> "Backbone":
        """Like ``nn.Module.train``, but frozen stages (and, with ``norm: eval``, all norm layers) stay in eval."""
        super().train(mode)
        if mode:
            for name in self.frozen_stage_names:
                self.stages[name].eval()
            if self.spec.norm == "eval":
                set_norm_eval(self.stages)
        return self

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"featx backbone {self.spec.model!r} expects a batch of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        features: "OrderedDict[str, Tensor]" = OrderedDict()
        for name, stage in self.stages.items():
            x = stage(x)
            if name in self._output_names:
                features[self._output_names[name]] = x.permute(0, 3, 1, 2) if self._nhwc else x
        return self.neck(features) if self.neck is not None else features
