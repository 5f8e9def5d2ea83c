"""An extraction's output folder: safetensors shards, a manifest, the settings they were made with.

Every file featx writes there carries ``featx`` in its name, so a user's own files beside them are never touched
(``featx-extract`` writes it, :func:`read_features` reads it)::

    out/featx-extract.json       {"format": "featx-extract/4", "collection": ..., "settings": ...,
                                 "manifest_entries": ...}: what the features are (backbone spec, outputs, pooling,
                                 transform, dtype), a random name for this folder's features that every shard
                                 carries, and how many entries the manifest holds (once a run has written it); the
                                 folder is featx's only with it
    out/featx-config.yaml        the resolved config of the last run
    out/featx-shards/shard-r000-00001.safetensors   one tensor per output, row i = image i of the shard; the
                                 shard's metadata lists its images and the files skipped with it, each with the
                                 identity (size, modification time, inode) the file had when read, the collection
                                 it belongs to, the digest of the settings it was made with (settings_digest), and
                                 (decode=gpu) why some images were decoded on the CPU
    out/featx-manifest.jsonl     one line per file of the input: path, identity, shard, row, shapes, dtype (and
                                 decoded_on_cpu with the reason); or path, identity and the reason it was skipped
    out/.featx-extract.lock      held while a run writes here, so a second run on the folder is refused

A shard is written to a unique temporary name and linked into place, so it is there whole or not at all; the shards
are the record of what is done. A rerun skips files whose identity matches a shard's record and redoes the others
(changed under the same name); the manifest is rebuilt from the shards when a run finishes, and lists a file only
with the record matching its identity at that moment, so a stale feature is never read back. A shard of another
collection (copied or linked in from another folder, or written by a run that overwrote the folder while it was
read) is refused, never mixed in; so is a shard made with other settings than the settings file records (the file
edited by hand, or copied in).

Example::

    for path, features in featx.read_features("out"):
        features["p5"].shape          # torch.Size([256]) with pooling avg
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor

from featx.construct.weights import open_safetensors
from featx.errors import ArgumentError, FeatxError
from featx.files import path_argument, utf8_path, write_atomically
from featx.spec.limits import quoted
from featx.tasks.extract.listing import Identity
from featx.tasks.extract.names import CONFIG_FILE, INFO_FILE, LOCK_FILE, MANIFEST_FILE, SHARD_DIR

FORMAT = "featx-extract/4"
#: the settings files of earlier featx, whose shards do not say which collection (2) or settings (2, 3) they belong to
EARLIER_FORMATS = ("featx-extract/2", "featx-extract/3")
_COLLECTION = re.compile(r"^[0-9a-f]{32}$")
OUTPUT_KEY = "extract.output"
METADATA_KEY = "featx_extract"
_SHARD_NAME = re.compile(r"^shard-r(\d{3,9})-(\d{5,9})\.safetensors$")
_PARTIAL_NAME = re.compile(r"^\.shard-r\d{3,9}-\d{5,9}\.safetensors\.[A-Za-z0-9_-]+\.partial$")
_MANIFEST_SHARD = re.compile(rf"^{SHARD_DIR}/shard-r\d{{3,9}}-\d{{5,9}}\.safetensors$")
#: a record read back is refused past this size (a shard's metadata, the settings file, one manifest line)
_MAX_RECORD_BYTES = 64 << 20
#: the most bytes of file entries a writer puts in one shard's record: half the size read back, for the rest of it
SHARD_RECORD_BUDGET = _MAX_RECORD_BYTES // 2
#: how many shards read_features keeps open at once, per rank that wrote shards
_OPEN_SHARDS = 4
#: how many characters of checked shard records read_features keeps, so a shard it reopens is not parsed again
_CHECKED_RECORD_CHARS = _MAX_RECORD_BYTES
#: the dtypes featx-extract stores features in, by the name its settings give (torch's own names)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class StoredFile:
    """One file a shard accounts for: with features at ``row`` (``reason`` empty), or skipped for ``reason``."""

    path: str
    identity: Optional[Identity]
    shard: str
    row: int
    reason: str = ""
    fallback: str = ""


class Recorded(NamedTuple):
    """What ``featx-extract.json`` records: the settings, the collection every shard carries (None in an earlier
    featx's folder), the number of manifest entries (None until a run has written the manifest), and its format."""

    settings: Dict[str, Any]
    collection: Optional[str]
    entries: Optional[int]
    format: str

    @property
    def digest(self) -> str:
        """The digest of the settings that every shard made with them carries (see :func:`settings_digest`)."""
        return settings_digest(self.settings)


def _as_recorded(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """``settings`` as they read back from ``featx-extract.json`` (tuples become lists), for comparing."""
    return json.loads(json.dumps(settings))


def settings_digest(settings: Mapping[str, Any]) -> str:
    """The BLAKE2b digest (hex) of ``settings`` as canonical JSON (sorted keys, no spaces, ASCII): what a shard
    records of the settings it was made with, whatever spacing or key order ``featx-extract.json`` has."""
    canonical = json.dumps(_as_recorded(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("ascii")).hexdigest()


def setting_differences(old: Any, new: Any, prefix: str = "") -> List[str]:
    """The dotted keys whose values differ between two settings mappings (``backbone.weights_file``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [diff for key in keys for diff in setting_differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _identity(value: Any) -> Optional[Identity]:
    if value is None:
        return None
    # a modification time before 1970 is negative (tar restores such dates); sizes and inodes never are
    if isinstance(value, list) and len(value) == 3 and all(type(part) is int for part in value):
        size, mtime_ns, inode = value
        if size >= 0 and inode >= 0:
            return size, mtime_ns, inode
    raise ValueError(f"identity {quoted(value)} is not [size, mtime_ns, inode]")


def _shard_files(record: Any, shard: str) -> List[StoredFile]:
    """The files a shard's metadata record lists; ValueError if the record is not featx's."""
    if not isinstance(record, dict) or not isinstance(record.get("images"), list):
        raise ValueError("its metadata is not a featx-extract record")
    fallbacks = record.get("fallbacks", {})
    if not (isinstance(fallbacks, dict) and all(isinstance(why, str) and why for why in fallbacks.values())):
        raise ValueError("its fallbacks are not {path: reason}")
    files = []
    for row, entry in enumerate(record["images"]):
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)):
            raise ValueError(f"image entry {row} is not [path, size, mtime_ns, inode]")
        files.append(StoredFile(entry[0], _identity(entry[1:]), shard, row, fallback=fallbacks.get(entry[0], "")))
    skipped = record.get("skipped", [])
    if not isinstance(skipped, list):
        raise ValueError("its skipped files are not a list")
    for entry in skipped:
        if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(part, str) for part in entry[:2])):
            raise ValueError("a skipped entry is not [path, reason, identity]")
        files.append(StoredFile(entry[0], _identity(entry[2]), shard, -1, entry[1] or "skipped"))
    return files


def _row_shapes(handle: Any, rows: int) -> Dict[str, List[int]]:
    """The shape of one row of each tensor of an open shard whose record lists ``rows`` images; ValueError unless
    each tensor holds a row for each of them (a scalar or a tensor cut short is not as featx wrote it)."""
    shapes = {}
    for name in handle.keys():
        shape = list(handle.get_slice(name).get_shape())
        if not shape:
            raise ValueError(f"output {name!r} holds a single value, not a row for each of its {rows} images")
        if shape[0] != rows:
            raise ValueError(f"output {name!r} holds {shape[0]} rows for its {rows} images")
        shapes[name] = shape[1:]
    return shapes


@contextmanager
def _open_shard(shard: Path, who: str = OUTPUT_KEY) -> Iterator[Any]:
    """``safe_open`` on a shard; an unreadable one is a FeatxError naming it and the way out."""
    try:
        with open_safetensors(shard) as handle:
            metadata = handle.metadata() or {}
            if METADATA_KEY not in metadata or len(metadata[METADATA_KEY]) > _MAX_RECORD_BYTES:
                raise ValueError("no featx-extract record in its metadata")
            yield handle
    except FileNotFoundError:
        running = "" if who == OUTPUT_KEY else f" (or a featx-extract run on the folder removed it: {_READ_AGAIN})"
        raise FeatxError(
            f"{who}: the shard {shard} is missing; rerun featx-extract to redo its images{running}"
        ) from None
    except (SafetensorError, OSError, ValueError) as error:
        raise FeatxError(
            f"{who}: the shard {shard} is unreadable ({error}); delete it and rerun featx-extract to redo its images"
        ) from None


def _read_settings_file(info: Path, who: str) -> Recorded:
    """What ``info`` records; FeatxError naming the file when it is not a featx-extract settings file."""
    try:
        if info.stat().st_size > _MAX_RECORD_BYTES:
            raise ValueError(f"larger than {_MAX_RECORD_BYTES} bytes")
        content = json.loads(info.read_text(encoding="utf-8"))
        if not isinstance(content, dict) or content.get("format") not in (FORMAT, *EARLIER_FORMATS):
            raise ValueError(f'no "format": "{FORMAT}" entry')
        collection = content.get("collection") if content["format"] == FORMAT else None
        if content["format"] == FORMAT and not (isinstance(collection, str) and _COLLECTION.match(collection)):
            raise ValueError("no collection")
        entries = content.get("manifest_entries")
        if entries is not None and (type(entries) is not int or entries < 0):
            raise ValueError(f"manifest_entries {quoted(entries)} is not a number of entries")
        settings = content.get("settings")
        if not isinstance(settings, dict):
            raise ValueError("no settings")
        outputs = settings.get("outputs")
        if not (isinstance(outputs, list) and outputs and all(isinstance(name, str) for name in outputs)):
            raise ValueError("no list of outputs in its settings")
        if len(set(outputs)) < len(outputs):
            raise ValueError("an output named twice in its settings")
        return Recorded(settings, collection, entries, content["format"])
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise FeatxError(
            f"{who}: {info} is not a featx-extract settings file ({reason}); featx leaves that folder alone: "
            "choose another folder, or move the file away if it was yours"
        ) from None


def _earlier_featx(info: Path, recorded: Recorded, who: str) -> str:
    if recorded.format == "featx-extract/2":
        lacking = (
            "record neither their folder's collection nor the settings they were made with, so shards copied in from "
            "another folder, or a settings file edited since,"
        )
    else:
        lacking = "do not record the settings they were made with, so a settings file edited since"
    return (
        f"{who}: {info} was written by an earlier featx ({recorded.format}), whose shards {lacking} could not be told "
        "apart"
    )


def _check_plain_file(path: Path, who: str) -> None:
    """FeatxError unless ``path`` is a plain file, not a link (a shard or manifest featx wrote): a link would read
    another folder's features, a FIFO would block the reader forever."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # gone: opening it says so
    if not stat.S_ISREG(mode):
        kind = "a link" if stat.S_ISLNK(mode) else "not a plain file"
        raise FeatxError(
            f"{who}: {path} is not a file featx wrote ({kind}); featx leaves it alone: move it away, then rerun "
            "featx-extract to redo what it held"
        )


def _check_collection(record: Any, collection: Optional[str], shard: Path, who: str) -> None:
    """FeatxError unless the shard's record carries ``collection``, the one the folder's settings file names."""
    if not isinstance(record, dict) or record.get("collection") != collection:
        raise FeatxError(
            f"{who}: the shard {shard} belongs to another extraction than the folder's {INFO_FILE} describes (it was "
            "copied or linked in from another folder, or another featx-extract run replaced the folder's features "
            "while they were read): its features are not mixed in; move it away and rerun featx-extract to redo its "
            "images, or read again once that run has finished"
        )


class _NotDescribed(FeatxError):
    """A shard made with other settings than the folder's settings file records, or recording none."""


def _check_settings_digest(record: Dict[str, Any], digest: Optional[str], shard: Path, who: str) -> None:
    """_NotDescribed unless the shard's record carries ``digest``, that of the settings the folder's settings file
    records: a settings file edited by hand (keeping its collection) must not pass off the shards as its own."""
    recorded = record.get("settings_digest")
    if recorded == digest:
        return
    info = shard.parent.parent / INFO_FILE
    why = (
        "does not record the settings it was made with (it was written by an earlier featx, or altered)"
        if recorded is None
        else f"was not made with the settings {info} records (was that file edited, or copied from another folder?)"
    )
    raise _NotDescribed(
        f"{who}: the shard {shard} {why}: its features are not read; extract again into a new folder, or rerun "
        "featx-extract with extract.overwrite=true to make the folder's features anew"
    )


class FeatureStore:
    """The output folder ``root`` of an extraction; see the module docstring for its layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / SHARD_DIR
        # the collection and settings digest this run's shards carry, read once (the lock holds them)
        self._writing: Optional[Tuple[Optional[str], str]] = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the folder's lock (created with the folder if missing) for the block; ArgumentError if another
        run holds it. The operating system releases it when its holder and the processes it forked (DataLoader
        workers, which exit within seconds of their parent) are gone, killed or not."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ArgumentError(f"extract.output: cannot create {self.root}: {error.strerror or error}") from None
        lock = FileLock(self.root / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ArgumentError(
                f"extract.output: {self.root} is in use by another featx-extract run (it holds "
                f"{self.root / LOCK_FILE}); wait for that run to finish or choose another folder"
            ) from None
        except OSError as error:
            raise ArgumentError(
                f"extract.output: cannot lock {self.root / LOCK_FILE}: {error.strerror or error}"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def record(self, who: str = OUTPUT_KEY) -> Optional[Recorded]:
        """What ``featx-extract.json`` records, or ``None`` if there is none; FeatxError if it is not ours."""
        info = self.root / INFO_FILE
        try:
            kind = os.lstat(info).st_mode  # once: a run may remove and rewrite the file meanwhile
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise FeatxError(f"{who}: cannot read {info} ({error.strerror or error})") from None
        if not stat.S_ISREG(kind):
            raise FeatxError(f"{who}: {info} is not a featx-extract settings file (not a plain file)")
        return _read_settings_file(info, who)

    def settings(self, who: str = OUTPUT_KEY) -> Optional[Dict[str, Any]]:
        """The recorded settings, or ``None`` if there is no ``featx-extract.json``; FeatxError if it is not ours."""
        record = self.record(who)
        return None if record is None else record.settings

    def check_settings(self, settings: Mapping[str, Any], overwrite: bool) -> bool:
        """Refuse (ArgumentError) to add features made with other settings, unless ``overwrite``; refuse
        (FeatxError) a folder whose featx-named files featx cannot recognise as its own (a link or FIFO at a shard's
        name; a shard of another collection, or made with other settings than the settings file records, where the
        run would add to them), before anything is removed. True where ``overwrite`` must make the features anew
        although the settings file records these settings: its shards were made with others (the file edited)."""
        for name in (MANIFEST_FILE, CONFIG_FILE):  # what a run rewrites: a folder or link there is not featx's
            entry = self.root / name
            if os.path.lexists(entry) and (entry.is_symlink() or not entry.is_file()):
                raise FeatxError(
                    f"extract.output: {entry} is not a file featx wrote (a folder or a link); featx leaves it alone: "
                    "move it away or choose another folder"
                )
        record = self.record()
        if record is None:
            present = [name for name in (MANIFEST_FILE, CONFIG_FILE, SHARD_DIR) if os.path.lexists(self.root / name)]
            if present:
                raise ArgumentError(
                    f"extract.output: {self.root} holds {', '.join(present)} but no {INFO_FILE} (an interrupted "
                    "overwrite, or not featx's files), so what they hold is unknown; featx leaves them alone: move "
                    "them away or choose another folder"
                )
            return False
        self.shards()
        resumes = record.collection is not None and record.settings == _as_recorded(settings)
        if resumes:
            try:
                self.stored_files()  # every shard of this collection, made with these settings
            except _NotDescribed:
                if not overwrite:
                    raise
                return True
        if overwrite or resumes:
            return False
        if record.collection is None:
            raise ArgumentError(
                f"{_earlier_featx(self.root / INFO_FILE, record, OUTPUT_KEY)}; set extract.overwrite=true to redo its "
                "features with this featx (only featx's files there are removed), or choose another folder"
            )
        differing = ", ".join(setting_differences(record.settings, _as_recorded(settings))[:6])
        raise ArgumentError(
            f"extract.output: {self.root} holds features made with other settings (differing: {differing}); "
            "choose another folder, or set extract.overwrite=true to replace them (only featx's files there are "
            "removed)"
        )

    def _own_files(self) -> List[Path]:
        """The files featx wrote here (shards, partial shards, manifest, config, then the settings last, so an
        interrupted deletion leaves a folder the next run refuses rather than misreads); nothing else."""
        files: List[Path] = []
        if self.shard_dir.is_dir() and not self.shard_dir.is_symlink():
            files += sorted(
                p
                for p in self.shard_dir.iterdir()
                if (_SHARD_NAME.match(p.name) or _PARTIAL_NAME.match(p.name)) and not p.is_symlink() and p.is_file()
            )
        return files + [
            self.root / name
            for name in (MANIFEST_FILE, CONFIG_FILE, INFO_FILE)
            if (self.root / name).is_file() and not (self.root / name).is_symlink()
        ]

    def prepare(self, settings: Mapping[str, Any], config_yaml: str, overwrite: bool) -> None:
        """Make the folder ready (run once, before any shard is written): with ``overwrite`` and other recorded
        settings remove featx's files (same settings: keep them and resume), always remove partial shards of killed
        runs and the manifest (it describes a finished run; this one writes it again at its end, so a run killed
        midway leaves none to misread), record the settings and the config. Features made anew get a new random
        collection, which every shard of them carries; a resumed run keeps the folder's."""
        anew = self.check_settings(settings, overwrite)
        record = self.record()
        if (
            overwrite
            and record is not None
            and (anew or record.collection is None or record.settings != _as_recorded(settings))
        ):
            for path in self._own_files():
                path.unlink()
            record = None
        collection = secrets.token_hex(16) if record is None or record.collection is None else record.collection
        manifest = self.root / MANIFEST_FILE
        if manifest.is_file() and not manifest.is_symlink():
            manifest.unlink()
        self._write_info(collection, settings, None)
        write_atomically(
            self.root / CONFIG_FILE,
            lambda p: p.write_text(config_yaml, encoding="utf-8", errors="surrogateescape"),
            overwrite=True,
            what=OUTPUT_KEY,
        )
        self.shard_dir.mkdir(exist_ok=True)
        for path in self.shard_dir.iterdir():
            if _PARTIAL_NAME.match(path.name) and path.is_file():
                path.unlink()

    def _write_info(self, collection: str, settings: Mapping[str, Any], entries: Optional[int]) -> None:
        """Write ``featx-extract.json``: the settings, the collection, and the number of manifest entries (once the
        manifest is written)."""
        content: Dict[str, Any] = {"format": FORMAT, "collection": collection, "settings": settings}
        if entries is not None:
            content["manifest_entries"] = entries
        text = json.dumps(content, indent=2, sort_keys=True)
        write_atomically(
            self.root / INFO_FILE, lambda p: p.write_text(text, encoding="utf-8"), overwrite=True, what=OUTPUT_KEY
        )

    def shards(self, who: str = OUTPUT_KEY) -> List[Path]:
        """The finished shards, by rank then sequence number; FeatxError for a link or a FIFO at a shard's name (or
        in place of the shard folder), which featx did not write."""
        if not os.path.lexists(self.shard_dir):
            return []
        if self.shard_dir.is_symlink() or not self.shard_dir.is_dir():
            raise FeatxError(
                f"{who}: {self.shard_dir} is not the folder featx made (a link or a file); featx leaves it alone: "
                "move it away"
            )
        shards = sorted(p for p in self.shard_dir.iterdir() if _SHARD_NAME.match(p.name))
        for shard in shards:
            _check_plain_file(shard, who)
        return shards

    def stored_files(self) -> List[StoredFile]:
        """Every file the shards account for, as an image or as skipped, with the identity it had when read;
        FeatxError for a shard of another collection or made with other settings, or one not as featx wrote it."""
        return self._read_shards()[0]

    def _read_shards(self) -> Tuple[List[StoredFile], Dict[str, Dict[str, List[int]]]]:
        """:meth:`stored_files`, and the shape of a row of each output by shard (``featx-shards/<name>``)."""
        stored: List[StoredFile] = []
        shapes: Dict[str, Dict[str, List[int]]] = {}
        recorded = self.record()
        collection, digest = (recorded.collection, recorded.digest) if recorded else (None, None)
        for shard in self.shards():
            relative = f"{SHARD_DIR}/{shard.name}"
            with _open_shard(shard) as handle:
                try:
                    record = json.loads(handle.metadata()[METADATA_KEY])
                    _check_collection(record, collection, shard, OUTPUT_KEY)
                    _check_settings_digest(record, digest, shard, OUTPUT_KEY)
                    files = _shard_files(record, relative)
                    shapes[relative] = _row_shapes(handle, sum(one.row >= 0 for one in files))
                    stored += files
                except (ValueError, RecursionError) as error:
                    raise _unreadable(shard, error, OUTPUT_KEY) from None
        return stored, shapes

    def next_sequence(self, rank: int) -> int:
        """The number the next shard of ``rank`` gets (one past its highest)."""
        numbers = [
            int(m.group(2)) for p in self.shards() if (m := _SHARD_NAME.match(p.name)) and int(m.group(1)) == rank
        ]
        return max(numbers, default=0) + 1

    def write_shard(
        self,
        rank: int,
        sequence: int,
        tensors: Dict[str, Tensor],
        images: Sequence[Tuple[str, Identity]],
        skipped: Sequence[Tuple[str, str, Optional[Identity]]],
        fallbacks: Optional[Mapping[str, str]] = None,
    ) -> Path:
        """Write one shard atomically: ``tensors[name][i]`` belongs to the file ``images[i]`` = (path, identity);
        ``fallbacks``: path → why that image was decoded on the CPU in a ``decode=gpu`` run."""
        path = self.shard_dir / f"shard-r{rank:03d}-{sequence:05d}.safetensors"
        collection, digest = self._writing_record()
        record: Dict[str, Any] = {
            "collection": collection,
            "settings_digest": digest,
            "images": [[image, *identity] for image, identity in images],
            "skipped": [[image, reason, list(identity) if identity else None] for image, reason, identity in skipped],
        }
        if fallbacks:
            record["fallbacks"] = dict(fallbacks)
        contiguous = {name: t.contiguous() for name, t in tensors.items()}
        metadata = {METADATA_KEY: json.dumps(record)}
        write_atomically(
            path,
            lambda partial: save_file(contiguous, str(partial), metadata=metadata),
            overwrite=False,
            what=OUTPUT_KEY,
            clean_left=False,  # prepare() removes the shards' temporary files once
        )
        return path

    def _writing_record(self) -> Tuple[Optional[str], str]:
        """The folder's collection and settings digest, read from its settings file at the first shard this run
        writes."""
        if self._writing is None:
            recorded = self.record()
            self._writing = (recorded.collection, recorded.digest) if recorded else (None, "")
        return self._writing

    def write_manifest(self, current: Mapping[str, Optional[Identity]]) -> Tuple[int, int, int]:
        """Rebuild ``featx-manifest.jsonl``: each file of ``current`` (path → identity now) with the shard record that
        matches its identity (files changed since they were read, or gone, are left out), or else the latest reason
        it was skipped without one (it could not be read: a rerun retries it). Returns (images, skipped, outside):
        outside counts the files the shards hold features of that ``current`` does not list (another input, or
        files gone). The settings file records the number of entries first, so a manifest cut short or lengthened
        is told from the one written."""
        recorded = self.record()
        if recorded is None or recorded.collection is None:
            raise FeatxError(f"extract.output: {self.root / INFO_FILE} was removed or replaced during the run")
        dtype = recorded.settings.get("dtype")
        entries: Dict[str, Dict[str, Any]] = {}
        stored_files, shapes = self._read_shards()
        unread = {
            stored.path: {"path": stored.path, "identity": None, "skipped": stored.reason}
            for stored in stored_files
            if stored.reason and stored.identity is None and current.get(stored.path) is not None
        }
        for stored in stored_files:
            if stored.path in entries or stored.path not in current or current[stored.path] != stored.identity:
                continue
            identity = list(stored.identity) if stored.identity else None
            if stored.reason:
                entries[stored.path] = {"path": stored.path, "identity": identity, "skipped": stored.reason}
                continue
            entries[stored.path] = {
                "path": stored.path,
                "identity": identity,
                "shard": stored.shard,
                "row": stored.row,
                "shapes": shapes[stored.shard],
                "dtype": dtype,
            }
            if stored.fallback:
                entries[stored.path]["decoded_on_cpu"] = stored.fallback
        entries = {**unread, **entries}
        text = "".join(json.dumps(entries[path]) + "\n" for path in sorted(entries))
        self._write_info(recorded.collection, recorded.settings, len(entries))
        write_atomically(
            self.root / MANIFEST_FILE, lambda p: p.write_text(text, encoding="utf-8"), overwrite=True, what=OUTPUT_KEY
        )
        skipped = sum("skipped" in entry for entry in entries.values())
        outside = len({stored.path for stored in stored_files if stored.path not in current and not stored.reason})
        return len(entries) - skipped, skipped, outside


def _manifest_entries(manifest: Path, recorded: int, who: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """(line number, entry) of each line of a manifest; FeatxError naming the file and line when one is not
    featx's (a shard outside ``featx-shards/``, a negative row, ...) or not after the one before in path order, or
    when the manifest holds fewer or more entries than the ``recorded`` number (cut short, or lengthened). A line is
    read up to the bound on its size, never whole (a sparse file of one huge line)."""
    count, info = 0, manifest.parent / INFO_FILE
    previous: Optional[str] = None
    try:
        opened = manifest.open("rb")
    except OSError as error:  # removed since read_features checked it: a run started on the folder meanwhile
        raise FeatxError(
            f"{who}: cannot open {manifest} ({error.strerror or type(error).__name__}): a featx-extract run on the "
            f"folder removes it while it works; {_READ_AGAIN}"
        ) from None
    with opened as lines:
        for number, raw in enumerate(iter(lambda: lines.readline(_MAX_RECORD_BYTES + 1), b""), start=1):
            try:
                if len(raw) > _MAX_RECORD_BYTES:
                    raise ValueError("the line is too long")
                if not raw.strip():
                    continue
                entry = json.loads(raw.decode("utf-8"))
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                    raise ValueError("not an object with a path")
                _identity(entry.get("identity"))
                if "skipped" in entry and not isinstance(entry["skipped"], str):
                    raise ValueError(f"skipped {quoted(entry['skipped'])} is not a reason")
                if "skipped" not in entry:
                    shard, row = entry.get("shard"), entry.get("row")
                    if not (isinstance(shard, str) and _MANIFEST_SHARD.match(shard)):
                        raise ValueError(
                            f"shard {quoted(shard)} is not a file {SHARD_DIR}/shard-rNNN-NNNNN.safetensors"
                        )
                    if type(row) is not int or row < 0:
                        raise ValueError(f"row {quoted(row)} is not a row number")
            except (ValueError, UnicodeDecodeError, RecursionError) as error:
                raise FeatxError(
                    f"{who}: {manifest} line {number} is not a featx-extract manifest entry ({error}); rerun the same "
                    "featx-extract command to rebuild the manifest"
                ) from None
            if previous is not None and entry["path"] <= previous:
                raise FeatxError(
                    f"{who}: {manifest} line {number} lists {entry['path']!r} after {previous!r}: a manifest lists "
                    "each file once, in path order; rerun the same featx-extract command to rebuild it"
                )
            previous = entry["path"]
            count += 1
            if count > recorded:
                past = f"{manifest} line {number} is an entry past the {recorded} that {info} records"
                raise _other_length(past, who)
            yield number, entry
    if count < recorded:
        raise _other_length(f"{manifest} ends after {count} entries, and {info} records {recorded}", who)


def _other_length(what: str, who: str) -> FeatxError:
    """The error for a manifest of another length than the settings file records (``what`` says how)."""
    return FeatxError(
        f"{who}: {what}: the manifest was cut short or altered, or another featx-extract run rewrote it while it was "
        "read; rerun the same featx-extract command to rebuild it"
    )


#: what a reader meeting a run's work in progress is told
_READ_AGAIN = "read again once the run has finished"


def read_features(
    output_dir: str | os.PathLike, outputs: Optional[Sequence[str]] = None
) -> Iterator[Tuple[str, Dict[str, Tensor]]]:
    """Iterate ``(image path, {output name: tensor})`` over a finished ``featx-extract`` output folder, in path order,
    outputs shallow to deep; skipped files are left out. ``outputs`` (a list or tuple) picks some of the stored
    outputs, in the order it names them. Anything in the folder that is not as featx wrote it (a damaged settings
    file, manifest line or shard) is a FeatxError naming the file.

    Every row comes from a shard of the folder's own collection, made with the settings ``featx-extract.json``
    records, with the dtype and shapes the manifest gives: a shard copied or linked in from another folder, written
    by a run that overwrote the folder during the iteration, or described by a settings file edited since, is
    refused. Each shard's record is parsed and checked once, however often the shard is reopened.

    The folder and ``outputs`` are checked when it is called, before the first row is read; a manifest holding fewer
    or more entries than the settings file records (cut short, or lengthened) is refused where the iteration meets
    its end or the entry past the number.

    Example: ``dict(featx.read_features("out", outputs=["p5"]))``.
    """
    who = "read_features()"
    root = utf8_path(path_argument(output_dir, f"{who}: output_dir"), f"{who}: output_dir")
    record = FeatureStore(root).record(who) if root.is_dir() else None
    if record is None and os.path.lexists(root / SHARD_DIR):
        raise FeatxError(
            f"{who}: {root} has no {INFO_FILE} beside its {SHARD_DIR}: a featx-extract run on it is making its "
            f"features anew ({_READ_AGAIN}), or was stopped while it did (rerun it to finish)"
        )
    if record is None:
        raise FeatxError(f"{who}: {root} has no {INFO_FILE}: it is not a featx-extract output folder")
    if record.collection is None:
        raise FeatxError(
            f"{_earlier_featx(root / INFO_FILE, record, who)}; rerun featx-extract on it with extract.overwrite=true "
            "to redo its features with this featx"
        )
    manifest = root / MANIFEST_FILE
    if os.path.lexists(manifest):
        _check_plain_file(manifest, who)
    else:
        raise FeatxError(
            f"{who}: {root} has no {MANIFEST_FILE}: its run has not finished (rerun the same featx-extract command to "
            "resume it)"
        )
    if record.entries is None:
        raise FeatxError(
            f"{who}: {root / INFO_FILE} does not record how many entries {manifest} holds (a featx-extract run on "
            "the folder has not finished, the settings file was edited, or the manifest copied in): read again once "
            "the run has finished, or rerun the same featx-extract command to rebuild the manifest"
        )
    stored = record.settings["outputs"]
    names = list(outputs) if isinstance(outputs, (list, tuple)) else None if outputs is not None else list(stored)
    if names is None or not names or not all(isinstance(name, str) for name in names) or len(set(names)) < len(names):
        raise ArgumentError(
            f"{who}: outputs must be a list of distinct output names such as {stored[-1:]} (in the order the rows "
            f"give them), or None for all; got {quoted(outputs)}"
        )
    unknown = [name for name in names if name not in stored]
    if unknown:
        shown = ", ".join(quoted(name) for name in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise ArgumentError(f"{who}: outputs [{shown}] are not stored there; stored: {', '.join(stored)}")
    return _rows(root, manifest, names, record, who)


def _rows(
    root: Path, manifest: Path, names: List[str], record: Recorded, who: str
) -> Iterator[Tuple[str, Dict[str, Tensor]]]:
    """The rows :func:`read_features` yields, once its arguments and the folder are checked."""
    # the shards read last stay open, a few per rank: the manifest lists rows in path order, and the ranks took the
    # paths in turn, so consecutive rows come from every rank's current shard; the others are closed, so a folder
    # of many shards never holds many files and maps open at once
    ranks = {match.group(1) for shard in FeatureStore(root).shards(who) if (match := _SHARD_NAME.match(shard.name))}
    capacity = _OPEN_SHARDS * max(len(ranks), 1)
    named = record.settings.get("dtype")
    dtype = DTYPES.get(named) if isinstance(named, str) else None
    if dtype is None:
        raise FeatxError(
            f"{who}: {root / INFO_FILE} gives the features' dtype as {quoted(named)}, none featx "
            f"writes ({', '.join(DTYPES)}): the file is not as featx wrote it; rerun featx-extract with "
            "extract.overwrite=true to make the features anew"
        )
    opened: "OrderedDict[str, Tuple[ExitStack, Any, List[StoredFile]]]" = OrderedDict()
    checked = _CheckedRecords(record.collection, record.digest, who)
    assert record.entries is not None  # read_features refuses a settings file without it
    try:
        for number, entry in _manifest_entries(manifest, record.entries, who):
            where = f"{manifest} line {number}"
            if "skipped" in entry:
                continue
            shard, row = entry["shard"], entry["row"]
            if shard in opened:
                opened.move_to_end(shard)
            else:
                if len(opened) >= capacity:
                    opened.popitem(last=False)[1][0].close()
                stack = ExitStack()
                try:
                    _check_plain_file(root / shard, who)
                    handle = stack.enter_context(_open_shard(root / shard, who))
                    opened[shard] = stack, handle, checked.images(handle, root / shard)
                except BaseException:
                    stack.close()
                    raise
            _, handle, images = opened[shard]
            _check_row(entry, images, where, who)
            yield entry["path"], _checked_row(_row(handle, names, row, where, who), entry, dtype, where, who)
    finally:
        for stack, _, _ in opened.values():
            stack.close()


class _CheckedRecords:
    """The records :func:`read_features` has parsed and checked, by shard, with the images they list: a shard closed
    and reopened (more shards interleave in path order than stay open) is not parsed and checked again while its file
    holds the same record. The least recently used are dropped past :data:`_CHECKED_RECORD_CHARS` of record text."""

    def __init__(self, collection: Optional[str], digest: str, who: str) -> None:
        self.collection, self.digest, self.who = collection, digest, who
        self._records: "OrderedDict[Path, Tuple[str, List[StoredFile]]]" = OrderedDict()
        self._chars = 0

    def images(self, handle: Any, shard: Path) -> List[StoredFile]:
        """The images the record of ``shard`` (open as ``handle``) lists, row by row; FeatxError naming the shard if
        its record is not featx's, or belongs to another collection or settings, or its tensors do not hold a row
        for each image."""
        text = handle.metadata()[METADATA_KEY]
        known = self._records.pop(shard, None)
        if known is not None:
            self._chars -= len(known[0])
        if known is None or known[0] != text:  # a file replaced since is checked anew
            known = text, _shard_images(text, shard, self.collection, self.digest, self.who)
        self._records[shard] = known
        self._chars += len(text)
        while self._chars > _CHECKED_RECORD_CHARS and len(self._records) > 1:
            self._chars -= len(self._records.popitem(last=False)[1][0])
        try:
            _row_shapes(handle, len(known[1]))
        except ValueError as error:
            raise _unreadable(shard, error, self.who) from None
        return known[1]


def _shard_images(text: str, shard: Path, collection: Optional[str], digest: str, who: str) -> List[StoredFile]:
    """The images a shard's record ``text`` lists, row by row; FeatxError naming the shard if the record is not
    featx's, or belongs to another collection or settings."""
    try:
        record = json.loads(text)
        _check_collection(record, collection, shard, who)
        _check_settings_digest(record, digest, shard, who)
        return [one for one in _shard_files(record, "") if one.row >= 0]
    except (ValueError, RecursionError) as error:
        raise _unreadable(shard, error, who) from None


def _unreadable(shard: Path, error: Exception, who: str) -> FeatxError:
    return FeatxError(
        f"{who}: the shard {shard} is unreadable ({error}); delete it and rerun featx-extract to redo its images"
    )


def _check_row(entry: Mapping[str, Any], images: Sequence[StoredFile], where: str, who: str) -> None:
    """FeatxError unless the shard holds the features of the manifest entry's file (same path and identity) at the
    entry's row: a manifest left beside shards it does not describe must not hand out another image's features."""
    row = entry["row"]
    held = images[row] if row < len(images) else None
    identity = entry.get("identity")
    if held is None or held.path != entry["path"] or list(held.identity or []) != list(identity or []):
        holds = "no image" if held is None else f"the features of {held.path!r} ({list(held.identity or [])})"
        raise FeatxError(
            f"{who}: {where} gives {entry['path']!r} ({quoted(identity)}) at row {row} of {entry['shard']}, "
            f"which holds {holds} there: the manifest does not describe the shards; rerun the same featx-extract "
            "command to rebuild it"
        )


def _row(handle: Any, names: Sequence[str], row: int, where: str, who: str) -> Dict[str, Tensor]:
    """Row ``row`` of each output in a shard; FeatxError naming ``where`` if the shard lacks it."""
    try:
        slices = {name: handle.get_slice(name) for name in names}
        for name, tensor_slice in slices.items():
            if row >= tensor_slice.get_shape()[0]:
                raise ValueError(f"output {name!r} has {tensor_slice.get_shape()[0]} rows, not row {row}")
        return {name: tensor_slice[row] for name, tensor_slice in slices.items()}
    except (SafetensorError, ValueError, OSError) as error:
        raise FeatxError(
            f"{who}: {where} points at data its shard does not hold ({error}); rerun the same featx-extract command "
            "to rebuild the manifest"
        ) from None


def _checked_row(
    features: Dict[str, Tensor], entry: Mapping[str, Any], dtype: Optional[torch.dtype], where: str, who: str
) -> Dict[str, Tensor]:
    """``features`` if each has the settings' dtype and the shape the manifest entry gives, else FeatxError."""
    shapes = entry.get("shapes")
    for name, tensor in features.items():
        shape = shapes.get(name) if isinstance(shapes, dict) else None
        if tensor.dtype != dtype or list(tensor.shape) != shape:
            raise FeatxError(
                f"{who}: {where}: the shard holds {name!r} as {str(tensor.dtype).replace('torch.', '')} "
                f"{list(tensor.shape)}, the manifest and settings give {quoted(shape)} in {quoted(str(dtype))}: the "
                "shard is not as featx wrote it; move it away and rerun featx-extract to redo its images"
            )
    return features
