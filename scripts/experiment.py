"""Compare featx backbones on a small task: a linear head on their pooled features, trained on synthetic images.

The images are made in memory from a seed: one shape or texture per image (disk, square, triangle, horizontal
stripes, vertical stripes, checkerboard) at a random position, size and colour on a noisy background. The model is
the chosen featx backbone, frozen as its spec says, plus a linear layer on its globally average-pooled outputs
(``head.features``: the last one or all of them). ``train.backbone_lr`` trains the stages the spec leaves
trainable; 0 freezes the whole backbone (a linear probe).

Usage (from the repository root; the config is ``scripts/experiment_conf/experiment.yaml``)::

    python scripts/experiment.py                                   # resnet18, 640/256 images of 64x64, 3 epochs
    python scripts/experiment.py backbone=convnext_tiny head.features=all train.backbone_lr=0
    python scripts/experiment.py backbone=resnet50 backbone.weights=DEFAULT   # where the weights are available
    python scripts/experiment.py -m backbone=resnet18,mobilenet_v3_large,convnext_tiny
    python scripts/experiment.py --cfg job --resolve               # print the config

Every run writes, in its output dir (``outputs/experiment/runs/<time>/`` by default): ``metrics.csv`` (loss and
accuracy per epoch), ``result.json`` (one row), ``config_resolved.yaml``, Hydra's ``.hydra/`` and
``experiment.log``. A ``-m`` sweep runs one job per value in ``outputs/experiment/multirun/<time>/<n>_<backbone>/``
and then writes ``results.md`` (one table row per job) and ``results.png`` (needs matplotlib) in the sweep dir;
``summary_page=PATH`` also writes the table as a page naming the command and the machine (``docs/results/``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import featx  # registers featx/backbone_schema, which the backbone configs compose with
from featx.files import write_generated_page
from featx.tasks.extract.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger("experiment")

HEAD_FEATURES = ("last", "all")
#: metrics.csv holds only what a rerun reproduces (timings go to result.json and the log)
METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")

Dataset = Tuple[Tensor, Tensor]  # images N x 3 x S x S in [0, 1], labels N (int64)


# --- data -----------------------------------------------------------------------------------------------------------


def _box(dx: Tensor, dy: Tensor, r: Tensor) -> Tensor:
    return (dx.abs() <= r) & (dy.abs() <= r)


def _band(offset: Tensor, period: Tensor) -> Tensor:
    """0, 1, 0, 1, ... along ``offset`` in bands ``period`` pixels wide."""
    return torch.div(offset, period, rounding_mode="floor").remainder(2)


#: class name -> mask of the pixels it covers, from offsets to the centre, half-size r and texture period p
SHAPES: Dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]] = {
    "disk": lambda dx, dy, r, p: dx**2 + dy**2 <= r**2,
    "square": lambda dx, dy, r, p: _box(dx, dy, r),
    "triangle": lambda dx, dy, r, p: (dy.abs() <= r) & (2 * dx.abs() <= dy + r),
    "hstripes": lambda dx, dy, r, p: _box(dx, dy, r) & (_band(dy + r, p) == 0),
    "vstripes": lambda dx, dy, r, p: _box(dx, dy, r) & (_band(dx + r, p) == 0),
    "checkerboard": lambda dx, dy, r, p: _box(dx, dy, r) & ((_band(dx + r, p) + _band(dy + r, p)) % 2 == 0),
}


def make_dataset(size: int, image_size: int, classes: Sequence[str], seed: int, noise: float = 0.05) -> Dataset:
    """``size`` labelled images, the same for the same arguments; labels balanced (counts differ by at most 1)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(size, *shape, generator=generator)

    labels = (torch.arange(size) % len(classes))[torch.randperm(size, generator=generator)]
    half = image_size * uniform(0.15, 0.3, 1, 1)
    centre_x = half + (image_size - 2 * half) * uniform(0, 1, 1, 1)
    centre_y = half + (image_size - 2 * half) * uniform(0, 1, 1, 1)
    period = (half * uniform(0.2, 0.4, 1, 1)).clamp(min=2)  # 5 to 10 bands across a texture
    background = uniform(0, 1, 3, 1, 1)
    foreground = (background + uniform(0.3, 0.7, 3, 1, 1)) % 1  # each channel at least 0.3 from the background
    pixel_noise = noise * torch.randn(size, 3, image_size, image_size, generator=generator)

    coords = torch.arange(image_size, dtype=torch.float32) + 0.5
    dx, dy = coords.view(1, 1, -1) - centre_x, coords.view(1, -1, 1) - centre_y
    mask = torch.zeros(size, image_size, image_size, dtype=torch.bool)
    for index, name in enumerate(classes):
        chosen = labels == index
        mask[chosen] = SHAPES[name](dx[chosen], dy[chosen], half[chosen], period[chosen])
    images = torch.where(mask.unsqueeze(1), foreground, background) + pixel_noise
    return images.clamp(0, 1), labels


# --- model ----------------------------------------------------------------------------------------------------------


class Probe(nn.Module):
    """A featx backbone and a linear head on its average-pooled outputs (the deepest, or all concatenated).

    The head standardises each pooled channel (``BatchNorm1d`` without affine terms, as in MAE's linear probe)
    before its linear layer, so backbones whose features differ in scale by orders of magnitude (randomly
    initialised ones, above all) are compared on equal terms.
    """

    def __init__(self, backbone: featx.Backbone, num_classes: int, features: str = "last") -> None:
        super().__init__()
        self.backbone = backbone
        used = backbone.feature_info if features == "all" else backbone.feature_info[-1:]
        self.feature_names = [info.name for info in used]
        width = sum(info.channels for info in used)
        self.head = nn.Sequential(nn.BatchNorm1d(width, affine=False), nn.Linear(width, num_classes))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone((images - self.mean) / self.std)
        pooled = [features[name].mean(dim=(2, 3)) for name in self.feature_names]
        return self.head(torch.cat(pooled, dim=1))


def build_probe(backbone_cfg: Any, num_classes: int, features: str, backbone_lr: float) -> Probe:
    """The probe on the backbone's device; ``backbone_lr == 0`` freezes every stage, not just the spec's."""
    backbone = featx.build(backbone_cfg)
    if backbone_lr == 0:
        backbone.freeze()
    device = next(backbone.parameters()).device
    return Probe(backbone, num_classes, features).to(device)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- training -------------------------------------------------------------------------------------------------------


def _batches(order: Tensor, batch_size: int) -> List[Tensor]:
    """Index batches; a last batch of one joins the one before (the head's BatchNorm needs two samples)."""
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def _run_epoch(
    model: Probe,
    data: Dataset,
    batch_size: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[float, float]:
    """Mean loss and accuracy over ``data``; trains (in shuffled order) when given an optimizer."""
    images, labels = data
    training = optimizer is not None
    model.train(training)
    order = torch.randperm(len(labels), generator=generator) if training else torch.arange(len(labels))
    device = model.device
    loss_sum, correct = 0.0, 0
    with torch.set_grad_enabled(training):
        for batch in _batches(order, batch_size):
            x, y = images[batch].to(device), labels[batch].to(device)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(dim=1) == y).sum())
    return loss_sum / len(labels), correct / len(labels)


def make_optimizer(model: Probe, train_cfg: Any) -> torch.optim.Optimizer:
    """AdamW: the head at ``lr``, the backbone's trainable stages at ``backbone_lr`` (none when it is 0)."""
    groups: List[Dict[str, Any]] = [{"name": "head", "params": list(model.head.parameters()), "lr": train_cfg.lr}]
    if train_cfg.backbone_lr > 0:
        groups += model.backbone.param_groups(train_cfg.backbone_lr)
    return torch.optim.AdamW(groups, weight_decay=train_cfg.weight_decay)


def train_probe(
    model: Probe, train_set: Dataset, val_set: Dataset, train_cfg: Any, seed: int
) -> Tuple[List[Dict[str, float]], float]:
    """Train for ``train_cfg.epochs``; one metrics row per epoch (each also logged) and the training seconds."""
    optimizer = make_optimizer(model, train_cfg)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    seconds = 0.0
    for epoch in range(1, train_cfg.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = _run_epoch(model, train_set, train_cfg.batch_size, optimizer, generator)
        epoch_s = time.perf_counter() - start
        seconds += epoch_s
        val_loss, val_acc = _run_epoch(model, val_set, train_cfg.batch_size)
        rows.append(dict(zip(METRIC_FIELDS, (epoch, train_loss, train_acc, val_loss, val_acc), strict=True)))
        log.info(
            "epoch %d/%d  train loss %.4f acc %.3f  |  val loss %.4f acc %.3f  |  %.1f s",
            epoch,
            train_cfg.epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            epoch_s,
        )
    return rows, seconds


# --- config checks --------------------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"experiment: error: {message}")


def _check_number(cfg: DictConfig, key: str, *, integer: bool, minimum: float, inclusive: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    in_range = is_number and (value >= minimum if inclusive else value > minimum)
    if not in_range or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        _fail(f"{key}: must be {kind} {'>=' if inclusive else '>'} {minimum}, got {value!r}")


def validate(cfg: DictConfig) -> None:
    """Refuse bad values with a message naming the key and what it accepts."""
    for key in ("data.val_size", "data.image_size", "train.epochs"):
        _check_number(cfg, key, integer=True, minimum=1)
    for key in ("data.train_size", "train.batch_size"):  # the head's BatchNorm trains on two samples or more
        _check_number(cfg, key, integer=True, minimum=2)
    _check_number(cfg, "seed", integer=True, minimum=0)
    _check_number(cfg, "train.lr", integer=False, minimum=0, inclusive=False)
    for key in ("train.backbone_lr", "train.weight_decay", "data.noise"):
        _check_number(cfg, key, integer=False, minimum=0)
    if cfg.head.features not in HEAD_FEATURES:
        _fail(f"head.features: unknown value {cfg.head.features!r} (valid: {', '.join(HEAD_FEATURES)})")
    classes = list(cfg.data.classes) if OmegaConf.is_list(cfg.data.classes) else None
    if classes is None or len(classes) < 2 or len(set(classes)) != len(classes):
        _fail(f"data.classes: must be a list of at least 2 distinct names, got {cfg.data.classes!r}")
    for name in classes:
        if name not in SHAPES:
            _fail(f"data.classes: unknown class {name!r} (valid: {', '.join(SHAPES)})")


# --- one run --------------------------------------------------------------------------------------------------------


def _write_metrics(path: Path, rows: List[Dict[str, float]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _describe(model: Probe, cfg: DictConfig, choice: str) -> str:
    spec = model.backbone.spec
    frozen = ", ".join(model.backbone.frozen_stage_names) or "none"
    return (
        f"backbone={choice} ({spec.model}, weights: {spec.weights or 'random init'}, frozen: {frozen}) | head on "
        f"{'+'.join(model.feature_names)} ({model.head[-1].in_features} -> {model.head[-1].out_features}) | "
        f"{cfg.data.train_size} train / {cfg.data.val_size} val images {cfg.data.image_size}x{cfg.data.image_size} | "
        f"device {model.device}"
    )


def _build(cfg: DictConfig) -> Probe:
    torch.manual_seed(cfg.seed)
    try:
        model = build_probe(cfg.backbone, len(cfg.data.classes), cfg.head.features, cfg.train.backbone_lr)
    except featx.FeatxError as error:
        _fail(str(error))
    stride = max(info.stride for info in model.backbone.feature_info)
    if cfg.data.image_size < stride:
        size = cfg.data.image_size
        _fail(f"data.image_size: must be at least {stride} (the stride of the deepest output), got {size}")
    return model


def _result(
    model: Probe, cfg: DictConfig, rows: List[Dict[str, float]], train_time: float, choice: str
) -> Dict[str, Any]:
    """The run's row: the backbone, its size, the last epoch's metrics, training throughput, the job."""
    hydra_cfg = HydraConfig.get()
    return {
        "backbone": choice,
        "model": model.backbone.spec.model,
        "weights": model.backbone.spec.weights or "random init",
        "head_features": cfg.head.features,
        "classes": len(cfg.data.classes),
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "epochs": cfg.train.epochs,
        "train_acc": rows[-1]["train_acc"],
        "val_loss": rows[-1]["val_loss"],
        "val_acc": rows[-1]["val_acc"],
        "train_time_s": round(train_time, 2),
        "images_per_s": round(cfg.train.epochs * cfg.data.train_size / train_time, 1),
        "job": OmegaConf.select(hydra_cfg, "job.num", default=0),  # unset outside a sweep
        "overrides": list(hydra_cfg.overrides.task),
    }


@hydra.main(version_base="1.3", config_path="experiment_conf", config_name="experiment")
def main(cfg: DictConfig) -> None:
    """One run: train the probe; write config_resolved.yaml, metrics.csv and result.json in the output dir."""
    torch.use_deterministic_algorithms(True)  # with the seeded data, init and order: a rerun repeats every number
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    validate(cfg)
    model = _build(cfg)
    choice = HydraConfig.get().runtime.choices.get("backbone") or cfg.backbone.model
    log.info(_describe(model, cfg, choice))
    data = cfg.data
    train_set = make_dataset(data.train_size, data.image_size, list(data.classes), cfg.seed, data.noise)
    val_set = make_dataset(data.val_size, data.image_size, list(data.classes), cfg.seed + 1, data.noise)
    rows, train_time = train_probe(model, train_set, val_set, cfg.train, cfg.seed)
    _write_metrics(output_dir / "metrics.csv", rows)
    result = _result(model, cfg, rows, train_time, choice)
    (output_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "val acc %.3f | %s params, %s trainable | %.1f s training, %.0f images/s | %s",
        result["val_acc"],
        f"{result['params']:,}",
        f"{result['trainable_params']:,}",
        result["train_time_s"],
        result["images_per_s"],
        output_dir,
    )


# --- sweep summary --------------------------------------------------------------------------------------------------


def load_results(sweep_dir: Path) -> List[Dict[str, Any]]:
    """Every ``<job dir>/result.json`` under the sweep dir, in job order, each with its ``metrics`` rows added."""
    results = []
    for path in sweep_dir.glob("*/result.json"):
        result = json.loads(path.read_text())
        with (path.parent / "metrics.csv").open(newline="") as file:
            result["metrics"] = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]
        results.append(result)
    return sorted(results, key=lambda result: result["job"])


def row_labels(results: List[Dict[str, Any]]) -> List[str]:
    """The backbone, plus the overrides that tell apart jobs sweeping more than the backbone."""
    shared = set.intersection(*(set(result["overrides"]) for result in results))
    labels = []
    for result in results:
        varied = [item for item in result["overrides"] if item not in shared and not item.startswith("backbone=")]
        labels.append(" ".join([result["backbone"], *varied]))
    return labels


def results_table(results: List[Dict[str, Any]], timings: bool = True) -> str:
    """A markdown table, one row per job; ``timings=False`` leaves out the columns a rerun does not repeat."""
    header = "| backbone | model | params | trainable | val acc | val loss |"
    rule = "|---|---|---:|---:|---:|---:|"
    lines = [header + (" train time (s) | images/s |" if timings else ""), rule + ("---:|---:|" if timings else "")]
    for label, r in zip(row_labels(results), results, strict=True):
        row = (
            f"| {label} | {r['model']} | {r['params'] / 1e6:.2f}M | {r['trainable_params'] / 1e6:.2f}M | "
            f"{r['val_acc']:.3f} | {r['val_loss']:.3f} |"
        )
        lines.append(row + (f" {r['train_time_s']:.1f} | {r['images_per_s']:.0f} |" if timings else ""))
    return "\n".join(lines) + "\n"


def _machine() -> str:
    """The CPU model (Linux: /proc/cpuinfo) and core count."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


def summary_page(results: List[Dict[str, Any]]) -> str:
    """The sweep's table as a page that says how it was made: what ``summary_page=PATH`` writes (for the docs)."""
    command = "python scripts/experiment.py " + " ".join(sys.argv[1:])
    return (
        "# Experiment results (generated)\n\n"
        f"Written by `{command}` on {_machine()}, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}. "
        "Do not edit: rerun the command. The run is deterministic on one machine, so a rerun gives these numbers; "
        "training times vary and are left out.\n\n" + results_table(results, timings=False)
    )


def plot_results(results: List[Dict[str, Any]], path: Path) -> None:
    """Val accuracy per job (bars, chance level dashed) and loss per epoch (val solid, train dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = row_labels(results)
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars.bar(labels, [r["val_acc"] for r in results], color=[f"C{i}" for i in range(len(results))])
    bars.axhline(1 / results[0]["classes"], color="grey", linestyle="--", linewidth=1, label="chance")
    bars.set(ylim=(0, 1), ylabel="val accuracy", title="final val accuracy")
    bars.legend()
    bars.tick_params(axis="x", labelrotation=20)
    for i, (label, r) in enumerate(zip(labels, results, strict=True)):
        epochs = [row["epoch"] for row in r["metrics"]]
        curves.plot(epochs, [row["val_loss"] for row in r["metrics"]], color=f"C{i}", marker="o", label=label)
        curves.plot(epochs, [row["train_loss"] for row in r["metrics"]], color=f"C{i}", linestyle="--")
    curves.set(xlabel="epoch", ylabel="cross-entropy", title="loss (val solid, train dashed)")
    curves.xaxis.get_major_locator().set_params(integer=True)
    curves.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class SweepSummary(Callback):
    """After a ``-m`` sweep: ``results.md`` and ``results.png`` in the sweep dir, the table in the log."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)  # the last job's log file is done
        sweep_dir = Path(config.hydra.sweep.dir)
        results = load_results(sweep_dir)
        if not results:
            log.warning("no result.json under %s: nothing to summarise", sweep_dir)
            return
        table = results_table(results)
        (sweep_dir / "results.md").write_text(table)
        log.info("sweep results (%s):\n%s", sweep_dir / "results.md", table)
        page = OmegaConf.select(config, "summary_page")
        if page:
            try:
                write_generated_page(Path(page), summary_page(results), "summary_page")
                log.info("summary page: %s", page)
            except featx.FeatxError as error:
                log.error("%s", error)
        try:
            plot_results(results, sweep_dir / "results.png")
        except ImportError:
            log.warning("results.png not written: it needs matplotlib (pip install matplotlib)")
            return
        log.info("plot: %s", sweep_dir / "results.png")


if __name__ == "__main__":
    main()
