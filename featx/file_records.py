"""What featx learned by reading a large file whole, remembered in its user cache by the file's identity, so that it
is read again only when the file changed.

Two kinds of facts are kept, each in its own folder of featx's user cache (:mod:`featx.cache_folder`): the SHA-256 of
a torch hub cache file (``verified-weights/``, :mod:`featx.models.weights_enums`) and that a checkpoint's tensor
records hold what its pickle claims (``checked-checkpoints/``, :mod:`featx.construct.checked_checkpoints`). A record
names the file by its absolute path, size, modification and status change times, inode and device: a rewrite in place
with the modification time put back (``os.utime``, ``touch -r``) keeps all but the status change time, which only the
kernel sets. Only the user's own record, writable by no one else, whole and of this form, is read; with the cache off
(``FEATX_NO_CACHE``) or unwritable, nothing is remembered and every use reads the file.

Example::

    folder = records_folder("verified-weights")
    facts = None if folder is None else recalled_facts(folder, path, os.stat(path))   # {"sha256": "..."} or None
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from featx.cache_folder import cache_disabled, is_own_regular_file, user_cache_dir
from featx.errors import FeatxError
from featx.files import write_atomically

#: the form of a record, and the most bytes one is read to
RECORD_FORMAT = 1
MAX_RECORD_BYTES = 1 << 14
#: the fields of a file's status that must not change while it is read for a record
UNCHANGED_FIELDS = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")


def records_folder(name: str) -> Optional[Path]:
    """The folder ``name`` of featx's user cache; None where the cache is off or there is none."""
    if cache_disabled():
        return None
    folder = user_cache_dir()
    return None if folder is None else folder / name


def same_file(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether two statuses of a path are of the same, unchanged file (:data:`UNCHANGED_FIELDS`)."""
    return all(getattr(before, field) == getattr(after, field) for field in UNCHANGED_FIELDS)


def _identity(path: Path, status: os.stat_result) -> Dict[str, Any]:
    """What a record of ``path`` must match (see the module docstring); a record of an older form, without the status
    change time, never matches."""
    return {
        "path": os.fsencode(path).hex(),  # any file name, also one that is no UTF-8
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "ctime_ns": status.st_ctime_ns,
        "inode": status.st_ino,
        "device": status.st_dev,
    }


def _record_path(folder: Path, path: Path) -> Path:
    return folder / f"{hashlib.sha256(os.fsencode(path)).hexdigest()[:40]}.json"


def recalled_facts(folder: Path, path: Path, status: os.stat_result) -> Optional[Dict[str, Any]]:
    """The facts recorded in ``folder`` about the file at the absolute ``path`` of ``status``, or None where there is
    no trusted record of that very file."""
    record = _record_path(folder, path)
    try:
        if not is_own_regular_file(record, own=True):
            return None
        with open(record, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
        entry = json.loads(data.decode("utf-8")) if len(data) <= MAX_RECORD_BYTES else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if type(entry) is not dict or entry.get("format") != RECORD_FORMAT:
        return None
    if entry.get("identity") != _identity(path, status):
        return None
    return {key: value for key, value in entry.items() if key not in ("format", "identity")}


def remember_facts(folder: Path, path: Path, status: os.stat_result, facts: Mapping[str, Any]) -> None:
    """Record (whole or not at all) ``facts`` about the file at the absolute ``path`` of ``status``; a folder that
    cannot be written leaves the file to be read again next time."""
    entry = {**facts, "format": RECORD_FORMAT, "identity": _identity(path, status)}
    text = json.dumps(entry, sort_keys=True) + "\n"

    def write(partial: Path) -> None:
        partial.write_text(text, encoding="utf-8")
        partial.chmod(0o644)  # whatever the umask: a record other users could rewrite is never read

    try:
        write_atomically(_record_path(folder, path), write, overwrite=True, what="file record")
    except FeatxError:
        pass
