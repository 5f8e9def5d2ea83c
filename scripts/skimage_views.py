"""Small real datasets from the photos scikit-image ships: images, hand-drawn boxes, seeded augmented views.

The photos come with the ``scikit-image`` wheel (``skimage.data``), so nothing is downloaded at run time and no
image file lives in this repository. ``scripts/experiment_data/boxes.json`` holds boxes drawn once by hand on
some of them. A *view* is a square crop of an image after a random scale jitter and horizontal flip, its boxes
moved with it; the same generator state gives the same view. Example (from ``scripts/``)::

    import torch
    from skimage_views import load_annotations, random_view
    classes, images = load_annotations("experiment_data/boxes.json")
    first = images[0]                                         # name, pixels (3 x H x W in [0, 1]), boxes, labels
    view, boxes, labels = random_view(first.pixels, first.boxes, first.labels, 128, (0.6, 1.2),
                                      torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, NoReturn, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import functional

from featx.errors import first_line
from featx.spec.limits import quoted

#: the skimage.data photos shipped in the scikit-image wheel (others are downloaded on first use)
PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "immunohistochemistry",
    "moon", "rocket",
)  # fmt: skip


#: the largest box file read (the packaged one is 2 KB; a file larger than this is not a box file)
MAX_BOX_FILE_BYTES = 1 << 20


class AnnotationError(ValueError):
    """A box file that does not fit its images; the message names the file and the key."""


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes: a device (``/dev/zero``) is never read, a
    fifo never waited on. ValueError saying why not otherwise (the caller names the file). Example:
    ``read_small_file(Path("boxes.json"), MAX_BOX_FILE_BYTES)``."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise ValueError("not a regular file (a folder, device, fifo or socket)")
            with open(descriptor, "rb", closefd=False) as handle:
                data = handle.read(limit + 1)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror or error}") from None
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def parsed_json(raw: bytes) -> Any:
    """The JSON value ``raw`` holds; ValueError "not JSON (why)" otherwise, a value nested too deeply for Python's
    parser included (the caller names the file). Example: ``parsed_json(read_small_file(path, limit))``."""
    try:
        return json.loads(raw)
    except ValueError as error:  # UnicodeDecodeError too
        raise ValueError(f"not JSON ({first_line(error)})") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None


@dataclass(frozen=True)
class Annotated:
    """One photo and its objects: ``boxes`` K x 4 ``[x0, y0, x1, y1]`` in pixels, ``labels`` K class indices."""

    name: str
    pixels: Tensor
    boxes: Tensor
    labels: Tensor


def load_photo(name: str) -> Tensor:
    """``skimage.data.<name>()`` as a float 3 x H x W tensor in [0, 1] (grey photos repeated on three channels)."""
    if name not in PHOTOS:
        raise AnnotationError(f"unknown skimage.data photo {name!r} (valid: {', '.join(PHOTOS)})")
    from skimage import data

    pixels = torch.from_numpy(getattr(data, name)()).float() / 255
    return (pixels.expand(3, *pixels.shape) if pixels.ndim == 2 else pixels.permute(2, 0, 1)).contiguous()


def _fail(path: Path, key: str, message: str) -> NoReturn:
    raise AnnotationError(f"{path.name}: {key + ': ' if key else ''}{message}")


def _check_box(path: Path, key: str, box: Any, height: int, width: int) -> List[float]:
    numbers = isinstance(box, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    if not numbers or len(box) != 4:
        _fail(path, key, f"must be [x0, y0, x1, y1], got {quoted(box)}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        _fail(path, key, f"{box} is not a box inside the {width}x{height} image (0 <= x0 < x1 <= W, y alike)")
    return [float(v) for v in box]


def _read_json(path: Path) -> Any:
    """The JSON value of the box file ``path``, read as :func:`read_small_file` reads; AnnotationError naming it."""
    try:
        raw = read_small_file(path, MAX_BOX_FILE_BYTES)
    except ValueError as error:
        raise AnnotationError(f"{path}: {error}") from None
    try:
        return parsed_json(raw)
    except ValueError as error:
        _fail(path, "", str(error))


def load_annotations(path: str | Path) -> Tuple[List[str], List[Annotated]]:
    """The class names and every annotated photo of a box file, checked against the photos themselves."""
    path = Path(path)
    spec = _read_json(path)
    if not isinstance(spec, dict):
        _fail(path, "", f'must hold a JSON object with "classes" and "images", got a {type(spec).__name__}')
    classes = spec.get("classes")
    names = isinstance(classes, list) and all(isinstance(name, str) for name in classes)
    if not names or not classes or len(set(classes)) != len(classes):
        _fail(path, "classes", f"must be a list of distinct names, got {quoted(classes)}")
    if not isinstance(spec.get("images"), dict) or not spec["images"]:
        _fail(path, "images", "must map skimage.data photo names to their objects")
    annotated = []
    for name, entry in spec["images"].items():
        if not isinstance(entry, dict):
            _fail(path, f"images.{name}", f'must be an object with "size" and "objects", got {quoted(entry)}')
        try:
            pixels = load_photo(name)
        except AnnotationError as error:
            _fail(path, f"images.{name}", str(error))
        size = [pixels.shape[1], pixels.shape[2]]
        if entry.get("size") != size:
            _fail(
                path,
                f"images.{name}.size",
                f"the photo is {size} (height, width), the file says {quoted(entry.get('size'))}",
            )
        objects = entry.get("objects") or []
        if not isinstance(objects, list):
            _fail(
                path,
                f"images.{name}.objects",
                f'must be a list of objects with "label" and "box", got {quoted(objects)}',
            )
        boxes, labels = [], []
        for index, item in enumerate(objects):
            key = f"images.{name}.objects[{index}]"
            if not isinstance(item, dict):
                _fail(path, key, f'must be an object with "label" and "box", got {quoted(item)}')
            if item.get("label") not in classes:
                _fail(path, f"{key}.label", f"unknown class {quoted(item.get('label'))} (valid: {', '.join(classes)})")
            boxes.append(_check_box(path, f"{key}.box", item.get("box"), *size))
            labels.append(classes.index(item["label"]))
        if not boxes:
            _fail(path, f"images.{name}.objects", "no objects")
        annotated.append(Annotated(name, pixels, torch.tensor(boxes), torch.tensor(labels, dtype=torch.int64)))
    return classes, annotated


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _offset(length: int, canvas: int, generator: torch.Generator) -> int:
    """Where a side of ``length`` pixels starts on a ``canvas``: a random crop if longer, a random place if not."""
    low, high = sorted((0, canvas - length))
    return int(torch.randint(low, high + 1, (), generator=generator))


def random_view(
    pixels: Tensor,
    boxes: Tensor,
    labels: Tensor,
    size: int,
    scale: Sequence[float],
    generator: torch.Generator,
    min_visible: float = 0.5,
) -> Tuple[Tensor, Tensor, Tensor]:
    """A ``size`` x ``size`` view: the photo resized so its longer side is ``size * s`` (``s`` uniform in
    ``scale``), cropped or placed at a random offset on a canvas of its mean colour, flipped left-right half of
    the time. Boxes move with it; one cut by the crop is kept, clipped, when ``min_visible`` of its area stays."""
    factor = size * _uniform(scale[0], scale[1], generator) / max(pixels.shape[1:])
    height, width = (max(1, round(side * factor)) for side in pixels.shape[1:])
    resized = functional.interpolate(pixels[None], (height, width), mode="bilinear", antialias=True)[0].clamp(0, 1)
    top, left = _offset(height, size, generator), _offset(width, size, generator)
    view = pixels.mean(dim=(1, 2)).view(3, 1, 1).repeat(1, size, size)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, size), min(left + width, size)
    view[:, y0:y1, x0:x1] = resized[:, y0 - top : y1 - top, x0 - left : x1 - left]
    moved = boxes * torch.tensor([width / pixels.shape[2], height / pixels.shape[1]] * 2)
    moved = moved + torch.tensor([left, top, left, top])
    clipped = moved.clamp(0, size)
    area = (moved[:, 2:] - moved[:, :2]).prod(dim=1)
    kept = (clipped[:, 2:] - clipped[:, :2]).prod(dim=1) >= min_visible * area
    clipped, labels = clipped[kept], labels[kept]
    if float(torch.rand((), generator=generator)) < 0.5:
        view = view.flip(2)
        clipped = torch.stack([size - clipped[:, 2], clipped[:, 1], size - clipped[:, 0], clipped[:, 3]], dim=1)
    return view, clipped, labels
