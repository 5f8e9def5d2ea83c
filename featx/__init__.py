"""featx: config-driven multi-scale backbones from torchvision classifiers.

Example::

    import featx, torch
    bb = featx.build("resnet50_fpn")
    feats = bb(torch.randn(1, 3, 224, 224))      # OrderedDict p2..p5
    bb.feature_info                               # names, channels, strides
    featx.build(featx.propose("convnext_tiny"))   # any hierarchical torchvision classifier, no YAML needed
"""

from featx import hydra_conf as _hydra_conf  # noqa: F401  (registers the schemas in Hydra's ConfigStore)
from featx.backbone import Backbone, FeatureInfo
from featx.build import build
from featx.checkpoint import load, save
from featx.errors import ArgumentError, DeviceError, FeatxError, InputShapeError, SpecError, WeightsError
from featx.feature_store import read_features
from featx.loader import load_spec
from featx.proposal import propose
from featx.spec import BackboneSpec, FpnSpec, StageSpec

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
__version__ = "0.1.0"
