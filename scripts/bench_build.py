"""Build-time benchmark: constructing a featx backbone against constructing the torchvision classifier it cuts.

Each measurement runs in a fresh Python process (imports done before the clock starts; Linux, since peak RSS
is read from /proc/self/status after resetting it), repeated and
alternated between the two sides; the table reports median seconds, median peak-RSS growth, and featx/reference
ratios. "featx + weights" builds from a local state dict: kept layers are materialised straight from the
checkpoint (no random init) and dropped layers (the classifier) are never allocated. No timing is asserted.

    python scripts/bench_build.py                   # vgg16 and resnet50, 5 repetitions
    python scripts/bench_build.py --models vgg16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

CHILD = r"""
import json, sys, time
import torch, torchvision, featx
kind, model, weights = sys.argv[1:4]

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
else:
    featx.build(model, overrides=["device=cpu"] + ([f"weights='{weights}'"] if kind == "featx + weights" else []))
seconds = time.perf_counter() - start
peak_mib = (rss_kib("VmHWM:") - before) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak_mib}))
"""

KINDS = ("torchvision", "featx", "featx + weights", "read checkpoint")


def _run(kind: str, model: str, weights: Path) -> Dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, model, str(weights)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "featx-bench-build.json")
    args = parser.parse_args()
    import torch
    import torchvision

    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            weights = Path(folder) / f"{model}.pth"
            torch.save(torchvision.models.get_model(model, weights=None).state_dict(), weights)
            samples: Dict[str, List[Dict[str, float]]] = {kind: [] for kind in KINDS}
            for _ in range(args.repeats):
                for kind in KINDS:
                    samples[kind].append(_run(kind, model, weights))
            medians = {kind: {key: statistics.median(s[key] for s in runs) for key in ("seconds", "peak_mib")}
                       for kind, runs in samples.items()}
            reference = medians["torchvision"]
            for kind in KINDS:
                rows.append({"model": model, "build": kind, **medians[kind],
                             "time_ratio": medians[kind]["seconds"] / reference["seconds"],
                             "memory_ratio": medians[kind]["peak_mib"] / max(reference["peak_mib"], 1e-9)})
    print(f"fresh process per measurement, {args.repeats} alternated repetitions, medians; "
          f"ratios against torchvision.models.get_model(name) in the same run")
    print("| model | build | seconds | peak RSS growth MiB | time / torchvision | memory / torchvision |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['build']} | {row['seconds']:.3f} | {row['peak_mib']:.0f} | "
              f"{row['time_ratio']:.2f} | {row['memory_ratio']:.2f} |")
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
