"""Every packaged conf/backbone file builds, runs, and its outputs agree with feature_info."""

from __future__ import annotations

import math

import pytest
import torch

import featx


@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_conf_backbone_outputs_match_feature_info(backbone_name, size):
    backbone = featx.build(backbone_name, overrides=["device=cpu"]).eval()
    height, width = size
    with torch.inference_mode():
        outputs = backbone(torch.randn(2, 3, height, width))
    assert list(outputs) == [info.name for info in backbone.feature_info]
    for info in backbone.feature_info:
        batch, channels, out_height, out_width = outputs[info.name].shape
        assert (batch, channels) == (2, info.channels)
        assert abs(out_height - math.ceil(height / info.stride)) <= 1, info
        assert abs(out_width - math.ceil(width / info.stride)) <= 1, info
    strides = [info.stride for info in backbone.feature_info]
    assert strides == sorted(strides)


def test_conf_backbone_rebuilds_from_its_resolved_spec(backbone_name):
    backbone = featx.build(backbone_name, overrides=["device=cpu"])
    rebuilt = featx.build(backbone.spec.to_dict())
    assert rebuilt.feature_info == backbone.feature_info
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in backbone.state_dict().items()}


def test_reference_extractors_have_the_documented_shape():
    vgg = featx.build("vgg16", overrides=["device=cpu"])
    assert [(i.name, i.channels, i.stride) for i in vgg.feature_info] == [
        ("c1", 64, 1), ("c2", 128, 2), ("c3", 256, 4), ("c4", 512, 8), ("c5", 512, 16)
    ]
    resnet34 = featx.build("resnet34", overrides=["device=cpu"])
    assert resnet34.feature_info == [featx.FeatureInfo("layer3", 256, 16)] and resnet34.out_channels == 256
    fpn = featx.build("resnet50_fpn", overrides=["device=cpu"])
    assert [(i.name, i.channels, i.stride) for i in fpn.feature_info] == [
        ("p2", 256, 4), ("p3", 256, 8), ("p4", 256, 16), ("p5", 256, 32)
    ]
    assert fpn.out_channels == 256
    resnet50 = featx.build("resnet50", overrides=["device=cpu"])
    assert [i.channels for i in resnet50.feature_info] == [256, 512, 1024, 2048] and resnet50.out_channels is None
