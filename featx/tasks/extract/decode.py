"""A dataset of image files that never raises on a bad file: each item is ``(index, tensor or None, reason)``.

Images are decoded with Pillow, turned upright by their EXIF orientation (as photo viewers show them) and converted
to RGB: grayscale and palette images are expanded to three channels, an alpha channel is dropped (not composited).
A file that cannot be read or decoded yields ``None`` and the reason.

Example::

    dataset = ImageFiles(paths, transform)
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_images)
    for batch in loader:
        batch.indices, batch.images.shape, batch.failures     # [0, 1, ...], (n, 3, H, W), [(7, 'OSError: ...')]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from featx.tasks.extract.transforms import ImageTransform

Item = Tuple[int, Optional[Tensor], str]


class ImageFiles(Dataset):
    """``paths[i]`` decoded, converted to RGB and transformed; failures returned, not raised."""

    def __init__(self, paths: Sequence[Path], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        try:
            with Image.open(self.paths[index]) as image:
                return index, self.transform(ImageOps.exif_transpose(image).convert("RGB")), ""
        except Exception as error:  # noqa: BLE001 - any decoder failure is a skipped image, never a crashed run
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return index, None, f"unreadable image ({type(error).__name__}: {message})"


@dataclass
class ImageBatch:
    """The decoded images of a batch (stacked) with their dataset indices, and the failures."""

    indices: List[int]
    images: Optional[Tensor]
    failures: List[Tuple[int, str]]


def collate_images(items: Sequence[Item]) -> ImageBatch:
    """``collate_fn`` for :class:`ImageFiles`: stacks the images that decoded, keeps the failures apart."""
    decoded = [(index, image) for index, image, _ in items if image is not None]
    return ImageBatch(
        indices=[index for index, _ in decoded],
        images=torch.stack([image for _, image in decoded]) if decoded else None,
        failures=[(index, reason) for index, image, reason in items if image is None],
    )
