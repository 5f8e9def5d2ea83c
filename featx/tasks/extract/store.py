"""An extraction's output folder: safetensors shards, a manifest, the settings they were made with.

Layout (``featx-extract`` writes it, :func:`read_features` reads it)::

    out/featx-extract.json     what the features are (backbone spec, outputs, pooling, transform, dtype)
    out/config.yaml            the resolved config of the last run
    out/shards/shard-r000-00001.safetensors   one tensor per output, row i = image i of the shard; the
                                              shard's metadata lists its images and the files skipped with it
    out/manifest.jsonl         one line per file: path, shard, row, shapes, dtype, or path and skipped reason
    out/.featx-extract.lock    held while a run writes here, so a second run on the folder is refused

A shard is written to a temporary name and renamed, so it is there whole or not at all; the shards are the record
of what is done (a rerun skips their images) and the manifest is rebuilt from them when a run finishes.

Example::

    for path, features in featx.read_features("out"):
        features["p5"].shape          # torch.Size([256]) with pooling avg
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from featx.errors import ArgumentError, FeatxError
from featx.files import write_atomically

INFO_FILE = "featx-extract.json"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.jsonl"
LOCK_FILE = ".featx-extract.lock"
SHARD_DIR = "shards"
OUTPUT_KEY = "extract.output"
METADATA_KEY = "featx_extract"
_SHARD_NAME = re.compile(r"^shard-r(\d{3,})-(\d{5,})\.safetensors$")
_PARTIAL_NAME = re.compile(r"^\.shard-r\d{3,}-\d{5,}\.safetensors(\.[A-Za-z0-9_]+)?\.partial$")


def _as_recorded(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """``settings`` as they read back from ``featx-extract.json`` (tuples become lists), for comparing."""
    return json.loads(json.dumps(settings))


def _differences(old: Any, new: Any, prefix: str = "") -> List[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [diff for key in keys for diff in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


@contextmanager
def _open_shard(shard: Path) -> Iterator[Any]:
    """``safe_open`` on a shard; an unreadable one is a FeatxError naming it and the way out."""
    try:
        with safe_open(str(shard), framework="pt") as handle:
            if METADATA_KEY not in (handle.metadata() or {}):
                raise ValueError("no featx-extract record in its metadata")
            yield handle
    except (SafetensorError, OSError, ValueError) as error:
        raise FeatxError(
            f"extract.output: the shard {shard} is unreadable ({error}); delete it and rerun to redo its images"
        ) from None


class FeatureStore:
    """The output folder ``root`` of an extraction; see the module docstring for its layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / SHARD_DIR

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

    def settings(self) -> Optional[Dict[str, Any]]:
        """The recorded settings (``featx-extract.json``), or ``None`` if the folder holds no featx features."""
        info = self.root / INFO_FILE
        return json.loads(info.read_text()) if info.is_file() else None

    def check_settings(self, settings: Mapping[str, Any], overwrite: bool) -> None:
        """Refuse (ArgumentError) to add features made with other settings, unless ``overwrite``."""
        recorded = self.settings()
        if recorded is None and self.shards() and not overwrite:
            raise ArgumentError(
                f"extract.output: {self.shard_dir} holds shards but {self.root / INFO_FILE} is missing (an "
                "interrupted overwrite?), so what they hold is unknown; set extract.overwrite=true to replace them"
            )
        if recorded is None or overwrite or recorded == _as_recorded(settings):
            return
        differing = ", ".join(_differences(recorded, _as_recorded(settings))[:6])
        raise ArgumentError(
            f"extract.output: {self.root} holds features made with other settings (differing: {differing}); "
            "choose another folder, or set extract.overwrite=true to replace them (only featx's files there are "
            "removed)"
        )

    def our_files(self) -> List[Path]:
        """The files featx wrote here (shards, partial shards, manifest, config, settings: the settings last, so an
        interrupted deletion leaves them describing whatever shards remain); nothing else."""
        files = []
        if self.shard_dir.is_dir():
            files += sorted(
                p for p in self.shard_dir.iterdir() if _SHARD_NAME.match(p.name) or _PARTIAL_NAME.match(p.name)
            )
        return files + [
            self.root / name for name in (MANIFEST_FILE, CONFIG_FILE, INFO_FILE) if (self.root / name).is_file()
        ]

    def prepare(self, settings: Mapping[str, Any], config_yaml: str, overwrite: bool) -> None:
        """Make the folder ready (run once, before any shard is written): with ``overwrite`` and other recorded
        settings remove featx's files (same settings: keep them and resume), always remove partial shards of killed
        runs, record the settings and the config."""
        self.check_settings(settings, overwrite)
        if overwrite and self.settings() != _as_recorded(settings):
            for path in self.our_files():
                path.unlink()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for path in self.shard_dir.iterdir():
            if _PARTIAL_NAME.match(path.name):
                path.unlink()
        settings_text = json.dumps(settings, indent=2, sort_keys=True)
        write_atomically(self.root / INFO_FILE, lambda p: p.write_text(settings_text), overwrite=True, what=OUTPUT_KEY)
        write_atomically(self.root / CONFIG_FILE, lambda p: p.write_text(config_yaml), overwrite=True, what=OUTPUT_KEY)

    def shards(self) -> List[Path]:
        """The finished shards, by rank then sequence number."""
        if not self.shard_dir.is_dir():
            return []
        return sorted(p for p in self.shard_dir.iterdir() if _SHARD_NAME.match(p.name))

    @staticmethod
    def _shard_record(shard: Path) -> Dict[str, Any]:
        with _open_shard(shard) as handle:
            return json.loads(handle.metadata()[METADATA_KEY])

    def finished_paths(self) -> Set[str]:
        """Every file a shard accounts for, as an image or as skipped."""
        done: Set[str] = set()
        for shard in self.shards():
            record = self._shard_record(shard)
            done.update(record["images"])
            done.update(path for path, _ in record["skipped"])
        return done

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
        images: Sequence[str],
        skipped: Sequence[Tuple[str, str]],
    ) -> Path:
        """Write one shard atomically: ``tensors[name][i]`` belongs to ``images[i]``."""
        path = self.shard_dir / f"shard-r{rank:03d}-{sequence:05d}.safetensors"
        record = {"images": list(images), "skipped": [list(entry) for entry in skipped]}
        contiguous = {name: t.contiguous() for name, t in tensors.items()}
        metadata = {METADATA_KEY: json.dumps(record)}
        write_atomically(
            path,
            lambda partial: save_file(contiguous, str(partial), metadata=metadata),
            overwrite=False,
            what=OUTPUT_KEY,
        )
        return path

    def write_manifest(self) -> Tuple[int, int]:
        """Rebuild ``manifest.jsonl`` from the shards (sorted by path, each file once); returns (images, skipped)."""
        entries: Dict[str, Dict[str, Any]] = {}
        dtype = (self.settings() or {}).get("dtype")
        for shard in self.shards():
            relative = f"{SHARD_DIR}/{shard.name}"
            with _open_shard(shard) as handle:
                record = json.loads(handle.metadata()[METADATA_KEY])
                shapes = {name: list(handle.get_slice(name).get_shape()[1:]) for name in handle.keys()}
            for row, image in enumerate(record["images"]):
                entries.setdefault(
                    image, {"path": image, "shard": relative, "row": row, "shapes": shapes, "dtype": dtype}
                )
            for image, reason in record["skipped"]:
                entries.setdefault(image, {"path": image, "skipped": reason})
        lines = [json.dumps(entries[path]) for path in sorted(entries)]
        text = "".join(line + "\n" for line in lines)
        write_atomically(self.root / MANIFEST_FILE, lambda p: p.write_text(text), overwrite=True, what=OUTPUT_KEY)
        skipped = sum("skipped" in entry for entry in entries.values())
        return len(entries) - skipped, skipped


def read_features(
    output_dir: str | os.PathLike, outputs: Optional[Sequence[str]] = None
) -> Iterator[Tuple[str, Dict[str, Tensor]]]:
    """Iterate ``(image path, {output name: tensor})`` over a finished ``featx-extract`` output folder, in path order,
    outputs shallow to deep; skipped files are left out. ``outputs`` picks some of the stored outputs.

    Example: ``dict(featx.read_features("out", outputs=["p5"]))``.
    """
    root = Path(output_dir)
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        raise FeatxError(
            f"read_features(): {root} has no {MANIFEST_FILE}: it is not a featx-extract output folder, or its run has "
            "not finished (rerun the same featx-extract command to resume it)"
        )
    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    settings = FeatureStore(root).settings()
    if settings is None:
        raise FeatxError(f"read_features(): {root} has no {INFO_FILE}: it is not a featx-extract output folder")
    stored = settings["outputs"]
    names = list(stored if outputs is None else outputs)
    unknown = [name for name in names if name not in stored]
    if unknown:
        raise ArgumentError(f"read_features(): outputs {unknown} are not stored there; stored: {', '.join(stored)}")
    with ExitStack() as stack:
        handles: Dict[str, Any] = {}
        for entry in entries:
            if "skipped" in entry:
                continue
            shard = entry["shard"]
            if shard not in handles:
                handles[shard] = stack.enter_context(safe_open(str(root / shard), framework="pt"))
            handle = handles[shard]
            yield entry["path"], {name: handle.get_slice(name)[entry["row"]] for name in names}
