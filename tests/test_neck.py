"""The FPN neck: torchvision's FeaturePyramidNetwork, widths from the probe, levels named p{log2 stride}."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, resnet18_spec, save_state_dict
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

import featx


@pytest.mark.parametrize(
    ("extra_blocks", "names"),
    [(None, ["p2", "p3", "p4"]), ("maxpool", ["p2", "p3", "p4", "p5"]), ("p6p7", ["p2", "p3", "p4", "p5", "p6"])],
)
@pytest.mark.parametrize("size", [(64, 64), (225, 223), (97, 131)])
def test_fpn_levels_named_by_stride_on_odd_sizes(extra_blocks, names, size):
    backbone = featx.build(resnet18_spec(fpn={"out_channels": 32, "extra_blocks": extra_blocks})).eval()
    assert isinstance(backbone.neck, FeaturePyramidNetwork)
    assert [i.name for i in backbone.feature_info] == names
    assert [i.stride for i in backbone.feature_info] == [2 ** int(n[1:]) for n in names]
    with torch.inference_mode():
        outputs = backbone(torch.randn(1, 3, *size))
    assert list(outputs) == names
    for info in backbone.feature_info:
        assert outputs[info.name].shape[1] == 32 == info.channels
    # ResNet's convs and pools are padded, and so are the extra levels: a stride-s level is ceil(size / s)
    strides = [2 ** int(n[1:]) for n in names]
    assert [tuple(outputs[n].shape) for n in names] == [(1, 32, -(-size[0] // s), -(-size[1] // s)) for s in strides]


def test_fpn_in_channels_come_from_the_probe():
    backbone = featx.build(resnet18_spec(fpn={"out_channels": 16}))
    assert [block[0].in_channels for block in backbone.neck.inner_blocks] == [64, 128, 256]


def test_fpn_over_selected_outputs_names_levels_by_their_strides():
    backbone = featx.build(resnet18_spec(out_features=["c3", "c4"], fpn={"out_channels": 8, "extra_blocks": "p6p7"}))
    assert [(i.name, i.stride) for i in backbone.feature_info] == [("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64)]
    # P6 is computed from C4 (256 channels) because it differs from the FPN width
    assert backbone.neck.extra_blocks.p6.in_channels == 256


@pytest.mark.parametrize(
    ("name", "nodes", "widths", "extra_blocks"),
    [
        ("convnext_tiny_fpn", ["features.1", "features.3", "features.5", "features.7"], [96, 192, 384, 768], "p6p7"),
        (
            "mobilenet_v3_large_fpn",
            ["features.3", "features.6", "features.12", "features.16"],
            [24, 40, 112, 960],
            "maxpool",
        ),
    ],
)
@pytest.mark.parametrize("size", [(97, 131), (64, 80)])
def test_fpn_values_equal_torchvisions_fpn_on_the_models_own_features(
    tmp_path, name, nodes, widths, extra_blocks, size
):
    """Independent reference: torchvision's FX feature extractor at node names listed here by hand feeds
    torchvision's own FeaturePyramidNetwork (same weights); featx's outputs must equal it level by level, at odd
    sizes, each level's stride named as written here."""
    model_name = featx.load_spec(name).model
    reference_model = randomize_norm_statistics(torchvision.models.get_model(model_name)).eval()
    weights = save_state_dict(reference_model, tmp_path / "w.pth")
    overrides = [f"weights={weights}", "device=cpu", "norm=eval", f"fpn.extra_blocks={extra_blocks}"]
    backbone = featx.build(name, overrides=overrides).eval()
    extra = LastLevelP6P7(widths[-1], 256) if extra_blocks == "p6p7" else LastLevelMaxPool()
    reference_fpn = FeaturePyramidNetwork(widths, 256, extra_blocks=extra).eval()
    reference_fpn.load_state_dict(backbone.neck.state_dict())
    trunk = create_feature_extractor(reference_model, return_nodes={node: str(i) for i, node in enumerate(nodes)})
    image = torch.randn(2, 3, *size)
    with torch.inference_mode():
        outputs = backbone(image)
        expected = list(reference_fpn(trunk(image)).values())
    strides = [4, 8, 16, 32, 64] + ([128] if extra_blocks == "p6p7" else [])
    assert list(outputs) == [f"p{s.bit_length() - 1}" for s in strides]
    assert [info.stride for info in backbone.feature_info] == strides
    assert [t.shape for t in outputs.values()] == [t.shape for t in expected]
    for got, want in zip(outputs.values(), expected, strict=True):
        assert torch.equal(got, want)
