"""featx: config-driven multi-scale backbones from torchvision classifiers.

Example::

    import featx, torch
    bb = featx.build("resnet50_fpn")
    feats = bb(torch.randn(1, 3, 224, 224))      # OrderedDict p2..p5
    bb.feature_info                               # names, channels, strides
    featx.build(featx.propose("convnext_tiny"))   # any hierarchical torchvision classifier, no YAML needed

``import featx`` loads only the spec layer and registers featx's schemas in Hydra's ConfigStore; torch and the
rest load when a name below is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featx.errors import ArgumentError, DeviceError, FeatxError, InputShapeError, SpecError, WeightsError
from featx.spec.hydra_store import register_configs
from featx.spec.load import load_spec
from featx.spec.schema import BackboneSpec, FpnSpec, StageSpec
from featx.version import __version__ as __version__

if TYPE_CHECKING:
    from featx.construct.builder import build, load, save
    from featx.construct.propose import propose
    from featx.nn.backbone import Backbone
    from featx.nn.feature_info import FeatureInfo
    from featx.tasks.extract.store import read_features

#: public name -> the module that defines it, imported on first use (so ``import featx`` does not load torch)
_LAZY = {
    "Backbone": "featx.nn.backbone",
    "FeatureInfo": "featx.nn.feature_info",
    "build": "featx.construct.builder",
    "load": "featx.construct.builder",
    "save": "featx.construct.builder",
    "propose": "featx.construct.propose",
    "read_features": "featx.tasks.extract.store",
}

__all__ = [
    "ArgumentError",
    "Backbone",
    "BackboneSpec",
    "DeviceError",
    "FeatureInfo",
    "FeatxError",
    "FpnSpec",
    "InputShapeError",
    "SpecError",
    "StageSpec",
    "WeightsError",
    "build",
    "load",
    "load_spec",
    "propose",
    "read_features",
    "save",
]

register_configs()


#: submodules documented by their dotted path (``featx.export.export_backbone``), imported on first use too
_LAZY_MODULES = ("detection", "export")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"featx.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'featx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
