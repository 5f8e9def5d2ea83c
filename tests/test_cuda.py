"""The CUDA paths: builds, pretrained assignment, freezing, channels_last, autocast, compile, export, checkpoints and
featx-extract on a GPU. Skipped on machines without CUDA (CI has none); run them where a GPU is.

    python -m pytest tests/test_cuda.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, save_state_dict
from PIL import Image
from torch.testing import assert_close
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

import featx
from featx.spec.apps import ExtractOptions
from featx.tasks.export import FORMATS, export_backbone
from featx.tasks.extract.run import extract
from featx.tasks.extract.transforms import image_transform

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

#: cuDNN may pick different (equally valid) algorithms for two modules, so CUDA comparisons get a small tolerance
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True)
def _exact_float32():
    """TF32 off, so float32 comparisons on Ampere/Hopper are float32 comparisons."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> tuple:
    torch.manual_seed(0)
    classifier = randomize_norm_statistics(torchvision.models.resnet18()).eval()
    return classifier, save_state_dict(classifier, tmp_path_factory.mktemp("weights") / "resnet18.pth")


def _every_tensor(module: torch.nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


@pytest.mark.parametrize("norm", ["eval", "frozen"])
def test_pretrained_cuda_build_equals_intermediate_layer_getter_on_cuda(resnet18_weights, norm):
    classifier, weights = resnet18_weights
    backbone = featx.build("resnet18", overrides=[f"weights='{weights}'", "device=cuda", f"norm={norm}"]).eval()
    assert all(t.device.type == "cuda" for _, t in _every_tensor(backbone))  # the assigned (mmap) tensors moved too
    # a copy: the module-scoped classifier stays on the CPU for the other tests
    reference = (
        copy.deepcopy(classifier) if norm == "eval" else torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d)
    )
    reference.load_state_dict(classifier.state_dict())
    getter = IntermediateLayerGetter(reference, {f"layer{i}": f"c{i + 1}" for i in range(1, 5)}).cuda().eval()
    x = torch.randn(2, 3, 96, 96, device="cuda")
    with torch.inference_mode():
        actual, expected = backbone(x), getter(x)
    assert list(actual) == ["c2", "c3", "c4", "c5"]
    for name in actual:
        assert actual[name].is_cuda
        assert_close(actual[name], expected[name], **TOLERANCE, msg=name)


def test_cuda_equals_cpu_for_the_same_weights(resnet18_weights):
    _, weights = resnet18_weights
    overrides = [f"weights='{weights}'", "fpn.out_channels=64"]  # resnet18_fpn: c2..c5 + p2..p5
    torch.manual_seed(1)
    on_cpu = featx.build("resnet18_fpn", overrides=[*overrides, "device=cpu"]).eval()
    on_cuda = featx.build("resnet18_fpn", overrides=[*overrides, "device=cuda:0"]).eval()
    on_cuda.neck.load_state_dict(on_cpu.neck.state_dict())  # the FPN is random-initialised on each
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected, actual = on_cpu(x), on_cuda(x.cuda())
    for name in expected:
        assert_close(actual[name].cpu(), expected[name], **TOLERANCE, msg=name)


def test_random_init_build_and_training_step_on_cuda_keep_frozen_stages_bit_identical():
    torch.manual_seed(0)
    backbone = featx.build("resnet50_fpn", overrides=["device=cuda", "norm=eval", "frozen_stages=2"])
    frozen = {k: v.clone() for k, v in backbone.stages["c2"].state_dict().items()}
    frozen.update({f"c3.{k}": v.clone() for k, v in backbone.stages["c3"].state_dict().items()})
    c4_stats = {k: v.clone() for k, v in backbone.stages["c4"].state_dict().items() if "running" in k}
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = sum(t.square().mean() for t in backbone.train()(torch.randn(2, 3, 64, 64, device="cuda")).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = {k: v for k, v in backbone.stages["c2"].state_dict().items()}
    after.update({f"c3.{k}": v for k, v in backbone.stages["c3"].state_dict().items()})
    for name, tensor in frozen.items():
        assert torch.equal(after[name], tensor), name
    for name, tensor in c4_stats.items():  # norm=eval: statistics of the trainable stages do not move either
        assert torch.equal(backbone.stages["c4"].state_dict()[name], tensor), name
    assert backbone.stages["c5"][0][0].conv1.weight.grad is not None
    assert backbone.stages["c2"][0].weight.grad is None


def test_channels_last_on_cuda_equals_nchw():
    torch.manual_seed(0)
    nchw = featx.build("resnet50_fpn", overrides=["device=cuda"]).eval()
    nhwc = featx.build("resnet50_fpn", overrides=["device=cuda", "channels_last=true"]).eval()
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.stages["c3"][0][0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 96, 96, device="cuda")
    with torch.inference_mode():
        expected, actual = nchw(x), nhwc(x.contiguous(memory_format=torch.channels_last))
    for name in expected:  # random-init ResNet-50 maps reach ~100: the tolerance scales with them
        assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5 * float(expected[name].abs().max()), msg=name)


def test_bfloat16_autocast_forward_is_close_to_float32():
    torch.manual_seed(0)
    backbone = featx.build("convnext_tiny", overrides=["device=cuda"]).eval()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        expected = backbone(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            actual = backbone(x)
    assert [tuple(t.shape) for t in actual.values()] == [
        (2, 96, 16, 16),
        (2, 192, 8, 8),
        (2, 384, 4, 4),
        (2, 768, 2, 2),
    ]
    for name, tensor in actual.items():
        error = (tensor.float() - expected[name]).norm() / expected[name].norm()
        assert error < 0.05, (name, float(error))


@pytest.mark.slow
def test_torch_compile_on_cuda_equals_eager():
    torch.manual_seed(0)
    backbone = featx.build("resnet18_fpn", overrides=["device=cuda"]).eval()
    compiled = torch.compile(backbone)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        expected, actual = backbone(x), compiled(x)
    assert list(actual) == list(expected)
    for name in expected:
        assert_close(actual[name], expected[name], **TOLERANCE, msg=name)


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_export_of_a_cuda_backbone_reloads_and_matches_eager(tmp_path, fmt):
    """The written file, reloaded here (torch.jit.load, torch.export.load, onnxruntime), gives eager's outputs: not
    featx's own max_abs_diff."""
    onnxruntime = pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    torch.manual_seed(0)
    backbone = featx.build("resnet18_fpn", overrides=["device=cuda"]).eval()
    result = export_backbone(backbone, tmp_path / f"bb{FORMATS[fmt]}", fmt, example_size=(64, 64))
    x = torch.randn(1, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        expected = backbone(x)
        if fmt == "torchscript":
            actual = torch.jit.load(str(result.path), map_location="cuda")(x)
        elif fmt == "exported":
            actual = torch.export.load(str(result.path)).module()(x)
        else:
            session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
            arrays = session.run(None, {"image": x.cpu().numpy()})
            actual = dict(zip(expected, (torch.from_numpy(array).cuda() for array in arrays), strict=True))
    assert list(actual) == list(expected)
    for name in expected:
        assert_close(actual[name], expected[name], **TOLERANCE, msg=name)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_with_tf32_on_is_checked_in_float32(tmp_path, fmt):
    """cuDNN's TF32 convolutions (on by default) round far above export's tolerance: the check compares in float32,
    so a correct export of a CUDA backbone is written, and the user's TF32 settings are put back."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    backbone = featx.build("resnet18_fpn", overrides=["device=cuda"]).eval()
    torch.backends.cudnn.allow_tf32 = True  # the autouse fixture restores its own setting afterwards
    result = export_backbone(backbone, tmp_path / f"bb{FORMATS[fmt]}", fmt, example_size=(64, 64))
    assert result.max_abs_diff < 1e-3 and torch.backends.cudnn.allow_tf32


def test_checkpoint_saved_on_cuda_loads_on_cpu_with_equal_outputs(tmp_path):
    torch.manual_seed(0)
    backbone = featx.build("resnet18_fpn", overrides=["device=cuda"]).eval()
    featx.save(backbone, tmp_path / "bb.pt")
    on_cpu = featx.load(tmp_path / "bb.pt", overrides=["device=cpu"]).eval()
    assert all(t.device.type == "cpu" for _, t in _every_tensor(on_cpu))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected, actual = backbone(x.cuda()), on_cpu(x)
    for name in expected:
        assert_close(actual[name], expected[name].cpu(), **TOLERANCE, msg=name)


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_on_cuda_stores_the_backbones_features(tmp_path, resnet18_weights, workers):
    _, weights = resnet18_weights
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (48 + index, 64, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    spec = featx.load_spec("resnet18", overrides=["device=cuda", f"weights='{weights}'"])
    options = ExtractOptions(
        input=str(folder),
        output=str(tmp_path / "out"),
        size=[64, 64],
        batch_size=2,
        workers=workers,
        shard_size=3,
        pooling="avg",
        progress=False,
    )
    summary = extract(spec, options)
    assert (summary.images, summary.skipped) == (5, 0)
    stored = dict(featx.read_features(tmp_path / "out"))
    backbone = featx.build(spec).eval()
    transform = image_transform("center_crop", spec, [64, 64])
    for path, features in stored.items():
        assert features["c5"].device.type == "cpu" and features["c5"].shape == (512,)
        with Image.open(path) as image, torch.inference_mode():
            expected = backbone(transform(image.convert("RGB")).unsqueeze(0).cuda())["c5"].mean(dim=(2, 3))[0]
        assert_close(features["c5"], expected.cpu(), **TOLERANCE, msg=Path(path).name)


def _smooth_photo(height: int, width: int, seed: int) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    channels = [np.sin(rows / (5 + c) + seed) * np.cos(columns / (7 + c) - seed) for c in range(3)]
    return ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)


def _decode_gpu_folder(folder: Path) -> None:
    """JPEGs nvJPEG decodes (4:2:0, 4:4:4, progressive, grayscale, rotated by EXIF, RGB without YCbCr) and a PNG
    it does not."""
    folder.mkdir()
    for index, options in enumerate([{}, {"subsampling": 0}, {"progressive": True}]):
        Image.fromarray(_smooth_photo(48 + index, 64, index)).save(folder / f"{index}.jpg", quality=90, **options)
    Image.fromarray(_smooth_photo(50, 60, 5)[..., 0]).save(folder / "gray.jpg", quality=90)
    rotated = Image.fromarray(_smooth_photo(40, 56, 6))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(folder / "rotated.jpg", quality=90, exif=exif.tobytes())
    Image.fromarray(_smooth_photo(44, 52, 8)).save(folder / "adobe_rgb.jpg", quality=90, keep_rgb=True)  # no YCbCr
    Image.fromarray(_smooth_photo(45, 45, 7)).save(folder / "plain.png")


def test_nvjpeg_pixels_equal_libjpegs_or_stay_within_the_stated_tolerance(tmp_path):
    """Decoded at the image's own size (the resize is the identity), the device path's input is nvJPEG's pixels: bit
    for bit libjpeg's (the CPU path) for grayscale and 4:4:4 JPEGs (the normalised floats within rounding); with
    subsampled chroma nvJPEG upsamples it without libjpeg's smoothing, measured on an H200 (torchvision 0.26) at
    2.9-3.3 levels on average and 16 at most on these files, so the stated bound is 4 on average and 32 at any
    pixel. An RGB JPEG goes to Pillow."""
    from PIL import JpegImagePlugin

    from featx.tasks.extract.decode import ImageFiles, collate_images
    from featx.tasks.extract.device_decode import DeviceJpegDecoder, JpegFiles, collate_jpegs

    _decode_gpu_folder(tmp_path / "images")
    spec = featx.load_spec("resnet18")
    exact = []
    for path in sorted((tmp_path / "images").glob("*.jpg")):
        with Image.open(path) as image:
            upright = image.size[::-1] if image.getexif().get(0x0112, 1) < 5 else image.size
            subsampled = JpegImagePlugin.get_sampling(image) > 0
        transform = image_transform("resize", spec, list(upright))
        raw = collate_jpegs([JpegFiles([path], transform)[0]])
        got = DeviceJpegDecoder(transform, torch.device("cuda"))(raw)
        expected = collate_images([ImageFiles([path], transform)[0]])
        assert got.images is not None and expected.images is not None, path.name
        assert got.images.device.type == "cuda"
        if path.name == "adobe_rgb.jpg":
            assert got.fallbacks == {0: "an RGB JPEG (no YCbCr transform)"}
        else:
            assert got.fallbacks == {}, path.name
        levels = (got.images.cpu() - expected.images).abs() * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
        if subsampled:
            assert float(levels.mean()) <= 4.0 and float(levels.max()) <= 32.5, (path.name, levels.mean(), levels.max())
        else:  # the same 8-bit pixels: only the normalisation's float rounding differs between the devices
            assert float(levels.max()) < 0.01, (path.name, levels.max())
            exact.append(path.name)
    assert exact == ["1.jpg", "adobe_rgb.jpg", "gray.jpg"]  # 4:4:4, RGB (Pillow's), grayscale


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_with_decode_gpu_stores_features_close_to_decode_cpu(tmp_path, resnet18_weights, workers):
    _, weights = resnet18_weights
    _decode_gpu_folder(tmp_path / "images")
    spec = featx.load_spec("resnet18", overrides=["device=cuda", f"weights='{weights}'"])
    stored = {}
    for decode in ("cpu", "gpu"):
        options = ExtractOptions(
            input=str(tmp_path / "images"),
            output=str(tmp_path / decode),
            size=[64, 64],
            batch_size=4,
            workers=workers,
            shard_size=3,
            decode=decode,
            progress=False,
        )
        summary = extract(spec, options)
        assert (summary.images, summary.skipped) == (7, 0)
        stored[decode] = dict(featx.read_features(tmp_path / decode))
    assert sorted(stored["gpu"]) == sorted(stored["cpu"])
    for path, features in stored["gpu"].items():
        expected = stored["cpu"][path]["c5"]
        assert_close(features["c5"], expected, rtol=0, atol=0.02 * float(expected.abs().max()), msg=Path(path).name)
    manifest = [json.loads(line) for line in (tmp_path / "gpu" / "featx-manifest.jsonl").read_text().splitlines()]
    assert {Path(e["path"]).name: e.get("decoded_on_cpu") for e in manifest if "decoded_on_cpu" in e} == {
        "plain.png": "not a JPEG (PNG)",
        "adobe_rgb.jpg": "an RGB JPEG (no YCbCr transform)",
    }


def test_a_build_leaves_the_cuda_generator_as_it_was():
    """A build seeds its own init from the spec's seed; the user's CUDA random stream goes on as before."""
    torch.manual_seed(123)
    expected = torch.randn(4, device="cuda")
    torch.manual_seed(123)
    featx.build("resnet18", overrides=["device=cuda"])
    assert torch.equal(torch.randn(4, device="cuda"), expected)
