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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, NoReturn, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import functional

#: the skimage.data photos shipped in the scikit-image wheel (others are downloaded on first use)
PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "immunohistochemistry",
    "moon", "rocket",
)  # fmt: skip


class AnnotationError(ValueError):
    """A box file that does not fit its images; the message names the file and the key."""


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
    raise AnnotationError(f"{path.name}: {key}: {message}")


def _check_box(path: Path, key: str, box: Any, height: int, width: int) -> List[float]:
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        _fail(path, key, f"must be [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        _fail(path, key, f"{box} is not a box inside the {width}x{height} image (0 <= x0 < x1 <= W, y alike)")
    return [float(v) for v in box]


def load_annotations(path: str | Path) -> Tuple[List[str], List[Annotated]]:
    """The class names and every annotated photo of a box file, checked against the photos themselves."""
    path = Path(path)
    spec = json.loads(path.read_text())
    classes = spec.get("classes")
    if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
        _fail(path, "classes", f"must be a list of distinct names, got {classes!r}")
    if not isinstance(spec.get("images"), dict) or not spec["images"]:
        _fail(path, "images", "must map skimage.data photo names to their objects")
    annotated = []
    for name, entry in spec["images"].items():
        try:
            pixels = load_photo(name)
        except AnnotationError as error:
            _fail(path, f"images.{name}", str(error))
        size = [pixels.shape[1], pixels.shape[2]]
        if entry.get("size") != size:
            _fail(
                path, f"images.{name}.size", f"the photo is {size} (height, width), the file says {entry.get('size')}"
            )
        boxes, labels = [], []
        for index, item in enumerate(entry.get("objects") or []):
            key = f"images.{name}.objects[{index}]"
            if item.get("label") not in classes:
                _fail(path, f"{key}.label", f"unknown class {item.get('label')!r} (valid: {', '.join(classes)})")
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
