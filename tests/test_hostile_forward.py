"""Hostile calls on a built backbone: every input the stages cannot take faithfully is an InputShapeError naming the
backbone and what it takes; every bad argument to its methods is an ArgumentError naming the method and the choices.
Inputs it can take give torchvision's own values (non-contiguous, channels-last, autocast)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import resnet18_spec

import featx
from featx.errors import ArgumentError, InputShapeError


@pytest.fixture(scope="module")
def backbone() -> featx.Backbone:
    return featx.build(resnet18_spec(frozen_stages=1)).eval()


@pytest.fixture(scope="module")
def reference(backbone) -> torch.nn.Module:
    """torchvision's resnet18 holding the backbone's weights (FrozenBatchNorm2d in featx = BatchNorm2d in eval)."""
    model = torchvision.models.resnet18().eval()
    for stage in backbone.stages.values():
        assert not model.load_state_dict(stage.state_dict(), strict=False).unexpected_keys
    return model


def _image(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


# (id, input, pattern)
BAD_INPUTS = [
    ("none", lambda: None, r"takes a tensor \(N, 3, H, W\), got NoneType"),
    ("int", lambda: 3, r"takes a tensor \(N, 3, H, W\), got int"),
    ("string", lambda: "image.jpg", r"takes a tensor \(N, 3, H, W\), got str"),
    ("list-of-tensors", lambda: [_image(3, 32, 32)], r"takes a tensor \(N, 3, H, W\), got list"),
    ("tuple-of-tensors", lambda: (_image(1, 3, 32, 32),), r"got tuple"),
    ("numpy", lambda: np.zeros((1, 3, 32, 32), np.float32), r"got ndarray"),
    ("dict", lambda: {"image": _image(1, 3, 32, 32)}, r"got dict"),
    ("scalar-tensor", lambda: torch.tensor(1.0), r"shape \(N, 3, H, W\), got \(\) torch.float32"),
    ("1d", lambda: _image(3), r"got \(3,\)"),
    ("3d-unbatched", lambda: _image(3, 32, 32), r"got \(3, 32, 32\)"),
    ("5d-video", lambda: _image(1, 3, 2, 32, 32), r"got \(1, 3, 2, 32, 32\)"),
    ("channels-last-layout", lambda: _image(1, 32, 32, 3), r"got \(1, 32, 32, 3\)"),
    ("one-channel", lambda: _image(1, 1, 32, 32), r"got \(1, 1, 32, 32\)"),
    ("four-channels", lambda: _image(1, 4, 32, 32), r"got \(1, 4, 32, 32\)"),
    ("uint8", lambda: _image(1, 3, 32, 32).mul(50).clamp(0, 255).to(torch.uint8), r"torch.uint8"),
    ("int64", lambda: _image(1, 3, 32, 32).to(torch.int64), r"torch.int64"),
    ("bool", lambda: _image(1, 3, 32, 32) > 0, r"torch.bool"),
    ("complex", lambda: _image(1, 3, 32, 32).to(torch.complex64), r"floating-point|complex"),
    (
        "float64",
        lambda: _image(1, 3, 32, 32, dtype=torch.float64),
        r"computes in torch.float32, the input is torch.float64",
    ),
    ("float16", lambda: _image(1, 3, 32, 32, dtype=torch.float16), r"the input is torch.float16.*autocast"),
    ("bfloat16", lambda: _image(1, 3, 32, 32, dtype=torch.bfloat16), r"the input is torch.bfloat16"),
    ("empty-batch", lambda: _image(0, 3, 32, 32), r"empty batch of shape \(0, 3, 32, 32\)"),
    ("zero-height", lambda: _image(1, 3, 0, 32), r"empty batch of shape \(1, 3, 0, 32\)"),
    ("zero-by-zero", lambda: _image(2, 3, 0, 0), r"empty batch"),
    ("meta-tensor", lambda: torch.empty(1, 3, 32, 32, device="meta"), r"is on cpu, the input on meta"),
    # layouts the layers cannot take: raw RuntimeErrors from inside torch (the nested one from featx's own check)
    ("sparse", lambda: _image(1, 3, 32, 32).to_sparse(), r"takes a dense tensor .*got a torch.sparse_coo tensor"),
    ("mkldnn", lambda: _image(1, 3, 32, 32).to_mkldnn(), r"got a torch._mkldnn tensor; convert it \(x.to_dense\(\)"),
    (
        "nested",
        lambda: torch.nested.nested_tensor([_image(3, 32, 32), _image(3, 32, 40)], layout=torch.jagged),
        r"got a nested tensor; convert it",
    ),
]


@pytest.mark.parametrize("make_input, pattern", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_inputs_the_stages_cannot_take_are_named(backbone, make_input, pattern):
    with pytest.raises(InputShapeError, match=r"^featx backbone 'resnet18'") as error:
        backbone(make_input())
    assert re.search(pattern, str(error.value)), str(error.value)


@pytest.mark.parametrize(
    ("model", "stages", "size", "stage"),
    [
        ("alexnet", {"c2": {"slice": [0, 3]}, "c3": {"slice": [3, 6]}, "c4": {"slice": [6, 13]}}, 16, "c3"),
        ("vgg11", {"c2": {"slice": [0, 6]}, "c3": {"slice": [6, 11]}, "c4": {"slice": [11, 16]}}, 8, "c4"),
        ("squeezenet1_0", {"c2": {"slice": [0, 3]}, "c3": {"slice": [3, 7]}, "c4": {"slice": [7, 13]}}, 9, "c3"),
    ],
)
def test_an_input_too_small_for_a_stage_names_the_stage(model, stages, size, stage):
    backbone = featx.build({"model": model, "source": "features", "stages": stages, "device": "cpu"})
    with pytest.raises(
        InputShapeError, match=rf"^featx backbone '{model}': the input is too small for stage '{stage}'"
    ):
        backbone(_image(1, 3, size, size))


def test_an_input_too_small_for_the_neck_names_the_neck():
    """A 16x16 input is one ViT patch: the stages take it, the simple pyramid's pooling does not."""
    backbone = featx.build("vit_b_16_fpn", overrides=["device=cpu"])
    with pytest.raises(
        InputShapeError,
        match=r"^featx backbone 'vit_b_16': the input is too small for the neck \(.*Output size is too small.*\); "
        r"give a larger input$",
    ):
        backbone(_image(1, 3, 16, 16))


@pytest.mark.parametrize("norm", ["train", "sync"])
def test_a_batch_of_one_value_per_channel_in_training_mode_names_the_stage(norm):
    """One image of 32x32 leaves ResNet-18's last stage 1x1: BatchNorm in training mode has one value per channel,
    as in torchvision's own resnet18 (a ValueError from inside torch), here an InputShapeError naming the stage."""
    x = _image(1, 3, 32, 32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torchvision.models.resnet18().train()(x)
    backbone = featx.build("resnet18", overrides=["device=cpu", f"norm={norm}", "frozen_stages=0"]).train()
    with pytest.raises(InputShapeError) as caught:
        backbone(x)
    assert str(caught.value) == (
        "featx backbone 'resnet18': stage 'c5' normalises its batch in training mode and gets one value per channel "
        "(Expected more than 1 value per channel when training, got input size torch.Size([1, 512, 1, 1])); give "
        "more than one image or a larger input, or use norm: eval or frozen (or call .eval())"
    )
    assert set(backbone(_image(2, 3, 32, 32))) == {"c2", "c3", "c4", "c5"}


def test_torch_compile_keeps_the_input_checks():
    """torch.compile traces the checks (guards on shape, dtype and device; fullgraph: no graph break for an input
    that passes); they were skipped, so a compiled ViT took a 40x40 input and dropped its last 8 rows and columns."""
    resnet = featx.build(resnet18_spec()).eval()
    compiled = torch.compile(resnet, backend="eager", fullgraph=True)
    x = _image(2, 3, 64, 64)
    with torch.no_grad():
        for (name, a), b in zip(resnet(x).items(), compiled(x).values(), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    with pytest.raises(torch._dynamo.exc.Unsupported):  # as docs/python.md says: a raise stops a full graph
        compiled(_image(2, 2, 64, 64))
    with pytest.raises(InputShapeError, match=r"expects a floating-point batch of shape \(N, 3, H, W\), got \(2, 2,"):
        torch.compile(resnet, backend="eager")(_image(2, 2, 64, 64))
    vit = featx.build("vit_b_16", overrides=["device=cpu"]).eval()
    with pytest.raises(InputShapeError, match="multiples of 16 \\(the pixels a patch covers\\), got 40x40"):
        torch.compile(vit, backend="eager")(_image(1, 3, 40, 40))


def test_autocast_does_not_make_a_float64_input_acceptable(backbone):
    """Autocast casts float32/16 and bfloat16 inputs, not float64: the check let it through under autocast and torch
    failed inside the first convolution."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="expected scalar type Double but found BFloat16"):
            torchvision.models.resnet18().eval()(_image(1, 3, 32, 32, dtype=torch.float64))
        with pytest.raises(InputShapeError) as caught:
            backbone(_image(1, 3, 32, 32, dtype=torch.float64))
    assert str(caught.value) == (
        "featx backbone 'resnet18' computes in torch.float32, the input is torch.float64; convert it "
        "(x.to(torch.float32)) (autocast does not cast torch.float64)"
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float8_e4m3fn])
def test_autocast_is_not_suggested_for_an_input_it_would_not_cast(backbone, dtype):
    """Outside autocast, a float64 (or float8) input was told to "run under torch.autocast", which then refused it
    with "autocast does not cast torch.float64"."""
    with pytest.raises(InputShapeError) as caught:
        backbone(_image(1, 3, 32, 32).to(dtype))
    assert str(caught.value) == (
        f"featx backbone 'resnet18' computes in torch.float32, the input is {dtype}; convert it "
        f"(x.to(torch.float32)) (autocast does not cast {dtype})"
    )
    with pytest.raises(InputShapeError, match=r"convert it \(x\.to\(torch\.float32\)\) or run under torch\.autocast$"):
        backbone(_image(1, 3, 32, 32, dtype=torch.float16))  # one it casts


def test_an_error_torch_raises_in_a_hook_of_yours_keeps_its_type():
    """Only the innermost frame was looked at: a hook of yours calling torch, which refuses the shape, still became
    an InputShapeError (a ValueError) blaming the input."""
    backbone = featx.build(resnet18_spec()).eval()
    backbone.stages["c3"].register_forward_hook(lambda module, inputs, output: F.interpolate(output, size=(3,)))
    with pytest.raises(ValueError) as caught:
        backbone(_image(1, 3, 64, 64))
    assert type(caught.value) is ValueError and "size" in str(caught.value)


@pytest.mark.parametrize("error", [RuntimeError("my hook: the batch size must be even"), ValueError("wrong shape")])
def test_an_error_of_a_hook_of_yours_keeps_its_type(error):
    """A forward hook's error that mentions a size or a shape became an InputShapeError (a ValueError) blaming the
    input's size, so ``except RuntimeError`` no longer caught it; docs/python.md says your own code's errors keep
    their type."""
    backbone = featx.build(resnet18_spec()).eval()

    def hook(module, inputs, output):
        raise error

    backbone.stages["c3"].register_forward_hook(hook)
    with pytest.raises(type(error)) as caught:
        backbone(_image(1, 3, 64, 64))
    assert caught.value is error


def test_autocast_does_not_make_float64_layers_take_another_dtype():
    """Nor does it cast float64 layers: a float32 (or bfloat16) input to a .double() backbone under autocast passed
    the check, and torch failed inside the first convolution with a raw RuntimeError."""
    backbone = featx.build("resnet18", overrides=["device=cpu", "out_features=[c2]"]).eval().double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # torch's words depend on the CPU's kernels (oneDNN's bfloat16 path or torch's own)
        mixed = "Input type .* and weight type .* should be the same|expected scalar type BFloat16 but found Double"
        with pytest.raises(RuntimeError, match=mixed):
            torchvision.models.resnet18().eval().double()(_image(1, 3, 32, 32))
        for dtype in (torch.float32, torch.bfloat16):
            with pytest.raises(InputShapeError) as caught:
                backbone(_image(1, 3, 32, 32, dtype=dtype))
            assert str(caught.value) == (
                f"featx backbone 'resnet18' computes in torch.float64, the input is {dtype}; convert it "
                "(x.to(torch.float64)) (autocast does not cast torch.float64)"
            )
        assert backbone(_image(1, 3, 32, 32, dtype=torch.float64))["c2"].dtype == torch.float64


def test_a_torch_fx_trace_keeps_the_input_checks():
    """torchvision's create_feature_extractor (torch.fx) skipped the checks: a ViT traced at 224x224 took a 40x40
    input and returned the maps of its top-left 32x32 crop. The checks are now nodes of the traced graph."""
    from torchvision.models.feature_extraction import create_feature_extractor

    vit = featx.build("vit_b_16", overrides=["device=cpu"]).eval()
    extractor = create_feature_extractor(vit, {"stages.blocks2": "blocks2"})
    x = _image(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(
            extractor(x)["blocks2"],
            vit.stages["blocks2"](vit.stages["blocks1"](vit.stages["embed"](x))),
            rtol=0,
            atol=0,
        )
        with pytest.raises(InputShapeError, match="multiples of 16 \\(the pixels a patch covers\\), got 40x40"):
            extractor(_image(1, 3, 40, 40))
    traced = torch.fx.symbolic_trace(featx.build(resnet18_spec()).eval())
    with pytest.raises(InputShapeError, match=r"expects a floating-point batch of shape \(N, 3, H, W\), got \(3, 32"):
        traced(_image(3, 32, 32))


def test_a_stage_that_fails_on_the_input_names_the_stage_and_the_input():
    """timm's DLA-34 adds maps that differ by a row at sizes that are no multiple of 32: torch's RuntimeError
    named neither the stage nor the input size."""
    pytest.importorskip("timm")
    backbone = featx.build(featx.propose("timm:dla34"), overrides=["device=cpu"]).eval()
    with pytest.raises(InputShapeError) as caught:
        backbone(_image(1, 3, 65, 47))
    assert str(caught.value).startswith("featx backbone 'timm:dla34': stage 'c")
    assert " failed on the 1x3x65x47 input (RuntimeError: The size of tensor a" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's own error, for debugging


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: not enough memory: you tried to allocate"
        ),
        RuntimeError("NaN in the activations"),  # a forward hook of the user's
    ],
    ids=["cuda-out-of-memory", "cpu-out-of-memory", "not-about-sizes"],
)
def test_an_error_not_about_the_inputs_sizes_stays_as_it_was(error):
    """Only a stage's error about tensor sizes is an InputShapeError: running out of memory (what a batch-size search
    catches, on the CPU a plain RuntimeError) and errors of the user's own code keep their type and message."""
    from featx.nn.backbone import Backbone
    from featx.nn.feature_info import StageInfo

    class Raises(torch.nn.Module):
        def forward(self, x):
            raise error

    spec = featx.BackboneSpec(model="custom", stages={"a": featx.StageSpec(modules=["a"])})
    backbone = Backbone({"a": Raises()}, [StageInfo("a", 3, 1, ("a",), "a")], spec)
    with pytest.raises(type(error)) as caught:
        backbone(_image(1, 3, 8, 8))
    assert caught.value is error


def test_norm_sync_in_a_process_group_off_the_gpu_names_the_key(tmp_path):
    """SyncBatchNorm in training mode, in a process group, refuses CPU inputs with a ValueError from inside torch."""
    import torch.distributed as dist

    backbone = featx.build(resnet18_spec(norm="sync", frozen_stages=0)).train()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        with pytest.raises(featx.SpecError) as caught:
            backbone(_image(2, 3, 32, 32))
    finally:
        dist.destroy_process_group()
    assert str(caught.value) == (
        "backbone.norm: sync: stage 'c2' synchronises its BatchNorm statistics across processes, which torch does on "
        "CUDA devices only, and the input is on cpu; use norm: train, eval or frozen off the GPU"
    )


def test_a_fixed_size_model_refuses_other_sizes():
    spec = featx.load_spec("maxvit_t", overrides=["device=meta"])
    backbone = featx.build(spec)
    with pytest.raises(InputShapeError, match=r"takes inputs of exactly 224x224 \(its spec's input_size\), got 64x64"):
        backbone(torch.empty(1, 3, 64, 64, device="meta"))


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: x,
        lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),  # non-contiguous
        lambda x: x.contiguous(memory_format=torch.channels_last),
        lambda x: x[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3),
        lambda x: x.requires_grad_(True),
    ],
    ids=["plain", "non-contiguous", "channels-last", "strided-view", "requires-grad"],
)
def test_inputs_it_can_take_give_torchvisions_values(backbone, reference, transform):
    image = transform(_image(2, 3, 64, 64))
    features = backbone(image)
    expected = reference.layer3(
        reference.layer2(reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))))
    )
    torch.testing.assert_close(features["c4"], expected, rtol=1e-5, atol=1e-5)


def test_a_half_precision_input_is_taken_under_autocast(backbone):
    image = _image(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = backbone(image.bfloat16())
    full = backbone(image)
    scale = full["c4"].detach().abs().max()
    torch.testing.assert_close(features["c4"].float(), full["c4"], rtol=0, atol=float(scale) * 0.1)


def test_nan_in_the_input_is_propagated_not_hidden(backbone):
    image = _image(1, 3, 32, 32)
    image[0, 0, 0, 0] = math.nan
    assert torch.isnan(backbone(image)["c2"]).any()


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda bb: bb.freeze("c9"), r"^freeze\(\): unknown stage 'c9'.*\(stages: c2, c3, c4\)$"),
        (lambda bb: bb.unfreeze(["c2", "c3"]), r"^unfreeze\(\): unknown stage \['c2', 'c3'\].*separate arguments"),
        (lambda bb: bb.freeze("C2"), r"^freeze\(\): unknown stage 'C2'"),
        (lambda bb: bb.freeze(2), r"^freeze\(\): unknown stage 2"),
        (lambda bb: bb.freeze(None), r"^freeze\(\): unknown stage None"),
        (lambda bb: bb.unfreeze("layer1"), r"^unfreeze\(\): unknown stage 'layer1'"),
        (lambda bb: bb.unfreeze("c2", "c22"), r"^unfreeze\(\): unknown stage 'c22'.*c2"),
        (lambda bb: bb.reinit("fc"), r"^reinit\(\): unknown stage 'fc'"),
        (lambda bb: bb.param_groups(0), r"^param_groups\(\): lr must be a positive finite number, got 0"),
        (lambda bb: bb.param_groups(-1e-3), r"lr must be a positive finite number, got -0.001"),
        (lambda bb: bb.param_groups(math.nan), r"lr must be a positive finite number, got nan"),
        (lambda bb: bb.param_groups(math.inf), r"lr must be a positive finite number, got inf"),
        (lambda bb: bb.param_groups("1e-3"), r"lr must be a positive finite number, got '1e-3'"),
        (lambda bb: bb.param_groups(True), r"lr must be a positive finite number, got True"),
        (lambda bb: bb.param_groups(1e-3, decay=0), r"decay must be a positive finite number, got 0"),
        (lambda bb: bb.param_groups(1e-3, decay=math.nan), r"decay must be a positive finite number, got nan"),
    ],
)
def test_bad_method_arguments_are_named(call, pattern):
    backbone = featx.build(resnet18_spec(device="meta"))
    before = {name: p.requires_grad for name, p in backbone.named_parameters()}
    with pytest.raises(ArgumentError, match=pattern):
        call(backbone)
    assert {name: p.requires_grad for name, p in backbone.named_parameters()} == before  # nothing half-done


@pytest.mark.parametrize(("layers", "autocast"), [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)])
def test_low_precision_layers_under_autocast_of_another_dtype_are_named(layers, autocast):
    """A float16 backbone under CPU autocast (bfloat16), or a bfloat16 one under float16 autocast, failed with torch's
    raw "mixed dtype (CPU): expect parameter to have scalar type of Float", after featx's own message had suggested
    autocast. The refusal names both dtypes and fixes that work."""
    with torch.autocast("cpu", dtype=autocast):  # torch's own modules cannot mix them either
        with pytest.raises(RuntimeError, match="mixed dtype"):
            torchvision.models.resnet18().eval().to(layers)(_image(1, 3, 32, 32))
    backbone = featx.build("resnet18", overrides=["device=cpu", "norm=eval", "out_features=[c2]"]).eval().to(layers)
    image = _image(1, 3, 32, 32)
    for dtype in (torch.float32, layers, autocast):
        with torch.autocast("cpu", dtype=autocast):
            with pytest.raises(InputShapeError) as caught:
                backbone(image.to(dtype))
        assert str(caught.value) == (
            f"featx backbone 'resnet18' computes in {layers} and autocast in {autocast}, which torch's layers cannot "
            f"mix; run under torch.autocast('cpu', dtype={layers}) or convert the backbone (bb.to({autocast}))"
        )
    with torch.autocast("cpu", dtype=layers):  # the first fix
        assert backbone(image)["c2"].dtype == layers
    with torch.autocast("cpu", dtype=autocast):  # the second
        assert backbone.to(autocast)(image)["c2"].dtype == autocast


@pytest.mark.parametrize("layers", [torch.float16, torch.bfloat16])
def test_autocast_is_suggested_with_the_dtype_of_low_precision_layers(layers):
    """A float16 backbone given a float32 input was told to "run under torch.autocast", whose CPU default
    (bfloat16) then failed inside torch: the suggestion names the layers' dtype, and following it works."""
    backbone = featx.build("resnet18", overrides=["device=cpu", "norm=eval", "out_features=[c2]"]).eval().to(layers)
    with pytest.raises(InputShapeError) as caught:
        backbone(_image(1, 3, 32, 32))
    assert str(caught.value) == (
        f"featx backbone 'resnet18' computes in {layers}, the input is torch.float32; convert it (x.to({layers})) "
        f"or run under torch.autocast('cpu', dtype={layers})"
    )
    with torch.autocast("cpu", dtype=layers):
        features = backbone(_image(1, 3, 32, 32))
    torch.testing.assert_close(features["c2"], backbone(_image(1, 3, 32, 32).to(layers))["c2"])


def test_an_inference_tensor_given_to_a_training_stage_is_named():
    """An input made under torch.inference_mode(), given with grad enabled to a backbone whose first stage trains,
    failed with torch's raw "Inference tensors cannot be saved for backward"."""
    with torch.inference_mode():
        image = _image(2, 3, 64, 64)
    backbone = featx.build(resnet18_spec(frozen_stages=0, norm="eval"))
    with pytest.raises(InputShapeError) as caught:
        backbone(image)
    assert str(caught.value) == (
        "featx backbone 'resnet18': stage 'c2' trains and cannot save its input for backward, an inference tensor "
        "(made under torch.inference_mode()); give x.clone() made outside inference mode, or run the backbone under "
        "torch.inference_mode() or torch.no_grad()"
    )
    expected = backbone(image.clone())["c4"]
    assert expected.requires_grad
    for context in (torch.inference_mode, torch.no_grad):
        with context():
            torch.testing.assert_close(backbone(image)["c4"], expected, rtol=0, atol=0)
    frozen = featx.build(resnet18_spec(frozen_stages=1, norm="eval"))  # a frozen first stage saves nothing of it
    frozen.load_state_dict(backbone.state_dict())
    torch.testing.assert_close(frozen(image)["c4"], expected, rtol=0, atol=0)
