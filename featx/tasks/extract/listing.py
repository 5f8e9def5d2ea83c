"""The images an extraction reads: every file under a folder (recursively) or every file a glob matches, each with
its identity (size, modification time and inode) so stored features can be matched to the file's current content.

Paths are absolute but not resolved through symbolic links: a link to an image is listed under its own path inside
the input. Linked folders are not descended into (no loops, no escape from the input). Files whose extension no
installed image decoder opens, broken links, and folders a pattern matches (none of their files), are returned as
skipped, with the reason, so the manifest lists them. The output folder itself and featx's own entries of it (inside
the input, or holding it) are left out. Example::

    listing = find_images("photos/", exclude=Path("photos/feats"))      # or "photos/**/*.jpg"
    listing.images[:2], listing.skipped[:1]     # [Path('/data/photos/a.jpg'), ...], [(Path('.../notes.txt'), '...')]
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

from PIL import Image

from featx.errors import ArgumentError
from featx.spec.limits import expand_home
from featx.tasks.extract.names import is_own_name

GLOB_CHARACTERS = "*?["
#: (size in bytes, modification time in ns, inode): what a file is taken to be; a file whose identity changed is
#: redone. The inode tells apart files of one size and time whose names were swapped (an archive unpacked with
#: second-resolution times); a copy of the folder (new inodes) is redone, never misread.
Identity = Tuple[int, int, int]


#: Pillow formats featx never opens: EPS hands the file to Ghostscript, an interpreter that runs the PostScript
#: program in it (a scraped file could run for ever)
_PROGRAM_FORMATS = frozenset({"EPS"})


def decodable_formats() -> Tuple[str, ...]:
    """The Pillow formats images are opened as (``Image.open(..., formats=...)``): those Pillow can open here, less
    :data:`_PROGRAM_FORMATS`. Pillow picks the format from the content, whatever the file's name."""
    Image.init()
    return tuple(sorted(name for name in Image.OPEN if name not in _PROGRAM_FORMATS))


def image_extensions() -> FrozenSet[str]:
    """Lower-case extensions (with the dot) of :func:`decodable_formats`: ``.jpg``, ``.png``, ``.webp``, ..."""
    formats = decodable_formats()
    return frozenset(ext for ext, image_format in Image.registered_extensions().items() if image_format in formats)


#: why a pipe, device or socket under an image's name is skipped (it has no end, or reading it waits for a writer)
NOT_REGULAR = "not a regular file (a pipe, device or socket)"
#: why an entry is skipped that cannot be looked up (in a folder that can be listed but not entered)
CANNOT_LOOK_UP = "a file that cannot be looked up"
#: why a link to a folder is skipped (and what a pattern matches below it left out)
LINKED_FOLDER = "a linked folder (featx does not follow links to folders)"
#: a folder a pattern matches with nothing of it matched (``photos/*`` and the folder photos/2024)
MATCHED_FOLDER = "a folder the pattern matches, not its files (a pattern takes the files it matches: add /* for them)"


def file_identity(path: Path) -> Optional[Identity]:
    """``(size, mtime_ns, inode)`` of the file ``path`` (following a link to its target), or ``None`` if it cannot be
    read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


@dataclass(frozen=True)
class ImageListing:
    """Absolute paths of candidate images, sorted, and the files left out with why; ``identities`` holds each
    listed file's identity when it was listed."""

    images: List[Path]
    skipped: List[Tuple[Path, str]]
    identities: Dict[str, Optional[Identity]] = field(default_factory=dict)


def _split_pattern(source: str) -> Tuple[Path, str]:
    """A glob's fixed folder (the parts before the first wildcard) and the pattern below it."""
    parts = expand_home(source).parts
    fixed = 0
    while fixed < len(parts) - 1 and not any(character in parts[fixed] for character in GLOB_CHARACTERS):
        fixed += 1
    return Path(*parts[:fixed]) if fixed else Path("."), str(Path(*parts[fixed:]))


def _walk(folder: Path, unlisted: List[Tuple[Path, str]]) -> Iterator[Path]:
    """Every file and link below ``folder``; linked folders are listed as entries, not descended into. A folder that
    cannot be listed (no permission) is added to ``unlisted`` with why (os.walk leaves it out silently)."""

    def note(error: OSError) -> None:
        reason = f"a folder that cannot be listed ({type(error).__name__}: {error.strerror or error})"
        unlisted.append((Path(error.filename), reason))

    for root, folders, files in os.walk(folder, onerror=note, followlinks=False):
        for name in files + [name for name in folders if os.path.islink(os.path.join(root, name))]:
            yield Path(root) / name


def _is_folder(path: Path, source: str, key: str) -> bool:
    """Whether ``path`` (of the input ``source``) is a folder; ArgumentError naming ``key`` where it cannot be looked
    up (a folder above it that cannot be entered)."""
    try:
        return path.is_dir()
    except OSError as error:
        raise ArgumentError(
            f"{key}: {source!r} cannot be looked up ({type(error).__name__}: {error.strerror or error})"
        ) from None


def _is_pattern(source: str, key: str) -> bool:
    """A glob pattern: ``*``, ``?`` or ``[`` in it, and not the name of a folder (``photos[2024]/`` is a folder)."""
    return any(character in source for character in GLOB_CHARACTERS) and not _is_folder(
        expand_home(source), source, key
    )


def _candidates(source: str, key: str, unlisted: List[Tuple[Path, str]]) -> List[Path]:
    if _is_pattern(source, key):
        base, pattern = _split_pattern(source)
        # pathlib's glob never follows linked folders for ** (glob.glob does, into loops)
        try:
            matches = list(base.glob(pattern)) if _is_folder(base, source, key) else []
        except ValueError as error:  # pathlib's refusal of the pattern ("'**' can only be an entire path component")
            hint = " (write ** as a whole folder name: photos/**/*.png)" if "**" in str(error) else ""
            raise ArgumentError(f"{key}: the pattern {source!r} cannot be read: {error}{hint}") from None
        # a single * enters linked folders (a link out of the input, or to its own folder: lin/*/*/*.png then
        # lists one image once for each way through the links); what lies below one is left out, the link skipped
        linked = {match: _linked_folder_above(match, base) for match in matches}
        # ** does not enter linked folders at all: the ones it would have crossed are named too, not left out silently
        crossed = _linked_folders_crossed(base, pattern) if "**" in Path(pattern).parts else set()
        links = sorted({link for link in linked.values() if link} | crossed)
        unlisted.extend((link, LINKED_FOLDER) for link in links)
        matches = [match for match in matches if linked[match] is None]
        # files, links and what is neither file nor folder (a pipe: listed, then skipped with the reason)
        found = [match for match in matches if not _is_real_folder(match)]
        holding_matches = {match.parent for match in matches}  # photos/**/* matches each folder's entries too
        folders = [match for match in matches if _is_real_folder(match)]
        folders = [folder for folder in folders if folder not in holding_matches]
        if not found:
            hint = f" (only folders: {source}/* takes the files in them)" if folders else ""
            if links and not folders:
                hint = " (only below linked folders, which featx does not follow)"
            raise ArgumentError(f"{key}: the pattern {source!r} matches no files{hint}")
        unlisted.extend((folder, MATCHED_FOLDER) for folder in folders)  # their images are not inputs: say so
        return found
    path = expand_home(source)
    if not _is_folder(path, source, key):
        raise ArgumentError(f"{key}: {source!r} is neither a folder nor a glob pattern (use *, ? or [ ] for one)")
    found = list(_walk(path, unlisted))
    if unlisted and unlisted[0][0] == path:
        raise ArgumentError(f"{key}: {source!r} is {unlisted[0][1]}")
    if not found and not unlisted:
        raise ArgumentError(f"{key}: the folder {source!r} holds no files")
    return found


def _linked_folder_above(match: Path, base: Path) -> Optional[Path]:
    """The first link on the way from ``base`` (the pattern's fixed folder, as the user wrote it) down to the
    folder holding ``match``, or None where that way holds no link."""
    folder = base
    for part in match.relative_to(base).parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            return folder
    return None


@functools.lru_cache(maxsize=4096)  # ** may match any number of folders: each pair is worked out once
def _enters(parts: Tuple[str, ...], pattern: Tuple[str, ...]) -> bool:
    """Whether the glob ``pattern`` (its path components) enters the folder at ``parts`` below its fixed folder: the
    folder's names match the pattern's first components, with one or more left to match below it."""
    if not parts:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":  # zero folders, or one more
        return _enters(parts, pattern[1:]) or _enters(parts[1:], pattern)
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _enters(parts[1:], pattern[1:])


def _linked_folders_crossed(base: Path, pattern: str) -> Set[Path]:
    """The linked folders below ``base`` that ``pattern`` would enter (the first link on each way down)."""
    components = Path(pattern).parts
    crossed: Set[Path] = set()
    for root, folders, _ in os.walk(base, followlinks=False):
        below = Path(root).relative_to(base).parts
        for name in list(folders):
            if not _enters((*below, name), components):
                folders.remove(name)  # nothing the pattern matches lies below it
            elif os.path.islink(os.path.join(root, name)):
                crossed.add(Path(root) / name)
    return crossed


def _resolved(path: Path) -> Optional[Path]:
    """``path`` with its links resolved, or None where they loop (a broken link, skipped with its reason)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symbolic link loop: RuntimeError before Python 3.13
        return None


def _below(path: Path, folder: Path) -> Optional[Path]:
    """``path`` relative to ``folder`` (as written, else with links resolved), or None if it is not inside it."""
    if path.is_relative_to(folder):
        return path.relative_to(folder)
    resolved, resolved_folder = _resolved(path), _resolved(folder)
    if resolved is None or resolved_folder is None or not resolved.is_relative_to(resolved_folder):
        return None
    return resolved.relative_to(resolved_folder)


def _left_out(entry: Path, output: Optional[Path]) -> bool:
    """Whether ``entry`` is the output folder itself (a folder a pattern matches) or one of featx's own entries of
    it (wherever that folder is: inside the input, or holding it); the user's files there are inputs like any
    other."""
    below = _below(entry, output) if output is not None else None
    return below is not None and (not below.parts or is_own_name(below.parts[0]))


def _not_a_file(file: Path) -> Optional[str]:
    """Why ``file`` (a listed entry) is skipped rather than read as a file, or None for a regular file (or a link to
    one). An entry that cannot be looked up (a folder that can be listed but not entered) is skipped with the reason
    like any other: it never stops the run."""
    try:
        link = stat.S_ISLNK(os.lstat(file).st_mode)
    except OSError as error:
        return f"{CANNOT_LOOK_UP} ({type(error).__name__}: {error.strerror or error})"
    try:
        mode = os.stat(file).st_mode
    except OSError as error:
        if link and error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return "a broken symbolic link"
        return f"{CANNOT_LOOK_UP} ({type(error).__name__}: {error.strerror or error})"
    if stat.S_ISDIR(mode):
        return LINKED_FOLDER
    return None if stat.S_ISREG(mode) else NOT_REGULAR


def _is_real_folder(path: Path) -> bool:
    """Whether ``path`` is a folder, not a link to one; False also where it cannot be looked up (it is then listed
    as a file, and skipped with the reason)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def find_images(source: str, key: str = "extract.input", exclude: Optional[Path] = None) -> ImageListing:
    """List ``source`` (a folder, searched recursively, or a glob; ``**`` matches folders at any depth), leaving out
    ``exclude`` (the output folder, inside the input or holding it) where a pattern matches it, and featx's own
    entries of it.

    Raises :class:`ArgumentError` naming ``key`` when ``source`` exists neither as a folder nor as a pattern with
    matches, is empty, or holds no file with an image extension.
    """
    extensions = image_extensions()
    folder = Path(os.path.abspath(exclude)) if exclude is not None else None
    images: List[Path] = []
    skipped: List[Tuple[Path, str]] = []
    identities: Dict[str, Optional[Identity]] = {}
    unlisted: List[Tuple[Path, str]] = []
    for file in sorted({Path(os.path.abspath(candidate)) for candidate in _candidates(source, key, unlisted)}):
        if _left_out(file, folder):
            continue
        identities[str(file)] = file_identity(file)
        reason = _not_a_file(file)
        if reason is not None:
            skipped.append((file, reason))
        elif file.suffix.lower() in extensions:
            images.append(file)
        else:
            skipped.append((file, f"not an image file (extension {file.suffix or 'none'!r})"))
    for folder_path, reason in unlisted:
        absolute = Path(os.path.abspath(folder_path))
        if _left_out(absolute, folder):
            continue
        identities[str(absolute)] = file_identity(absolute)
        skipped.append((absolute, reason))
    if not images:
        raise ArgumentError(f"{key}: {source!r} holds no image files ({len(skipped)} other files)")
    return ImageListing(images, sorted(skipped), identities)
