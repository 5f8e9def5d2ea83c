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
- catalog: wall time of the whole `featx-list` command (every packaged backbone; `python -m featx.cli.catalog`,
  imports included) against `python -c "import torch, torchvision"`, the floor of any command that builds a module;
  fresh processes, alternating. Rows: featx-list as installed (featx's cache variables removed from the
  environment), with FEATX_NO_CACHE=1 (plan cache off), and with FEATX_CACHE_DIR at a new empty folder each run
  (a cold user cache). Goal (issue #17): featx-list <= 1.5x the import.
- pretrained: a build with weights from a local checkpoint (the torchvision classifier's random state dict, saved by
  this script) in a fresh process, imports excluded, alternating with its reference: torchvision's get_model +
  load_state_dict(torch.load(file)) for mobilenet_v3_large, efficientnet_b0 and regnet_y_800mf (goal: featx <= 0.5x),
  and just torch.load(file) for swin_t and resnet50_fpn (goal: featx <= 1.2x); also featx.load of a featx.save file
  of resnet50_fpn (its neck filled from the file, not initialised) against torch.load of that file. Each featx row
  also with FEATX_NO_CACHE=1; each met / not met is computed from the measured ratio.

    python scripts/bench.py                          # everything; tables on stdout, JSON to $TMPDIR/featx-bench.json
    python scripts/bench.py --repeats 9 --build-repeats 9 --output docs/results/cpu.md   # docs/results.md links it
    python scripts/bench.py --repeats 3 --batches 1  # a quick run
    python scripts/bench.py --sections catalog pretrained --build-repeats 5   # issue #17's goals only
    python scripts/bench.py --device cuda --sections forward channels_last --repeats 30 --warmup 10 --batches 1 8 32 \
        --output docs/results/gpu.md                 # what scripts/gpu_session.sh runs on a lent GPU machine
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torchvision
from arguments import check_page, check_rows_device, whole_number
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import featx
from featx.files import write_atomically, write_generated_page

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
SECTIONS = ("forward", "channels_last", "build", "inspect", "catalog", "pretrained")
#: featx's cache variables: a child runs "as installed" without them, and a row sets one on purpose
CACHE_VARIABLES = ("FEATX_NO_CACHE", "FEATX_CACHE_DIR")
NO_CACHE = {"FEATX_NO_CACHE": "1"}
#: a featx.save file of resnet50_fpn (random init)
SAVED_FPN = "resnet50_fpn.featx.pt"
CATALOG_COMMAND = [sys.executable, "-m", "featx.cli.catalog"]
IMPORT_COMMAND = [sys.executable, "-c", "import torch, torchvision"]
IMPORT_ROW = "python -c 'import torch, torchvision'"
CATALOG_GOAL = 1.5
#: (packaged backbone, the checkpoint file read, how featx reads it, the reference, goal for featx / reference): a
#: torchvision classifier's state dict (``<model>.pth``) built with ``weights:``, or a featx.save file loaded with
#: featx.load (its neck is not initialised, only filled)
PRETRAINED: List[Tuple[str, str, str, str, Optional[float]]] = [
    ("mobilenet_v3_large", "mobilenet_v3_large.pth", "featx + weights", "torchvision + weights", 0.5),
    ("efficientnet_b0", "efficientnet_b0.pth", "featx + weights", "torchvision + weights", 0.5),
    ("regnet_y_800mf", "regnet_y_800mf.pth", "featx + weights", "torchvision + weights", 0.5),
    ("swin_t", "swin_t.pth", "featx + weights", "read checkpoint", 1.2),
    ("resnet50_fpn", "resnet50.pth", "featx + weights", "read checkpoint", 1.2),
    ("resnet50_fpn", SAVED_FPN, "featx.load", "read checkpoint", None),
]
REFERENCE_NAMES = {"torchvision + weights": "get_model + load_state_dict", "read checkpoint": "torch.load"}

BUILD_CHILD = r"""
import importlib, json, pkgutil, sys, time
import torch, torchvision, featx, safetensors.torch
import antlr4.LL1Analyzer, encodings.utf_8_sig, torch.utils.serialization.config  # loaded on first use, each side
kind, name, model, weights = sys.argv[1:5]
# every module a featx build may import, imported before the clock as torchvision's are by `import torchvision`
# (``import featx`` loads the spec layer only; the rest loads on first use); the parent refuses a measurement
# during which anything was imported
for package in ("featx.construct", "featx.nn", "featx.models", "featx.spec"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(module.name)

def rss_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak (VmHWM) to the current RSS, so imports do not count
before = rss_kib("VmRSS:")
loaded = set(sys.modules)
start = time.perf_counter()
if kind == "torchvision":
    torchvision.models.get_model(model, weights=None)
elif kind == "torchvision + weights":
    classifier = torchvision.models.get_model(model, weights=None)
    classifier.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
elif kind == "read checkpoint":
    torch.load(weights, map_location="cpu", weights_only=True)
elif kind == "featx.load":
    featx.load(weights)
elif kind == "inspect":
    backbone = featx.build(name, overrides=["device=meta"])
    size = backbone.spec.input_size or (224, 224)
    backbone(torch.empty(1, 3, *size, device="meta"))
else:
    featx.build(name, overrides=["device=cpu"] + ([f"weights='{weights}'"] if kind == "featx + weights" else []))
seconds = time.perf_counter() - start
imported = sorted(set(sys.modules) - loaded)
print(json.dumps({"seconds": seconds, "peak_mib": (rss_kib("VmHWM:") - before) / 1024, "imported": imported}))
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


def _child(
    kind: str, name: str, model: str, weights: Path, env: Optional[Mapping[str, str]] = None
) -> Dict[str, float]:
    """One BUILD_CHILD measurement; ``env``: the child's whole environment (None: this process's)."""
    command = [sys.executable, "-c", BUILD_CHILD, kind, name, model, str(weights)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    imported = result.pop("imported")
    if imported:  # the sides are timed without imports: one that imports while timed is not compared
        raise SystemExit(f"bench.py: {kind} {name} imported {', '.join(imported[:5])} while timed")
    return result


def _environment(variables: Mapping[str, str]) -> Dict[str, str]:
    """This process's environment without featx's cache variables, plus ``variables``: what a child runs with."""
    env = {key: value for key, value in os.environ.items() if key not in CACHE_VARIABLES}
    env.update(variables)
    return env


def _wall_seconds(command: List[str], env: Mapping[str, str]) -> float:
    """Wall time of the whole command, process start to exit (stdout discarded)."""
    start = time.perf_counter()
    try:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"bench.py: {' '.join(command)} failed:\n{error.stderr}") from None
    return time.perf_counter() - start


def _goal(ratio: float, goal: Optional[float]) -> str:
    """The goal cell: the bound, and whether the measured ratio meets it."""
    if goal is None:
        return "-"
    return f"<= {goal}: {'met' if ratio <= goal else 'not met'}"


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


def bench_catalog(repeats: int) -> List[Dict[str, object]]:
    """featx-list's wall time as installed, without the plan cache and with a cold one, against the import."""
    samples: Dict[str, List[float]] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="featx-bench-cache-") as cache:
            runs = {
                "featx-list": (CATALOG_COMMAND, {}),
                "featx-list, FEATX_NO_CACHE=1": (CATALOG_COMMAND, NO_CACHE),
                "featx-list, FEATX_CACHE_DIR=<new empty folder>": (CATALOG_COMMAND, {"FEATX_CACHE_DIR": cache}),
                IMPORT_ROW: (IMPORT_COMMAND, {}),
            }
            for row, (command, variables) in runs.items():
                samples.setdefault(row, []).append(_wall_seconds(command, _environment(variables)))
    medians = {row: statistics.median(seconds) for row, seconds in samples.items()}
    reference = medians[IMPORT_ROW]
    return [
        {
            "command": row,
            "seconds": seconds,
            "ratio": seconds / reference,
            "goal": CATALOG_GOAL if row == "featx-list" else None,
        }
        for row, seconds in medians.items()
    ]


def bench_pretrained(folder: Path, repeats: int) -> List[Dict[str, object]]:
    """featx builds with weights from a local file (plan cache as installed, and off) against their references."""
    rows: List[Dict[str, object]] = []
    for name, file_name, featx_kind, reference_kind, goal in PRETRAINED:
        model, weights = file_name.split(".")[0], folder / file_name
        sides = {
            reference_kind: (reference_kind, {}),
            featx_kind: (featx_kind, {}),
            f"{featx_kind}, FEATX_NO_CACHE=1": (featx_kind, NO_CACHE),
        }
        samples: Dict[str, List[Dict[str, float]]] = {side: [] for side in sides}
        for _ in range(repeats):
            for side, (kind, variables) in sides.items():
                samples[side].append(_child(kind, name, model, weights, _environment(variables)))
        medians = {side: _medians(runs) for side, runs in samples.items()}
        reference = medians[reference_kind]["seconds"]
        for side in list(sides)[1:]:
            rows.append(
                {
                    "backbone": name,
                    "build": side,
                    **medians[side],
                    "reference": REFERENCE_NAMES[reference_kind],
                    "reference_seconds": reference,
                    "reference_peak_mib": medians[reference_kind]["peak_mib"],
                    "ratio": medians[side]["seconds"] / reference,
                    "goal": goal if side == featx_kind else None,
                }
            )
    return rows


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


def write_pretrained_checkpoints(folder: Path) -> None:
    """The files of PRETRAINED that write_checkpoints did not save: classifiers' state dicts and a featx.save file."""
    for name, file_name, featx_kind, _, _ in PRETRAINED:
        path = folder / file_name
        if path.exists():
            continue
        if featx_kind == "featx.load":
            featx.save(featx.build(name, overrides=["device=cpu"]), path)
        else:
            torch.save(torchvision.models.get_model(path.stem, weights=None).state_dict(), path)


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


#: what marks the JSON file this script writes (it replaces no other file)
JSON_MARK = "scripts/bench.py"
#: the first line of the --output page (it replaces no other page)
PAGE_TITLE = "# Benchmark results (generated)"
_NOT_OURS = "exists and is not a file this script wrote; nothing was written: give another path, or move that file"


def _is_own_json(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link) holding this script's JSON (its ``written_by`` mark)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 26:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("written_by") == JSON_MARK


def _write_json(path: Path, results: Dict[str, object]) -> None:
    """Write ``results`` as JSON to ``path`` whole, replacing only a file this script wrote (never through a link)."""
    text = json.dumps({"written_by": JSON_MARK, **results}, indent=2)
    try:
        write_atomically(
            path,
            lambda partial: partial.write_text(text, encoding="utf-8"),
            overwrite=_is_own_json(path),
            what="--json",
            hint="give another path, or move that file",
        )
    except featx.FeatxError as error:
        raise SystemExit(f"bench.py: error: {error}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=whole_number(1, 256), nargs="+", default=[1, 8])
    parser.add_argument("--size", type=whole_number(32, 4096), default=224)
    parser.add_argument("--repeats", type=whole_number(1, 1000), default=7, help="forward repetitions (interleaved)")
    parser.add_argument(
        "--build-repeats", type=whole_number(1, 1000), default=3, help="fresh processes per build measurement"
    )
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "featx-bench.json")
    parser.add_argument(
        "--warmup", type=whole_number(0, 1000), default=2, help="untimed calls of each side before the timed ones"
    )
    parser.add_argument("--device", default="cpu", help="where forward and channels_last run (builds: always cpu)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--output", type=Path, help="also write the tables as a markdown page (with the command and the machine)"
    )
    args = parser.parse_args()
    check_rows_device(parser, next(iter(CASES)), args.device)  # before minutes of work, as the next two
    if (args.json.exists() or args.json.is_symlink()) and not _is_own_json(args.json):
        parser.error(f"--json: {args.json} {_NOT_OURS}")
    if args.output is not None:
        check_page(parser, args.output, PAGE_TITLE, "--output")
    compile_featx()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        classifiers = write_checkpoints(folder)
        timing_forward = {"forward", "channels_last"} & set(args.sections)
        pairs = forward_pairs(classifiers, folder, args.device) if timing_forward else {}
        if "pretrained" in args.sections:
            write_pretrained_checkpoints(folder)
        run = {
            "forward": lambda: bench_forward(pairs, args.batches, args.size, args.repeats, args.device, args.warmup),
            "channels_last": lambda: bench_channels_last(
                pairs, args.batches, args.size, args.repeats, args.device, args.warmup
            ),
            "build": lambda: bench_builds(folder, args.build_repeats),
            "inspect": lambda: bench_inspect(folder, args.build_repeats),
            "catalog": lambda: bench_catalog(args.build_repeats),
            "pretrained": lambda: bench_pretrained(folder, args.build_repeats),
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
        f"medians; build/inspect/catalog/pretrained: {args.build_repeats} fresh processes each, medians, featx "
        "byte-compiled first (as pip install does)"
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
        "catalog": (
            ["command (whole process)", "seconds", "ratio to the import", "goal"],
            lambda r: [r["command"], f"{r['seconds']:.2f}", f"{r['ratio']:.2f}", _goal(r["ratio"], r["goal"])],
        ),
        "pretrained": (
            ["backbone", "build", "seconds", "reference (seconds)", "ratio", "goal"],
            lambda r: [
                r["backbone"],
                r["build"],
                f"{r['seconds']:.3f}",
                f"{r['reference']} ({r['reference_seconds']:.3f})",
                f"{r['ratio']:.2f}",
                _goal(r["ratio"], r["goal"]),
            ],
        ),
    }
    markdown = []
    for section in ("build", "forward", "channels_last", "inspect", "catalog", "pretrained"):
        if results[section]:
            columns, row = tables[section]
            markdown.append(f"## {section}\n\n" + _table(columns, [row(r) for r in results[section]]) + "\n")
            print(markdown[-1])
    _write_json(args.json, results)
    print(f"\nwrote {args.json}")
    if args.output is not None:
        try:
            write_generated_page(args.output, _page(header, markdown), "--output")
        except featx.FeatxError as error:
            raise SystemExit(f"bench.py: error: {error}") from None
        print(f"wrote {args.output}")


def compile_featx() -> None:
    """Byte-compile featx's modules, as ``pip install`` does: an editable install run with PYTHONDONTWRITEBYTECODE
    (or never imported before) would otherwise compile featx's sources in every measured process, a cost torch and
    torchvision (compiled when installed) do not pay."""
    if not compileall.compile_dir(Path(featx.__file__).parent, quiet=1):
        raise SystemExit("bench.py: featx's modules could not be byte-compiled")


def _machine() -> str:
    """The CPU model and core count, and the date."""
    return f"{machine_description()}; {time.strftime('%Y-%m-%d')}"


def _page(header: str, sections: List[str]) -> str:
    """The results page: written by this script, never by hand."""
    command = shlex.join(["python", "scripts/bench.py", *sys.argv[1:]])
    return (
        f"{PAGE_TITLE}\n\n"
        f"Written by `{command}` on {_machine()}.\n"
        f"Do not edit: rerun the command. {header}.\n\n" + "\n".join(sections)
    )


if __name__ == "__main__":
    main()
