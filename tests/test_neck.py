"""The FPN neck: torchvision's FeaturePyramidNetwork, widths from the probe, levels named p{log2 stride}."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import resnet18_spec
from torchvision.ops import FeaturePyramidNetwork

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
    heights = [outputs[n].shape[2] for n in names]
    assert all(deeper == -(-shallower // 2) for shallower, deeper in itertools.pairwise(heights))


def test_fpn_in_channels_come_from_the_probe():
    backbone = featx.build(resnet18_spec(fpn={"out_channels": 16}))
    assert [block[0].in_channels for block in backbone.neck.inner_blocks] == [64, 128, 256]


def test_fpn_over_selected_outputs_names_levels_by_their_strides():
    backbone = featx.build(resnet18_spec(out_features=["c3", "c4"], fpn={"out_channels": 8, "extra_blocks": "p6p7"}))
    assert [(i.name, i.stride) for i in backbone.feature_info] == [("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64)]
    # P6 is computed from C4 (256 channels) because it differs from the FPN width
    assert backbone.neck.extra_blocks.p6.in_channels == 256
