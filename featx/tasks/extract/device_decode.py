"""``extract.decode=gpu``: JPEGs decoded in batches on the backbone's device (nvJPEG through torchvision's
``decode_jpeg``), turned upright and transformed there; every other file decoded by Pillow, as ``decode=cpu`` does.

The DataLoader workers read each file (with the same identity checks as :class:`ImageFiles`) and parse its header
only: a whole (end marker present) RGB or grayscale JPEG goes to the device as its raw bytes with its EXIF
orientation; any other file (PNG, CMYK JPEG, ...) is decoded and transformed by Pillow in the worker, and the reason
is kept (``fallbacks``, listed in the manifest). A batch crosses to the main process as two tensors (every JPEG's
bytes one after another, and the images Pillow decoded, stacked), so large batches need no more file descriptors
than ``decode=cpu``. There :class:`DeviceJpegDecoder` decodes the batch's JPEGs in one call; if that call fails,
each JPEG is decoded alone and one that still fails is decoded by Pillow (reason kept) or skipped. The transform
gets the decoded 8-bit image tensor, so it resizes with rounding and clamping as Pillow does; featx's transforms
and torchvision's weights presets resize and crop each image, then convert and normalise the batch in one call
(their ``tensor_steps``), other transforms run per image.

Example::

    check_device_decoder(device); check_tensor_transform(transform, "center_crop")
    loader = DataLoader(JpegFiles(paths, transform), batch_size=32, collate_fn=collate_jpegs, pin_memory=True)
    decode = DeviceJpegDecoder(transform, torch.device("cuda"))
    for raw in loader:
        batch = decode(raw)       # ImageBatch: images on the GPU, failures, fallbacks {index: reason}
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from featx.errors import ArgumentError, first_line
from featx.tasks.extract.decode import (
    ImageBatch,
    ImageFiles,
    check_proportions,
    decode_with_pillow,
    exif_orientation,
    failure,
    read_image_file,
)
from featx.tasks.extract.listing import Identity, decodable_formats
from featx.tasks.extract.transforms import ImageTransform, TensorSteps, resized_shorter_side

#: Pillow's formats and modes of the JPEGs the device decodes (MPO: a JPEG with more pictures after the first,
#: which both decoders read); the others (CMYK, YCCK) are decoded by Pillow
DEVICE_FORMATS = ("JPEG", "MPO")
DEVICE_MODES = ("RGB", "L")
#: the JPEG end-of-image marker, and what may follow it (padding)
END_OF_IMAGE = b"\xff\xd9"
_PADDING = b"\x00\r\n "


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


def _why_not_on_device(image: Image.Image, data: bytes) -> str:
    """Empty when the device decodes ``image`` (opened by Pillow from ``data``), else why Pillow does."""
    if image.format not in DEVICE_FORMATS:
        return f"not a JPEG ({image.format or 'unknown format'})"
    if image.mode not in DEVICE_MODES:
        return f"a {image.mode} JPEG"
    if not data.rstrip(_PADDING).endswith(END_OF_IMAGE):  # truncated: decoders disagree on what to make of it
        return "a JPEG without its end marker"
    return _colour_reason(image) if image.mode == "RGB" else ""


#: libjpeg's length of a JFIF APP0 segment's data; a shorter one (or one without the NUL) is not JFIF to it
_JFIF_LENGTH = 14
_RGB_REASON = "an RGB JPEG (no YCbCr transform)"


def _colour_reason(image: Image.Image) -> str:
    """Empty when libjpeg (hence Pillow, and decode=cpu) reads the 3-component JPEG ``image`` as YCbCr for one of
    the standard reasons, as nvJPEG takes every such file: a JFIF marker; else an Adobe marker asking for the YCbCr
    transform; else component ids 1, 2, 3 (libjpeg's order of tests). Otherwise why Pillow decodes it: RGB samples
    (Adobe transform 0, or ids 'R', 'G', 'B'), which nvJPEG turns into wrong colours without an error (measured on
    an H200), or an unusual marker or ids, on which the two decoders are not known to agree."""
    if any(
        marker == "APP0" and len(data) >= _JFIF_LENGTH and data.startswith(b"JFIF\0")
        for marker, data in getattr(image, "applist", [])
    ):
        return ""
    transform = image.info.get("adobe_transform")
    if transform is not None:
        if transform == 1:
            return ""
        return _RGB_REASON if transform == 0 else f"a JPEG with Adobe colour transform {transform}"
    ids = [layer[0] for layer in getattr(image, "layer", [])]
    if ids == [1, 2, 3]:
        return ""
    return _RGB_REASON if ids == [ord("R"), ord("G"), ord("B")] else f"a JPEG with colour component ids {ids}"


class JpegFiles(ImageFiles):
    """``paths[i]`` read; a JPEG kept as bytes for the device, any other image decoded and transformed here."""

    def __getitem__(self, index: int) -> DeviceItem:  # type: ignore[override]
        identity: Optional[Identity] = None
        try:
            data, identity = read_image_file(self.paths[index])
            with Image.open(io.BytesIO(data), formats=decodable_formats()) as image:  # the header only
                check_proportions(image.size, resized_shorter_side(self.transform))
                reason = _why_not_on_device(image, data)
                orientation = exif_orientation(image) if not reason else 1
            if not reason:
                raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return index, RawJpeg(raw, orientation), "", identity, ""
            return index, decode_with_pillow(data, self.transform), "", identity, reason
        except MemoryError:
            raise  # not the file's fault: the run stops and a rerun retries it (as ImageFiles does)
        except Exception as error:  # noqa: BLE001 - any reader or decoder failure is a skipped image
            return index, None, *failure(error, identity), ""


@dataclass
class JpegBatch:
    """A batch as the workers hand it over: the JPEGs' bytes one after another (``data``) with each one's
    (index, length, orientation, identity); the images Pillow decoded, stacked (``images``), with each row's
    (index, identity, why Pillow); and the failures."""

    data: Tensor
    jpegs: List[Tuple[int, int, int, Identity]]
    images: Optional[Tensor]
    decoded: List[Tuple[int, Identity, str]]
    failures: List[Tuple[int, str, Optional[Identity]]]

    def with_tensors(self, change: Callable[[Tensor], Tensor]) -> "JpegBatch":
        """The same batch with ``change`` applied to its two tensors."""
        images = None if self.images is None else change(self.images)
        return JpegBatch(change(self.data), self.jpegs, images, self.decoded, self.failures)

    def jpeg_files(self) -> List[Tensor]:
        """Each JPEG's bytes (a 1-D uint8 view into ``data``), in the order of ``jpegs``."""
        return list(torch.split(self.data, [length for _, length, _, _ in self.jpegs])) if self.jpegs else []

    def pin_memory(self) -> "JpegBatch":
        """The bytes and images in page-locked memory (the DataLoader calls this with ``pin_memory=True``)."""
        return self.with_tensors(Tensor.pin_memory)


def collate_jpegs(items: Sequence[DeviceItem]) -> JpegBatch:
    """``collate_fn`` for :class:`JpegFiles`."""
    raw: List[Tensor] = []
    jpegs: List[Tuple[int, int, int, Identity]] = []
    images: List[Tensor] = []
    decoded: List[Tuple[int, Identity, str]] = []
    failures: List[Tuple[int, str, Optional[Identity]]] = []
    for index, payload, reason, identity, why in items:
        if isinstance(payload, RawJpeg) and identity is not None:
            raw.append(payload.data)
            jpegs.append((index, len(payload.data), payload.orientation, identity))
        elif isinstance(payload, Tensor) and identity is not None:
            images.append(payload)
            decoded.append((index, identity, why))
        else:
            failures.append((index, reason, identity))
    data = torch.cat(raw) if raw else torch.empty(0, dtype=torch.uint8)
    return JpegBatch(data, jpegs, torch.stack(images) if images else None, decoded, failures)


def decoded_on(device: torch.device, data: List[Tensor]) -> List[Tensor]:
    """The JPEGs ``data`` (1-D uint8 CPU tensors) decoded to 3×H×W RGB uint8 on ``device`` in one call (nvJPEG on
    CUDA); raises what torchvision raises, e.g. for one bad file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


class DeviceJpegDecoder:
    """Turns a :class:`JpegBatch` into an :class:`ImageBatch` whose images are on ``device``."""

    def __init__(self, transform: ImageTransform, device: torch.device) -> None:
        self.transform, self.device = transform, device

    def _decode(self, data: List[Tensor]) -> Sequence[Union[Tensor, Exception]]:
        """Each JPEG decoded to 3×H×W uint8 on the device: one call for all, else one call each."""
        try:
            return decoded_on(self.device, data)
        except Exception:  # noqa: BLE001 - one bad file fails the whole call; find it below
            results: List[Union[Tensor, Exception]] = []
            for one in data:
                try:
                    results.extend(decoded_on(self.device, [one]))
                except Exception as error:  # noqa: BLE001 - that file goes to Pillow
                    results.append(error)
            return results

    def __call__(self, batch: JpegBatch) -> ImageBatch:
        images: Dict[int, Tuple[Tensor, Identity]] = {}
        fallbacks: Dict[int, str] = {}
        failures = list(batch.failures)
        files = batch.jpeg_files()
        decoded = self._decode(files) if files else []
        steps = getattr(self.transform, "tensor_steps", None)
        shaped: Dict[int, Tuple[Tensor, Identity]] = {}  # resized and cropped, still 8-bit: normalised together below
        for (index, _, orientation, identity), data, result in zip(batch.jpegs, files, decoded, strict=True):
            if isinstance(result, Tensor) and isinstance(steps, TensorSteps):
                shaped[index] = steps.per_image(orient(result, orientation)), identity
                continue
            if isinstance(result, Tensor):
                images[index] = self.transform(orient(result, orientation)), identity
                continue
            try:
                image = decode_with_pillow(data.numpy().tobytes(), self.transform)
            except Exception as error:  # noqa: BLE001 - neither decoder reads it: a skipped image
                failures.append((index, *failure(error, identity)))
                continue
            images[index] = image.to(self.device, non_blocking=True), identity
            fallbacks[index] = f"the {self.device.type} decoder failed ({type(result).__name__}: {first_line(result)})"
        if shaped and isinstance(steps, TensorSteps):
            normalised = steps.per_batch(torch.stack([image for image, _ in shaped.values()]))
            for row, (index, (_, identity)) in enumerate(shaped.items()):
                images[index] = normalised[row], identity
        if batch.images is not None:
            on_device = batch.images.to(self.device, non_blocking=True)
            for row, (index, identity, why) in enumerate(batch.decoded):
                images[index] = on_device[row], identity
                fallbacks[index] = why
        order = sorted(images)
        return ImageBatch(
            indices=order,
            images=torch.stack([images[index][0] for index in order]) if order else None,
            identities=[images[index][1] for index in order],
            failures=sorted(failures, key=lambda failure: failure[0]),
            fallbacks=fallbacks,
        )


def _is_on(tensor: Tensor, device: torch.device) -> bool:
    """Whether ``tensor`` lies on ``device``; ``cuda`` without an index means the current one (``cuda:0`` here)."""
    return tensor.device.type == device.type and device.index in (None, tensor.device.index)


def check_device_decoder(device: torch.device) -> None:
    """ArgumentError unless torchvision decodes a small JPEG onto ``device`` (a torchvision built without nvJPEG, or
    a device it cannot decode on, is named before the run rather than found in every batch)."""
    encoded = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 40, 90)).save(encoded, "JPEG")
    try:
        [decoded] = decoded_on(device, [torch.frombuffer(bytearray(encoded.getvalue()), dtype=torch.uint8)])
        problem = "" if _is_on(decoded, device) else f"it decodes onto {decoded.device}"
    except Exception as error:  # noqa: BLE001 - named below
        problem = f"{type(error).__name__}: {first_line(error)}"
    if problem:
        raise ArgumentError(
            f"extract.decode: gpu needs torchvision's JPEG decoder on {device}, and a test JPEG failed there "
            f"({problem}); use extract.decode=cpu"
        )


#: the probe of :func:`check_tensor_transform` (height, width): checkerboards of pure 0 and 255 with a noisy band
_PROBE_SIZE = (97, 131)
#: how far the probe's inputs through the tensor path may be from its inputs through Pillow, in 8-bit levels:
#: most values within ``_CLOSE`` (Pillow and torchvision both round to 8 bits after resampling), the rest (sharp
#: edges under bicubic, whose kernels differ) within ``_FAR``; a missing scale or step is far past both
_CLOSE, _MOST, _FAR = 1.5, 0.95, 32.0


def _probe() -> Tensor:
    """3×H×W uint8: per channel a checkerboard of another cell size, and a band of seeded noise."""
    height, width = _PROBE_SIZE
    rows = torch.arange(height).view(height, 1)
    columns = torch.arange(width).view(1, width)
    boards = [((rows // (12 + 4 * c) + columns // (12 + 4 * c)) % 2) * 255 for c in range(3)]
    noise = torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(0))
    band = (rows > height // 3) & (rows < 2 * height // 3)
    return torch.where(band, noise, torch.stack(boards)).to(torch.uint8)


def check_tensor_transform(transform: ImageTransform, name: str) -> None:
    """ArgumentError unless ``transform`` takes a 3×H×W uint8 tensor (what the device decoder hands it) and gives
    about what it gives for the same image as an RGB Pillow image (see ``_CLOSE``, ``_MOST``, ``_FAR``)."""
    pixels = _probe()
    as_pillow = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    problem = f"extract.decode: gpu hands the transform the decoded 8-bit image tensor, and the {name} transform"
    way_out = "use extract.decode=cpu, or extract.transform=center_crop or resize"
    try:
        expected, got = transform(as_pillow), transform(pixels)
    except Exception as error:  # noqa: BLE001 - named below
        why = f"{type(error).__name__}: {first_line(error)}"
        raise ArgumentError(f"{problem} cannot take it ({why}); {way_out}") from None
    if not (isinstance(expected, Tensor) and isinstance(got, Tensor) and expected.shape == got.shape):
        shapes = [tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__ for out in (got, expected)]
        raise ArgumentError(f"{problem} gives {shapes[0]} for it and {shapes[1]} for the same Pillow image; {way_out}")
    # one level per channel: the inputs of 0 and 255, both in the probe after any crop, are 255 levels apart
    spans = expected.amax(dim=(-2, -1), keepdim=True) - expected.amin(dim=(-2, -1), keepdim=True)
    levels = (expected - got).abs() / (spans / 255).clamp_min(1e-12)
    close = float((levels <= _CLOSE).float().mean())
    if close < _MOST or float(levels.max()) > _FAR:
        raise ArgumentError(
            f"{problem} gives other inputs for it than for the same Pillow image ({close:.0%} of values within "
            f"{_CLOSE} levels, at most {float(levels.max()):.1f} levels off); {way_out}"
        )
