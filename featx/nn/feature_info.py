"""The records that describe a backbone's maps: :class:`FeatureInfo` (an output: name, channels, stride) and
:class:`StageInfo` (a stage: the same plus the modules it runs).

Example::

    FeatureInfo("p2", channels=256, stride=4)
    StageInfo("c2", 256, 4, paths=("conv1", "bn1", "relu", "maxpool", "layer1"), covers="conv1, ..., layer1")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class FeatureInfo:
    """One output of a backbone: its name, channel count and stride, the input pixels one step of its map covers: a
    power of two (or a token model's patch size, 14 for ViT-H/14); the input's size over the map's exactly where the
    layers pad (where they do not, as AlexNet's, the map is a few pixels smaller)."""

    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class StageInfo(FeatureInfo):
    """One stage: its output's name, channels and stride, its member modules (paths from the model root) and how
    the spec named them (``covers``: a slice such as ``features[0:4]`` or the listed paths)."""

    paths: Tuple[str, ...]
    covers: str

    @property
    def output(self) -> FeatureInfo:
        """The stage's output as a plain :class:`FeatureInfo`."""
        return FeatureInfo(self.name, self.channels, self.stride)
