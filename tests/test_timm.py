"""timm models as featx backbones (``model: timm:NAME``): outputs equal timm's own intermediates with the same
(perturbed) weights, ``featx.propose`` over a sample of timm's families checked against timm's own feature metadata,
weights from the Hugging Face hub cache, freezing, a detector, featx-list --timm, and the errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import timm
import torch
from helpers import randomize_norm_statistics
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models import VisionTransformer
from torchvision.models.detection import FasterRCNN

import featx
from featx.cli import catalog
from featx.models import timm_models
from featx.models.weights_enums import OFFLINE_VARIABLE
from featx.spec.config_files import backbone_names

#: timm model -> (input side, whether its stages work channels-last), checked for real at a small size (the
#: packaged timm_*.yaml files add convnext_tiny, efficientnet_b0, regnety_008, resnet50d and swin_tiny)
REAL = {
    "resnet18": (64, False),
    "mobilenetv3_small_050": (64, False),
    "cspnext_tiny": (64, False),
    "davit_tiny": (64, False),
    "fastvit_s12": (64, False),
    "mambaout_femto": (64, True),
}
#: models with BatchNorm layers (plain, or timm's BatchNormAct2d), where norm: frozen changes the layers
WITH_BATCHNORM = {"resnet18", "mobilenetv3_small_050", "cspnext_tiny", "timm_efficientnet_b0", "timm_regnety_008"}

#: the packaged timm_*.yaml files
PACKAGED = {name: featx.load_spec(name) for name in backbone_names() if name.startswith("timm_")}


def _reference(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_norm_statistics(timm.create_model(name, pretrained=False)).eval()


def _timm_maps(reference: nn.Module, x: Tensor, channels_last: bool) -> Dict[int, Tensor]:
    """timm's own maps by stride: ``forward_intermediates`` at each reduction of its ``feature_info`` (the last
    one of each), and ``forward_features`` as the deepest."""
    with torch.no_grad():
        intermediates = reference.forward_intermediates(x, intermediates_only=True)
        deepest = reference.forward_features(x)
    maps = {info["reduction"]: y for info, y in zip(reference.feature_info, intermediates, strict=True)}
    maps[max(maps)] = deepest.permute(0, 3, 1, 2) if channels_last else deepest
    return maps


def _close(output: Tensor, expected: Tensor) -> None:
    """Equal up to rounding, relative to the map's scale (FrozenBatchNorm2d computes scale and shift first;
    memory-mapped weights may take other kernels)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("name", "norm"), [(name, "eval") for name in REAL] + [(name, "frozen") for name in REAL if name in WITH_BATCHNORM]
)
def test_outputs_equal_timms_own_maps(name, norm, tmp_path):
    side, channels_last = REAL[name]
    reference = _reference(name)
    weights = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), weights)
    spec = featx.propose(f"timm:{name}")
    assert spec["layout"] == ("nhwc" if channels_last else "nchw")
    spec.update(weights=str(weights), norm=norm, frozen_stages=0, device="cpu")
    backbone = featx.build(spec).eval()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = backbone(x)
    expected = _timm_maps(reference, x, channels_last)
    assert [info.stride for info in backbone.feature_info] == [4, 8, 16, 32]
    for info in backbone.feature_info:
        if norm == "eval":
            assert torch.equal(outputs[info.name], expected[info.stride]), info.name
        else:
            _close(outputs[info.name], expected[info.stride])


#: TResNet's stages: its SpaceToDepth folds each 4x4 block of the 3-channel image into 48 channels before body.conv1
TRESNET_STAGES = {
    "c2": {"modules": ["body.s2d", "body.conv1", "body.layer1"]},
    "c3": {"modules": ["body.layer2"]},
    "c4": {"modules": ["body.layer3"]},
    "c5": {"modules": ["body.layer4"]},
}


def test_tresnet_takes_the_three_channels_it_declares_and_equals_timms_own_maps(tmp_path):
    """featx probed with the channels of the first layer with in_channels, body.conv1's 48: featx.propose found
    fewer than two stages and a correct spec was refused ("never runs 'body.layer1'"). The model's own in_chans
    counts, and a stage that starts before that layer runs on the 3 channels the layer's 48 do not run on."""
    proposed = featx.propose("timm:tresnet_m")
    assert proposed["stages"] == TRESNET_STAGES
    reference = _reference("tresnet_m")
    torch.save(reference.state_dict(), tmp_path / "tresnet.pth")
    spec = {**proposed, "weights": str(tmp_path / "tresnet.pth"), "norm": "eval", "device": "cpu"}
    backbone = featx.build(spec).eval()
    assert backbone.in_channels == 3
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [
        ("c2", 64, 4),
        ("c3", 128, 8),
        ("c4", 1024, 16),
        ("c5", 2048, 32),
    ]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = backbone(x)
    expected = _timm_maps(reference, x, channels_last=False)
    for info in backbone.feature_info:
        assert torch.equal(outputs[info.name], expected[info.stride]), info.name


#: timm token models: name -> (input side, patch, prefix tokens), written out from timm's model definitions
TOKEN_MODELS = {
    "vit_tiny_patch16_224": (224, 16, 1),  # class token
    "deit_tiny_distilled_patch16_224": (224, 16, 2),  # class and distillation tokens
    "vit_medium_patch16_gap_256": (256, 16, 0),  # no prefix, average pooling
    "vit_small_patch14_reg4_dinov2": (518, 14, 5),  # class + 4 registers; position without entries for them
    "vit_base_patch32_siglip_256": (256, 32, 0),  # the head's attention pooling holds a 1x1xC query (no prefix token)
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if TOKEN_MODELS[n][0] > 300 else n for n in sorted(TOKEN_MODELS)]
)
def test_token_models_equal_timms_own_blocks(name, tmp_path):
    """timm's ViTs: the patch embedding returns tokens itself, the token parameters belong to the model root; every
    stage equals timm's ``forward_intermediates`` after blocks 3, 6, 9 and ``forward_features`` (final norm)."""
    side, patch, prefix = TOKEN_MODELS[name]
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # away from timm's init (zero class/register tokens): a misplaced token shows
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    weights = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), weights)
    spec = featx.propose(f"timm:{name}")
    spec.update(weights=str(weights), device="cpu", out_features=["blocks1", "blocks2", "blocks3", "blocks4"])
    backbone = featx.build(spec).eval()
    assert backbone.spec.input_size == [side, side]  # timm's patch embedding checks the size
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    grid = side // patch
    with torch.no_grad():
        outputs = backbone(x)
        intermediates = reference.forward_intermediates(x, indices=[2, 5, 8], intermediates_only=True)
        deepest = reference.forward_features(x)[:, prefix:].transpose(1, 2).reshape(1, -1, grid, grid)
    for stage, expected in zip(outputs, [*intermediates, deepest], strict=True):
        assert torch.equal(outputs[stage], expected), stage
    assert [info.stride for info in backbone.feature_info] == [patch] * 4


@pytest.mark.parametrize(
    ("name", "fpn"),
    [("vit_tiny_patch16_224", None), ("vit_small_patch14_reg4_dinov2", 64), ("vit_tiny_r_s16_p8_224", None)],
)
def test_a_proposal_of_a_token_model_that_takes_one_size_says_it(name, fpn):
    """The proposed YAML said input_size: null for a ViT whose patch embedding takes one size (the build worked it
    out), as if it took any; a pyramid's stride 16 on a patch-14 model takes 16/14 of the image."""
    model = timm.create_model(name, pretrained=False)
    embed = model.patch_embed
    patch = embed.patch_size[0]
    try:  # timm's own patch embedding at a size other than its image size
        embed(torch.zeros(1, 3, embed.img_size[0] + 2 * patch, embed.img_size[1] + 2 * patch))
        one_size = False
    except AssertionError:
        one_size = True
    stride = 16 if fpn is not None and patch & (patch - 1) else patch
    expected = [embed.img_size[0] // patch * stride] * 2 if one_size else None
    spec = featx.propose(f"timm:{name}", fpn=fpn)
    assert spec["input_size"] == expected
    assert featx.build(spec, overrides=["device=meta"]).spec.input_size == expected


def test_token_model_with_the_simple_pyramid_in_a_detector():
    spec = featx.propose("timm:deit_tiny_patch16_224", fpn=64)
    assert spec["fpn"]["style"] == "simple"
    spec.update(fpn={**spec["fpn"], "extra_blocks": "maxpool"}, output_names="torchvision", device="cpu")
    backbone = featx.build(spec)
    assert [(i.name, i.stride) for i in backbone.feature_info] == [
        ("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)
    ]  # fmt: skip
    detector = FasterRCNN(backbone, num_classes=3, min_size=224, max_size=224)
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 150.0, 170.0]]), "labels": torch.tensor([2])}]
    losses = detector.train()([torch.rand(3, 224, 224)], targets)
    sum(losses.values()).backward()


@pytest.mark.parametrize(
    ("name", "norm"),
    [(name, "eval") for name, spec in sorted(PACKAGED.items()) if spec.fpn is None]
    + [(name, "frozen") for name in sorted(PACKAGED) if name in WITH_BATCHNORM],
)
def test_packaged_timm_file_equals_timms_own_maps(name, norm, tmp_path):
    spec = PACKAGED[name]
    timm_name = spec.model.removeprefix("timm:")
    reference = _reference(timm_name)
    weights = tmp_path / "weights.safetensors"
    save_file(reference.state_dict(), str(weights))
    backbone = featx.build(name, overrides=[f"weights='{weights}'", f"norm={norm}", "device=cpu"]).eval()
    side = spec.input_size[0] if spec.input_size else 64
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outputs = backbone(x)
    expected = _timm_maps(reference, x, channels_last=spec.layout == "nhwc")
    for info in backbone.feature_info:
        _close(outputs[info.name], expected[info.stride])


def test_every_packaged_timm_file_has_an_fpn_variant():
    plain = {name for name, spec in PACKAGED.items() if spec.fpn is None}
    assert len(plain) >= 5 and {f"{name}_fpn" for name in plain} == set(PACKAGED) - plain
    for name in plain:
        backbone = featx.build(f"{name}_fpn", overrides=["device=meta"])
        assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [
            ("p2", 256, 4), ("p3", 256, 8), ("p4", 256, 16), ("p5", 256, 32)
        ]  # fmt: skip
        assert PACKAGED[f"{name}_fpn"].model == PACKAGED[name].model


def test_timm_batchnorm_with_activation_stays_whole_when_frozen():
    """timm's BatchNormAct2d (norm + activation) must not become a FrozenBatchNorm2d, which would drop the
    activation; under ``norm: frozen`` it keeps fixed statistics and affine through train()."""
    backbone = featx.build({**featx.propose("timm:efficientnet_b0"), "device": "cpu", "frozen_stages": 0})
    kept = [layer for layer in backbone.modules() if type(layer).__name__ == "BatchNormAct2d"]
    assert kept and not any(p.requires_grad for layer in kept for p in layer.parameters())
    statistics = {id(layer): layer.running_mean.clone() for layer in kept}
    backbone.train()
    assert not any(layer.training for layer in kept)
    backbone(torch.randn(2, 3, 64, 64)).values()
    assert all(torch.equal(statistics[id(layer)], layer.running_mean) for layer in kept)
    backbone.unfreeze()
    assert not any(p.requires_grad for layer in kept for p in layer.parameters())


def test_sync_norm_refuses_batchnorm_subclasses_with_their_own_forward():
    with pytest.raises(featx.SpecError, match=r"backbone.norm: sync cannot convert .*BatchNormAct2d.*frozen, eval"):
        featx.build({**featx.propose("timm:efficientnet_b0"), "norm": "sync", "device": "cpu"})


def test_frozen_stages_keep_parameters_and_statistics_under_train():
    torch.manual_seed(0)
    backbone = featx.build({**featx.propose("timm:resnet18"), "frozen_stages": 2, "norm": "eval", "device": "cpu"})
    frozen = [backbone.stages["c2"], backbone.stages["c3"]]
    before = [{k: v.clone() for k, v in stage.state_dict().items()} for stage in frozen]
    assert not any(p.requires_grad for stage in frozen for p in stage.parameters())
    assert all(p.requires_grad for p in backbone.stages["c4"].parameters())
    backbone.train()
    sum(y.mean() for y in backbone(torch.randn(2, 3, 64, 64)).values()).backward()
    for stage, state in zip(frozen, before, strict=True):
        assert all(torch.equal(state[k], v) for k, v in stage.state_dict().items())
    assert all(not layer.training for layer in backbone.modules() if isinstance(layer, _BatchNorm))


def test_faster_rcnn_with_torchvision_defaults_on_a_timm_backbone():
    spec = featx.propose("timm:resnet18")
    spec.update(fpn={"out_channels": 64, "extra_blocks": "maxpool"}, output_names="torchvision", device="cpu")
    torch.manual_seed(0)
    detector = FasterRCNN(featx.build(spec), num_classes=3, min_size=96, max_size=96)
    images = [torch.rand(3, 96, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])}]
    losses = detector.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    (detections,) = detector.eval()(images)
    assert detections["boxes"].shape[1] == 4


def test_faster_rcnn_through_featx_detection_helpers_on_featx_names():
    from featx.detection import anchor_generator, roi_pooler

    torch.manual_seed(0)
    backbone = featx.build("timm_efficientnet_b0_fpn", overrides=["device=cpu", "fpn.out_channels=32"])
    detector = FasterRCNN(
        backbone, 3, rpn_anchor_generator=anchor_generator(backbone), box_roi_pool=roi_pooler(backbone),
        min_size=96, max_size=96,
    )  # fmt: skip
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 70.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = detector.train()([torch.rand(3, 96, 96)], targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(loss) for loss in losses.values())


def test_a_timm_backbone_exports_with_torch_export_at_other_sizes():
    backbone = featx.build("timm_convnext_tiny_fpn", overrides=["device=cpu", "fpn.out_channels=16"]).eval()
    batch, side = torch.export.Dim("batch", max=8), torch.export.Dim("side", min=2, max=32)
    dims = {0: batch, 2: 32 * side, 3: 32 * side}
    exported = torch.export.export(backbone, (torch.randn(2, 3, 64, 64),), dynamic_shapes=({**dims},)).module()
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        expected, actual = backbone(x), exported(x)
    assert list(actual) == list(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4)


def test_extraction_transform_of_a_timm_tag_is_timms_own():
    """``extract.transform: auto`` with timm weights is the evaluation transform of the tag's pretrained config."""
    from PIL import Image

    from featx.tasks.extract.transforms import image_transform

    spec = featx.load_spec("timm_resnet50d", overrides=["weights=ra4_e3600_r224_in1k"])  # mean = std = 0.5
    config = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(
        "resnet50d.ra4_e3600_r224_in1k").to_dict())  # fmt: skip
    assert config["mean"] == (0.5, 0.5, 0.5)  # not ImageNet's: the tag's own normalisation
    expected_transform = timm.data.create_transform(**config, is_training=False)
    image = Image.fromarray((torch.rand(300, 250, 3) * 255).to(torch.uint8).numpy())
    assert torch.equal(image_transform("auto", spec, (224, 224))(image), expected_transform(image))


@pytest.mark.parametrize("name", ["center_crop", "resize"])
def test_imagenet_normalisation_is_refused_for_a_timm_tag_trained_otherwise(name):
    """center_crop and resize normalise with ImageNet's mean and std: for a tag trained with mean = std = 0.5 (timm's
    pretrained config says so) they were taken without a word, as only torchvision's GoogLeNet and Inception-v3 were
    checked."""
    from featx.tasks.extract.transforms import image_transform

    spec = featx.load_spec("timm_resnet50d", overrides=["weights=ra4_e3600_r224_in1k"])
    assert timm.models.get_pretrained_cfg("resnet50d.ra4_e3600_r224_in1k").mean == (0.5, 0.5, 0.5)
    with pytest.raises(featx.ArgumentError) as caught:
        image_transform(name, spec, (224, 224))
    assert str(caught.value) == (
        f"extract.transform: {name} normalises with ImageNet's mean and std, and timm:resnet50d's published weights "
        "(ra4_e3600_r224_in1k) take images normalised with mean = std = 0.5; use auto or weights"
    )
    imagenet = featx.load_spec("timm_resnet50d", overrides=["weights=a1_in1k"])
    assert timm.models.get_pretrained_cfg("resnet50d.a1_in1k").mean == timm.data.IMAGENET_DEFAULT_MEAN
    image_transform(name, imagenet, (224, 224))  # trained with ImageNet's: taken


def _hub_snapshot(cache: Path, repo: str, filename: str) -> Path:
    """A Hugging Face hub cache entry laid out as huggingface_hub writes it (refs/main → snapshots/<revision>)."""
    revision = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    return folder / "snapshots" / revision / filename


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    return tmp_path


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_pretrained_tag_loads_from_the_hugging_face_hub_cache(hub_cache, filename):
    reference = _reference("resnet18")
    path = _hub_snapshot(hub_cache, "timm/resnet18.a1_in1k", filename)
    if filename.endswith(".safetensors"):
        save_file(reference.state_dict(), str(path))
    else:
        torch.save(reference.state_dict(), path)
    stages = featx.propose("timm:resnet18")["stages"]
    for weights in ("DEFAULT", "a1_in1k"):  # timm's default tag of resnet18 is a1_in1k
        spec = {"model": "timm:resnet18", "weights": weights, "stages": stages, "norm": "eval", "device": "cpu"}
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(featx.build(spec).eval()(x)["c5"], reference.forward_features(x))


def test_an_extraction_records_the_hub_revision_of_the_weights(hub_cache):
    """A hub repository may publish other weights under the same tag: the stored features' settings name the
    snapshot revision, so a resumed extraction never mixes two networks."""
    from featx.spec.apps import ExtractOptions
    from featx.tasks.extract.run import _settings
    from featx.tasks.extract.transforms import image_transform

    path = _hub_snapshot(hub_cache, "timm/resnet18.a1_in1k", "model.safetensors")
    path.write_bytes(b"")
    spec = featx.load_spec("timm_resnet50d", overrides=["model=timm:resnet18", "weights=DEFAULT", "device=cpu"])
    settings = _settings(spec, ["c5"], ExtractOptions(input="x", output="y"), image_transform("auto", spec, [224, 224]))
    assert settings["backbone"]["weights"] == "timm:resnet18.a1_in1k"
    assert settings["backbone"]["weights_file"] == f"{'0' * 40}/model.safetensors"


def test_missing_pretrained_weights_offline_name_the_cache_folder_and_the_hub_repo(hub_cache):
    spec = {"model": "timm:resnet18", "weights": "a2_in1k", "stages": featx.propose("timm:resnet18")["stages"]}
    with pytest.raises(featx.WeightsError) as error:
        featx.build(spec)
    message = str(error.value)
    assert "timm:resnet18.a2_in1k is not in the Hugging Face hub cache and FEATX_OFFLINE forbids downloading" in message
    assert str(hub_cache / "models--timm--resnet18.a2_in1k") in message
    assert "https://huggingface.co/timm/resnet18.a2_in1k" in message
    assert "hf download timm/resnet18.a2_in1k model.safetensors" in message  # huggingface-cli: gone in hub 1.x


@pytest.mark.parametrize("ref", [None, "0" * 40 + "\n"], ids=["no refs/main", "a line break"])
def test_a_cached_snapshot_that_refs_main_does_not_name_is_said_so(hub_cache, ref):
    """huggingface_hub finds a snapshot's file only through refs/main holding its revision exactly: offline, a file
    placed in snapshots/<rev>/ alone was told to be placed in the folder it was in."""
    path = _hub_snapshot(hub_cache, "timm/resnet18.a2_in1k", "model.safetensors")
    save_file(_reference("resnet18").state_dict(), str(path))
    refs = path.parents[2] / "refs" / "main"
    if ref is None:
        refs.unlink()
    else:
        refs.write_text(ref)
    spec = {"model": "timm:resnet18", "weights": "a2_in1k", "stages": featx.propose("timm:resnet18")["stages"]}
    with pytest.raises(featx.WeightsError) as error:
        featx.build(spec)
    assert str(error.value).endswith(
        f"FEATX_OFFLINE forbids downloading. {path} is cached, but {refs} does not name its revision: write "
        f"{'0' * 40} into it (the hub cache reads it exactly, without a line break)"
    )


def test_unknown_tag_lists_timms_tags():
    spec = {"model": "timm:resnet18", "weights": "a1_in1kk", "stages": featx.propose("timm:resnet18")["stages"]}
    with pytest.raises(featx.SpecError, match=r"backbone.weights: 'a1_in1kk' is not a pretrained tag of timm's "
                       r"resnet18; did you mean a1_in1k.*\(valid: null, DEFAULT, a1_in1k, a2_in1k"):  # fmt: skip
        featx.build(spec, overrides=["device=meta"])
    with pytest.raises(featx.SpecError, match=r"'default' is not a pretrained tag of timm's resnet18; did you mean "
                       r"DEFAULT\?"):  # fmt: skip
        featx.build({**spec, "weights": "default"}, overrides=["device=meta"])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        # Visformer and SAM2's Hiera add position embeddings held by the model root between their stages
        ("visformer_tiny", r"backbone.stages.c3: the model root holds 'pos_embed1', 'pos_embed2', 'pos_embed3' "
         r"itself: its forward uses them between the modules it calls"),
        ("sam2_hiera_tiny", r"the model root holds 'pos_embed', 'pos_embed_window' itself"),
    ],
)  # fmt: skip
def test_models_whose_forward_does_more_than_chain_modules_are_refused(model, message):
    """featx.propose returned the spec and the build refused it; the proposal is now checked as the build does."""
    with pytest.raises(
        featx.ArgumentError,
        match=rf"^propose\(\): the spec found for 'timm:{model}' \([c0-9, ]+\) is "
        rf"one featx\.build refuses: .*{message}",
    ):
        featx.propose(f"timm:{model}")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"position": None}, r"the model root holds 'pos_embed' itself"),
        ({"prefix": ["dist_token", "cls_token"]}, r"backbone.tokens.prefix: \['dist_token', 'cls_token'\] is not in "
         r"the order the model registers them \(\['cls_token', 'dist_token'\]\)"),
        ({"prefix": []}, r"^backbone.tokens.position: 'pos_embed' has 198 patch entries \(after 0 prefix ones\): not "
         r"the patch grid of 224x224 images at patch stride 16, nor a square grid; 2 entries fewer would be a 14x14 "
         r"grid: tokens.prefix may be missing 2 tokens$"),
    ],
)  # fmt: skip
def test_a_token_spec_that_leaves_out_or_reorders_timms_token_parameters_is_refused(change, message):
    spec = featx.propose("timm:deit_tiny_distilled_patch16_224")
    spec["tokens"].update(change)
    with pytest.raises(featx.SpecError, match=message):
        featx.build(spec, overrides=["device=meta"])


def test_a_channels_last_model_read_as_nchw_is_refused_at_its_one_size():
    with pytest.raises(featx.SpecError, match=r"backbone.layout: 'nchw' does not fit stage 'c2': read as nchw, its "
                       r"output \(1, 56, 56, 96\) at 224x224 has height and width 56x96, different strides; set "
                       r"layout: nhwc"):  # fmt: skip
        featx.build("timm_swin_tiny", overrides=["layout=nchw", "device=meta"])


def test_a_timm_token_model_at_other_sizes_equals_timms_own_resampling(tmp_path):
    """A timm model's position embedding was resampled as torchvision does (corners aligned): other features than
    timm's own (dynamic_img_size, resample_abs_pos_embed: antialiased, corners not aligned) at every size but the
    one it was made for."""
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_r_s16_p8_224", dynamic_img_size=True).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)  # the position embedding is not smooth any more
    torch.save(reference.state_dict(), tmp_path / "hybrid.pth")
    spec = featx.propose("timm:vit_tiny_r_s16_p8_224")
    backbone = featx.build(spec, overrides=["device=cpu", f"weights={tmp_path / 'hybrid.pth'}", "norm=eval"]).eval()
    last = list(spec["stages"])[-1]
    for size in ((256, 256), (160, 96)):
        x = torch.randn(1, 3, *size)
        with torch.inference_mode():
            actual = backbone(x)[last]
            tokens = reference.forward_features(x)[:, reference.num_prefix_tokens :]
        torch.testing.assert_close(actual, tokens.transpose(1, 2).reshape(actual.shape), rtol=1e-5, atol=1e-5)
    # in bfloat16 (no antialiased bicubic kernel for it: resampled in float32 and back, as timm does)
    x = torch.randn(1, 3, 256, 256, dtype=torch.bfloat16)
    with torch.inference_mode():
        actual = backbone.to(torch.bfloat16)(x)[last]
        tokens = reference.to(torch.bfloat16).forward_features(x)[:, reference.num_prefix_tokens :]
    torch.testing.assert_close(actual, tokens.transpose(1, 2).reshape(actual.shape), rtol=0, atol=0)


class _SubclassedVisionTransformer(timm.models.vision_transformer.VisionTransformer):
    """A user's subclass of timm's ViT: its forward is still timm's."""


def test_a_subclass_of_a_timm_model_resamples_as_timm_does(tmp_path):
    """The rule was chosen by the module of the model's own class: a subclass defined elsewhere got torchvision's."""

    def featx_test_subclassed_hybrid(pretrained=False, **kwargs):
        model = timm.create_model("vit_tiny_r_s16_p8_224", **kwargs)
        model.__class__ = _SubclassedVisionTransformer
        return model

    timm.models.register_model(featx_test_subclassed_hybrid)
    torch.manual_seed(1)
    reference = timm.create_model("featx_test_subclassed_hybrid", dynamic_img_size=True).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    torch.save(reference.state_dict(), tmp_path / "sub.pth")
    spec = featx.propose("timm:featx_test_subclassed_hybrid")
    backbone = featx.build(spec, overrides=["device=cpu", f"weights={tmp_path / 'sub.pth'}", "norm=eval"]).eval()
    x = torch.randn(1, 3, 256, 320)
    with torch.inference_mode():
        actual = backbone(x)[list(spec["stages"])[-1]]
        tokens = reference.forward_features(x)[:, reference.num_prefix_tokens :]
    torch.testing.assert_close(actual, tokens.transpose(1, 2).reshape(actual.shape), rtol=1e-5, atol=1e-5)


#: a hand-written spec of timm's test_vit (dynamic_img_size: its patch embedding returns an N x h x w x C map)
TEST_VIT_SPEC = {
    "model": "timm:test_vit",
    "source": "blocks",
    "tokens": {"embed": "patch_embed", "prefix": ["cls_token"], "position": "pos_embed"},
    "stages": {"embed": {"modules": ["patch_embed", "pos_drop", "patch_drop", "norm_pre"]}, "b": {"slice": [0, 6]}},
}


@pytest.mark.parametrize("proposed", [True, False], ids=["proposal", "hand-written"])
def test_a_vit_whose_embedding_returns_an_nhwc_map_equals_timms_own_intermediates(proposed, tmp_path):
    """timm's dynamic_img_size ViTs: the patch embedding returns an N x h x w x C map, which featx read as
    N x C x h x w ("maps a 10080x10080 image to 630x64 patches: not a square grid"); it is flattened row-major into
    the tokens as timm's own forward does, at the native size and at another (position embedding resampled)."""
    torch.manual_seed(0)
    reference = timm.create_model("test_vit").eval()
    assert reference.patch_embed(torch.zeros(1, 3, 160, 96)).shape == (1, 10, 6, 64)  # N x h x w x C
    with torch.no_grad():  # away from timm's init (zero class token): a misplaced token shows
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    torch.save(reference.state_dict(), tmp_path / "test_vit.pth")
    spec = featx.propose("timm:test_vit") if proposed else TEST_VIT_SPEC
    stages = {name: stage for name, stage in spec["stages"].items() if name != "embed"}
    spec = {**spec, "out_features": list(stages), "weights": str(tmp_path / "test_vit.pth")}
    backbone = featx.build(spec, overrides=["device=cpu", "norm=eval"])
    ends = [stage["slice"][1] - 1 for stage in stages.values() if "slice" in stage]  # the last one holds the norm
    for size in ((160, 160), (160, 96)):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            outputs = backbone.eval()(x)
            expected = reference.forward_intermediates(x, indices=ends, intermediates_only=True)
            if proposed:  # the last stage ends with the final norm
                tokens = reference.forward_features(x)[:, 1:]
                expected.append(tokens.transpose(1, 2).reshape(2, 64, size[0] // 16, size[1] // 16))
        assert len(outputs) == len(expected) and all(
            torch.equal(output, wanted) for output, wanted in zip(outputs.values(), expected, strict=True)
        ), size
    assert {info.stride for info in backbone.feature_info} == {16}


@pytest.mark.parametrize(
    ("name", "prefix", "patch"),
    [
        ("test_vit", ["cls_token"], 16),
        ("test_vit2", ["reg_token"], 16),  # a register token and no class token
        ("vit_intern300m_patch14_448", ["cls_token"], 14),
    ],
)
def test_a_vit_whose_embedding_returns_an_nhwc_map_is_proposed(name, prefix, patch):
    """featx.propose said these "give fewer than two stages: its feature maps (patch_embed) have stride 16 only"."""
    spec = featx.propose(f"timm:{name}")
    assert spec["tokens"] == {
        "embed": "patch_embed", "prefix": prefix, "position": "pos_embed", "position_covers_prefix": True,
        "stride": None,
    }  # fmt: skip
    assert spec["input_size"] is None  # it takes any size
    backbone = featx.build(spec, overrides=["device=meta"])
    assert {info.stride for info in backbone.feature_info} == {patch}


def featx_test_vit_630(pretrained: bool = False, **kwargs) -> nn.Module:
    """timm's test_vit 630 wide: at featx's 10080x10080 probe image its N x h x w x C map is 1 x 630 x 630 x 630,
    as N x C x h x w would be."""
    return timm.create_model("test_vit", embed_dim=630, depth=2, **kwargs)


class _StrictChannelsLastEmbed(timm.layers.PatchEmbed):
    """timm's patch embedding returning N x h x w x C and checking the input size (takes one size only)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**kwargs, "strict_img_size": True})


def featx_test_vit_one_size(pretrained: bool = False, width: int = 32, **kwargs) -> nn.Module:
    """timm's test_vit with a patch embedding that returns N x h x w x C and takes 224x224 images only."""
    embed = _StrictChannelsLastEmbed
    return timm.create_model("test_vit", img_size=224, embed_layer=embed, embed_dim=width, depth=2, **kwargs)


def featx_test_vit_one_size_14(pretrained: bool = False, **kwargs) -> nn.Module:
    """At its one size (224x224) its N x h x w x C map is 1 x 14 x 14 x 14, as N x C x h x w would be."""
    return featx_test_vit_one_size(width=14, **kwargs)


def _registered(constructor) -> str:
    """timm:NAME of ``constructor``, registered with timm (once)."""
    if constructor.__name__ not in timm.list_models():
        timm.models.register_model(constructor)
    return f"timm:{constructor.__name__}"


def _perturbed_and_proposed(constructor, folder: Path):
    """timm's model of ``constructor`` (registered) with its weights moved off their init, so misplaced tokens show,
    featx's proposal for it and the proposal built with those weights (norm: eval, CPU)."""
    torch.manual_seed(0)
    name = _registered(constructor)
    reference = timm.create_model(name.removeprefix("timm:")).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    torch.save(reference.state_dict(), folder / "vit.pth")
    spec = featx.propose(name)
    backbone = featx.build(spec, overrides=["device=cpu", f"weights={folder / 'vit.pth'}", "norm=eval"]).eval()
    return reference, spec, backbone


@pytest.mark.parametrize(("constructor", "width", "size"), [(featx_test_vit_630, 630, (48, 32)),
                                                            (featx_test_vit_one_size, 32, (224, 224))])  # fmt: skip
def test_nhwc_maps_are_told_from_nchw_ones_by_a_wider_image_or_their_square_grid(constructor, width, size, tmp_path):
    """One square image's map cannot tell N x h x w x C from N x C x h x w when C == h: featx measures the
    embedding at a twice-as-wide image too, and an embedding that takes one size only by its square grid."""
    reference, spec, backbone = _perturbed_and_proposed(constructor, tmp_path)
    assert [info.channels for info in backbone.feature_info] == [width]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tokens = reference.forward_features(x)[:, 1:]
        actual = backbone(x)[list(spec["stages"])[-1]]
    assert torch.equal(actual, tokens.transpose(1, 2).reshape(1, width, size[0] // 16, -1))


def featx_test_torchvision_vit_630(pretrained: bool = False, **kwargs) -> nn.Module:
    """torchvision's ViT 630 wide, registered with timm: at featx's 10080x10080 probe image its N x C x h x w patch
    map is 1 x 630 x 630 x 630, as N x h x w x C would be."""
    return VisionTransformer(160, 16, num_layers=2, num_heads=2, hidden_dim=630, mlp_dim=32)


def test_an_nchw_map_whose_channels_equal_its_side_stays_nchw(tmp_path):
    """The other way round: a wider image widens the last dimension of torchvision's N x C x h x w map."""
    reference, spec, backbone = _perturbed_and_proposed(featx_test_torchvision_vit_630, tmp_path)
    assert spec["tokens"]["embed"] == "conv_proj"
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    captured = []
    handle = reference.encoder.register_forward_hook(lambda _module, _input, output: captured.append(output))
    with torch.no_grad():
        reference(x)
        actual = backbone(x)[list(spec["stages"])[-1]]
    handle.remove()
    assert torch.equal(actual, captured[0][:, 1:].transpose(1, 2).reshape(1, 630, 10, 10))


def test_a_one_size_map_that_reads_both_ways_is_refused():
    embed = TEST_VIT_SPEC["stages"]["embed"]
    spec = {
        **TEST_VIT_SPEC,
        "model": _registered(featx_test_vit_one_size_14),
        "stages": {"embed": embed, "b": {"slice": [0, 2]}},
    }
    with pytest.raises(featx.SpecError) as error:
        featx.build(spec, overrides=["device=meta"])
    assert str(error.value) == (
        "backbone.tokens.embed: 'patch_embed' maps a 224x224 image to (1, 14, 14, 14) and takes no other size: "
        "featx cannot tell whether that is N x C x h x w or N x h x w x C (an embedding that takes other sizes is "
        "measured at a wider image too)"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["input_size=[256,256]"], r"256x256: the patch embedding 'patch_embed' fails on this size: AssertionError: "
                                   r"Input height \(256\) doesn't match model \(224\); the model takes 224x224"),
        # the sides named as given (it measured a 240x240 square), and input_size blamed, not the stage list
        (["input_size=[240,224]"], r"240x224: .* Input height \(240\) .*; the model takes 224x224 images"),
        (["input_size=[224,240]"], r"224x240: .* Input width \(240\) .*; the model takes 224x224 images"),
        (["tokens.stride=12", "input_size=[224,224]"],
         r"224x224: .* \(resized to 298x298 by tokens.stride 12\): .*; the model takes 168x168 images"),
    ],
)  # fmt: skip
def test_a_fixed_size_vit_at_another_size_names_that_size(overrides, message):
    spec = featx.propose("timm:deit_tiny_patch16_224")
    with pytest.raises(featx.SpecError, match=r"^backbone\.input_size: " + message):
        featx.build(spec, overrides=[*overrides, "device=meta"])


def test_a_fixed_size_vit_with_tokens_stride_rebuilds_from_its_own_spec(tmp_path):
    """tokens.stride=8 makes a 224x224 patch-16 ViT take 112x112 images, resized to 224 for its patch embedding;
    the spec that build wrote (input_size: [112, 112]) was refused (the embedding measured at 112), so featx.save
    refused the backbone."""
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224").eval()
    weights = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), weights)
    spec = featx.propose("timm:vit_tiny_patch16_224")
    spec.update(weights=str(weights), device="cpu", norm="eval", input_size=None)  # the build works out the size
    backbone = featx.build(spec, overrides=["tokens.stride=8"]).eval()
    assert backbone.spec.input_size == [112, 112]
    again = featx.build(backbone.spec).eval()
    featx.save(backbone, tmp_path / "saved.pt")
    loaded = featx.load(tmp_path / "saved.pt").eval()
    x = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    resized = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        tokens = reference.forward_features(resized)[:, 1:]
        expected = tokens.transpose(1, 2).reshape(1, -1, 14, 14)
        for rebuilt in (backbone, again, loaded):
            assert torch.equal(rebuilt(x)["blocks4"], expected)


def test_a_model_timm_publishes_no_weights_for():
    """timm registers nf_seresnet26 with an untagged config and no weights."""
    spec = {"model": "timm:nf_seresnet26", "weights": "DEFAULT", "stages": {"c2": {"modules": ["stem", "stages.0"]}}}
    with pytest.raises(featx.SpecError, match=r"backbone.weights: timm publishes no pretrained weights for "
                       r"nf_seresnet26 \(valid: null; or a path to a checkpoint file: ./NAME for one in the working "
                       r"directory\)$"):  # fmt: skip
        featx.build(spec, overrides=["device=meta"])
    assert featx.propose("timm:nf_seresnet26")["stages"]["c5"] == {"modules": ["stages.3", "final_conv", "final_act"]}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("timm:resnet181", r"backbone.model: unknown timm model 'resnet181'; did you mean timm:resnet18"),
        ("timm:resnet18.a1_in1k", r"names a pretrained tag: write model: timm:resnet18 and weights: a1_in1k"),
        ("timm:", r"backbone.model: unknown timm model ''"),
        (
            "timm:resnet18.nope",
            r"^backbone\.model: 'timm:resnet18\.nope': 'nope' is no pretrained tag of timm's resnet18 \(its tags: "
            r"a1_in1k, a2_in1k, a3_in1k, .*\); write model: timm:resnet18 and weights: TAG$",
        ),
        (
            "timm:resnet18.a1_in1kk",
            r"^backbone\.model: 'timm:resnet18\.a1_in1kk': 'a1_in1kk' is no pretrained tag of timm's resnet18; did you "
            r"mean a1_in1k or .*\? \(its tags: a1_in1k, ",
        ),
        (
            "timm:nf_seresnet26.x",
            r"^backbone\.model: 'timm:nf_seresnet26\.x': 'x' is no pretrained tag of timm's nf_seresnet26 \(timm "
            r"publishes none\); write model: timm:nf_seresnet26$",
        ),
        ("timm:resnet18.", r"backbone.model: unknown timm model 'resnet18.'; did you mean timm:resnet18"),
        ("timm:timm:resnet18", r"backbone.model: 'timm:timm:resnet18': write the timm: prefix once"),
    ],
)
def test_bad_timm_names(model, message):
    with pytest.raises(featx.SpecError, match=message):
        featx.build({"model": model, "stages": {"c2": {"modules": ["layer1"]}}})


def test_suggestions_name_timm_models_with_their_prefix():
    """featx-propose timm:convnext_atoo suggested 'convnext_atto', which written as suggested is an unknown
    torchvision model (and 'resnet18' for timm:resnett18 names torchvision's ResNet-18, another model); a timm name
    given without the prefix got torchvision's close names alone."""
    with pytest.raises(featx.ArgumentError) as caught:
        featx.propose("timm:convnext_atoo")
    assert str(caught.value).startswith(
        "propose(): unknown timm model 'convnext_atoo'; did you mean timm:convnext_atto or timm:"
    )
    with pytest.raises(featx.SpecError) as caught:
        featx.build({"model": "convnext_atto", "stages": {"c2": {"modules": ["stem"]}}})
    assert str(caught.value) == (
        "backbone.model: unknown torchvision model 'convnext_atto'; timm has a model of this name: timm:convnext_atto "
        "(valid: torchvision.models.list_models(module=torchvision.models))"
    )


def test_a_name_with_an_empty_tag_is_not_proposed():
    """timm's is_model strips an empty tag: timm:resnet18. was taken as a model of its own, written by featx-propose."""
    with pytest.raises(featx.ArgumentError, match=r"^propose\(\): unknown timm model 'resnet18\.'; did you mean"):
        featx.propose("timm:resnet18.")


class _MeasuringNet(nn.Module):
    """A model whose constructor computes with tensors (a drop rate from ``torch.linspace(...).item()``, as timm's
    ViT does) and runs its own layers on a zero image to size the next one (as timm before 1.0.21 sized a hybrid
    ViT's patch embedding), the classifier head included."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_rate = torch.linspace(0, 0.1, 2)[1].item()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        with torch.no_grad():
            width = self.stem(torch.zeros(1, 3, 32, 32)).shape[1]
        self.layer = nn.Sequential(nn.Conv2d(width, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            self(torch.zeros(1, 3, 32, 32))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.layer(self.stem(x))).flatten(1))


def featx_test_measuring_net(pretrained: bool = False, **kwargs) -> nn.Module:
    return _MeasuringNet()


def featx_test_failing_net(pretrained: bool = False, **kwargs) -> nn.Module:
    raise ValueError("no such configuration\nsecond line")


timm.models.register_model(featx_test_measuring_net)
timm.models.register_model(featx_test_failing_net)
_MEASURING_STAGES = {"c2": {"modules": ["stem"]}, "c3": {"modules": ["layer"]}}


def test_a_constructor_that_runs_its_own_layers_builds(tmp_path):
    """Constructed on the CPU with each parameter moved to meta as registered, such a constructor failed
    (timm 1.0.15's hybrid ViTs: "Tensor on device meta is not on the expected device cpu!"); it is constructed for
    real, then moved to meta. Built without weights, its head (dropped, left on meta) made the constructor fail."""
    torch.manual_seed(0)
    reference = randomize_norm_statistics(_MeasuringNet()).eval()
    torch.save(reference.state_dict(), tmp_path / "net.pth")
    spec = {"model": "timm:featx_test_measuring_net", "stages": _MEASURING_STAGES, "device": "cpu", "norm": "eval"}
    backbone = featx.build({**spec, "weights": str(tmp_path / "net.pth")}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = backbone(x)
        assert torch.equal(outputs["c2"], reference.stem(x))
        assert torch.equal(outputs["c3"], reference.layer(reference.stem(x)))
    unweighted = featx.build(spec)
    assert [(i.name, i.channels, i.stride) for i in unweighted.feature_info] == [("c2", 8, 4), ("c3", 16, 8)]
    assert all(not p.is_meta for p in unweighted.parameters())


def test_a_constructor_that_fails_is_a_spec_error_naming_the_model_and_timms_version():
    with pytest.raises(featx.SpecError) as caught:
        featx.build({"model": "timm:featx_test_failing_net", "stages": _MEASURING_STAGES, "device": "meta"})
    assert str(caught.value) == (
        f"backbone.model: constructing 'timm:featx_test_failing_net' fails (timm {timm.__version__}): ValueError: "
        "no such configuration"
    )


def test_a_batchnorm_with_its_own_forward_is_probed_in_eval_mode():
    """timm's BatchNormAct2d ran in training mode on the probe's one image: at 32x32 EfficientNet-B0's c5 is 1x1,
    one value per channel, so the build refused input_size 32x32 that a real batch of two runs at in training."""
    overrides = ["input_size=[32,32]", "norm=train", "frozen_stages=0", "device=cpu"]
    backbone = featx.build("timm_efficientnet_b0", overrides=overrides)
    assert backbone.spec.input_size == [32, 32] and backbone.training
    outputs = backbone(torch.randn(2, 3, 32, 32))
    assert [tuple(y.shape) for y in outputs.values()] == [(2, 24, 8, 8), (2, 40, 4, 4), (2, 112, 2, 2), (2, 1280, 1, 1)]
    kept = [layer for layer in backbone.modules() if type(layer).__name__ == "BatchNormAct2d"]
    assert kept and all(layer.training for layer in kept)  # trained under norm: train


def test_without_timm_a_spec_naming_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets when timm is not installed
    timm_models.timm_models.cache_clear()
    try:
        with pytest.raises(featx.SpecError, match=r"backbone.model: timm models need timm: pip install 'featx\[timm"):
            featx.build({"model": "timm:resnet18", "stages": {"c2": {"modules": ["layer1"]}}})
    finally:
        timm_models.timm_models.cache_clear()


def test_featx_list_without_timm_lists_the_packaged_timm_files_as_needing_it(monkeypatch, capsys):
    """The default install has no timm: featx-list exited 1, counting featx's own timm_* files as failures to plan."""
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets when timm is not installed
    timm_models.timm_models.cache_clear()
    try:
        catalog.main(["resnet18", "timm_convnext_tiny*"])  # returns: exit status 0
        listed = capsys.readouterr()
        catalog.main(["timm_convnext_tiny"])
        single = capsys.readouterr()
        with pytest.raises(SystemExit) as refused:
            catalog.main(["--timm", "convnext*"])
    finally:
        timm_models.timm_models.cache_clear()
    rows = {line.split()[0]: line for line in listed.out.splitlines()[1:]}
    assert list(rows) == ["resnet18", "timm_convnext_tiny", "timm_convnext_tiny_fpn"]
    assert "error" not in rows["resnet18"] and "needs" not in rows["resnet18"]
    for name in ("timm_convnext_tiny", "timm_convnext_tiny_fpn"):
        assert rows[name].split(maxsplit=1)[1] == "needs timm: pip install 'featx[timm]' (or pip install timm)"
    assert listed.err == "3 backbones, 2 need timm\n"
    assert single.err == "1 backbone, 1 needs timm\n"  # one of each: in the singular
    assert refused.value.code == 1
    assert capsys.readouterr().err == (
        "featx-list: error: --timm lists timm's models, and timm is not installed: pip install 'featx[timm]' "
        "(or pip install timm)\n"
    )


def test_import_featx_does_not_import_timm():
    code = "import sys, featx; print('timm' in sys.modules, 'huggingface_hub' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_featx_list_timm_patterns(capsys):
    catalog.main(["--timm", "resnet18", "deit_tiny_patch16_224", "pvt_v2_b0"])
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
    assert rows["timm:resnet18"].split()[2:5] == ["c2..c5", "4,8,16,32", "64,128,256,512"]
    assert rows["timm:deit_tiny_patch16_224"].split()[2:5] == ["embed..blocks4", "16", "192"]
    assert "tokens; input 224x224 only" in rows["timm:deit_tiny_patch16_224"]
    assert "no proposal: propose(): 'timm:pvt_v2_b0' gives fewer than two stages" in rows["timm:pvt_v2_b0"]
    assert "3 timm models, 1 without a proposal" in captured.err


def test_featx_propose_writes_a_timm_file_that_builds(tmp_path):
    from featx.cli import propose as propose_cli

    path = tmp_path / "backbone" / "r18.yaml"
    path.parent.mkdir()
    propose_cli.main(["timm:resnet18", "--fpn", "32", "-o", str(path)])
    text = path.read_text()
    assert "# Written by `featx-propose timm:resnet18 --fpn 32" in text and f"(timm {timm.__version__})." in text
    assert "timm publishes the tags a1_in1k, a2_in1k" in text and "(DEFAULT = a1_in1k;" in text
    backbone = featx.build(path, overrides=["device=meta"])
    assert [(i.name, i.channels) for i in backbone.feature_info] == [("p2", 32), ("p3", 32), ("p4", 32), ("p5", 32)]


def test_a_token_spec_whose_blocks_take_a_rotary_embedding_is_refused():
    """EVA-02 calls its blocks with a rotary position embedding (blk(x, rope=...)): stages would drop it. The spec
    is the one featx.propose wrote before it refused such models."""
    spec = {
        "model": "timm:eva02_tiny_patch14_224",
        "source": "blocks",
        "tokens": {"embed": "patch_embed", "prefix": ["cls_token"], "position": "pos_embed"},
        "stages": {
            "embed": {"modules": ["patch_embed", "pos_drop", "norm_pre"]},
            "blocks1": {"slice": [0, 3]},
            "blocks2": {"slice": [3, 6]},
        },
    }
    with pytest.raises(
        featx.SpecError,
        match=r"^backbone\.stages\.blocks1: the model's own forward calls 'blocks\.0' with more than its input "
        r"\(arguments: rope",
    ):
        featx.build(spec, overrides=["device=meta"])


def test_a_vit_whose_blocks_take_a_rotary_embedding_is_not_proposed():
    """vit_pe_spatial's forward gives each block the rope embedding as well: the proposal was written, and its own
    build refused it (stages pass one tensor on); the proposer refuses it as it does vit_pe_core."""
    with pytest.raises(
        featx.ArgumentError,
        match=r"^propose\(\): 'timm:vit_pe_spatial_tiny_patch16_512' is a token model whose forward calls 'blocks\.0' "
        r"with more than the tokens \(arguments: rope, e\.g\. a rotary position embedding\); featx's stages give "
        r"each module the previous one's output only$",
    ):
        featx.propose("timm:vit_pe_spatial_tiny_patch16_512")


def test_featx_list_timm_needs_patterns_and_takes_them_with_the_prefix(capsys):
    with pytest.raises(SystemExit) as exit_:
        catalog.main(["--timm"])
    assert exit_.value.code == 2 and "--timm needs name patterns" in capsys.readouterr().err
    catalog.main(["--timm", "timm:resnet18"])
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["timm:resnet18", "timm:resnet18"]


def test_featx_list_timm_without_a_match():
    with pytest.raises(SystemExit) as exit_:
        catalog.main(["--timm", "no_such_model*"])
    assert exit_.value.code == 1


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("ssl_resnet18", "write model: timm:resnet18 and weights: fb_ssl_yfcc100m_ft_in1k"),
        ("deit3_small_patch16_384_in21ft1k", "write model: timm:deit3_small_patch16_384 and weights: fb_in22k_ft_in1k"),
        ("efficientnet_b2a", "write model: timm:efficientnet_b2"),  # mapped to an architecture without a tag
    ],
)
def test_a_deprecated_timm_name_names_the_current_one(name, advice, capsys):
    """timm's is_model takes its deprecated names, which have no pretrained configs of their own: ssl_resnet18 was
    said to have no weights (it is resnet18.fb_ssl_yfcc100m_ft_in1k), with timm's warning, and a 384-only DeiT was
    probed at 224."""
    import warnings

    message = f"timm:{name} is a deprecated timm name: {advice}"
    spec = {"model": f"timm:{name}", "weights": "DEFAULT", "stages": {"c2": {"modules": ["conv1"]}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(featx.SpecError, match=f"^backbone\\.model: {message}$"):
            featx.build(spec, overrides=["device=meta"])
        with pytest.raises(featx.ArgumentError, match=f"^propose\\(\\): {message}$"):
            featx.propose(f"timm:{name}")
    with pytest.raises(SystemExit) as exit_:
        catalog.main(["--timm", name])
    assert exit_.value.code == 1 and capsys.readouterr().err == f"featx-list: error: {message}\n"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("resnt18", "no timm model matches resnt18; did you mean resnet18"),  # suggested from timm's names
        ("timm:resnt18", "no timm model matches timm:resnt18; did you mean resnet18"),
        (
            "resnet18.a1_in1k",
            "no timm model matches resnet18.a1_in1k: patterns match model names, and pretrained tags are not listed "
            "(featx-list --timm resnet18)",
        ),
    ],
)
def test_featx_list_timm_says_why_a_pattern_matches_nothing(pattern, message, capsys):
    """A typo was "no timm model matches resnt18" with no suggestion, and a NAME.TAG pattern said no more."""
    with pytest.raises(SystemExit) as exit_:
        catalog.main(["--timm", pattern])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith(f"featx-list: error: {message}"), err
