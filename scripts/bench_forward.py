"""Forward-time benchmark: featx backbones against torchvision's own way of doing the same, in one run.

For each reference extractor, featx's module and the torchvision reference (same weights) run interleaved
(A, B, A, B, ...) after warm-up; the table reports medians and the featx/reference ratio. No timing is asserted.

    python scripts/bench_forward.py                       # batch 1 and 8 at 224x224; JSON to $TMPDIR
    python scripts/bench_forward.py --batches 1 --repeats 5 --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
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
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import featx

VGG_BLOCKS = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 29)]


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


def _with_weights(classifier: nn.Module, name: str, overrides: List[str], folder: Path) -> featx.Backbone:
    path = folder / f"{name}.pth"
    torch.save(classifier.state_dict(), path)
    return featx.build(name, overrides=[f"weights='{path}'", "device=cpu", *overrides]).eval()


def pairs(folder: Path) -> Dict[str, Tuple[nn.Module, nn.Module]]:
    """name → (featx module, torchvision reference), sharing weights."""
    vgg = torchvision.models.vgg16().eval()
    resnet34 = torchvision.models.resnet34().eval()
    resnet50 = torchvision.models.resnet50().eval()
    fpn_featx = _with_weights(resnet50, "resnet50_fpn", ["fpn.extra_blocks=maxpool"], folder).eval()
    fpn_reference = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, trainable_layers=3, extra_blocks=LastLevelMaxPool()
    ).eval()
    fpn_reference.body.load_state_dict(resnet50.state_dict(), strict=False)
    fpn_reference.fpn.load_state_dict(fpn_featx.neck.state_dict())
    return {
        "vgg16 (features[a:b])": (_with_weights(vgg, "vgg16", [], folder), SlicedFeatures(vgg.features, VGG_BLOCKS).eval()),
        "resnet34 (IntermediateLayerGetter)": (
            _with_weights(resnet34, "resnet34", ["norm=eval"], folder),
            IntermediateLayerGetter(resnet34, {"layer3": "layer3"}).eval(),
        ),
        "resnet50_fpn (resnet_fpn_backbone)": (fpn_featx, fpn_reference),
    }


def _seconds(module: Callable, batch: torch.Tensor) -> float:
    start = time.perf_counter()
    module(batch)
    return time.perf_counter() - start


def measure(ours: nn.Module, reference: nn.Module, batch: torch.Tensor, repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Interleaved A/B medians in milliseconds and their ratio."""
    with torch.inference_mode():
        for _ in range(warmup):
            ours(batch)
            reference(batch)
        ours_times, reference_times = [], []
        for _ in range(repeats):
            ours_times.append(_seconds(ours, batch))
            reference_times.append(_seconds(reference, batch))
    ours_ms = statistics.median(ours_times) * 1e3
    reference_ms = statistics.median(reference_times) * 1e3
    return {"featx_ms": ours_ms, "reference_ms": reference_ms, "ratio": ours_ms / reference_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "featx-bench-forward.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (ours, reference) in pairs(Path(folder)).items():
            for batch_size in args.batches:
                batch = torch.randn(batch_size, 3, args.size, args.size)
                rows.append({"backbone": name, "batch": batch_size, **measure(ours, reference, batch, args.repeats)})
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
          f"input {args.size}x{args.size}, {args.repeats} interleaved repeats, medians")
    print("| backbone (reference) | batch | featx ms | reference ms | featx / reference |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backbone']} | {row['batch']} | {row['featx_ms']:.1f} | {row['reference_ms']:.1f} | {row['ratio']:.3f} |")
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
