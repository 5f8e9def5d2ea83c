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
from torchvision.models import ResNet18_Weights
from tqdm import tqdm

import featx
from featx.errors import ArgumentError
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.decode import ImageBatch, ImageFiles, collate_images
from featx.tasks.extract.device_decode import (
    DeviceJpegDecoder,
    JpegBatch,
    JpegFiles,
    check_device_decoder,
    check_tensor_transform,
    collate_jpegs,
)
from featx.tasks.extract.listing import find_images
from featx.tasks.extract.run import _batches, _run_batches, _settings, _ShardBuffer, extract
from featx.tasks.extract.store import FeatureStore, read_features
from featx.tasks.extract.transforms import IMAGENET_MEAN, IMAGENET_STD, image_transform

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
    huffman = bytearray(_jpeg(tmp_path / "bad_huffman.jpg", _photo(seed=10)).read_bytes())
    huffman[huffman.find(b"\xff\xc4") + 5] ^= 0xFF  # a bogus Huffman table: the header parses, decoding fails
    files["bad_huffman"] = tmp_path / "bad_huffman.jpg"
    files["bad_huffman"].write_bytes(bytes(huffman))
    first, second = Image.fromarray(_photo(seed=11)), Image.fromarray(_photo(seed=12))
    first.save(tmp_path / "camera.mpo", "MPO", save_all=True, append_images=[second], quality=90)
    files["mpo"] = tmp_path / "camera.mpo"
    return files


def test_the_device_path_gives_the_cpu_paths_inputs_within_one_level_and_names_its_fallbacks(mixed):
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    paths = list(mixed.values())
    expected, (got, raw) = _cpu_batch(paths, transform), _device_batch(paths, transform)

    on_device = {paths[index].name for index, _, _, _ in raw.jpegs}
    assert on_device == {
        *("color.jpg", "full_chroma.jpg", "progressive.jpg", "rotated.jpeg", "gray.jpg", "bad_huffman.jpg"),
        "camera.mpo",  # a JPEG with a second picture after the first: both decoders read the first
    }
    assert got.indices == expected.indices
    assert got.identities == expected.identities
    assert got.failures == expected.failures  # the same files skipped, for the same reasons
    assert {paths[i].name for i, _, _ in got.failures} == {"truncated.jpg", "notes.jpg", "bad_huffman.jpg"}
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
    assert [jpeg_orientation for _, _, jpeg_orientation, _ in raw.jpegs] == [orientation]
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


@pytest.mark.parametrize("name", ["center_crop", "resize", "weights"])
def test_a_batch_is_shaped_per_image_and_normalised_once_as_torchvision_does_each_image(mixed, name):
    """The decoder resizes and crops each image, then normalises the batch in one go: each row equals torchvision's
    own transform of that image (a Compose written here, or the weights' preset), decoded upright by torchvision."""
    spec = featx.load_spec("resnet18", overrides=["weights=IMAGENET1K_V1"] if name == "weights" else [])
    geometry = {
        "center_crop": [transforms.Resize(36, antialias=True), transforms.CenterCrop(32)],  # 36 = int(32 / 0.875)
        "resize": [transforms.Resize((32, 32), antialias=True)],
    }
    reference = (
        ResNet18_Weights.IMAGENET1K_V1.transforms()
        if name == "weights"
        else transforms.Compose(
            [
                *geometry[name],
                transforms.ConvertImageDtype(torch.float32),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
    )
    paths = [mixed[key] for key in ("color", "full_chroma", "progressive", "rotated", "gray", "mpo")]
    got, raw = _device_batch(paths, image_transform(name, spec, (32, 32)))
    assert got.fallbacks == {} and got.images is not None and len(raw.jpegs) == len(paths)
    for row, path in enumerate(paths):
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
            upright = decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        assert torch.equal(got.images[row], reference(upright)), path.name


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
    paths = [mixed["color"], mixed["bad_huffman"], mixed["progressive"]]
    got, raw = _device_batch(paths, transform)
    assert len(raw.jpegs) == 3  # its header parses: it reaches the device decoder, and fails the batch's call
    assert got.indices == [0, 2] and got.fallbacks == {}
    expected = [(1, "unreadable image (OSError: broken data stream when reading image file)")]  # Pillow's words
    assert [(index, reason) for index, reason, _ in got.failures] == expected
    assert [(index, reason) for index, reason, _ in _cpu_batch(paths, transform).failures] == expected


def test_a_thread_thin_jpeg_is_skipped_before_the_device_as_on_the_cpu(mixed):
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    thin = mixed["color"].parent / "thin.jpg"
    Image.new("RGB", (4000, 1), (120, 30, 60)).save(thin)
    got, raw = _device_batch([thin], transform)
    assert raw.jpegs == [] and got.indices == []
    reasons = [reason for _, reason, _ in got.failures]
    assert reasons == [reason for _, reason, _ in _cpu_batch([thin], transform).failures]
    assert reasons == [
        "4000x1 pixels is more than 32 to 1 (resizing its shorter side would make a huge image); crop it first"
    ]


def test_a_truncated_jpeg_is_left_to_pillow(mixed):
    """Without its end marker a JPEG is read by Pillow (which skips it, as decode=cpu does), never by the device
    decoder, which may make an image of what is there."""
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    got, raw = _device_batch([mixed["truncated"]], transform)
    assert raw.jpegs == [] and got.indices == []
    skipped_by_cpu_path = _cpu_batch([mixed["truncated"]], transform).failures
    assert [reason for _, reason, _ in got.failures] == [reason for _, reason, _ in skipped_by_cpu_path]
    padded = mixed["color"].parent / "padded.jpg"
    padded.write_bytes(mixed["color"].read_bytes() + b"\x00" * 16)  # padding after the end marker is fine
    assert len(_device_batch([padded], transform)[1].jpegs) == 1


def _without_jfif(data: bytes) -> bytes:
    """``data`` (a JPEG whose first segment is JFIF's APP0) without that segment, as many cameras write them."""
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"
    return data[:2] + data[4 + int.from_bytes(data[4:6], "big") :]


def _with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """``data`` (a JPEG) with an APPn segment ``marker`` holding ``payload`` right after its start marker."""
    return data[:2] + bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def _with_component_ids(data: bytes, ids: Tuple[int, int, int]) -> bytes:
    """``data`` (a baseline 3-component JPEG) with its components renamed ``ids`` in the frame and scan headers."""
    out, at = bytearray(data), 2
    while True:
        marker, length = out[at + 1], int.from_bytes(out[at + 2 : at + 4], "big")
        if marker == 0xC0:  # frame: precision, height, width, count, then (id, sampling, table) per component
            for index, new in enumerate(ids):
                out[at + 10 + 3 * index] = new
        if marker == 0xDA:  # scan: count, then (id, tables) per component; the coded data follows
            for index, new in enumerate(ids):
                out[at + 5 + 2 * index] = new
            return bytes(out)
        at += 2 + length


_ADOBE = b"Adobe\x00\x64\x00\x00\x00\x00"  # APP14: version 100, no flags; the transform byte is appended
_RGB = "an RGB JPEG (no YCbCr transform)"
_COLOUR_CASES = {  # name: (the file's bytes from a JFIF file and an RGB one, the reason Pillow decodes it or "")
    "jfif": (lambda jfif, rgb: jfif, ""),
    "camera, ids 1 2 3": (lambda jfif, rgb: _without_jfif(jfif), ""),
    "Adobe 1": (lambda jfif, rgb: _with_segment(_without_jfif(jfif), 0xEE, _ADOBE + b"\x01"), ""),
    "JFIF and Adobe 0": (lambda jfif, rgb: _with_segment(jfif, 0xEE, _ADOBE + b"\x00"), ""),  # JFIF decides
    "Adobe 0 (keep_rgb)": (lambda jfif, rgb: rgb, _RGB),
    "short JFIF, Adobe 0": (lambda jfif, rgb: _with_segment(rgb, 0xE0, b"JFIF\x00\x01\x02"), _RGB),
    "JFIF without NUL, Adobe 0": (lambda jfif, rgb: _with_segment(rgb, 0xE0, b"JFIFX" + bytes(9)), _RGB),
    "ids R G B": (lambda jfif, rgb: _with_component_ids(_without_jfif(jfif), (82, 71, 66)), _RGB),
    "Adobe 2": (
        lambda jfif, rgb: _with_segment(_without_jfif(jfif), 0xEE, _ADOBE + b"\x02"),
        "a JPEG with Adobe colour transform 2",
    ),
    "ids 0 1 2": (
        lambda jfif, rgb: _with_component_ids(_without_jfif(jfif), (0, 1, 2)),
        "a JPEG with colour component ids [0, 1, 2]",
    ),
}


@pytest.mark.parametrize("case", list(_COLOUR_CASES))
def test_a_jpeg_goes_to_the_device_only_where_libjpeg_reads_it_as_ycbcr(tmp_path, case):
    """nvJPEG takes every 3-component JPEG for YCbCr (an RGB one came out in wrong colours on an H200), so the
    device gets a file only where libjpeg, and so decode=cpu, reads YCbCr for a standard reason, with libjpeg's
    order of tests (JFIF, whole segments only; then the Adobe transform; then the component ids). Pillow decodes
    the others, with the reason, into decode=cpu's own pixels."""
    build, reason = _COLOUR_CASES[case]
    jfif = _jpeg(tmp_path / "jfif.jpg", _photo(seed=1)).read_bytes()
    rgb = _jpeg(tmp_path / "rgb.jpg", _photo(seed=1), keep_rgb=True).read_bytes()
    path = tmp_path / "case.jpg"
    path.write_bytes(build(jfif, rgb))
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    got, raw = _device_batch([path], transform)
    expected = _cpu_batch([path], transform)
    assert got.images is not None and expected.images is not None, "both decoders read it"
    assert (got.fallbacks, len(raw.jpegs)) == (({0: reason}, 0) if reason else ({}, 1))
    if reason:
        assert torch.equal(got.images, expected.images)  # Pillow's pixels, as decode=cpu's
    assert ((got.images - expected.images).abs() <= ONE_LEVEL).all()


def test_a_file_the_device_decoder_refuses_is_decoded_by_pillow_with_the_reason(mixed):
    """Bytes the JPEG decoder cannot read (a PNG handed to it directly) go to Pillow, and the reason is kept."""
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    data = mixed["png"].read_bytes()
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    batch = JpegBatch(data=raw, jpegs=[(0, len(raw), 1, (1, 2))], images=None, decoded=[], failures=[])
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


class _CropsTensorsOtherwise:
    def __call__(self, image):
        as_tensor = image if isinstance(image, torch.Tensor) else transforms.PILToTensor()(image)
        return as_tensor.float()[:, :32, :32] if isinstance(image, torch.Tensor) else as_tensor.float()[:, :32, :16]


class _NormalisesPillowImagesOnly:
    def __call__(self, image):
        normalise = transforms.Normalize((0.485, 0.456, 0.406), IMAGENET_STD)
        return image if isinstance(image, torch.Tensor) else normalise(transforms.ToTensor()(image))


def test_transforms_are_checked_before_a_gpu_run():
    spec = featx.load_spec("resnet18")
    for name in ("center_crop", "resize"):
        check_tensor_transform(image_transform(name, spec, (32, 32)), name)
    check_tensor_transform(featx.models.published_weights.enum_member("resnet18", "DEFAULT").transforms(), "weights")
    for model in ("efficientnet_b0", "swin_t"):  # bicubic: torchvision's kernel differs from Pillow's at sharp edges
        check_tensor_transform(featx.models.published_weights.enum_member(model, "DEFAULT").transforms(), "weights")
    with pytest.raises(ArgumentError) as pillow_only:
        check_tensor_transform(_PillowOnly(), "weights")
    assert str(pillow_only.value).startswith(
        "extract.decode: gpu hands the transform the decoded 8-bit image tensor, and the weights transform cannot "
        "take it (TypeError:"
    )
    assert str(pillow_only.value).endswith("use extract.decode=cpu, or extract.transform=center_crop or resize")
    with pytest.raises(ArgumentError) as other_shape:
        check_tensor_transform(_CropsTensorsOtherwise(), "weights")
    assert str(other_shape.value) == (
        "extract.decode: gpu hands the transform the decoded 8-bit image tensor, and the weights transform gives "
        "(3, 32, 32) for it and (3, 32, 16) for the same Pillow image; use extract.decode=cpu, or "
        "extract.transform=center_crop or resize"
    )
    with pytest.raises(ArgumentError, match=r"gives other inputs for it than for the same Pillow image \(\d+% of"):
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
    with pytest.raises(ArgumentError, match=r"^extract.decode: unknown 'nvjpeg' \(valid: cpu, gpu\)$"):
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
    images = [("/a.png", (10, 1, 1)), ("/b.jpg", (20, 2, 2))]
    store.write_shard(0, 1, features, images, [], fallbacks={"/a.png": "not a JPEG (PNG)"})
    store.write_manifest({"/a.png": (10, 1, 1), "/b.jpg": (20, 2, 2)})
    entries = [json.loads(line) for line in (tmp_path / "out" / "featx-manifest.jsonl").read_text().splitlines()]
    assert [entry.get("decoded_on_cpu") for entry in entries] == ["not a JPEG (PNG)", None]
    assert [path for path, _ in read_features(tmp_path / "out")] == ["/a.png", "/b.jpg"]
    store.write_shard(0, 2, features, images, [], fallbacks={"/a.png": ""})
    with pytest.raises(featx.FeatxError, match="shard-r000-00002.safetensors is unreadable \\(its fallbacks are not"):
        store.stored_files()


def test_a_bicubic_weights_transform_on_photos_stays_within_one_level(mixed):
    """EfficientNet's weights resize bicubically: on photos (not the sharp-edged probe) still one level at most."""
    transform = featx.models.published_weights.enum_member("efficientnet_b0", "DEFAULT").transforms()
    paths = [mixed[name] for name in ("color", "full_chroma", "progressive", "rotated", "gray", "mpo")]
    expected, (got, _) = _cpu_batch(paths, transform), _device_batch(paths, transform)
    assert got.images is not None and expected.images is not None and got.fallbacks == {}
    assert ((got.images - expected.images).abs() <= ONE_LEVEL).all()


def test_an_orientation_pillow_does_not_look_up_is_ignored_as_pillow_ignores_it(tmp_path):
    """An orientation written as the text "6" leaves the image as it is, in both paths (no rotation, no skip)."""
    image = Image.fromarray(_photo(40, 56, seed=3))
    entry = (0x0112).to_bytes(2, "little") + (2).to_bytes(2, "little") + (2).to_bytes(4, "little") + b"6\0\0\0"
    tiff = b"II*\0" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") + entry + bytes(4)  # one ASCII entry
    path = tmp_path / "text_orientation.jpg"
    image.save(path, quality=90, exif=b"Exif\0\0" + tiff)
    with Image.open(path) as opened:
        assert opened.getexif()[0x0112] == "6"
    transform = image_transform("resize", featx.load_spec("resnet18"), (40, 56))
    (got, raw), expected = _device_batch([path], transform), _cpu_batch([path], transform)
    assert [orientation for _, _, orientation, _ in raw.jpegs] == [1]
    assert got.images is not None and expected.images is not None
    assert torch.equal(got.images, expected.images)


def test_the_device_decoder_is_checked_before_a_run():
    check_device_decoder(CPU)
    with pytest.raises(ArgumentError) as error:
        check_device_decoder(torch.device("meta"))  # torchvision decodes onto the CPU for any device but CUDA
    assert str(error.value) == (
        "extract.decode: gpu needs torchvision's JPEG decoder on meta, and a test JPEG failed there (it decodes onto "
        "cpu); use extract.decode=cpu"
    )


def test_a_batch_crosses_from_the_workers_as_two_tensors(mixed):
    """One tensor of bytes and one of images, whatever the batch size (each tensor a worker hands over holds a file
    descriptor until it arrives); pinning (``with_tensors(Tensor.pin_memory)``) changes only those two."""
    transform = image_transform("center_crop", featx.load_spec("resnet18"), (32, 32))
    raw = collate_jpegs([JpegFiles(list(mixed.values()), transform)[i] for i in range(len(mixed))])
    assert raw.data.dim() == 1 and raw.images is not None and raw.images.dim() == 4
    assert len(raw.data) == sum(length for _, length, _, _ in raw.jpegs)
    assert [index for index, _, _ in raw.decoded] == [i for i, _ in enumerate(mixed.values()) if i in {4, 5, 9}]
    copied = raw.with_tensors(torch.clone)
    assert copied.data.data_ptr() != raw.data.data_ptr() and torch.equal(copied.data, raw.data)
    assert copied.images is not None and torch.equal(copied.images, raw.images)
    assert (copied.jpegs, copied.decoded, copied.failures) == (raw.jpegs, raw.decoded, raw.failures)
    a, b = DeviceJpegDecoder(transform, CPU)(copied), DeviceJpegDecoder(transform, CPU)(raw)
    assert (a.indices, a.failures, a.fallbacks) == (b.indices, b.failures, b.fallbacks)
    assert a.images is not None and b.images is not None and torch.equal(a.images, b.images)


def test_the_extraction_loop_with_decode_gpu_stores_and_lists_what_it_decoded(mixed, tmp_path):
    """run.py's wiring of decode=gpu (the device decoder on the CPU here), shards smaller than batches: the stored
    features are decode=cpu's within one input level, and each Pillow-decoded file is listed with its reason."""
    spec = featx.load_spec("resnet18", overrides=["device=cpu"])
    backbone = featx.build(spec).eval()
    folder = mixed["color"].parent
    common = dict(input=str(folder), size=[32, 32], batch_size=4, shard_size=3, workers=0, progress=False)
    extract(spec, ExtractOptions(output=str(tmp_path / "cpu"), **common))
    options = ExtractOptions(output=str(tmp_path / "gpu"), decode="gpu", **common)
    transform = image_transform("center_crop", spec, (32, 32))
    listing = find_images(str(folder))  # what featx-extract lists
    paths = listing.images
    store = FeatureStore(tmp_path / "gpu")
    store.prepare(_settings(spec, ["c5"], options, transform), "", overwrite=False)
    buffer = _ShardBuffer(store, rank=0, shard_size=3)
    with tqdm(disable=True) as progress:
        _run_batches(backbone, _batches(paths, transform, options, CPU), paths, ["c5"], options, buffer, progress)
    buffer.flush()
    buffer.skipped += [(str(path), reason, listing.identities.get(str(path))) for path, reason in listing.skipped]
    buffer.flush()
    store.write_manifest({path: identity for path, identity in listing.identities.items()})
    got, expected = dict(read_features(tmp_path / "gpu")), dict(read_features(tmp_path / "cpu"))
    assert sorted(got) == sorted(expected)
    for path in got:
        assert torch.allclose(got[path]["c5"], expected[path]["c5"], rtol=0, atol=0.05), path
    manifest = [json.loads(line) for line in (tmp_path / "gpu" / "featx-manifest.jsonl").read_text().splitlines()]
    assert {Path(e["path"]).name: e["decoded_on_cpu"] for e in manifest if "decoded_on_cpu" in e} == {
        "plain.png": "not a JPEG (PNG)",
        "alpha.png": "not a JPEG (PNG)",
        "cmyk.jpg": "a CMYK JPEG",
    }
    assert len(store.shards()) > 2  # the listed files were spread over several shards
