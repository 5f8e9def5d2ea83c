"""A dataset of image files that never raises on a bad file: each item is ``(index, tensor or None, reason,
identity)``.

A file is read whole (up to :data:`MAX_IMAGE_BYTES`), its identity (size, modification time, inode) taken before and
checked after, so a file that changes while it is read is skipped rather than stored under a stale identity.
Images are decoded with Pillow, turned upright by their EXIF orientation (as photo viewers show them) and made RGB:
grayscale and palette images are expanded to three channels, an alpha channel is dropped (not composited).
16-bit grayscale images keep their 16 bits (scaled to [0, 1] as floats, not clipped to 8 bits); images whose
values have no fixed range (32-bit integer or floating-point pixels) are skipped with the reason. A file that cannot
be read or decoded yields ``None`` and the reason. Pillow's own checks hold whatever the process set: a truncated
image is refused even with ``ImageFile.LOAD_TRUNCATED_IMAGES = True``, and the bomb limit is Pillow's default even
with ``Image.MAX_IMAGE_PIXELS = None`` (see :func:`pillow_checks`).

Example::

    dataset = ImageFiles(paths, transform)
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_images)
    for batch in loader:
        batch.indices, batch.images.shape, batch.failures     # [0, 1, ...], (n, 3, H, W), [(7, 'OSError: ...')]
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageFile
from torch import Tensor
from torch.utils.data import Dataset

from featx.errors import first_line
from featx.tasks.extract.listing import NOT_REGULAR, Identity, decodable_formats, file_identity
from featx.tasks.extract.transforms import ImageTransform, resized_shorter_side

#: the largest image file read (a larger one is skipped with the reason)
MAX_IMAGE_BYTES = 1 << 30
#: the most the longer side of an image may exceed its shorter (a panorama is a few to 1)
MAX_ASPECT = 32
#: the most pixels an image may have once its shorter side is resized for the crop (2^26: 192 MiB as 8-bit RGB)
MAX_RESIZED_PIXELS = 1 << 26
#: Pillow's default ``Image.MAX_IMAGE_PIXELS``: it warns past this, and refuses an image of twice as many pixels as
#: a decompression bomb; featx decodes with it whatever the process set
PILLOW_PIXEL_LIMIT = int(1024 * 1024 * 1024 // 4 // 3)
#: held while Pillow's process-wide settings are featx's (see :func:`pillow_checks`)
_PILLOW_SETTINGS = threading.Lock()
#: " <_io.BytesIO object at 0x7f...>" in a decoder's message: a memory address, different in every run
_OBJECT_ADDRESS = re.compile(r" ?<[^<>]* at 0x[0-9a-fA-F]+>")
#: Pillow modes of 16-bit single-channel images
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
#: Pillow modes whose pixel values have no fixed range, so no faithful 8-bit or [0, 1] form
_NO_FIXED_RANGE = {"I": "32-bit integer", "F": "floating-point", "I;32": "32-bit integer"}
#: the EXIF tag holding the orientation, and its values as Pillow's ``exif_transpose`` looks them up (a value it
#: does not find, e.g. the text "6", leaves the image as it is)
ORIENTATION_TAG = 0x0112
ORIENTATIONS = {value: value for value in range(1, 9)}
#: how Pillow's ``exif_transpose`` turns an image of each EXIF orientation upright
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Item = Tuple[int, Optional[Tensor], str, Optional[Identity]]


class SkippedImage(Exception):
    """Why a file is skipped (raised and caught inside :class:`ImageFiles`), with the identity it was read at where
    the reason holds as long as the file is unchanged (too large, not a regular file): recorded so, a rerun leaves
    it skipped rather than read it again."""

    def __init__(self, reason: str, identity: Optional[Identity] = None) -> None:
        super().__init__(reason)
        self.identity = identity


def read_image_file(path: Path) -> Tuple[bytes, Identity]:
    """The bytes of ``path`` and its identity; SkippedImage when it is gone, too large, not a regular file, or changed
    while read."""
    before = file_identity(path)
    if before is None:
        raise SkippedImage("cannot be read (it is gone or not accessible)")
    if before[0] > MAX_IMAGE_BYTES:
        raise SkippedImage(f"{before[0]} bytes is larger than the {MAX_IMAGE_BYTES} an image file may have", before)
    try:  # without blocking: a pipe put in a file's place after the listing must not stall the run
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise SkippedImage(f"cannot be read ({type(error).__name__}: {first_line(error)})") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise SkippedImage(NOT_REGULAR, before)
        data = handle.read(before[0] + 1)  # one byte more: a file that grew is seen (never MAX_IMAGE_BYTES at once)
    if file_identity(path) != before or len(data) != before[0]:
        raise SkippedImage("it changed while being read; a rerun extracts it")
    return data, before


@contextmanager
def pillow_checks() -> Iterator[None]:
    """Run the block with Pillow's own checks on, whatever the process set (a training script's
    ``ImageFile.LOAD_TRUNCATED_IMAGES = True``, ``Image.MAX_IMAGE_PIXELS = None``, which DataLoader workers inherit):
    truncated images refused, the bomb limit :data:`PILLOW_PIXEL_LIMIT`; the caller's values are restored after.
    The settings are process-wide: another thread decoding with Pillow meanwhile gets these checks too."""
    with _PILLOW_SETTINGS:
        truncated, pixels = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, PILLOW_PIXEL_LIMIT
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = truncated, pixels


def check_proportions(size: Tuple[int, int], shorter_side: Optional[int] = None) -> None:
    """SkippedImage for an image (``size``: width, height) whose longer side is more than :data:`MAX_ASPECT` times
    its shorter, or that resizing its shorter side to ``shorter_side`` (the transform's, before its crop) would make
    larger than :data:`MAX_RESIZED_PIXELS`: a huge image from a tiny file (1×20000 pixels at 224: 256×5,120,000; a
    32×1 strip for a 4096-wide crop: 4681×149,792). Pillow's DecompressionBombError, in its words, for one of more
    than twice :data:`PILLOW_PIXEL_LIMIT` pixels, as ``Image.open`` refuses it with Pillow's default setting (a
    JPEG handed to the device decoder is opened for its header alone, whatever the process set)."""
    width, height = size
    pixels = max(1, width) * max(1, height)
    if pixels > 2 * PILLOW_PIXEL_LIMIT:
        raise Image.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {2 * PILLOW_PIXEL_LIMIT} pixels, could be decompression "
            "bomb DOS attack."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise SkippedImage(
            f"{width}x{height} pixels is more than {MAX_ASPECT} to 1 (resizing its shorter side would make a huge "
            "image); crop it first"
        )
    if shorter_side is not None:
        longer = max(width, height) * shorter_side // min(width, height)
        if shorter_side * longer > MAX_RESIZED_PIXELS:
            resized = f"{longer}x{shorter_side}" if width > height else f"{shorter_side}x{longer}"  # width x height
            raise SkippedImage(
                f"{width}x{height} pixels would be resized to {resized} for the crop, more than the "
                f"{MAX_RESIZED_PIXELS} pixels an image may take; crop it first, or choose a smaller extract.size"
            )


def decoded(image: Image.Image, shorter_side: Optional[int] = None) -> Union[Image.Image, Tensor]:
    """``image`` upright and in a form the transform takes faithfully: an RGB Pillow image, or (16-bit grayscale)
    a ``3×H×W`` float tensor in [0, 1]; SkippedImage for one it cannot take (see :func:`check_proportions`)."""
    check_proportions(image.size, shorter_side)
    # Pillow reads a PGM of more than 8 bits (maxval > 255) as mode I, its values scaled to 0..65535
    sixteen_bit = image.mode in _SIXTEEN_BIT or (image.mode == "I" and image.format == "PPM")
    image.load()  # a PNG's eXIf chunk may follow its pixels
    upright = _UPRIGHT.get(exif_orientation(image))
    # (not ImageOps.exif_transpose, which also rewrites the EXIF block and fails on a damaged tag of no concern)
    image = image.transpose(upright) if upright is not None else image
    if sixteen_bit:
        values = torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535.0)
        return values.unsqueeze(0).expand(3, -1, -1).contiguous()
    if image.mode in _NO_FIXED_RANGE:
        raise SkippedImage(f"{_NO_FIXED_RANGE[image.mode]} pixels (mode {image.mode}) have no fixed range to scale")
    return image.convert("RGB")


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of ``image`` (1..8; 1, upright, where it has none), as Pillow's ``exif_transpose`` reads
    it."""
    return ORIENTATIONS.get(image.getexif().get(ORIENTATION_TAG, 1), 1)


def decode_with_pillow(data: bytes, transform: ImageTransform) -> Tensor:
    """``data`` decoded by Pillow (upright, RGB or 16-bit) with its own checks on (:func:`pillow_checks`), and
    transformed; raises what the decoder raises."""
    with pillow_checks():
        with Image.open(io.BytesIO(data), formats=decodable_formats()) as image:
            upright = decoded(image, resized_shorter_side(transform))
    return transform(upright)


def failure(error: Exception, identity: Optional[Identity]) -> Tuple[str, Optional[Identity]]:
    """Why a file is skipped, from what reading or decoding it raised (the same file, the same words, every run),
    and the identity to record it with: the one it was read at (None where it could not be read: a rerun retries)."""
    if isinstance(error, SkippedImage):
        return str(error), identity or error.identity
    message = _OBJECT_ADDRESS.sub("", first_line(error))  # no memory addresses: they differ in every run
    return f"unreadable image ({type(error).__name__}: {message})", identity


class ImageFiles(Dataset):
    """``paths[i]`` read, decoded and transformed; failures returned, not raised."""

    def __init__(self, paths: Sequence[Path], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        identity: Optional[Identity] = None
        try:
            data, identity = read_image_file(self.paths[index])
            return index, decode_with_pillow(data, self.transform), "", identity
        except MemoryError:
            raise  # not the file's fault: the run stops, nothing is recorded for the file, and a rerun retries it
        except Exception as error:  # noqa: BLE001 - any decoder failure is a skipped image, never a crashed run
            return index, None, *failure(error, identity)


@dataclass
class ImageBatch:
    """The decoded images of a batch (stacked) with their dataset indices and identities, and the failures;
    with ``extract.decode=gpu``, also why some images were decoded on the CPU instead (``fallbacks``: index → reason).
    """

    indices: List[int]
    images: Optional[Tensor]
    identities: List[Identity]
    failures: List[Tuple[int, str, Optional[Identity]]]
    fallbacks: Dict[int, str] = field(default_factory=dict)


def collate_images(items: Sequence[Item]) -> ImageBatch:
    """``collate_fn`` for :class:`ImageFiles`: stacks the images that decoded, keeps the failures apart."""
    decoded_items = [(index, image, identity) for index, image, _, identity in items if identity and image is not None]
    return ImageBatch(
        indices=[index for index, _, _ in decoded_items],
        images=torch.stack([image for _, image, _ in decoded_items]) if decoded_items else None,
        identities=[identity for _, _, identity in decoded_items],
        failures=[(index, reason, identity) for index, image, reason, identity in items if image is None],
    )
