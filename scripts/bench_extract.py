"""Extraction throughput: images/s of featx-extract (decode=cpu, decode=gpu) against a hand-written loop and against
decoding alone (the limit), on the same generated JPEGs.

    python scripts/bench_extract.py --device cuda --workers 16 --output docs/results/extract-gpu.md   # issue 17's goals
    python scripts/bench_extract.py --device cpu --images 200 --workers 2 --output docs/results/extract-cpu.md

Rows (each a fresh pass over all the images; the backbone is built and warmed up before the clock starts):

- decode alone, cpu: the DataLoader workers read, decode (Pillow) and transform; nothing else.
- decode alone, gpu: the workers read the files; the main process decodes them in batches on the GPU (nvJPEG) and
  transforms them there; nothing else.
- in memory, gpu: nvJPEG only / nvJPEG and the transform: the same batches, their files read beforehand (pinned),
  decoded (and transformed) in one process without a DataLoader: what the GPU side alone can do, the ceiling of the rows
  above. A pass is short here, so the decode rows also pay for starting the DataLoader workers.
- featx-extract decode=cpu / decode=gpu: ``featx.tasks.extract.run.extract`` into a new folder (the backbone's
  pooled outputs stored as shards; the time of its batch loop, as its summary reports).
- featx-extract decode=cpu, norm=eval: the same with BatchNorm in eval mode, as the hand-written loop has it
  (featx's default ``norm: frozen`` is torchvision's FrozenBatchNorm2d, a few elementwise ops per layer where an
  eval BatchNorm is one).
- hand-written loop: a Dataset of Pillow-decoded files, a DataLoader, torchvision's ResNet with its ``layer4``
  taken by ``IntermediateLayerGetter``, pooled and moved to the CPU; nothing stored.

The rows that start DataLoader workers (decode alone, hand-written loop) also report when their first batch arrived
and the rate of the batches after it (timed from when the first was handled): with few batches per worker, starting
the workers (forking a process that holds a CUDA context) can take much of a pass.

The decode=gpu rows need CUDA; on a machine without it they read "needs CUDA". Goals (issue 17, on an H200):
decode=gpu >= 0.8x decode alone on the GPU, and >= 3x decode=cpu.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torchvision
from arguments import check_page, check_rows_device, whole_number
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models._utils import IntermediateLayerGetter

import featx
from featx.files import write_generated_page
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.decode import ImageFiles, collate_images
from featx.tasks.extract.device_decode import DeviceJpegDecoder, JpegFiles, collate_jpegs, decoded_on
from featx.tasks.extract.run import extract
from featx.tasks.extract.transforms import image_transform

from machine import machine_description

TITLE = "# Extraction throughput (generated)"
#: the torchvision models whose ``layer4`` the hand-written loop takes
RESNET = re.compile(r"(resnet|resnext|wide_resnet)\d+(_\w+)?")
#: (row, the row its rate is divided by, goal or None): issue 17's goals, and featx against the hand-written loop
RATIOS: List[Tuple[str, str, Optional[float]]] = [
    ("featx-extract decode=gpu", "decode alone, gpu", 0.8),
    ("featx-extract decode=gpu", "featx-extract decode=cpu", 3.0),
    ("featx-extract decode=gpu", "in memory, gpu: nvJPEG and the transform", None),
    ("featx-extract decode=cpu", "hand-written loop", None),
    ("featx-extract decode=cpu, norm=eval", "hand-written loop", None),
    ("featx-extract decode=gpu", "hand-written loop", None),
]


def write_jpegs(folder: Path, count: int, seed: int = 0) -> List[Path]:
    """``count`` photo-like JPEGs of ImageNet-like sizes (about 500x375, quality 90), the same for one seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        height, width = int(rng.integers(330, 420)), int(rng.integers(450, 550))
        rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
        waves = [np.sin(rows / rng.uniform(4, 40) + rng.uniform(0, 6)) for _ in range(3)]
        waves = [w * np.cos(columns / rng.uniform(4, 40) + rng.uniform(0, 6)) for w in waves]
        noise = rng.normal(0, 0.08, (height, width, 3))
        pixels = np.clip((np.stack(waves, -1) + noise + 1) * 127.5, 0, 255).astype(np.uint8)
        paths.append(folder / f"{index:05d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


class _PillowFiles(Dataset):
    """The hand-written dataset: open, convert to RGB, transform."""

    def __init__(self, paths: List[Path], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


class Pass(NamedTuple):
    """A timed pass: seconds in all, and (with a DataLoader; None without) seconds until its first batch was ready
    and until that batch was handled."""

    seconds: float
    first_batch: Optional[float] = None
    first_handled: Optional[float] = None


def _timed(batches: Iterable[object], handle: Callable[[object], None], device: torch.device) -> Pass:
    """The pass that ``handle``s every batch (the clock starts before the first is asked for)."""
    start = time.perf_counter()
    first: Optional[float] = None
    handled: Optional[float] = None
    for batch in batches:
        if first is None:
            first = time.perf_counter() - start
        handle(batch)
        if handled is None:
            _synchronize(device)
            handled = time.perf_counter() - start
    _synchronize(device)
    return Pass(time.perf_counter() - start, first, handled)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_alone(paths: List[Path], transform: Callable, args: argparse.Namespace, on_gpu: bool) -> Pass:
    """The pass that reads, decodes and transforms every image (on the GPU: nvJPEG), and nothing else."""
    device = torch.device(args.device)
    dataset = JpegFiles(paths, transform) if on_gpu else ImageFiles(paths, transform)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collate_jpegs if on_gpu else collate_images,
        pin_memory=device.type == "cuda",
    )
    decode = DeviceJpegDecoder(transform, device)

    def check(batch: object) -> None:
        images = decode(batch).images if on_gpu else batch.images  # type: ignore[arg-type, attr-defined]
        assert images is not None and len(images)

    return _timed(loader, check, device)


def in_memory(paths: List[Path], transform: Callable, args: argparse.Namespace, with_transform: bool) -> Pass:
    """The pass that decodes (and transforms) every image on the GPU from batches read beforehand, in this process."""
    files = JpegFiles(paths, transform)
    batches = [
        collate_jpegs([files[index] for index in range(start, min(start + args.batch_size, len(paths)))])
        for start in range(0, len(paths), args.batch_size)
    ]
    device = torch.device(args.device)
    if device.type == "cuda":  # as the DataLoader rows hand them over
        batches = [batch.pin_memory() for batch in batches]
    decode = DeviceJpegDecoder(transform, device)
    start = time.perf_counter()
    for batch in batches:
        if with_transform:
            decode(batch)
        else:
            decoded_on(device, batch.jpeg_files())
    _synchronize(device)
    return Pass(time.perf_counter() - start)


def featx_extract(spec: featx.BackboneSpec, folder: Path, output: Path, args: argparse.Namespace, decode: str) -> Pass:
    """featx-extract's batch loop over ``folder`` (as its summary times it), written to the new folder ``output``."""
    options = ExtractOptions(
        input=str(folder),
        output=str(output),
        size=[args.size, args.size],
        batch_size=args.batch_size,
        workers=args.workers,
        outputs=["c5"],
        decode=decode,
        progress=False,
    )
    summary = extract(spec, options)
    if summary.images != args.images:
        raise SystemExit(f"bench_extract.py: featx-extract stored {summary.images} of {args.images} images")
    return Pass(summary.seconds)


def hand_written_loop(paths: List[Path], transform: Callable, args: argparse.Namespace) -> Pass:
    """The loop a user writes without featx (model built before the clock starts)."""
    device = torch.device(args.device)
    trunk = IntermediateLayerGetter(torchvision.models.get_model(args.model), {"layer4": "c5"}).eval().to(device)
    loader = DataLoader(
        _PillowFiles(paths, transform),
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    _warm_up(trunk, device, args.size)

    def pooled(batch: object) -> None:
        trunk(batch.to(device, non_blocking=True))["c5"].mean(dim=(2, 3)).cpu()  # type: ignore[attr-defined]

    with torch.inference_mode():
        return _timed(loader, pooled, device)


def _warm_up(module: nn.Module, device: torch.device, size: int) -> None:
    with torch.inference_mode():
        module(torch.zeros(2, 3, size, size, device=device))
    _synchronize(device)


def measure(args: argparse.Namespace, folder: Path) -> Dict[str, Optional[Pass]]:
    """The pass of each row (None: the row needs CUDA)."""
    paths = write_jpegs(folder / "images", args.images)
    spec = featx.load_spec(args.backbone, overrides=[f"device={args.device}"])
    eval_norm = featx.load_spec(args.backbone, overrides=[f"device={args.device}", "norm=eval"])  # as the loop's
    transform = image_transform("center_crop", spec, [args.size, args.size])
    _warm_up(featx.build(spec).eval(), torch.device(args.device), args.size)
    on_cuda = torch.device(args.device).type == "cuda"
    return {
        "decode alone, cpu": decode_alone(paths, transform, args, on_gpu=False),
        "decode alone, gpu": decode_alone(paths, transform, args, on_gpu=True) if on_cuda else None,
        "in memory, gpu: nvJPEG only": in_memory(paths, transform, args, with_transform=False) if on_cuda else None,
        "in memory, gpu: nvJPEG and the transform": (
            in_memory(paths, transform, args, with_transform=True) if on_cuda else None
        ),
        "featx-extract decode=cpu": featx_extract(spec, folder / "images", folder / "cpu", args, "cpu"),
        "featx-extract decode=cpu, norm=eval": featx_extract(eval_norm, folder / "images", folder / "ev", args, "cpu"),
        "featx-extract decode=gpu": (
            featx_extract(spec, folder / "images", folder / "gpu", args, "gpu") if on_cuda else None
        ),
        "hand-written loop": hand_written_loop(paths, transform, args),
    }


def _after_first_batch(one: Pass, images: int, batch_size: int) -> Optional[float]:
    """Images/s of the batches after the first, from when the first was handled to the end (None: no DataLoader, or
    nothing after the first batch)."""
    rest = images - min(batch_size, images)
    if one.first_handled is None or rest == 0:
        return None
    return rest / (one.seconds - one.first_handled)


def _rates(passes: Dict[str, Optional[Pass]], images: int) -> Dict[str, Optional[float]]:
    """Images/s of each row's whole pass (None: the row needs CUDA)."""
    return {row: None if one is None else images / one.seconds for row, one in passes.items()}


def _table(passes: Dict[str, Optional[Pass]], images: int, batch_size: int) -> str:
    rates = _rates(passes, images)
    lines = ["| row | images/s | first batch after (s) | images/s after the first batch |", "|---|---|---|---|"]
    for row, one in passes.items():
        if one is None:
            lines.append(f"| {row} | needs CUDA | needs CUDA | needs CUDA |")
            continue
        first = "-" if one.first_batch is None else f"{one.first_batch:.2f}"
        after = _after_first_batch(one, images, batch_size)
        lines.append(f"| {row} | {images / one.seconds:.1f} | {first} | {'-' if after is None else f'{after:.1f}'} |")
    lines += ["", "| images/s ratio | ratio | goal |", "|---|---|---|"]
    for row, reference, goal in RATIOS:
        rate, base = rates[row], rates[reference]
        ratio = None if rate is None or base is None else rate / base
        cell = "needs CUDA" if ratio is None else f"{ratio:.2f}"
        met = (
            "-"
            if goal is None
            else f">= {goal}: " + ("not measured" if ratio is None else ("met" if ratio >= goal else "not met"))
        )
        lines.append(f"| {row} / {reference} | {cell} | {met} |")
    return "\n".join(lines) + "\n"


def _where(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any work, a --backbone the hand-written loop cannot mirror, a --device not here (``auto``
    included: the rows name one device) and an --output that is a file of the user's (argparse's error, exit 2)."""
    try:
        spec = featx.load_spec(args.backbone)
    except featx.FeatxError as error:
        parser.error(f"argument --backbone: {error}")
    spec = check_rows_device(parser, args.backbone, args.device)
    if RESNET.fullmatch(spec.model) is None or "c5" not in spec.stages:
        parser.error(
            f"argument --backbone: {args.backbone!r} builds {spec.model!r}; the hand-written loop takes layer4 of a "
            "torchvision ResNet: give a packaged spec of one with a c5 stage, e.g. resnet50 or resnext50_32x4d"
        )
    args.model = spec.model
    if args.output is not None:
        check_page(parser, args.output, TITLE, "--output")


def main(argv: Optional[List[str]] = None) -> Tuple[Dict[str, Optional[float]], str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=whole_number(1, 100_000), default=2000)
    parser.add_argument("--workers", type=whole_number(0, 256), default=16)
    parser.add_argument("--batch-size", type=whole_number(1, 4096), default=64)
    parser.add_argument("--size", type=whole_number(32, 4096), default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50", help="a packaged spec of a torchvision ResNet")
    parser.add_argument("--output", type=Path, help="also write the tables as a markdown page")
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="featx-bench-extract-") as name:
        passes = measure(args, Path(name))
    header = (
        f"{args.images} JPEGs (about 500x375), {args.backbone} at {args.size}x{args.size}, batch {args.batch_size}, "
        f"{args.workers} workers; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{_where(args.device)}"
    )
    rates = _rates(passes, args.images)
    table = _table(passes, args.images, args.batch_size)
    print(header + "\n\n" + table)
    if args.output:
        command = shlex.join(["python", "scripts/bench_extract.py", *(sys.argv[1:] if argv is None else argv)])
        page = (
            f"{TITLE}\n\nWritten by `{command}` on {machine_description()}; {time.strftime('%Y-%m-%d')}.\n"
            f"Do not edit: rerun the command. {header}.\n\n{table}"
        )
        try:
            write_generated_page(args.output, page, "--output")
        except featx.FeatxError as error:
            raise SystemExit(f"bench_extract.py: error: {error}") from None
        print(f"wrote {args.output}")
    return rates, table


if __name__ == "__main__":
    main()
