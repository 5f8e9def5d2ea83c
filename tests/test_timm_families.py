"""featx.propose over a sample of timm's families (one small model each, on the meta device), checked against timm's
own feature metadata; the generated page docs/results/timm.md lists every family as proposed or not (see
scripts/timm_families.py). Split from test_timm.py so the two files run on different workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import featx

#: one small model of each timm family (timm's module) that featx proposes a hierarchical backbone for
FAMILIES = {
    "byoanet": "halonet26t", "byobnet": "gernet_s", "convnext": "convnext_atto", "cpubone": "cpubone_nano",
    "cspnet": "cs3darknet_s", "cspnext": "cspnext_tiny", "davit": "davit_tiny", "densenet": "densenet121",
    "dla": "dla34", "dpn": "dpn68", "edgenext": "edgenext_small", "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "tinynet_a", "efficientvit_mit": "efficientvit_b0", "fasternet": "fasternet_s",
    "fastvit": "fastvit_s12", "focalnet": "focalnet_tiny_lrf", "gcvit": "gcvit_tiny", "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_a", "hgnet": "hgnet_tiny", "iformer": "iformer_s",
    "inception_next": "inception_next_atto", "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3", "inception_v4": "inception_v4", "lcnetv2": "lcnetv2_small",
    "lowformer": "lowformer_b0",
    "mambaout": "mambaout_femto", "maxxvit": "maxvit_pico_rw_256", "metaformer": "caformer_s18",
    "mobilenetv3": "mobilenetv3_small_050", "mobilevit": "mobilevit_xxs", "nest": "nest_tiny",
    "nextvit": "nextvit_small", "rdnet": "rdnet_tiny", "regnet": "regnety_002", "repghost": "repghostnet_050",
    "repvit": "repvit_m1", "res2net": "res2net50d", "resnest": "resnest14d", "resnet": "resnet18",
    "resnetv2": "resnetv2_18", "rexnet": "rexnet_100", "senet": "legacy_seresnet18", "sknet": "skresnet18",
    "starnet": "starnet_s1", "swiftformer": "swiftformer_xs", "swin_transformer": "swin_s3_tiny_224",
    "swin_transformer_v2": "swinv2_tiny_window8_256", "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224", "vovnet": "ese_vovnet19b_slim",
    "xception": "legacy_xception", "xception_aligned": "xception41",
}  # fmt: skip
#: families whose timm feature_info points at a map in the middle of a stride (featx takes the last one)
MID_STRIDE_FEATURE_INFO = {"ghostnet", "inception_v4", "repghost", "xception_aligned"}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_propose_matches_timms_feature_metadata(family):
    """Every family's proposal builds (on meta) with strides where timm's ``feature_info`` has maps, and the deepest
    stage is as wide as timm's ``num_features``."""
    name = FAMILIES[family]
    backbone = featx.build(featx.propose(f"timm:{name}"), overrides=["device=meta"])
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    channels = {info["reduction"]: info["num_chs"] for info in reference.feature_info}
    strides = [info.stride for info in backbone.feature_info]
    assert len(backbone.stage_info) >= 3 and strides == sorted(strides)
    assert set(strides) <= set(channels), (strides, channels)
    assert backbone.feature_info[-1].channels == reference.num_features
    if family not in MID_STRIDE_FEATURE_INFO:
        assert [info.channels for info in backbone.feature_info[:-1]] == [channels[s] for s in strides[:-1]]


def test_family_sample_covers_at_least_forty_families_the_generated_page_lists_as_proposed():
    from timm.models._registry import _model_to_module

    assert len(FAMILIES) >= 40
    assert all(_model_to_module[name] == family for family, name in FAMILIES.items())
    page = (Path(__file__).resolve().parents[1] / "docs" / "results" / "timm.md").read_text()
    proposed = {row.split("|")[1].strip() for row in page.splitlines() if row.startswith("| ") and "| yes |" in row}
    assert set(FAMILIES) <= proposed, sorted(set(FAMILIES) - proposed)


def test_a_proposal_ends_before_a_head_with_no_power_of_two_stride():
    """timm's VGG runs an unpadded 7x7 convolution (``pre_logits``) on its stride-32 map: maps that grow by 3 rows for
    96 more input rows, a stride build refuses. The proposal ends at the last pool, where timm's feature_info does."""
    spec = featx.propose("timm:vgg11")
    backbone = featx.build(spec, overrides=["device=meta"])
    with torch.device("meta"):
        reference = timm.create_model("vgg11", pretrained=False)
    expected = [info for info in reference.feature_info if info["reduction"] >= 4]
    assert [stage.paths[-1] for stage in backbone.stage_info] == [info["module"] for info in expected]
    assert [(info.channels, info.stride) for info in backbone.feature_info] == [
        (info["num_chs"], info["reduction"]) for info in expected
    ]


def test_a_proposal_ending_before_the_models_last_features_says_so():
    """LeViT's attention stages work on token sequences: the maps featx finds are its convolutional stem's, which
    the page listed as a working family without a word."""
    from featx.construct.proposal_yaml import proposal_yaml
    from featx.construct.propose import analyse

    proposal = analyse("timm:levit_128s")
    assert [(stage.name, stage.channels) for stage in proposal.stages] == [("c2", 32), ("c3", 64), ("c4", 128)]
    assert proposal.ends_early and proposal.model_features == 384
    assert (
        "# The stages end before the model's own last features: c4 has 128 channels, the model's num_features is 384"
        in proposal_yaml(proposal, command="featx-propose timm:levit_128s")
    )
    page = (Path(__file__).resolve().parents[1] / "docs" / "results" / "timm.md").read_text()
    assert "| levit | `levit_384_s8` | partly | maps: c2, c3 | 4, 8 | ends before the model's last features" in page
