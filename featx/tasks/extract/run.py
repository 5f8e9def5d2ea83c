"""Run a backbone over image files and store the features (what ``featx-extract`` does), on one process or many.

Under ``torchrun --nproc_per_node=N`` every rank takes the files whose index in the sorted listing is ``rank`` modulo
``N``, writes its own shards, and rank 0 merges the manifest at the end. Files already in a shard are skipped, so a
killed run resumes where it stopped. Example::

    options = ExtractOptions(input="photos/", output="feats/", pooling="avg")
    summary = extract(featx.load_spec("resnet50"), options)
    summary.images, summary.skipped                # files with features, files skipped (see the manifest)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from omegaconf import MISSING, ListConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from featx.construct.builder import build
from featx.construct.device import resolve_device
from featx.errors import ArgumentError, FeatxError, InputShapeError, WeightsError
from featx.files import path_argument, printable_path, utf8_path
from featx.models.published_weights import published_weights_file, published_weights_id
from featx.models.weights_enums import is_weights_file
from featx.nn.backbone import Backbone
from featx.spec.apps import ExtractOptions
from featx.spec.keys import suggest
from featx.spec.limits import MAX_BATCH, MAX_SIDE, check_batch_pixels, expand_home, unknown_home
from featx.spec.schema import BackboneSpec
from featx.tasks.extract.decode import ImageBatch, ImageFiles, collate_images
from featx.tasks.extract.device_decode import (
    DeviceJpegDecoder,
    JpegFiles,
    check_device_decoder,
    check_tensor_transform,
    collate_jpegs,
)
from featx.tasks.extract.listing import Identity, ImageListing, file_identity
from featx.tasks.extract.ranks import (
    check_same_settings,
    listing_of_rank_zero,
    local_rank,
    output_lock,
    ranks_fail_together,
    start_distributed,
    torchrun_environment,
    total_over_ranks,
)
from featx.tasks.extract.store import DTYPES, SHARD_RECORD_BUDGET, FeatureStore
from featx.tasks.extract.transforms import TRANSFORMS, ImageTransform, image_transform, resolve_transform_name

POOLINGS = ("none", "avg", "max")
DECODERS = ("cpu", "gpu")
log = logging.getLogger("featx.extract")


@dataclass(frozen=True)
class ExtractSummary:
    """What the output folder holds after the run (``images``, ``skipped``; counted on rank 0 only) and how many
    files this run processed (all ranks) in how many seconds."""

    images: int
    skipped: int
    processed: int
    seconds: float


#: the most DataLoader workers, and images per shard
MAX_WORKERS = 256
MAX_SHARD_SIZE = 1_000_000
#: the most feature bytes a shard holds, whatever ``shard_size`` says, unless one image's alone are more (that shard
#: then holds the one image)
MAX_SHARD_BYTES = 512 << 20


def path_option(options: ExtractOptions, key: str) -> str:
    """``extract.input`` or ``extract.output`` (``key``) as text: a str, or an ``os.PathLike`` giving one
    (``pathlib.Path("photos")``); ArgumentError naming the key when it is missing or of another type."""
    value = getattr(options, key)
    what = "folder or glob" if key == "input" else "folder"
    if value is None or (isinstance(value, str) and value in ("", MISSING)):
        raise ArgumentError(f"extract.{key}: missing; give a {what}")
    try:
        text = os.fspath(value) if isinstance(value, os.PathLike) else value
    except TypeError:  # an __fspath__ that gives neither str nor bytes
        text = None
    if not isinstance(text, str):
        raise ArgumentError(
            f"extract.{key}: must be a {what} (a str or os.PathLike giving one), got {type(value).__name__} "
            f"{value!r:.80}"
        )
    return text


def check_options(options: ExtractOptions) -> None:
    """ArgumentError naming the ``extract.*`` key of the first invalid option."""
    for key in ("input", "output"):
        home = unknown_home(path_option(options, key))
        if home is not None:
            raise ArgumentError(f"extract.{key}: {home}")
    for key, choices in (
        ("pooling", POOLINGS),
        ("dtype", tuple(DTYPES)),
        ("transform", TRANSFORMS),
        ("decode", DECODERS),
    ):
        value = getattr(options, key)
        if value not in choices:
            raise ArgumentError(
                f"extract.{key}: unknown {value!r} (valid: {', '.join(choices)}){suggest(str(value), list(choices))}"
            )
    for key, least, most in (
        ("batch_size", 1, MAX_BATCH),
        ("shard_size", 1, MAX_SHARD_SIZE),
        ("workers", 0, MAX_WORKERS),
    ):
        value = getattr(options, key)
        if type(value) is not int or not least <= value <= most:
            raise ArgumentError(f"extract.{key}: must be an integer in {least}..{most}, got {value!r}")
    for key in ("overwrite", "progress"):
        if not isinstance(getattr(options, key), bool):
            raise ArgumentError(f"extract.{key}: must be true or false, got {getattr(options, key)!r:.80}")
    outputs = options.outputs
    if outputs is not None and not (
        isinstance(outputs, (list, tuple, ListConfig)) and all(isinstance(name, str) for name in outputs)
    ):
        raise ArgumentError(
            f"extract.outputs: must be a list of output names (['c5']), or null for all, got {outputs!r:.80}"
        )
    size = list(options.size) if isinstance(options.size, (list, tuple)) else options.size
    if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int and 1 <= s <= MAX_SIDE for s in size)):
        raise ArgumentError(f"extract.size: expected [height, width] of integers in 1..{MAX_SIDE}, got {size!r}")
    if options.workers:
        check_worker_temp_dir(options.workers)


#: the longest path of a Unix socket (``sun_path``: 108 bytes on Linux, 104 on macOS, with the terminating NUL)
_SOCKET_PATH_LIMIT = 107 if sys.platform.startswith("linux") else 103
#: what multiprocessing adds to the temp dir for the sockets that hand batches from workers to the loader
_SOCKET_SUFFIX = "/pymp-xxxxxxxx/listener-xxxxxxxx"


def check_worker_temp_dir(workers: int) -> None:
    """DataLoader workers pass each batch's file descriptors through a socket under the temp dir; where that path is
    too long for a socket, every worker fails and the loader would wait forever. ArgumentError instead."""
    temp_dir = tempfile.gettempdir()
    length = len(os.fsencode(temp_dir)) + len(_SOCKET_SUFFIX)
    if length > _SOCKET_PATH_LIMIT:
        raise ArgumentError(
            f"extract.workers: {workers} worker processes hand batches over through sockets in the temp dir "
            f"{temp_dir}, whose path is too long for a socket ({length} > {_SOCKET_PATH_LIMIT} bytes); set TMPDIR "
            "to a shorter folder, or extract.workers=0"
        )


def _rank_device(spec: BackboneSpec) -> torch.device:
    """The spec's device; under torchrun with CUDA, this process's GPU (``cuda:LOCAL_RANK``), made current."""
    device = resolve_device(spec.device)
    if device.type == "cuda" and torchrun_environment()[0] > 1:
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return device


def _selected_outputs(backbone: Backbone, names: Optional[Sequence[str]]) -> List[str]:
    available = [info.name for info in backbone.feature_info]
    if names is None:
        return available
    if not names:
        raise ArgumentError(f"extract.outputs: empty list; use null for all ({', '.join(available)})")
    for position, name in enumerate(names):
        if name not in available:
            raise ArgumentError(
                f"extract.outputs: {backbone.spec.model} has no output {name!r}{suggest(str(name), available)} "
                f"(outputs: {', '.join(available)})"
            )
        if name in names[:position]:  # as backbone.out_features refuses it: a typo for another output, perhaps
            raise ArgumentError(f"extract.outputs: {name!r} is listed twice; name each output once")
    return [name for name in available if name in names]


def _pool(features: Tensor, pooling: str) -> Tensor:
    if pooling == "avg":
        return features.mean(dim=(2, 3))
    if pooling == "max":
        return features.amax(dim=(2, 3))
    return features


def _entry_bytes(entry: object) -> int:
    """The size of ``entry`` in a shard's JSON record (with its separator)."""
    return len(json.dumps(entry)) + 2


class _ShardBuffer:
    """Rows waiting to be written; every ``shard_size`` images become one shard of this rank, fewer where their
    features would pass :data:`MAX_SHARD_BYTES` (full maps: ``pooling: none``) or their file entries (long paths)
    the shard record's :data:`SHARD_RECORD_BUDGET`, which the reader's bound on a record keeps readable."""

    def __init__(self, store: FeatureStore, rank: int, shard_size: int) -> None:
        self.store, self.rank, self.shard_size = store, rank, shard_size
        self.sequence = store.next_sequence(rank)
        self.chunks: Dict[str, List[Tensor]] = {}
        self.images: List[Tuple[str, Identity]] = []
        self.skipped: List[Tuple[str, str, Optional[Identity]]] = []
        self.fallbacks: Dict[str, str] = {}
        self.image_bytes: List[int] = []  # each buffered image's entries in the record (its fallback's too)
        self.skipped_bytes = 0

    def add(
        self,
        images: List[Tuple[str, Identity]],
        features: Dict[str, Tensor],
        skipped: List[Tuple[str, str, Optional[Identity]]],
        fallbacks: Dict[str, str],
    ) -> None:
        for path, reason, identity in skipped:
            size = _entry_bytes([path, reason, list(identity) if identity else None])
            if self.skipped and self.skipped_bytes + size > SHARD_RECORD_BUDGET:
                self.flush(0)
            self.skipped.append((path, reason, identity))
            self.skipped_bytes += size
        self.images += images
        self.fallbacks.update(fallbacks)
        self.image_bytes += [
            _entry_bytes([path, *identity]) + (_entry_bytes([path, fallbacks[path]]) if path in fallbacks else 0)
            for path, identity in images
        ]
        for name, rows in features.items():
            self.chunks.setdefault(name, []).append(rows)
        if features and len(images):
            per_image = sum(rows[0].numel() * rows.element_size() for rows in features.values())
            self.shard_size = min(self.shard_size, max(1, MAX_SHARD_BYTES // max(per_image, 1)))
        while len(self.images) >= self.shard_size or self.skipped_bytes + sum(self.image_bytes) > SHARD_RECORD_BUDGET:
            self.flush(min(self.shard_size, self._fitting()))

    def _fitting(self) -> int:
        """How many buffered images fit in one record beside the buffered skipped files (one at least, when no
        skipped file is buffered: a record always takes one entry)."""
        total = self.skipped_bytes
        for count, size in enumerate(self.image_bytes):
            total += size
            if total > SHARD_RECORD_BUDGET:
                return count if count or self.skipped else 1
        return len(self.image_bytes)

    def flush(self, count: Optional[int] = None) -> None:
        """Write the first ``count`` buffered images (all: ``None``) and every buffered skipped file as a shard."""
        if not self.images and not self.skipped:
            return
        count = len(self.images) if count is None else count
        merged = {name: torch.cat(chunks) for name, chunks in self.chunks.items()}
        written = self.images[:count]
        fallbacks = {path: self.fallbacks.pop(path) for path, _ in written if path in self.fallbacks}
        tensors = {n: t[:count] for n, t in merged.items()}
        self.store.write_shard(self.rank, self.sequence, tensors, written, self.skipped, fallbacks)
        self.sequence += 1
        self.chunks = {name: [t[count:]] for name, t in merged.items() if len(t) > count}
        self.images, self.skipped = self.images[count:], []
        self.image_bytes, self.skipped_bytes = self.image_bytes[count:], 0


def _weights_file(spec: BackboneSpec) -> Optional[Path]:
    """The file the build reads ``spec``'s weights from (the local file it names, or the hub's cached file of the
    published weights it names), None without weights."""
    if spec.weights is None:
        return None
    if is_weights_file(spec.weights):
        return Path(expand_home(spec.weights))
    return published_weights_file(spec.model, spec.weights)


def _weights_identity(path: Optional[Path]) -> Optional[Identity]:
    """The identity (size, modification time, inode) of the weights file, taken before and after the build, so a
    file rewritten meanwhile is refused."""
    return None if path is None else file_identity(path)


def _weights_digest(path: Path) -> Optional[str]:
    """The BLAKE2b digest of a weights file's bytes (what the features depend on, whichever copy holds them: each
    node of a multi-node run has its own, ``rsync -a`` makes another, a hub cache file replaced later is another
    network under the same name), or None if it cannot be read (the identity check after it then refuses the run)."""
    digest = hashlib.blake2b()
    try:
        with open(path, "rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _settings(spec: BackboneSpec, outputs: List[str], options: ExtractOptions, transform: object) -> dict:
    """What the stored features depend on (not where they were computed, nor batch size or workers, nor which
    stages are frozen: freezing changes training only, and the eval-mode features are the same)."""
    backbone = {
        k: v for k, v in dataclasses.asdict(spec).items() if k not in ("device", "channels_last", "frozen_stages")
    }
    transform_name = resolve_transform_name(options.transform, spec)
    if spec.weights is not None and not is_weights_file(spec.weights):  # DEFAULT may name other weights later
        backbone["weights"] = published_weights_id(spec.model, spec.weights)
        # the cached file, named as its hub names it (torch hub: checkpoints/<name with a hash of its content>;
        # Hugging Face hub: <revision>/<file>), since a hub repository may publish other weights under one tag
        cached = published_weights_file(spec.model, spec.weights)
        backbone["weights_file"] = "/".join(cached.parts[-2:])
        backbone["weights_digest"] = _weights_digest(cached)  # the hubs check a file's hash only as they download it
    elif spec.weights is not None:  # by content, not path: a copy elsewhere (each node's) is the same weights, a
        backbone["weights"] = "local file"  # file rewritten under the same name is not
        backbone["weights_file"] = _weights_digest(Path(expand_home(spec.weights)))
    settings = {
        "backbone": backbone,
        "outputs": outputs,
        "pooling": options.pooling,
        "transform": transform_name if transform_name != "weights" else repr(transform),
        "size": list(options.size) if transform_name != "weights" else None,
        "dtype": options.dtype,
    }
    if options.decode != "cpu":  # recorded only when not the default, so folders made before the key resume
        settings["decode"] = options.decode
    return settings


def _options_yaml(spec: BackboneSpec, options: ExtractOptions) -> str:
    return OmegaConf.to_yaml({"backbone": dataclasses.asdict(spec), "extract": dataclasses.asdict(options)})


def check_input_size(
    spec: BackboneSpec, transform: ImageTransform, name: str, batch_size: int, options_size: Sequence[int]
) -> None:
    """ArgumentError naming ``extract.size`` when the backbone cannot take the inputs ``transform`` makes, or a batch
    of them holds more pixels than the limit (the ``options_size`` given; ``extract.batch_size`` is named where the
    weights' own transform sets the size, ``extract.size`` being unused then): its structure alone is built (on the
    meta device, from the plan cache) and run, before the real build reads any weights and before the output folder
    is touched."""
    if name == "weights":
        height, width = transform(Image.new("RGB", (64, 48))).shape[-2:]
        size = (int(height), int(width))
        check_batch_pixels("extract.batch_size", batch_size, *size, size_key=None, batch_key="extract.batch_size")
    else:  # checked before the transform runs (a 16384x16384 crop of even a small image is a lot of memory)
        check_batch_pixels("extract.size", batch_size, options_size[0], options_size[1], size_key="extract.size")
        height, width = transform(Image.new("RGB", (64, 48))).shape[-2:]
        size = (int(height), int(width))
    try:
        build(dataclasses.replace(spec, device="meta"))(torch.empty(1, 3, *size, device="meta"))
    except InputShapeError as error:
        raise ArgumentError(f"extract.size: the {name} transform makes {size[0]}x{size[1]} inputs: {error}") from None


def _on_device(batches: Iterable[ImageBatch], device: torch.device) -> Iterator[ImageBatch]:
    """``extract.decode=cpu``: each batch the workers decoded, its images moved to ``device``."""
    for batch in batches:
        if batch.images is not None:
            batch.images = batch.images.to(device)
        yield batch


def _run_batches(
    backbone: Backbone,
    batches: Iterable[ImageBatch],
    paths: List[Path],
    outputs: List[str],
    options: ExtractOptions,
    buffer: _ShardBuffer,
    progress: tqdm,
) -> None:
    dtype = DTYPES[options.dtype]
    with torch.inference_mode():
        for batch in batches:
            features: Dict[str, Tensor] = {}
            if batch.images is not None:
                maps = backbone(batch.images)
                features = {name: _pool(maps[name], options.pooling).to("cpu", dtype) for name in outputs}
            skipped = [(str(paths[index]), reason, identity) for index, reason, identity in batch.failures]
            for path, reason, _ in skipped:
                log.warning("skipped %s: %s", printable_path(path), reason)
            images = [
                (str(paths[index]), identity) for index, identity in zip(batch.indices, batch.identities, strict=True)
            ]
            buffer.add(images, features, skipped, {str(paths[index]): why for index, why in batch.fallbacks.items()})
            progress.update(len(batch.indices) + len(batch.failures))


def _batches(
    paths: List[Path], transform: ImageTransform, options: ExtractOptions, device: torch.device
) -> Iterator[ImageBatch]:
    """The batches of ``paths``, decoded as ``extract.decode`` says, their images on ``device``."""
    on_gpu = options.decode == "gpu"
    loader = DataLoader(
        JpegFiles(paths, transform) if on_gpu else ImageFiles(paths, transform),
        batch_size=options.batch_size,
        num_workers=options.workers,
        collate_fn=collate_jpegs if on_gpu else collate_images,
        pin_memory=device.type == "cuda",
    )
    if on_gpu:
        decode = DeviceJpegDecoder(transform, device)
        return (decode(raw) for raw in loader)
    return _on_device(loader, device)


def _current_identities(listing: ImageListing) -> Dict[str, Optional[Identity]]:
    """Each listed file's identity now (after the run), so the manifest leaves out features of a changed file."""
    paths = [*listing.images, *(path for path, _ in listing.skipped)]
    return {str(path): file_identity(path) for path in paths}


def extract(spec: BackboneSpec, options: ExtractOptions, config_yaml: str = "") -> ExtractSummary:
    """Extract ``spec``'s features of every image under ``options.input`` into ``options.output``.

    ``config_yaml`` (the resolved app config; default: the spec and the options) is stored as ``featx-config.yaml`` next
    to the features. Raises
    :class:`ArgumentError` for bad options, an empty input, or an output folder holding other features.
    """
    check_options(options)
    options = dataclasses.replace(options, input=path_option(options, "input"))
    # ~ as in extract.input (a shell leaves it in extract.output=~/feats), and a name safetensors can open again
    output = utf8_path(path_argument(options.output, "extract.output"), "extract.output")
    options = dataclasses.replace(options, output=str(output))
    if os.path.lexists(options.output) and not Path(options.output).is_dir():
        raise ArgumentError(f"extract.output: {options.output} exists and is not a folder")
    source = expand_home(options.input)  # as the listing reads it
    if source.is_dir() and (
        os.path.abspath(source) == os.path.abspath(options.output)
        or (os.path.isdir(options.output) and os.path.samefile(source, options.output))  # through a link
    ):
        raise ArgumentError(
            f"extract.output: {options.output} is the input folder itself; give the features a folder of their own "
            "(a subfolder of the input is fine: it is left out of the input)"
        )
    device = _rank_device(spec)
    if device.type == "meta":
        raise ArgumentError(
            "backbone.device: 'meta' computes no values, so there are no features to extract; use auto, cpu or cuda"
        )
    if options.decode == "gpu":
        if device.type != "cuda":
            raise ArgumentError(
                f"extract.decode: gpu decodes JPEGs on the backbone's CUDA device, and backbone.device is "
                f"{device.type}; use extract.decode=cpu, or backbone.device=cuda"
            )
        check_device_decoder(device)
    rank, world, started = start_distributed(device)
    lock: Optional[ExitStack] = None
    try:
        with ranks_fail_together(world):
            transform = image_transform(options.transform, spec, options.size)
            transform_name = resolve_transform_name(options.transform, spec)
            # on meta, before any weights are read
            check_input_size(spec, transform, transform_name, options.batch_size, options.size)
            if options.decode == "gpu":
                check_tensor_transform(transform, transform_name)
            weights_file = _weights_file(spec)
            before = _weights_identity(weights_file)
            backbone = build(dataclasses.replace(spec, device=str(device))).eval()
            outputs = _selected_outputs(backbone, options.outputs)
            settings = _settings(spec, outputs, options, transform)
            if _weights_identity(weights_file) != before:  # the file the features are recorded against (in settings)
                raise WeightsError(
                    f"backbone.weights: {weights_file} changed while featx-extract read it; run again once it is "
                    "complete"
                )
        check_same_settings(settings, world)  # rank 0 records its own: another rank's network would mix in unseen
        listing = listing_of_rank_zero(options.input, options.output, rank, world)
        store = FeatureStore(Path(options.output))
        lock = output_lock(store, rank, world)  # before anything there is read or removed
        with ranks_fail_together(world):  # every rank has read the settings before rank 0 rewrites them
            store.check_settings(settings, options.overwrite)
        with ranks_fail_together(world):
            if rank == 0:
                store.prepare(settings, config_yaml or _options_yaml(spec, options), options.overwrite)

        with ranks_fail_together(world):  # an unreadable shard on one rank's view stops every rank
            done = {(stored.path, stored.identity) for stored in store.stored_files()}
        mine = [
            path
            for index, path in enumerate(listing.images)
            if index % world == rank and (str(path), listing.identities.get(str(path))) not in done
        ]
        not_images = [
            (str(path), reason, listing.identities.get(str(path)))
            for path, reason in listing.skipped
            if rank == 0 and (str(path), listing.identities.get(str(path))) not in done
        ]
        start = time.perf_counter()
        with ranks_fail_together(world):  # a rank that fails does not leave the others waiting for its count
            buffer = _ShardBuffer(store, rank, options.shard_size)
            buffer.add([], {}, not_images, {})
            for path, reason, _ in not_images:
                log.warning("skipped %s: %s", printable_path(path), reason)
            label = f"featx-extract rank {rank}/{world}" if world > 1 else "featx-extract"
            progress_shown = options.progress and rank == 0
            with tqdm(total=len(mine), unit="img", desc=label, disable=not progress_shown) as progress:
                try:
                    _run_batches(
                        backbone, _batches(mine, transform, options, device), mine, outputs, options, buffer, progress
                    )
                except MemoryError:  # raised by a worker while reading or decoding: no image is recorded as skipped
                    raise FeatxError(
                        "featx-extract: ran out of memory reading or decoding the images (with "
                        f"extract.workers={options.workers}, extract.batch_size={options.batch_size}); lower "
                        "them, or free memory; the shards written so far are kept and a rerun resumes"
                    ) from None
            buffer.flush()
        seconds = time.perf_counter() - start
        processed = total_over_ranks(len(mine) + len(not_images), world, device)
        images = skipped = outside = 0
        with ranks_fail_together(world):
            if rank == 0:
                images, skipped, outside = store.write_manifest(_current_identities(listing))
        if outside:
            log.warning(
                "the shards also hold %d file%s this input does not list (another extract.input, or files gone "
                "since); the manifest, and read_features, list this input's files only (a run on that input lists "
                "them again without computing them anew)",
                outside,
                "" if outside == 1 else "s",
            )
        return ExtractSummary(images=images, skipped=skipped, processed=processed, seconds=seconds)
    finally:
        if lock is not None:
            lock.close()
        if started:
            dist.destroy_process_group()
