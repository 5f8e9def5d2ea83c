"""``extract.decode=gpu``: JPEGs decoded in batches on the backbone's device (nvJPEG through torchvision's
``decode_jpeg``), turned upright and transformed there; every other file decoded by Pillow, as ``decode=cpu`` does.

The DataLoader workers read each file (with the same identity checks as :class:`ImageFiles`) and parse its header
only: an RGB or grayscale JPEG goes to the device as its raw bytes with its EXIF orientation; any other file (PNG,
CMYK JPEG, ...) is decoded and transformed by Pillow in the worker, and the reason is kept (``fallbacks``, listed in
the manifest). In the main process :class:`DeviceJpegDecoder` decodes the batch's JPEGs in one call; if that call
fails, each JPEG is decoded alone and one that still fails is decoded by Pillow (reason kept) or skipped.

Example::

    loader = DataLoader(JpegFiles(paths, transform), batch_size=32, collate_fn=collate_jpegs, pin_memory=True)
    decode = DeviceJpegDecoder(transform, torch.device("cuda"))
    for raw in loader:
        batch = decode(raw)       # ImageBatch: images on the GPU, failures, fallbacks {index: reason}
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from featx.errors import ArgumentError, first_line
from featx.tasks.extract.decode import (
    ImageBatch,
    ImageFiles,
    decode_with_pillow,
    failure_reason,
    read_image_file,
)
from featx.tasks.extract.listing import Identity
from featx.tasks.extract.transforms import ImageTransform

#: Pillow's modes of the JPEGs the device decodes; the others (CMYK, YCCK) are decoded by Pillow
DEVICE_MODES = ("RGB", "L")
#: the EXIF tag holding the orientation
ORIENTATION_TAG = 0x0112


@dataclass
class RawJpeg:
    """A JPEG's bytes (1-D uint8) and its EXIF orientation (1..8; 1 = upright)."""

    data: Tensor
    orientation: int


#: (index, a raw JPEG or an image Pillow decoded or None, failure reason, identity, why Pillow decoded it)
DeviceItem = Tuple[int, Union[RawJpeg, Tensor, None], str, Optional[Identity], str]


def orient(image: Tensor, orientation: int) -> Tensor:
    """``image`` (…×H×W) turned upright by its EXIF ``orientation``, as Pillow's ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, dims=(-2, -1))
    return image


def _why_not_on_device(image: Image.Image) -> str:
    """Empty when the device decodes ``image`` (a JPEG Pillow opened), else why Pillow does."""
    if image.format != "JPEG":
        return f"not a JPEG ({image.format or 'unknown format'})"
    if image.mode not in DEVICE_MODES:
        return f"a {image.mode} JPEG"
    return ""


class JpegFiles(ImageFiles):
    """``paths[i]`` read; a JPEG kept as bytes for the device, any other image decoded and transformed here."""

    def __getitem__(self, index: int) -> DeviceItem:  # type: ignore[override]
        identity: Optional[Identity] = None
        try:
            data, identity = read_image_file(self.paths[index])
            with Image.open(io.BytesIO(data)) as image:  # the header only: no pixels are decoded here
                reason = _why_not_on_device(image)
                orientation = int(image.getexif().get(ORIENTATION_TAG, 1)) if not reason else 1
            if not reason:
                raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return index, RawJpeg(raw, orientation if 1 <= orientation <= 8 else 1), "", identity, ""
            return index, decode_with_pillow(data, self.transform), "", identity, reason
        except Exception as error:  # noqa: BLE001 - any reader or decoder failure is a skipped image
            return index, None, failure_reason(error), identity, ""


@dataclass
class JpegBatch:
    """A batch as the workers hand it over: raw JPEGs, images Pillow decoded (with the reason), failures."""

    jpegs: List[Tuple[int, RawJpeg, Identity]]
    decoded: List[Tuple[int, Tensor, Identity, str]]
    failures: List[Tuple[int, str, Optional[Identity]]]

    def pin_memory(self) -> "JpegBatch":
        """The bytes and images in page-locked memory (the DataLoader calls this with ``pin_memory=True``)."""
        return JpegBatch(
            jpegs=[(i, RawJpeg(raw.data.pin_memory(), raw.orientation), ident) for i, raw, ident in self.jpegs],
            decoded=[(i, image.pin_memory(), ident, why) for i, image, ident, why in self.decoded],
            failures=self.failures,
        )


def collate_jpegs(items: Sequence[DeviceItem]) -> JpegBatch:
    """``collate_fn`` for :class:`JpegFiles`."""
    batch = JpegBatch([], [], [])
    for index, payload, reason, identity, why in items:
        if isinstance(payload, RawJpeg) and identity is not None:
            batch.jpegs.append((index, payload, identity))
        elif isinstance(payload, Tensor) and identity is not None:
            batch.decoded.append((index, payload, identity, why))
        else:
            batch.failures.append((index, reason, identity))
    return batch


class DeviceJpegDecoder:
    """Turns a :class:`JpegBatch` into an :class:`ImageBatch` whose images are on ``device``."""

    def __init__(self, transform: ImageTransform, device: torch.device) -> None:
        self.transform, self.device = transform, device

    def _decode(self, data: List[Tensor]) -> List[Union[Tensor, Exception]]:
        """Each JPEG decoded to 3×H×W uint8 on the device: one call for all, else one call each."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
            try:
                return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
            except Exception:  # noqa: BLE001 - one bad file fails the whole call; find it below
                results: List[Union[Tensor, Exception]] = []
                for one in data:
                    try:
                        results.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
                    except Exception as error:  # noqa: BLE001 - that file goes to Pillow
                        results.append(error)
                return results

    def _input(self, image: Tensor, orientation: int) -> Tensor:
        return self.transform(orient(image, orientation).float().div_(255))

    def __call__(self, batch: JpegBatch) -> ImageBatch:
        images: Dict[int, Tuple[Tensor, Identity]] = {}
        fallbacks: Dict[int, str] = {}
        failures = list(batch.failures)
        decoded = self._decode([raw.data for _, raw, _ in batch.jpegs]) if batch.jpegs else []
        for (index, raw, identity), result in zip(batch.jpegs, decoded, strict=True):
            if isinstance(result, Tensor):
                images[index] = self._input(result, raw.orientation), identity
                continue
            try:
                image = decode_with_pillow(raw.data.numpy().tobytes(), self.transform)
            except Exception as error:  # noqa: BLE001 - neither decoder reads it: a skipped image
                failures.append((index, failure_reason(error), identity))
                continue
            images[index] = image.to(self.device, non_blocking=True), identity
            fallbacks[index] = f"the {self.device.type} decoder failed ({type(result).__name__}: {first_line(result)})"
        for index, image, identity, why in batch.decoded:
            images[index] = image.to(self.device, non_blocking=True), identity
            fallbacks[index] = why
        order = sorted(images)
        return ImageBatch(
            indices=order,
            images=torch.stack([images[index][0] for index in order]) if order else None,
            identities=[images[index][1] for index in order],
            failures=sorted(failures, key=lambda failure: failure[0]),
            fallbacks=fallbacks,
        )


#: a smooth test image (height × width) for :func:`check_tensor_transform`
_PROBE_SIZE = (61, 83)
#: how far (in normalised input units) the transform of the probe as a tensor may be from its Pillow transform:
#: a few 8-bit levels of a smooth image, far below what a missing scale (×255) or a skipped step gives
_PROBE_TOLERANCE = 0.1


def check_tensor_transform(transform: ImageTransform, name: str) -> None:
    """ArgumentError unless ``transform`` takes a 3×H×W float tensor in [0, 1] (what the device decoder hands it) and
    gives what it gives for the same image as an RGB Pillow image."""
    height, width = _PROBE_SIZE
    rows = torch.linspace(0, 1, height).view(1, height, 1)
    columns = torch.linspace(0, 1, width).view(1, 1, width)
    probe = torch.cat([rows * columns, rows.expand(1, height, width), columns.expand(1, height, width)])
    pixels = probe.mul(255).round().to(torch.uint8)
    as_pillow = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    try:
        expected, got = transform(as_pillow), transform(pixels.float().div(255))
        same = expected.shape == got.shape and float((expected - got).abs().max()) <= _PROBE_TOLERANCE
    except Exception as error:  # noqa: BLE001 - a Pillow-only step: named below
        raise ArgumentError(
            f"extract.decode: gpu hands the transform tensors, and the {name} transform takes only Pillow images "
            f"({type(error).__name__}: {first_line(error)}); use extract.decode=cpu, or extract.transform=center_crop "
            "or resize"
        ) from None
    if not same:
        raise ArgumentError(
            f"extract.decode: gpu hands the transform tensors, and the {name} transform gives other inputs for a "
            "tensor than for the same Pillow image; use extract.decode=cpu, or extract.transform=center_crop or resize"
        )
