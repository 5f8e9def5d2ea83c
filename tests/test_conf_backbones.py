"""Every packaged conf/backbone file of a hierarchical model builds from YAML alone and computes exactly what
torchvision computes with the same weights; every family has an FPN variant that takes odd input sizes. (The plain
ViTs, token models, are checked in test_vit.py.)"""

from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics
from torch.testing import assert_close
from torchvision.models.feature_extraction import create_feature_extractor

import featx
from featx.spec.config_files import backbone_names

#: models too large for the default run: their checks are marked slow (still run in CI)
LARGE_MODELS = {"regnet_y_128gf"}
#: torchvision's model families; every hierarchical model belongs to one (checked below)
FAMILIES = (
    "alexnet",
    "convnext",
    "densenet",
    "efficientnet_b",
    "efficientnet_v2",
    "googlenet",
    "inception_v3",
    "maxvit",
    "mnasnet",
    "mobilenet_v2",
    "mobilenet_v3",
    "regnet_x",
    "regnet_y",
    "resnet",
    "resnext",
    "shufflenet_v2",
    "squeezenet",
    "swin_v2",
    "swin_",
    "vgg",
    "wide_resnet",
)
#: the plain ViTs, written out by hand: token models, checked in test_vit.py
VITS = ("vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32")


def _family(model: str) -> str:
    return next(family for family in FAMILIES if model.startswith(family))


def _specs():
    """The packaged torchvision backbones (the timm_* files are checked against timm in test_timm.py)."""
    specs = {name: featx.load_spec(name) for name in backbone_names()}
    return {name: spec for name, spec in specs.items() if not spec.model.startswith("timm:")}


SPECS = _specs()
HIERARCHICAL = {name: spec for name, spec in SPECS.items() if spec.model not in VITS}
PLAIN = [name for name, spec in HIERARCHICAL.items() if spec.fpn is None]
WITH_FPN = [name for name, spec in HIERARCHICAL.items() if spec.fpn is not None]


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if SPECS[n].model in LARGE_MODELS else n for n in names]


def _test_size(spec: featx.BackboneSpec) -> tuple:
    return tuple(spec.input_size) if spec.input_size is not None else (80, 96)  # inception needs >= 75


def _torchvision_model(name: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception_v3 announce an init change
        return torchvision.models.get_model(name, weights=None)


@pytest.fixture(scope="module", params=_params(PLAIN))
def twin(request, tmp_path_factory):
    """``(name, reference, weights)``: a torchvision instance of the packaged file ``name``'s model (random weights,
    randomised BatchNorm statistics, eval) and its state dict saved to ``weights``. Made once per backbone for every
    test comparing with it (pytest runs those tests one after the other)."""
    name = request.param
    torch.manual_seed(0)
    reference = randomize_norm_statistics(_torchvision_model(SPECS[name].model)).eval()
    weights = tmp_path_factory.mktemp("twin") / f"{name}.pth"
    torch.save(reference.state_dict(), weights)
    yield name, reference, weights
    weights.unlink()  # big checkpoints should not pile up in tmp


def _backbone(name: str, weights, norm: str) -> featx.Backbone:
    """The packaged file ``name`` built with ``weights``; ``norm=eval`` keeps torchvision's own BatchNorm layers, so
    outputs can match exactly."""
    return featx.build(name, overrides=[f"weights='{weights}'", "device=cpu", f"norm={norm}"]).eval()


def _children_in_order(reference: torch.nn.Module, backbone: featx.Backbone, x: torch.Tensor) -> "OrderedDict":
    """The expected outputs: the torchvision model's own modules, applied in the order the spec lists them."""
    expected = OrderedDict()
    returned = {info.name for info in backbone.feature_info}
    for stage in backbone.stage_info:
        for path in stage.paths:
            x = reference.get_submodule(path)(x)
        if stage.name in returned:
            expected[stage.name] = x.permute(0, 3, 1, 2) if backbone.spec.layout == "nhwc" else x
    return expected


def test_conf_backbone_equals_torchvision_with_the_same_weights(twin):
    name, reference, weights = twin
    spec, backbone = SPECS[name], _backbone(name, weights, norm="eval")
    x = torch.randn(2, 3, *_test_size(spec))
    with torch.inference_mode():
        outputs = backbone(x)
        expected = _children_in_order(reference, backbone, x)
    assert list(outputs) == list(expected) == [info.name for info in backbone.feature_info]
    for info in backbone.feature_info:
        assert_close(outputs[info.name], expected[info.name], rtol=0, atol=0, msg=f"{name}.{info.name}")
        assert outputs[info.name].shape[1] == info.channels
    strides = [info.stride for info in backbone.feature_info]
    assert strides == sorted(set(strides)), "strides must increase strictly"


def test_conf_backbone_with_frozen_norm_equals_torchvision_in_eval_mode(twin):
    """The packaged default ``norm: frozen`` (torchvision's FrozenBatchNorm2d, built with each layer's own eps)
    against the torchvision model's own BatchNorm in eval mode: equal up to float rounding."""
    name, reference, weights = twin
    spec, backbone = SPECS[name], _backbone(name, weights, norm="frozen")
    x = torch.randn(2, 3, *_test_size(spec))
    with torch.inference_mode():
        outputs = backbone(x)
        expected = _children_in_order(reference, backbone, x)
    for info in backbone.feature_info:
        scale = expected[info.name].abs().max().item()
        assert_close(outputs[info.name], expected[info.name], rtol=1e-4, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("name", _params(WITH_FPN))
def test_fpn_conf_backbone_takes_odd_sizes(name):
    spec = SPECS[name]
    backbone = featx.build(name, overrides=["device=cpu"]).eval()
    sizes = [tuple(spec.input_size)] if spec.input_size is not None else [(97, 131), (80, 96)]
    for height, width in sizes:
        with torch.inference_mode():
            outputs = backbone(torch.randn(1, 3, height, width))
        assert [(k, v.shape[1]) for k, v in outputs.items()] == [(i.name, i.channels) for i in backbone.feature_info]
        for info in backbone.feature_info:
            out_height, out_width = outputs[info.name].shape[2:]
            # padded models give ceil(size / stride); inception's unpadded convs lose up to ~80 input pixels
            for size, out in ((height, out_height), (width, out_width)):
                assert (size - 80) // info.stride <= out <= math.ceil(size / info.stride) + 1, (info, size, out)


def test_every_family_has_an_fpn_variant_and_every_model_a_conf_file():
    models = set(torchvision.models.list_models(module=torchvision.models))
    configured = {spec.model for spec in SPECS.values()}
    assert models <= configured, sorted(models - configured)
    hierarchical = models - set(VITS)
    assert {_family(model) for model in hierarchical} == {_family(SPECS[name].model) for name in WITH_FPN}
    assert len(hierarchical) >= 75
    vit_fpn = {spec.model for spec in SPECS.values() if spec.model in VITS and spec.fpn is not None}
    assert vit_fpn == set(VITS) and all(SPECS[f"{vit}_fpn"].fpn.style == "simple" for vit in VITS)


# A sample of families, checked against torchvision's own feature extractor (an FX trace of the real forward) at the
# nodes where the stages end: this does not rely on featx's reading of the module order.
#: one packaged file per torchvision family → the FX node (a module path of torchvision's own model) where each of
#: its stages ends, written out by hand from torchvision's model definitions, so the reference does not come from
#: featx's plan: e.g. VGG-16-BN's c2 ends at features.22, the last ReLU before the stride-8 pool features.23
FX_NODES = {
    "alexnet": {"features.1": "c2", "features.4": "c3", "features.11": "c4", "features.12": "c5"},
    "convnext_tiny": {"features.1": "c2", "features.3": "c3", "features.5": "c4", "features.7": "c5"},
    "densenet121": {
        "features.denseblock1": "c2",
        "features.denseblock2": "c3",
        "features.denseblock3": "c4",
        "features.norm5": "c5",
    },
    "efficientnet_b0": {"features.2": "c2", "features.3": "c3", "features.5": "c4", "features.8": "c5"},
    "efficientnet_v2_s": {"features.2": "c2", "features.3": "c3", "features.5": "c4", "features.7": "c5"},
    "googlenet": {"conv3": "c2", "inception3b": "c3", "inception4e": "c4", "inception5b": "c5"},
    "inception_v3": {"Conv2d_4a_3x3": "c2", "Mixed_5d": "c3", "Mixed_6e": "c4", "Mixed_7c": "c5"},
    "maxvit_t": {"blocks.0": "c2", "blocks.1": "c3", "blocks.2": "c4", "blocks.3": "c5"},
    "mnasnet1_0": {"layers.8": "c2", "layers.9": "c3", "layers.11": "c4", "layers.16": "c5"},
    "mobilenet_v2": {"features.3": "c2", "features.6": "c3", "features.13": "c4", "features.18": "c5"},
    "mobilenet_v3_large": {"features.3": "c2", "features.6": "c3", "features.12": "c4", "features.16": "c5"},
    "regnet_x_400mf": {
        "trunk_output.block1": "c2",
        "trunk_output.block2": "c3",
        "trunk_output.block3": "c4",
        "trunk_output.block4": "c5",
    },
    "regnet_y_400mf": {
        "trunk_output.block1": "c2",
        "trunk_output.block2": "c3",
        "trunk_output.block3": "c4",
        "trunk_output.block4": "c5",
    },
    "resnet50": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
    "resnext50_32x4d": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
    "shufflenet_v2_x1_0": {"maxpool": "c2", "stage2": "c3", "stage3": "c4", "conv5": "c5"},
    "squeezenet1_1": {"features.4": "c2", "features.7": "c3", "features.12": "c4"},
    "swin_v2_t": {"features.1": "c2", "features.3": "c3", "features.5": "c4", "norm": "c5"},
    "swin_t": {"features.1": "c2", "features.3": "c3", "features.5": "c4", "norm": "c5"},
    "vgg16_bn": {"features.22": "c2", "features.32": "c3", "features.42": "c4", "features.43": "c5"},
    "wide_resnet50_2": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
}


def test_the_fx_references_cover_every_family():
    assert {_family(SPECS[name].model) for name in FX_NODES} == set(FAMILIES)


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing:UserWarning")
@pytest.mark.parametrize("twin", list(FX_NODES), indirect=True)
def test_conf_backbone_equals_torchvision_feature_extractor(twin):
    """torchvision's FX trace of the model's real forward, cut at the nodes listed above, against the packaged
    file with its default ``norm: frozen`` and with ``norm: eval``."""
    name, reference, weights = twin
    spec, backbone, frozen = SPECS[name], _backbone(name, weights, "eval"), _backbone(name, weights, "frozen")
    extractor = create_feature_extractor(reference, return_nodes=FX_NODES[name]).eval()
    x = torch.randn(2, 3, *_test_size(spec))
    if name in ("googlenet", "inception_v3"):
        assert not reference.transform_input  # built without weights: the forward feeds x to the stages unchanged
    with torch.inference_mode():
        expected = extractor(x)
        outputs, frozen_outputs = backbone(x), frozen(x)
    assert list(outputs) == list(expected) == list(FX_NODES[name].values())
    for stage_name, value in expected.items():
        value = value.permute(0, 3, 1, 2) if spec.layout == "nhwc" else value
        assert_close(outputs[stage_name], value, rtol=1e-5, atol=1e-5, msg=f"{name}.{stage_name}")
        scale = max(value.abs().max().item(), 1.0)
        assert_close(frozen_outputs[stage_name], value, rtol=1e-4, atol=1e-5 * scale, msg=f"{name}.{stage_name}")


def test_reference_extractors_have_the_documented_shape():
    vgg = featx.build("vgg16", overrides=["device=meta"])
    assert [(i.name, i.channels, i.stride) for i in vgg.feature_info] == [
        ("c1", 64, 1),
        ("c2", 128, 2),
        ("c3", 256, 4),
        ("c4", 512, 8),
        ("c5", 512, 16),
    ]
    resnet34 = featx.build("resnet34", overrides=["device=meta"])
    assert resnet34.feature_info == [featx.FeatureInfo("layer3", 256, 16)] and resnet34.out_channels == 256
    fpn = featx.build("resnet50_fpn", overrides=["device=meta"])
    assert [(i.name, i.channels, i.stride) for i in fpn.feature_info] == [
        ("p2", 256, 4),
        ("p3", 256, 8),
        ("p4", 256, 16),
        ("p5", 256, 32),
    ]
    assert fpn.out_channels == 256
    resnet50 = featx.build("resnet50", overrides=["device=meta"])
    assert [i.channels for i in resnet50.feature_info] == [256, 512, 1024, 2048] and resnet50.out_channels is None


def test_fixed_size_model_refuses_other_sizes():
    backbone = featx.build("maxvit_t", overrides=["device=meta"])
    with pytest.raises(
        featx.InputShapeError, match=r"takes inputs of exactly 224x224 \(its spec's input_size\), got 256x224"
    ):
        backbone(torch.empty(1, 3, 256, 224, device="meta"))


def test_conf_backbone_count_in_the_docs_is_the_measured_one():
    """The config reference and the README state how many torchvision builders build from YAML; the tests above
    (and test_vit.py) measure it."""
    root = Path(__file__).resolve().parents[1]
    count = len({spec.model for spec in SPECS.values()})
    total = len(torchvision.models.list_models(module=torchvision.models))
    config = (root / "docs" / "config.md").read_text()
    assert re.search(rf"\b{count} of torchvision's {total} classification builders\b", config), (count, total)
    assert count == total and f"(all {count} of torchvision's classifiers" in (root / "README.md").read_text()


def test_a_fixed_size_model_without_input_size_is_planned_at_the_size_it_takes():
    """A hand-written MaxViT spec without input_size: the probe finds that the stages run at the weights' crop size
    only (224, from torchvision's weights enum) and the backbone requires it."""
    spec = {"model": "maxvit_t", "stages": {"c2": {"modules": ["stem", "blocks.0"]}, "c3": {"modules": ["blocks.1"]}}}
    backbone = featx.build(spec, overrides=["device=meta"])
    assert backbone.spec.input_size == [224, 224]
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [("c2", 64, 4), ("c3", 128, 8)]
    assert backbone(torch.empty(1, 3, 224, 224, device="meta"))["c3"].shape == (1, 128, 28, 28)
    with pytest.raises(featx.InputShapeError, match=r"takes inputs of exactly 224x224"):
        backbone(torch.empty(1, 3, 256, 256, device="meta"))
