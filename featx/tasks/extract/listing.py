"""The images an extraction reads: every file under a folder (recursively) or every file a glob matches.

Files whose extension no installed image decoder opens are not read; they are returned as skipped, with the reason,
so the manifest lists them. Example::

    listing = find_images("photos/")            # or "photos/**/*.jpg"
    listing.images[:2], listing.skipped[:1]     # [Path('photos/a.jpg'), ...], [(Path('photos/notes.txt'), '...')]
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, List, Tuple

from PIL import Image

from featx.errors import ArgumentError

GLOB_CHARACTERS = "*?["


def image_extensions() -> FrozenSet[str]:
    """Lower-case extensions (with the dot) of the formats Pillow can open here: ``.jpg``, ``.png``, ``.webp``, ..."""
    Image.init()
    return frozenset(ext for ext, image_format in Image.registered_extensions().items() if image_format in Image.OPEN)


@dataclass(frozen=True)
class ImageListing:
    """Absolute paths of candidate images, sorted, and the files left out with why."""

    images: List[Path]
    skipped: List[Tuple[Path, str]]


def _files(source: str, key: str) -> List[Path]:
    path = Path(source).expanduser()
    if any(character in source for character in GLOB_CHARACTERS):
        files = [Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file()]
        if not files:
            raise ArgumentError(f"{key}: the pattern {source!r} matches no files")
        return files
    if not path.is_dir():
        raise ArgumentError(f"{key}: {source!r} is neither a folder nor a glob pattern (use *, ? or [ ] for one)")
    files = [candidate for candidate in path.rglob("*") if candidate.is_file()]
    if not files:
        raise ArgumentError(f"{key}: the folder {source!r} holds no files")
    return files


def find_images(source: str, key: str = "extract.input") -> ImageListing:
    """List ``source`` (a folder, searched recursively, or a glob; ``**`` matches folders at any depth).

    Raises :class:`ArgumentError` naming ``key`` when ``source`` exists neither as a folder nor as a pattern with
    matches, is empty, or holds no file with an image extension.
    """
    extensions = image_extensions()
    images, skipped = [], []
    for file in sorted({file.resolve() for file in _files(source, key)}):
        if file.suffix.lower() in extensions:
            images.append(file)
        else:
            skipped.append((file, f"not an image file (extension {file.suffix or 'none'!r})"))
    if not images:
        raise ArgumentError(f"{key}: {source!r} holds no image files ({len(skipped)} other files)")
    return ImageListing(images, skipped)
