"""``extract.decode=gpu``'s pipeline, run on the CPU: the workers' JPEG/Pillow split, the batched device decoder
(libjpeg here, nvJPEG on a GPU), EXIF orientation, per-file fallbacks and their record in the manifest. The same
pipeline on a GPU is in tests/test_cuda.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg

import featx
from featx.errors import ArgumentError
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.decode import ImageBatch, ImageFiles, collate_images
from featx.tasks.extract.device_decode import (
    DeviceJpegDecoder,
    JpegBatch,
    JpegFiles,
    RawJpeg,
    check_tensor_transform,
    collate_jpegs,
)
from featx.tasks.extract.run import _settings, extract
from featx.tasks.extract.store import FeatureStore, read_features
from featx.tasks.extract.transforms import IMAGENET_STD, image_transform

CPU = torch.device("cpu")
#: one 8-bit level after normalisation, per channel: the most a tensor resize may differ from Pillow's (which rounds
#: its result to 8 bits)
ONE_LEVEL = torch.tensor([1 / (255 * std) for std in IMAGENET_STD]).view(1, 3, 1, 1) + 1e-6


def _photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth photo-like RGB image (JPEG-friendly), different per seed."""
    rows, columns = np.mgrid[0:height, 0:width]
    phase = seed * 0.7
    channels = [np.sin(rows / (5 + c) + phase) * np.cos(columns / (7 + c) - phase) for c in range(3)]
    return ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)


def _jpeg(path: Path, pixels: np.ndarray, orientation: int = 1, **options) -> Path:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, "JPEG", quality=90, exif=exif.tobytes(), **options)
    return path


def _cpu_batch(paths: List[Path], transform) -> ImageBatch:
    return collate_images([ImageFiles(paths, transform)[i] for i in range(len(paths))])


def _device_batch(paths: List[Path], transform) -> Tuple[ImageBatch, JpegBatch]:
    raw = collate_jpegs([JpegFiles(paths, transform)[i] for i in range(len(paths))])
    return DeviceJpegDecoder(transform, CPU)(raw), raw


@pytest.fixture()
def mixed(tmp_path) -> Dict[str, Path]:
    """JPEGs (4:2:0, 4:4:4, progressive, grayscale, rotated), a CMYK JPEG, PNGs, a truncated JPEG, a text file."""
    files = {
        "color": _jpeg(tmp_path / "color.jpg", _photo(seed=1)),
        "full_chroma": _jpeg(tmp_path / "full_chroma.jpg", _photo(seed=2), subsampling=0),
        "progressive": _jpeg(tmp_path / "progressive.jpg", _photo(seed=3), progressive=True),
        "rotated": _jpeg(tmp_path / "rotated.jpeg", _photo(seed=4), orientation=6),
        "png": tmp_path / "plain.png",
        "rgba": tmp_path / "alpha.png",
        "truncated": tmp_path / "truncated.jpg",
        "text": tmp_path / "notes.jpg",
    }
    Image.fromarray(_photo(seed=5)[..., 0]).save(tmp_path / "gray.jpg", quality=90)
    files["gray"] = tmp_path / "gray.jpg"
    Image.fromarray(_photo(seed=6)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    files["cmyk"] = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo(seed=7)).save(files["png"])
    Image.fromarray(_photo(seed=8)).convert("RGBA").save(files["rgba"])
    whole = _jpeg(tmp_path / "whole.jpg", _photo(96, 128, seed=9)).read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.jpg").unlink()
    files["text"].write_text("not an image")
    return files


def test_the_device_path_gives_the_cpu_paths_inputs_within_one_level_and_names_its_fallbacks(mixed):
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    paths = list(mixed.values())
    expected, (got, raw) = _cpu_batch(paths, transform), _device_batch(paths, transform)

    on_device = {paths[index].name for index, _, _ in raw.jpegs}
    assert on_device == {"color.jpg", "full_chroma.jpg", "progressive.jpg", "rotated.jpeg", "gray.jpg", "truncated.jpg"}
    assert got.indices == expected.indices
    assert got.identities == expected.identities
    assert got.failures == expected.failures  # the same files skipped, for the same reasons
    assert {paths[i].name for i, _, _ in got.failures} == {"truncated.jpg", "notes.jpg"}
    assert {paths[i].name: why for i, why in got.fallbacks.items()} == {
        "plain.png": "not a JPEG (PNG)",
        "alpha.png": "not a JPEG (PNG)",
        "cmyk.jpg": "a CMYK JPEG",
    }
    assert got.images is not None and expected.images is not None
    assert ((got.images - expected.images).abs() <= ONE_LEVEL).all()
    for row, index in enumerate(got.indices):  # what Pillow decoded is the CPU path's tensor, bit for bit
        if index in got.fallbacks:
            assert torch.equal(got.images[row], expected.images[row])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_pixels_and_orientation_equal_pillows_bit_for_bit(tmp_path, orientation):
    """At the image's own size the resize is the identity, so the input is decode + orientation + scaling alone:
    equal to the CPU path's (Pillow, ImageOps.exif_transpose) and to torchvision's own EXIF handling."""
    path = _jpeg(tmp_path / "photo.jpg", _photo(40, 56, seed=orientation), orientation=orientation)
    size = (56, 40) if orientation >= 5 else (40, 56)
    transform = image_transform("resize", featx.load_spec("resnet18"), size)
    (got, raw), expected = _device_batch([path], transform), _cpu_batch([path], transform)
    assert [jpeg.orientation for _, jpeg, _ in raw.jpegs] == [orientation]
    assert got.images is not None and expected.images is not None and got.fallbacks == {}
    assert torch.equal(got.images, expected.images)
    with Image.open(path) as image:
        upright = torch.from_numpy(np.array(ImageOps.exif_transpose(image).convert("RGB"))).permute(2, 0, 1)
    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        oriented_by_torchvision = decode_jpeg(data, ImageReadMode.RGB, apply_exif_orientation=True)
    assert torch.equal(upright, oriented_by_torchvision)
    normalise = transforms.Normalize((0.485, 0.456, 0.406), IMAGENET_STD)
    assert torch.equal(got.images[0], normalise(upright.float() / 255))


def test_worker_processes_hand_over_the_same_batches(mixed):
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    paths = list(mixed.values())
    loader = DataLoader(JpegFiles(paths, transform), batch_size=4, num_workers=2, collate_fn=collate_jpegs)
    decode = DeviceJpegDecoder(transform, CPU)
    batches = [decode(raw) for raw in loader]
    in_process, _ = _device_batch(paths, transform)
    assert [i for b in batches for i in b.indices] == in_process.indices
    assert [f for b in batches for f in b.failures] == in_process.failures
    assert {i: why for b in batches for i, why in b.fallbacks.items()} == in_process.fallbacks
    assert torch.equal(torch.cat([b.images for b in batches if b.images is not None]), in_process.images)


def test_one_bad_jpeg_leaves_the_rest_of_the_batch_on_the_device(mixed):
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    paths = [mixed["color"], mixed["truncated"], mixed["progressive"]]
    got, raw = _device_batch(paths, transform)
    assert len(raw.jpegs) == 3  # the truncated file's header parses: it reaches the device decoder
    assert got.indices == [0, 2] and got.fallbacks == {}
    assert [(index, reason) for index, reason, _ in got.failures] == [
        (1, "unreadable image (OSError: image file is truncated (45 bytes not processed))")  # Pillow's words
    ]


def test_a_file_the_device_decoder_refuses_is_decoded_by_pillow_with_the_reason(mixed):
    """Bytes the JPEG decoder cannot read (a PNG handed to it directly) go to Pillow, and the reason is kept."""
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    data = mixed["png"].read_bytes()
    raw = RawJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation=1)
    batch = JpegBatch(jpegs=[(0, raw, (1, 2))], decoded=[], failures=[])
    got = DeviceJpegDecoder(transform, CPU)(batch)
    expected = _cpu_batch([mixed["png"]], transform)
    assert got.indices == [0] and got.identities == [(1, 2)]
    assert got.images is not None and expected.images is not None
    assert torch.equal(got.images, expected.images)
    assert list(got.fallbacks) == [0]
    assert got.fallbacks[0].startswith("the cpu decoder failed (RuntimeError: ")


class _PillowOnly:
    def __call__(self, image):
        return transforms.ToTensor()(image)


class _NormalisesPillowImagesOnly:
    def __call__(self, image):
        normalise = transforms.Normalize((0.485, 0.456, 0.406), IMAGENET_STD)
        return image if isinstance(image, torch.Tensor) else normalise(transforms.ToTensor()(image))


def test_transforms_are_checked_before_a_gpu_run():
    spec = featx.load_spec("resnet18")
    for name in ("center_crop", "resize"):
        check_tensor_transform(image_transform(name, spec, (32, 32)), name)
    check_tensor_transform(featx.models.published_weights.enum_member("resnet18", "DEFAULT").transforms(), "weights")
    with pytest.raises(ArgumentError) as pillow_only:
        check_tensor_transform(_PillowOnly(), "weights")
    assert str(pillow_only.value).startswith(
        "extract.decode: gpu hands the transform tensors, and the weights transform takes only Pillow images "
        "(TypeError:"
    )
    assert str(pillow_only.value).endswith("use extract.decode=cpu, or extract.transform=center_crop or resize")
    with pytest.raises(ArgumentError, match="gives other inputs for a tensor than for the same Pillow image"):
        check_tensor_transform(_NormalisesPillowImagesOnly(), "weights")


def test_decode_gpu_needs_a_cuda_backbone_and_decode_is_checked(mixed, tmp_path):
    spec = featx.load_spec("resnet18", overrides=["device=cpu"])
    options = ExtractOptions(input=str(mixed["color"].parent), output=str(tmp_path / "out"), decode="gpu")
    with pytest.raises(ArgumentError) as error:
        extract(spec, options)
    assert str(error.value) == (
        "extract.decode: gpu decodes JPEGs on the backbone's CUDA device, and backbone.device is cpu; use "
        "extract.decode=cpu, or backbone.device=cuda"
    )
    options.decode = "nvjpeg"
    with pytest.raises(ArgumentError, match=r"^extract.decode: unknown 'nvjpeg'; choose one of cpu, gpu$"):
        extract(spec, options)
    assert not (tmp_path / "out").exists()


def test_decode_is_recorded_only_when_gpu(tmp_path):
    spec = featx.load_spec("resnet18", overrides=["device=cpu"])
    transform = image_transform("center_crop", spec, (224, 224))
    cpu = _settings(spec, ["c5"], ExtractOptions(input="i", output="o"), transform)
    gpu = _settings(spec, ["c5"], ExtractOptions(input="i", output="o", decode="gpu"), transform)
    assert "decode" not in cpu  # folders written before the key existed resume with decode=cpu
    assert gpu == {**cpu, "decode": "gpu"}


def test_fallbacks_are_listed_in_the_manifest_and_a_damaged_record_is_named(tmp_path):
    store = FeatureStore(tmp_path / "out")
    settings = {"backbone": {}, "outputs": ["c5"], "dtype": "float32"}
    store.prepare(settings, "", overwrite=False)
    features = {"c5": torch.arange(6.0).view(2, 3)}
    images = [("/a.png", (10, 1)), ("/b.jpg", (20, 2))]
    store.write_shard(0, 1, features, images, [], fallbacks={"/a.png": "not a JPEG (PNG)"})
    store.write_manifest({"/a.png": (10, 1), "/b.jpg": (20, 2)})
    entries = [json.loads(line) for line in (tmp_path / "out" / "featx-manifest.jsonl").read_text().splitlines()]
    assert [entry.get("decoded_on_cpu") for entry in entries] == ["not a JPEG (PNG)", None]
    assert [path for path, _ in read_features(tmp_path / "out")] == ["/a.png", "/b.jpg"]
    store.write_shard(0, 2, features, images, [], fallbacks={"/a.png": ""})
    with pytest.raises(featx.FeatxError, match="shard-r000-00002.safetensors is unreadable \\(its fallbacks are not"):
        store.stored_files()
