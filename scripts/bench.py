"""featx's benchmark: build time, peak memory, forward time, channels_last and inspect time, each side by side
with torchvision's own way of doing the same, measured in one run. No timing is asserted anywhere.

- build: a fresh Python process per measurement (imports excluded), alternating between the sides; peak RSS growth
  from /proc/self/status (Linux). Sides: torchvision's constructor, featx (random init), featx with weights from a
  local file, and just reading that file with torch.load.
- forward: featx's module and the reference extractor (same weights) interleaved A, B, A, B after warm-up; medians.
  References: features[a:b] blocks (vgg16), IntermediateLayerGetter (resnet34), resnet_fpn_backbone
  (resnet50_fpn), and torchvision's create_feature_extractor at the same nodes (mobilenet_v3_large, convnext_tiny).
- channels_last: resnet50_fpn with channels_last: true against the same module in NCHW.
- inspect: featx.build(name, device=meta) plus a meta forward, what `featx run=false` does, in a fresh process.

    python scripts/bench.py                          # everything; tables on stdout, JSON to $TMPDIR/featx-bench.json
    python scripts/bench.py --repeats 9 --output docs/results/cpu.md   # the page docs/results.md links to
    python scripts/bench.py --repeats 3 --batches 1  # a quick run
    python scripts/bench.py --device cuda --sections forward channels_last --repeats 100 --warmup 30 --batches 1 8 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import featx
from featx.files import write_generated_page

from machine import machine_description

#: packaged backbone -> (torchvision classifier, how the reference extractor is made)
CASES = {
    "vgg16": ("vgg16", "features[a:b] in sequence"),
    "resnet34": ("resnet34", "IntermediateLayerGetter"),
    "resnet50_fpn": ("resnet50", "resnet_fpn_backbone"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "create_feature_extractor"),
    "convnext_tiny": ("convnext_tiny", "create_feature_extractor"),
}
INSPECT_EXTRA = ["regnet_y_128gf"]
BUILD_KINDS = ("torchvision", "featx", "featx + weights", "read checkpoint")
SECTIONS = ("forward", "channels_last", "build", "inspect")

BUILD_CHILD = r"""
import json, sys, time
import torch, torchvision, featx
kind, name, model, weights = sys.argv[1:5]

def rss_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak (VmHWM) to the current RSS, so imports do not count
before = rss_kib("VmRSS:")
start = time.perf_counter()
if kind == "torchvision":
    torchvision.models.get_model(model, weights=None)
elif kind == "read checkpoint":
    torch.load(weights, map_location="cpu", weights_only=True)
elif kind == "inspect":
    backbone = featx.build(name, overrides=["device=meta"])
    size = backbone.spec.input_size or (224, 224)
    backbone(torch.empty(1, 3, *size, device="meta"))
else:
    featx.build(name, overrides=["device=cpu"] + ([f"weights='{weights}'"] if kind == "featx + weights" else []))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": (rss_kib("VmHWM:") - before) / 1024}))
"""


class SlicedFeatures(nn.Module):
    """The hand-written extractor featx replaces: ``features[a:b]`` blocks applied in sequence."""

    def __init__(self, features: nn.Sequential, bounds: List[Tuple[int, int]]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(features[start:end] for start, end in bounds)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        outputs = OrderedDict()
        for index, block in enumerate(self.blocks):
            x = block(x)
            outputs[f"c{index + 1}"] = x
        return outputs


def _child(kind: str, name: str, model: str, weights: Path) -> Dict[str, float]:
    command = [sys.executable, "-c", BUILD_CHILD, kind, name, model, str(weights)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _medians(samples: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: statistics.median(sample[key] for sample in samples) for key in ("seconds", "peak_mib")}


def bench_builds(folder: Path, repeats: int) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    for name, (model, _) in CASES.items():
        weights = folder / f"{model}.pth"
        samples: Dict[str, List[Dict[str, float]]] = {kind: [] for kind in BUILD_KINDS}
        for _ in range(repeats):
            for kind in BUILD_KINDS:
                samples[kind].append(_child(kind, name, model, weights))
        medians = {kind: _medians(runs) for kind, runs in samples.items()}
        reference = medians["torchvision"]
        for kind in BUILD_KINDS:
            rows.append(
                {
                    "backbone": name,
                    "build": kind,
                    **medians[kind],
                    "time_ratio": medians[kind]["seconds"] / reference["seconds"],
                    "memory_ratio": medians[kind]["peak_mib"] / max(reference["peak_mib"], 1e-9),
                }
            )
    return rows


def bench_inspect(folder: Path, repeats: int) -> List[Dict[str, object]]:
    names = [*CASES, *INSPECT_EXTRA]
    return [
        {"backbone": name, **_medians([_child("inspect", name, "-", folder) for _ in range(repeats)])} for name in names
    ]


def _reference(name: str, classifier: nn.Module, backbone: featx.Backbone) -> nn.Module:
    how = CASES[name][1]
    if how == "features[a:b] in sequence":
        bounds = [tuple(stage.slice) for stage in backbone.spec.stages.values()]
        return SlicedFeatures(classifier.features, bounds)
    if how == "IntermediateLayerGetter":
        return IntermediateLayerGetter(classifier, {"layer3": "layer3"})
    if how == "resnet_fpn_backbone":
        reference = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, trainable_layers=3, extra_blocks=LastLevelMaxPool()
        )
        reference.body.load_state_dict(classifier.state_dict(), strict=False)
        reference.fpn.load_state_dict(backbone.neck.state_dict())
        return reference
    return create_feature_extractor(classifier, {stage.paths[-1]: stage.name for stage in backbone.stage_info})


def write_checkpoints(folder: Path) -> Dict[str, nn.Module]:
    """backbone name -> its torchvision classifier (random init, eval), saved as ``folder/<model>.pth``: the weights
    featx and the reference share, and the file the build measurements read."""
    classifiers = {}
    for name, (model, _) in CASES.items():
        classifiers[name] = torchvision.models.get_model(model, weights=None).eval()
        torch.save(classifiers[name].state_dict(), folder / f"{model}.pth")
    return classifiers


def forward_pairs(
    classifiers: Dict[str, nn.Module], folder: Path, device: str
) -> Dict[str, Tuple[featx.Backbone, nn.Module]]:
    """backbone name -> (featx module built from the saved checkpoint, torchvision reference) on ``device``."""
    pairs = {}
    for name, classifier in classifiers.items():
        weights = folder / f"{CASES[name][0]}.pth"
        # resnet_fpn_backbone uses FrozenBatchNorm2d (featx's default norm); the others keep torchvision's BatchNorm
        overrides = ["fpn.extra_blocks=maxpool"] if name == "resnet50_fpn" else ["norm=eval"]
        backbone = featx.build(name, overrides=[f"weights='{weights}'", f"device={device}", *overrides]).eval()
        pairs[name] = (backbone, _reference(name, classifier, backbone).to(device).eval())
    return pairs


def _seconds(module: Callable, batch: torch.Tensor) -> float:
    """Wall time of one call; on CUDA the queued kernels are waited for before and after."""
    synchronize = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    synchronize()
    start = time.perf_counter()
    module(batch)
    synchronize()
    return time.perf_counter() - start


def interleaved(
    ours: Callable,
    reference: Callable,
    ours_batch: torch.Tensor,
    reference_batch: torch.Tensor,
    repeats: int,
    warmup: int = 2,
) -> Dict[str, float]:
    """Interleaved A/B medians in milliseconds and their ratio."""
    with torch.inference_mode():
        for _ in range(warmup):
            ours(ours_batch)
            reference(reference_batch)
        ours_times, reference_times = [], []
        for _ in range(repeats):
            ours_times.append(_seconds(ours, ours_batch))
            reference_times.append(_seconds(reference, reference_batch))
    ours_ms, reference_ms = statistics.median(ours_times) * 1e3, statistics.median(reference_times) * 1e3
    return {"featx_ms": ours_ms, "reference_ms": reference_ms, "ratio": ours_ms / reference_ms}


def bench_forward(
    pairs, batches: List[int], size: int, repeats: int, device: str, warmup: int
) -> List[Dict[str, object]]:
    rows = []
    for name, (ours, reference) in pairs.items():
        for batch_size in batches:
            batch = torch.randn(batch_size, 3, size, size, device=device)
            rows.append(
                {
                    "backbone": name,
                    "reference": CASES[name][1],
                    "batch": batch_size,
                    **interleaved(ours, reference, batch, batch, repeats, warmup),
                }
            )
    return rows


def bench_channels_last(
    pairs, batches: List[int], size: int, repeats: int, device: str, warmup: int
) -> List[Dict[str, object]]:
    nchw = pairs["resnet50_fpn"][0]
    spec = nchw.spec.to_dict()
    spec["weights"] = None
    channels_last = featx.build({**spec, "channels_last": True}).eval()
    channels_last.load_state_dict(nchw.state_dict())
    rows = []
    for batch_size in batches:
        batch = torch.randn(batch_size, 3, size, size, device=device)
        rows.append(
            {
                "backbone": "resnet50_fpn",
                "batch": batch_size,
                **interleaved(
                    channels_last, nchw, batch.contiguous(memory_format=torch.channels_last), batch, repeats, warmup
                ),
            }
        )
    return rows


def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7, help="forward repetitions (interleaved)")
    parser.add_argument("--build-repeats", type=int, default=3, help="fresh processes per build measurement")
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "featx-bench.json")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each side before the timed ones")
    parser.add_argument("--device", default="cpu", help="where forward and channels_last run (builds: always cpu)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--output", type=Path, help="also write the tables as a markdown page (with the command and the machine)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        classifiers = write_checkpoints(folder)
        timing_forward = {"forward", "channels_last"} & set(args.sections)
        pairs = forward_pairs(classifiers, folder, args.device) if timing_forward else {}
        run = {
            "forward": lambda: bench_forward(pairs, args.batches, args.size, args.repeats, args.device, args.warmup),
            "channels_last": lambda: bench_channels_last(
                pairs, args.batches, args.size, args.repeats, args.device, args.warmup
            ),
            "build": lambda: bench_builds(folder, args.build_repeats),
            "inspect": lambda: bench_inspect(folder, args.build_repeats),
        }
        results = {section: run[section]() if section in args.sections else [] for section in SECTIONS}
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"cpu, {torch.get_num_threads()} threads"
    )
    header = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {where}; sections: "
        f"{', '.join(args.sections)}; forward: {args.size}x{args.size}, {args.repeats} interleaved repeats, "
        f"medians; build/inspect: {args.build_repeats} fresh processes each, medians"
    )
    print(header + "\n")
    tables = {
        "build": (
            ["backbone", "build", "seconds", "peak RSS MiB", "time / torchvision", "memory / torchvision"],
            lambda r: [
                r["backbone"],
                r["build"],
                f"{r['seconds']:.3f}",
                f"{r['peak_mib']:.0f}",
                f"{r['time_ratio']:.2f}",
                f"{r['memory_ratio']:.2f}",
            ],
        ),
        "forward": (
            ["backbone (reference)", "batch", "featx ms", "reference ms", "featx / reference"],
            lambda r: [
                f"{r['backbone']} ({r['reference']})",
                str(r["batch"]),
                f"{r['featx_ms']:.2f}",
                f"{r['reference_ms']:.2f}",
                f"{r['ratio']:.3f}",
            ],
        ),
        "channels_last": (
            ["backbone", "batch", "channels_last ms", "NCHW ms", "channels_last / NCHW"],
            lambda r: [
                r["backbone"],
                str(r["batch"]),
                f"{r['featx_ms']:.2f}",
                f"{r['reference_ms']:.2f}",
                f"{r['ratio']:.3f}",
            ],
        ),
        "inspect": (
            ["backbone", "inspect seconds (after imports)", "peak RSS MiB"],
            lambda r: [r["backbone"], f"{r['seconds']:.3f}", f"{r['peak_mib']:.0f}"],
        ),
    }
    markdown = []
    for section in ("build", "forward", "channels_last", "inspect"):
        if results[section]:
            columns, row = tables[section]
            markdown.append(f"## {section}\n\n" + _table(columns, [row(r) for r in results[section]]) + "\n")
            print(markdown[-1])
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    if args.output is not None:
        try:
            write_generated_page(args.output, _page(header, markdown), "--output")
        except featx.FeatxError as error:
            raise SystemExit(f"bench.py: error: {error}") from None
        print(f"wrote {args.output}")


def _machine() -> str:
    """The CPU model and core count, and the date."""
    return f"{machine_description()}; {time.strftime('%Y-%m-%d')}"


def _page(header: str, sections: List[str]) -> str:
    """The results page: written by this script, never by hand."""
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    return (
        "# Benchmark results (generated)\n\n"
        f"Written by `{command}` on {_machine()}.\n"
        f"Do not edit: rerun the command. {header}.\n\n" + "\n".join(sections)
    )


if __name__ == "__main__":
    main()
