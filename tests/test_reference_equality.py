"""featx's reference extractors compute exactly what torchvision computes with the same weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, save_state_dict
from torch.testing import assert_close
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

import featx


def test_vgg16_blocks_equal_features_slices_in_sequence(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.vgg16().eval()
    weights = save_state_dict(reference, tmp_path / "vgg16.pth")
    backbone = featx.build("vgg16", overrides=[f"weights='{weights}'", "device=cpu"]).eval()
    x = torch.randn(2, 3, 64, 80)
    bounds = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 29)]
    with torch.inference_mode():
        outputs = backbone(x)
        expected = x
        for (start, end), (name, actual) in zip(bounds, outputs.items(), strict=True):
            expected = reference.features[start:end](expected)
            assert_close(actual, expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("norm", ["eval", "frozen"])
def test_resnet34_equals_intermediate_layer_getter(tmp_path, norm):
    torch.manual_seed(0)
    classifier = randomize_norm_statistics(torchvision.models.resnet34()).eval()
    weights = save_state_dict(classifier, tmp_path / "resnet34.pth")
    backbone = featx.build("resnet34", overrides=[f"weights='{weights}'", "device=cpu", f"norm={norm}"]).eval()
    # norm=frozen is torchvision's detection recipe: the same ResNet built with FrozenBatchNorm2d
    reference = classifier if norm == "eval" else torchvision.models.resnet34(norm_layer=FrozenBatchNorm2d)
    reference.load_state_dict(classifier.state_dict())
    getter = IntermediateLayerGetter(reference, {"layer3": "layer3"}).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert_close(backbone(x)["layer3"], getter(x)["layer3"], rtol=0, atol=0)


@pytest.mark.parametrize("size", [(224, 224), (225, 223), (97, 131)])
def test_resnet50_fpn_equals_torchvision_resnet_fpn_backbone(tmp_path, size):
    torch.manual_seed(0)
    classifier = randomize_norm_statistics(torchvision.models.resnet50())
    weights = save_state_dict(classifier, tmp_path / "resnet50.pth")
    backbone = featx.build(
        "resnet50_fpn", overrides=[f"weights='{weights}'", "device=cpu", "fpn.extra_blocks=maxpool", "norm=frozen"]
    ).eval()
    reference = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, trainable_layers=3, extra_blocks=LastLevelMaxPool()
    ).eval()
    missing, unexpected = reference.body.load_state_dict(classifier.state_dict(), strict=False)
    assert missing == [] and set(unexpected) == {"fc.weight", "fc.bias"}
    reference.fpn.load_state_dict(backbone.neck.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        actual, expected = backbone(x), reference(x)
    assert list(actual) == ["p2", "p3", "p4", "p5", "p6"]
    assert list(expected) == ["0", "1", "2", "3", "pool"]
    for (name, tensor), reference_tensor in zip(actual.items(), expected.values(), strict=True):
        assert_close(tensor, reference_tensor, rtol=0, atol=0, msg=name)


def test_fpn_trainability_matches_the_spec_not_torchvision_defaults():
    backbone = featx.build("resnet50_fpn", overrides=["device=cpu", "norm=train"])
    frozen = {name for name, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("stages.c2.", "stages.c3.")) for name in frozen)
    assert all(p.requires_grad for p in backbone.neck.parameters())


def test_a_returned_stage_is_not_changed_by_a_later_stage_that_starts_in_place(tmp_path):
    """A stage that ends before ResNet's ReLU(inplace=True), with the ReLU starting the next stage: the returned map
    was the next stage's input, which that ReLU overwrote (every negative value 0), also for the FPN above it."""
    torch.manual_seed(0)
    reference = randomize_norm_statistics(torchvision.models.resnet18()).eval()
    weights = save_state_dict(reference, tmp_path / "resnet18.pth")
    stages = {"stem": {"modules": ["conv1", "bn1"]}, "c2": {"modules": ["relu", "maxpool", "layer1"]}}
    spec = {"model": "resnet18", "weights": str(weights), "device": "cpu", "norm": "eval", "stages": stages}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem = reference.bn1(reference.conv1(x))
        c2 = reference.layer1(reference.maxpool(reference.relu(stem.clone())))
        for fpn in (None, {"out_channels": 8}):
            backbone = featx.build({**spec, "fpn": fpn}).eval()
            if fpn is None:
                outputs = backbone(x)
                assert_close(outputs["stem"], stem, rtol=0, atol=0)
                assert_close(outputs["c2"], c2, rtol=0, atol=0)
            else:  # the FPN gets the same maps: its output equals the neck run on torchvision's (its inputs p1, p2)
                assert_close(backbone(x)["p1"], backbone.neck({"p1": stem, "p2": c2})["p1"], rtol=0, atol=0)


def test_vgg16_block5_before_its_relu_stays_so_with_a_stage_after_it(tmp_path):
    """The design's VGG-16 block 5 ends on the last conv, before its ReLU(inplace=True); a sixth stage starting with
    that ReLU overwrote block 5's map."""
    torch.manual_seed(0)
    reference = torchvision.models.vgg16().eval()
    weights = save_state_dict(reference, tmp_path / "vgg16.pth")
    backbone = featx.build(
        "vgg16", overrides=[f"weights='{weights}'", "device=cpu", "+stages.c6={slice: [29, 31]}", "frozen_stages=0"]
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = backbone(x)
        assert_close(outputs["c5"], reference.features[:29](x), rtol=0, atol=0)
        assert_close(outputs["c6"], reference.features[:31](x), rtol=0, atol=0)
