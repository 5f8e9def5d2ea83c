"""Plain ViTs as backbones (token stages), checked against torchvision's own VisionTransformer: the maps equal the
tokens its encoder returns (class token dropped), at its own size and at others with the position embedding
resampled; freezing, checkpoints, export and detection work; bad token specs get featx errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch.nn import functional
from torch.testing import assert_close
from torchvision.models.detection import FasterRCNN
from torchvision.models.vision_transformer import interpolate_embeddings

import featx
from featx.detection import anchor_generator, roi_pooler
from featx.tasks.export import export_backbone

VITS = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")
#: the patch size of each, from torchvision's model definitions
PATCH = {"vit_b_16": 16, "vit_b_32": 32, "vit_l_16": 16, "vit_l_32": 32, "vit_h_14": 14}
WIDTH = {"vit_b_16": 768, "vit_b_32": 768, "vit_l_16": 1024, "vit_l_32": 1024, "vit_h_14": 1280}


def _perturbed_vit(name: str, **kwargs) -> torch.nn.Module:
    """torchvision's ``name`` with every parameter moved off its init (the class token and position embedding
    start at zero / a fixed draw otherwise)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, **kwargs).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def _encoder_outputs(model: torch.nn.Module, x: torch.Tensor, paths) -> dict:
    """What torchvision's own forward computes at the modules ``paths`` (forward hooks on the real forward)."""
    captured = {}
    handles = [
        model.get_submodule(path).register_forward_hook(lambda _m, _i, out, path=path: captured.setdefault(path, out))
        for path in paths
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _as_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Tokens without the class token, on the row-major patch grid (how conv_proj's map was flattened)."""
    return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


@pytest.fixture(scope="module")
def vit_b_16(tmp_path_factory):
    model = _perturbed_vit("vit_b_16")
    path = tmp_path_factory.mktemp("weights") / "vit_b_16.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("name", ["vit_b_16", "vit_b_32"])
def test_vit_maps_equal_torchvision_encoder_tokens_at_224(name, tmp_path):
    reference = _perturbed_vit(name)
    weights = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), weights)
    backbone = featx.build(name, overrides=[f"weights={weights}", "out_features=[blocks1,blocks4]"]).eval()
    x = torch.randn(2, 3, 224, 224)
    grid = 224 // PATCH[name]
    expected = _encoder_outputs(reference, x, ["encoder.layers.encoder_layer_2", "encoder"])
    with torch.inference_mode():
        outputs = backbone(x)
    assert list(outputs) == ["blocks1", "blocks4"]
    assert_close(outputs["blocks1"], _as_map(expected["encoder.layers.encoder_layer_2"], grid, grid), rtol=0, atol=0)
    assert_close(outputs["blocks4"], _as_map(expected["encoder"], grid, grid), rtol=0, atol=0)
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [
        ("blocks1", 768, PATCH[name]),
        ("blocks4", 768, PATCH[name]),
    ]


def test_vit_at_a_larger_square_size_equals_torchvision_built_for_it(vit_b_16):
    """torchvision's own recipe for another size: a model built with that image_size and its position embedding
    resampled by ``interpolate_embeddings``; featx resamples at run time."""
    reference, weights = vit_b_16
    resized = torchvision.models.vit_b_16(image_size=320).eval()
    resized.load_state_dict(interpolate_embeddings(320, 16, reference.state_dict()))
    backbone = featx.build("vit_b_16", overrides=[f"weights={weights}"]).eval()
    x = torch.randn(1, 3, 320, 320)
    with torch.inference_mode():
        output = backbone(x)["blocks4"]
    assert_close(output, _as_map(_encoder_outputs(resized, x, ["encoder"])["encoder"], 20, 20), rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(320, 256), (224, 160)])
def test_vit_takes_non_square_sizes_with_the_position_embedding_resampled(vit_b_16, size):
    """The reference is written out here: torchvision's modules, called on the tokens, with the position embedding's
    patch entries resampled bicubically (corners aligned) to the input's grid and the class token's entry kept."""
    reference, weights = vit_b_16
    backbone = featx.build("vit_b_16", overrides=[f"weights={weights}"]).eval()
    height, width = size[0] // 16, size[1] // 16
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        output = backbone(x)["blocks4"]
        position = reference.encoder.pos_embedding
        patch_entries = position[:, 1:].reshape(1, 14, 14, 768).permute(0, 3, 1, 2)
        resampled = functional.interpolate(patch_entries, size=(height, width), mode="bicubic", align_corners=True)
        position = torch.cat([position[:, :1], resampled.flatten(2).transpose(1, 2)], dim=1)
        tokens = torch.cat([reference.class_token, reference.conv_proj(x).flatten(2).transpose(1, 2)], dim=1)
        encoder = reference.encoder
        expected = encoder.ln(encoder.layers(encoder.dropout(tokens + position)))
    assert output.shape == (1, 768, height, width)
    assert_close(output, _as_map(expected, height, width), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", VITS)
def test_every_vit_file_plans_on_meta_like_torchvision(name):
    """On meta (no memory): the packaged file keeps exactly torchvision's parameters minus the classifier head,
    and its map has the shape torchvision's encoder output has at 224x224."""
    backbone = featx.build(name, overrides=["device=meta"])
    with torch.device("meta"):
        reference = torchvision.models.get_model(name)
    kept = sum(p.numel() for p in backbone.parameters())
    head = sum(p.numel() for p in reference.heads.parameters())
    assert kept == sum(p.numel() for p in reference.parameters()) - head
    grid = 224 // PATCH[name]
    tokens = _encoder_outputs(reference, torch.empty(1, 3, 224, 224, device="meta"), ["encoder"])["encoder"]
    assert tokens.shape == (1, 1 + grid * grid, WIDTH[name])
    output = backbone(torch.empty(1, 3, 224, 224, device="meta"))["blocks4"]
    assert output.shape == (1, WIDTH[name], grid, grid)
    assert backbone.feature_info == [featx.FeatureInfo("blocks4", WIDTH[name], PATCH[name])]
    fpn = featx.build(f"{name}_fpn", overrides=["device=meta"])
    assert [(i.name, i.stride) for i in fpn.feature_info] == [("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32)]


def test_frozen_stages_freeze_the_patch_embedding_tokens_and_first_blocks():
    backbone = featx.build("vit_b_32", overrides=["frozen_stages=2"]).train()
    backbone(torch.randn(2, 3, 64, 96))["blocks4"].square().mean().backward()
    embedding = backbone.stages["embed"].conv_proj
    frozen = [*backbone.stages["embed"].parameters(), *backbone.stages["blocks1"].parameters()]
    assert embedding.position.requires_grad is False and embedding.prefix[0].requires_grad is False
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    trainable = [*backbone.stages["blocks2"].parameters(), *backbone.stages["blocks4"].parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert not backbone.stages["blocks1"].training and backbone.stages["blocks2"].training
    unfrozen = featx.build("vit_b_32", overrides=["frozen_stages=0"]).train()
    unfrozen(torch.randn(1, 3, 64, 64))["blocks4"].sum().backward()
    embedding = unfrozen.stages["embed"].conv_proj
    assert embedding.position.grad is not None and embedding.prefix[0].grad is not None


def test_vit_checkpoint_rebuilds_itself(tmp_path):
    backbone = featx.build("vit_b_32", overrides=["seed=3"]).eval()
    path = featx.save(backbone, tmp_path / "vit.pt")
    loaded = featx.load(path).eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.inference_mode():
        assert_close(loaded(x)["blocks4"], backbone(x)["blocks4"], rtol=0, atol=0)


def test_vit_sizes_must_be_multiples_of_the_patch():
    backbone = featx.build("vit_b_32", overrides=["device=meta"])
    with pytest.raises(
        featx.InputShapeError,
        match=r"^featx backbone 'vit_b_32' takes inputs whose sides are multiples of 32 \(the pixels a patch covers\), "
        r"got 224x200$",
    ):
        backbone(torch.empty(1, 3, 224, 200, device="meta"))


def test_tokens_stride_resizes_the_image_so_a_patch_covers_that_many_pixels():
    """vit_h_14_fpn runs its patch-14 embedding at stride 16: the image is resized by 14/16 first (written out here
    with torchvision's resize), so the map has the stride-16 grid and the pyramid strides 4..32."""
    backbone = featx.build("vit_b_16", overrides=["tokens.stride=32", "seed=1"]).eval()
    assert backbone.feature_info == [featx.FeatureInfo("blocks4", 768, 32)]
    plain = featx.build("vit_b_16", overrides=["seed=1"]).eval()
    x = torch.randn(1, 3, 256, 192)
    resized = torchvision.transforms.functional.resize(x, [128, 96], antialias=True)
    with torch.inference_mode():
        assert_close(backbone(x)["blocks4"], plain(resized)["blocks4"], rtol=0, atol=1e-5)
    huge = featx.build("vit_h_14_fpn", overrides=["device=meta"])
    assert huge.spec.tokens.stride == 16 and huge.stage_info[0].stride == 16


def _reference_simple_pyramid(top: torch.Tensor, neck: torch.nn.Module, factors) -> list:
    """ViTDet's simple feature pyramid written out with torch.nn.functional and the neck's own weights."""

    def channel_norm(x, norm):
        return functional.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    outputs = []
    for level, factor in enumerate(factors):
        x = top
        layers = list(neck.rescales[level])
        if factor > 1:
            transposed = [layer for layer in layers if isinstance(layer, torch.nn.ConvTranspose2d)]
            norms = [layer for layer in layers if isinstance(layer, torch.nn.LayerNorm)]
            assert len(transposed) == int(math.log2(factor))
            for step, conv in enumerate(transposed):
                x = functional.conv_transpose2d(x, conv.weight, conv.bias, stride=2)
                if step < len(norms):
                    x = functional.gelu(channel_norm(x, norms[step]).permute(0, 3, 1, 2))
        elif factor < 1:
            x = functional.max_pool2d(x, kernel_size=round(1 / factor), stride=round(1 / factor))
        first, second = neck.outputs[level]
        x = functional.conv2d(x, first[0].weight)
        x = channel_norm(x, first[1]).permute(0, 3, 1, 2)
        x = functional.conv2d(x, second[0].weight, padding=1)
        outputs.append(channel_norm(x, second[1]).permute(0, 3, 1, 2))
    return outputs


@pytest.mark.parametrize(
    "name, overrides, factors",
    [
        ("vit_b_32_fpn", ["fpn.out_channels=32"], (8, 4, 2, 1)),
        ("resnet18_fpn", ["fpn.style=simple", "fpn.out_channels=32", "out_features=[c5]"], (8, 4, 2, 1)),
        ("resnet18_fpn", ["fpn.style=simple", "fpn.out_channels=32", "out_features=[c4]"], (4, 2, 1, 0.5)),
    ],
)
def test_simple_pyramid_equals_vitdet_written_out(name, overrides, factors):
    backbone = featx.build(name, overrides=[*overrides, "fpn.extra_blocks=maxpool", "seed=2"]).eval()
    with torch.no_grad():  # move LayerNorm affine terms off their identity init
        for parameter in backbone.neck.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    x = torch.randn(1, 3, 128, 96)
    with torch.inference_mode():
        outputs = backbone(x)
        stage_maps = featx.build(name, overrides=[*overrides, "fpn=null", "seed=2"]).eval()(x)
        expected = _reference_simple_pyramid(list(stage_maps.values())[-1], backbone.neck, factors)
    assert list(outputs) == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(v.shape) for v in outputs.values()] == [
        (1, 32, 32, 24),
        (1, 32, 16, 12),
        (1, 32, 8, 6),
        (1, 32, 4, 3),
        (1, 32, 2, 2),
    ]
    for level, value in zip(["p2", "p3", "p4", "p5"], expected, strict=True):
        assert_close(outputs[level], value, rtol=1e-5, atol=1e-5, msg=level)
    assert_close(outputs["p6"], functional.max_pool2d(outputs["p5"], 1, 2), rtol=0, atol=0)


def test_simple_pyramid_p6p7_come_from_its_own_top_level():
    """docs/config.md: with style simple, p6 and p7 are computed from P5 (the pyramid's top level, out_channels
    wide), not from the 768-wide stage as style fpn does when the widths differ."""
    backbone = featx.build("vit_b_32_fpn", overrides=["device=cpu", "fpn.out_channels=32", "fpn.extra_blocks=p6p7"])
    assert tuple(backbone.neck.extra_blocks.p6.weight.shape) == (32, 32, 3, 3) and backbone.neck.extra_blocks.use_P5
    with torch.inference_mode():
        outputs = backbone.eval()(torch.randn(1, 3, 64, 64))
        blocks = backbone.neck.extra_blocks
        p6 = blocks.p6(outputs["p5"])
    assert_close(outputs["p6"], p6, rtol=0, atol=0)
    assert_close(outputs["p7"], blocks.p7(functional.relu(p6)), rtol=0, atol=0)


def _same_outputs(expected: dict, actual, atol: float = 1e-4) -> None:
    values = list(actual.values()) if isinstance(actual, dict) else list(actual)
    assert len(values) == len(expected)
    for (name, value), other in zip(expected.items(), values, strict=True):
        assert_close(torch.as_tensor(other), value, rtol=1e-4, atol=atol, msg=name)


def test_vit_b_16_fpn_exports_at_a_fixed_size_and_the_file_equals_eager(tmp_path):
    backbone = featx.build("vit_b_16_fpn", overrides=["fpn.extra_blocks=maxpool"]).eval()
    result = export_backbone(backbone, tmp_path / "vit.pt2", "exported", (224, 224), dynamic=False)
    loaded = torch.export.load(str(result.path)).module()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        _same_outputs(backbone(x), loaded(x))


def test_a_dynamic_export_of_a_vit_takes_other_sizes(tmp_path):
    """No branch on the input size in the token path: the program traced at 224x224 runs at 320x256 too (with a
    shortcut for the position embedding's own grid, torch.export would specialise to 224 and fail elsewhere)."""
    backbone = featx.build("vit_b_32_fpn", overrides=["fpn.out_channels=32"]).eval()
    result = export_backbone(backbone, tmp_path / "vit.pt2", "exported", (224, 224), dynamic=True)
    loaded = torch.export.load(str(result.path)).module()
    x = torch.randn(2, 3, 320, 256)
    with torch.inference_mode():
        _same_outputs(backbone(x), loaded(x))


@pytest.mark.slow
def test_vit_b_16_fpn_onnx_at_a_fixed_size_equals_eager_in_onnxruntime(tmp_path):
    import onnxruntime

    backbone = featx.build("vit_b_16_fpn").eval()
    result = export_backbone(backbone, tmp_path / "vit.onnx", "onnx", (224, 224), dynamic=False)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        expected = backbone(x)
    _same_outputs(expected, [torch.from_numpy(a) for a in session.run(None, {"image": x.numpy()})])


def test_faster_rcnn_on_vit_b_16_fpn_trains_a_step_and_detects():
    torch.manual_seed(0)
    backbone = featx.build("vit_b_16_fpn", overrides=["fpn={out_channels: 64, extra_blocks: maxpool, style: simple}"])
    model = FasterRCNN(
        backbone,
        num_classes=3,
        rpn_anchor_generator=anchor_generator(backbone),
        box_roi_pool=roi_pooler(backbone),
        min_size=64,
        max_size=96,
        box_score_thresh=0.0,
        box_detections_per_img=10,
    )
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 44.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 8.0, 50.0, 60.0]]), "labels": torch.tensor([2])},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    deepest = backbone.stages["blocks4"].encoder_layers_encoder_layer_11.mlp[0].weight
    assert deepest.grad is not None and torch.count_nonzero(deepest.grad) > 0
    assert all(p.grad is None for p in backbone.stages["embed"].parameters())  # frozen_stages: 1
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert [set(d) for d in detections] == [{"boxes", "labels", "scores"}] * 2
    assert all(d["boxes"].shape[0] > 0 and torch.isfinite(d["boxes"]).all() for d in detections)


def test_weights_for_another_size_are_refused_with_the_position_embedding_named(tmp_path):
    """SWAG end-to-end weights carry the position embedding of a 384x384 model; the model featx builds is 224x224."""
    weights = tmp_path / "vit_384.pth"
    with torch.device("meta"):
        larger = torchvision.models.vit_b_16(image_size=384)
    torch.save({key: torch.zeros(value.shape) for key, value in larger.state_dict().items()}, weights)
    with pytest.raises(featx.WeightsError) as error:
        featx.build("vit_b_16", overrides=[f"weights={weights}"])
    assert "shape mismatches: encoder.pos_embedding checkpoint (1, 577, 768) vs model (1, 197, 768)" in str(error.value)


def test_a_checkpoint_without_the_token_parameters_is_refused_with_them_named(tmp_path):
    weights = tmp_path / "no_tokens.pth"
    state = _perturbed_vit("vit_b_32").state_dict()
    del state["class_token"], state["encoder.pos_embedding"]
    torch.save(state, weights)
    with pytest.raises(featx.WeightsError) as error:
        featx.build("vit_b_32", overrides=[f"weights={weights}"])
    assert "missing keys: class_token (1, 1, 768); encoder.pos_embedding (1, 50, 768)" in str(error.value)


def test_an_input_size_with_as_many_patches_as_the_native_grid_still_resamples_from_the_square_grid():
    """448x112 has 28x7 = 196 patches, as many as vit_b_16's own 14x14 grid: the position embedding is still read
    as 14x14 and resampled to 28x7."""
    backbone = featx.build("vit_b_16", overrides=["device=meta", "input_size=[448,112]"])
    assert backbone.stages["embed"].conv_proj.grid == (14, 14)
    assert backbone(torch.empty(1, 3, 448, 112, device="meta"))["blocks4"].shape == (1, 768, 28, 7)


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        (["tokens.prefix=[]"], "tokens.prefix may be missing 1 token"),
        (["tokens.position_covers_prefix=false"],
         "tokens.position_covers_prefix may be wrong (set true: the prefix tokens' entries come first)"),
        (["tokens.prefix=[]", "tokens.position_covers_prefix=false"],
         "tokens.prefix and tokens.position_covers_prefix may be wrong (1 prefix token with position entries)"),
    ],
)  # fmt: skip
def test_a_position_embedding_a_prefix_token_short_of_a_grid_hints_at_the_prefix(overrides, hint):
    """Leaving out the class token was blamed on the position embedding alone."""
    with pytest.raises(featx.SpecError) as error:
        featx.build("vit_b_16", overrides=["device=meta", *overrides])
    assert (error.value.key, error.value.message) == (
        "backbone.tokens.position",
        "'encoder.pos_embedding' has 197 patch entries (after 0 prefix ones): not the patch grid of 224x224 images at "
        f"patch stride 16, nor a square grid; 1 entry fewer would be a 14x14 grid: {hint}",
    )
