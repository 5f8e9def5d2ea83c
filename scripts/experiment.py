"""Fine-tune a torchvision Faster R-CNN on a featx backbone, on a tiny real dataset; swap backbones by override.

The data are photos shipped with scikit-image (``skimage.data``: astronaut, camera, coffee, rocket, coins) with
boxes drawn once by hand in ``scripts/experiment_data/boxes.json`` (person, helmet, rocket, camera, cup, spoon,
coin). The training set is ``data.train_views`` seeded random views of each photo (scale jitter, crop, flip); the
validation set is ``data.val_views`` other random views of the same photos (seed + 1), so it measures how well the
detector fits these objects under new crops and scales, not how it does on photos it has never seen. The detector
is torchvision's ``FasterRCNN`` on the chosen featx backbone, with anchors and RoI pooling derived from the
backbone's ``feature_info`` (``featx.detection``): any backbone whose outputs share one channel count works (the
``_fpn`` configs, or any with ``backbone.fpn.out_channels=N``).

Usage (from the repository root; the config is ``scripts/experiment_conf/experiment.yaml``)::

    python scripts/experiment.py                                   # resnet18_fpn, 128x128 views, 240 iterations
    python scripts/experiment.py backbone=convnext_tiny_fpn train.lr=2e-4
    python scripts/experiment.py backbone=resnet50_fpn backbone.weights=DEFAULT   # where the weights are cached
    python scripts/experiment.py -m backbone=resnet18_fpn,mobilenet_v3_large_fpn,convnext_tiny_fpn
    python scripts/experiment.py backbone=resnet18 backbone.fpn.out_channels=128   # an FPN on any backbone
    python scripts/experiment.py --cfg job --resolve               # print the config

Every run writes, in its output dir (``outputs/experiment/runs/<time>/`` by default, the time to the microsecond):
``metrics.csv`` (the train loss components averaged since the last evaluation, the validation losses and mAP@0.5,
every ``train.eval_every`` iterations), ``result.json`` (one row, with timings), ``config_resolved.yaml``, Hydra's
``.hydra/`` and ``experiment.log``. A run replaces no file, another run's or the user's: a folder that holds any of
its three files is refused before training (a single run's before Hydra writes its record there, a sweep's job
after its config is checked), and each is placed without overwriting, ``config_resolved.yaml`` first, once the run
has nothing left to refuse (a refused run writes none of them; of two runs started in one folder at once, the
second stops there, before training). A ``-m`` sweep then writes ``results.md`` and ``results.png`` in the sweep
dir (``experiment_summary.py``), of the jobs whose ``result.json`` carries its sweep id.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

import featx  # registers featx/backbone_schema, which the backbone configs compose with
from featx.cli.command_line import hydra_flags
from featx.cli.override_checks import check_choices, parsed_overrides, plain_nested_overrides
from featx.detection import anchor_generator, roi_pooler
from featx.files import write_atomically
from featx.spec.config_files import backbone_names
from featx.spec.limits import MAX_BATCH_PIXELS, MAX_SEED, MAX_SIDE, quoted, real_value
from featx.tasks.extract.transforms import IMAGENET_MEAN, IMAGENET_STD

from box_metrics import mean_average_precision
from experiment_summary import SWEEP_ENV, fail, refuse_a_used_folder, taken_error
from skimage_views import Annotated, load_annotations, random_view

log = logging.getLogger("experiment")

BOXES = Path(__file__).resolve().parent / "experiment_data" / "boxes.json"
CONF_DIR = Path(__file__).resolve().parent / "experiment_conf"
LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
#: metrics.csv holds only what a rerun reproduces (timings go to result.json and the log)
METRIC_FIELDS = ("iteration", "train_loss", *(f"train_{name}" for name in LOSSES), "val_loss", "val_map50")

Target = Dict[str, Tensor]  # boxes (float32 K x 4, pixels), labels (int64 K; 1 = the first class, 0 = background)


# --- data -----------------------------------------------------------------------------------------------------------


def make_views(
    photos: Sequence[Annotated], views: int, size: int, scale: Sequence[float], min_visible: float, seed: int
) -> Tuple[Tensor, List[Target]]:
    """``views`` random views of each photo (N x 3 x size x size in [0, 1]) and their targets, the same per seed."""
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(views):
        for photo in photos:
            view, boxes, labels = random_view(
                photo.pixels, photo.boxes, photo.labels, size, scale, generator, min_visible
            )
            images.append(view)
            targets.append({"boxes": boxes, "labels": labels + 1})
    return torch.stack(images), targets


# --- model ----------------------------------------------------------------------------------------------------------


def build_detector(backbone: featx.Backbone, num_classes: int, image_size: int, det_cfg: Any) -> FasterRCNN:
    """Faster R-CNN on ``backbone`` for ``num_classes`` classes (+ background), sized for square images of
    ``image_size``: no resizing, anchors of ``det_cfg.anchor_size_per_stride`` x stride per output, a box head of
    ``det_cfg.representation_size`` (torchvision's: 1024), fewer proposals and RoIs than torchvision's defaults."""
    width = backbone.out_channels
    pooler = roi_pooler(backbone)
    return FasterRCNN(
        backbone,
        min_size=image_size,
        max_size=image_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchor_generator(backbone, size_per_stride=det_cfg.anchor_size_per_stride),
        rpn_post_nms_top_n_train=det_cfg.proposals,
        rpn_post_nms_top_n_test=det_cfg.proposals,
        box_roi_pool=pooler,
        box_head=TwoMLPHead(width * pooler.output_size[0] * pooler.output_size[1], det_cfg.representation_size),
        box_predictor=FastRCNNPredictor(det_cfg.representation_size, num_classes + 1),
        box_batch_size_per_image=det_cfg.rois_per_image,
    )


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def make_optimizer(model: FasterRCNN, train_cfg: Any) -> torch.optim.Optimizer:
    """AdamW: the RPN and box head at ``lr``; the backbone's trainable stages and its FPN at ``backbone_lr``, or,
    when that is 0 (stages frozen), the FPN at ``lr`` with the heads."""
    heads = [p for module in (model.rpn, model.roi_heads) for p in module.parameters()]
    if train_cfg.backbone_lr == 0 and model.backbone.neck is not None:
        heads += [p for p in model.backbone.neck.parameters() if p.requires_grad]
    groups: List[Dict[str, Any]] = [{"name": "heads", "params": heads, "lr": train_cfg.lr}]
    if train_cfg.backbone_lr > 0:
        groups += model.backbone.param_groups(train_cfg.backbone_lr)
    return torch.optim.AdamW(groups, weight_decay=train_cfg.weight_decay)


# --- training -------------------------------------------------------------------------------------------------------


def _batch(images: Tensor, targets: List[Target], indices: Tensor, device: torch.device) -> Tuple[list, list]:
    chosen = [int(i) for i in indices]
    moved = [{key: value.to(device) for key, value in targets[i].items()} for i in chosen]
    return [images[i].to(device) for i in chosen], moved


def evaluate(model: FasterRCNN, data: Tuple[Tensor, List[Target]], batch_size: int, seed: int) -> Dict[str, float]:
    """Validation loss (the detector's training losses, backbone in eval mode, no update) and mAP@0.5.

    The losses sample anchors and RoIs at random, so they run on their own seeded RNG: the numbers depend on the
    weights only, and training's random stream is left as it was."""
    images, targets = data
    device = next(model.parameters()).device
    loss_sum, detections = 0.0, []
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for indices in torch.arange(len(images)).split(batch_size):
            batch, truth = _batch(images, targets, indices, device)
            model.train()
            model.backbone.eval()  # BatchNorm statistics and dropout as at inference
            loss_sum += float(sum(model(batch, truth).values())) * len(indices)
            model.eval()
            detections += [{key: value.cpu() for key, value in found.items()} for found in model(batch)]
    return {"val_loss": loss_sum / len(images), "val_map50": mean_average_precision(detections, targets)}


def train_detector(
    model: FasterRCNN,
    train_set: Tuple[Tensor, List[Target]],
    val_set: Tuple[Tensor, List[Target]],
    train_cfg: Any,
    seed: int,
) -> Tuple[List[Dict[str, float]], float]:
    """``train_cfg.iterations`` AdamW steps on shuffled batches; a metrics row every ``eval_every`` iterations and
    after the last (each also logged), and the training seconds (evaluation excluded)."""
    images, targets = train_set
    optimizer = make_optimizer(model, train_cfg)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.int64)
    sums = dict.fromkeys(LOSSES, 0.0)
    since, rows, seconds = 0, [], 0.0
    for iteration in range(1, train_cfg.iterations + 1):
        if len(order) < train_cfg.batch_size:
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        indices, order = order[: train_cfg.batch_size], order[train_cfg.batch_size :]
        start = time.perf_counter()
        model.train()
        losses = model(*_batch(images, targets, indices, device))
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(parameters, train_cfg.clip_grad_norm)
        optimizer.step()
        seconds += time.perf_counter() - start
        for name in LOSSES:
            sums[name] += losses[name].item()
        since += 1
        if iteration % train_cfg.eval_every == 0 or iteration == train_cfg.iterations:
            row: Dict[str, float] = {"iteration": iteration, "train_loss": sum(sums.values()) / since}
            row.update({f"train_{name}": total / since for name, total in sums.items()})
            row.update(evaluate(model, val_set, train_cfg.batch_size, seed))
            rows.append(row)
            sums, since = dict.fromkeys(LOSSES, 0.0), 0
            log.info(
                "iteration %d/%d  train loss %.4f  |  val loss %.4f  mAP@0.5 %.3f  |  %.1f s training",
                iteration, train_cfg.iterations, row["train_loss"], row["val_loss"], row["val_map50"], seconds,
            )  # fmt: skip
    return rows, seconds


# --- config checks --------------------------------------------------------------------------------------------------


def _check_number(
    cfg: DictConfig, key: str, *, integer: bool, minimum: float, inclusive: bool = True, maximum: float = math.inf
) -> None:
    value = OmegaConf.select(cfg, key)
    is_number = isinstance(value, (int, float)) and math.isfinite(real_value(value))  # real_value: bool is not one
    in_range = is_number and (value >= minimum if inclusive else value > minimum) and value <= maximum
    if not in_range or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        bound = f"in {minimum}..{maximum}" if maximum < math.inf else f"{'>=' if inclusive else '>'} {minimum}"
        fail(f"{key}: must be {kind} {bound}, got {quoted(value)}")


#: upper bounds of the integer keys that size the work (views are made in memory, images pass the backbone whole,
#: the box head is a (width x 7 x 7) x representation_size layer); the seed leaves room for the views' seed + 1
MAXIMA = {
    "seed": MAX_SEED - 1,
    "data.image_size": MAX_SIDE,
    "data.train_views": 100_000,
    "data.val_views": 100_000,
    "train.batch_size": 4096,
    "detector.proposals": 10_000,  # torchvision's Faster R-CNN: 2000
    "detector.rois_per_image": 10_000,  # torchvision's: 512
    "detector.representation_size": 4096,  # torchvision's: 1024
}
#: the highest ``data.scale``: a photo's longer side is at most this many times a view's
MAX_SCALE = 10


def validate(cfg: DictConfig) -> None:
    """Refuse bad values with a message naming the key and what it accepts."""
    integers = {
        "seed": 0,
        "data.image_size": 32,
        "data.train_views": 1,
        "data.val_views": 1,
        "detector.proposals": 1,
        "detector.rois_per_image": 1,
        "detector.representation_size": 1,
        "train.iterations": 1,
        "train.eval_every": 1,
        "train.batch_size": 1,
    }
    for key, minimum in integers.items():
        _check_number(cfg, key, integer=True, minimum=minimum, maximum=MAXIMA.get(key, math.inf))
    pixels = cfg.train.batch_size * cfg.data.image_size**2
    if pixels > MAX_BATCH_PIXELS:  # memory for the maps grows with it: refused, not killed by the system
        fail(
            f"train.batch_size, data.image_size: a batch of {cfg.train.batch_size} images of {cfg.data.image_size}^2 "
            f"is {pixels} pixels, more than {MAX_BATCH_PIXELS}; lower one of them"
        )
    for key in ("train.lr", "train.clip_grad_norm", "detector.anchor_size_per_stride"):
        _check_number(cfg, key, integer=False, minimum=0, inclusive=False)
    for key in ("train.backbone_lr", "train.weight_decay", "data.min_visible"):
        _check_number(cfg, key, integer=False, minimum=0)
    if cfg.data.min_visible > 1:
        fail(f"data.min_visible: must be a fraction in [0, 1], got {cfg.data.min_visible!r}")
    scale = cfg.data.scale
    numbers = OmegaConf.is_list(scale) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
    if not numbers or len(scale) != 2 or not 0 < scale[0] <= scale[1] <= MAX_SCALE:
        fail(f"data.scale: must be [low, high] with 0 < low <= high <= {MAX_SCALE}, got {quoted(scale)}")
    side = round(cfg.data.image_size * scale[1])
    if side > MAX_SIDE:  # the photo is resized whole before the crop
        fail(
            f"data.scale, data.image_size: a photo's longer side becomes {cfg.data.image_size} x {scale[1]:g} = "
            f"{side} pixels at the highest scale, more than {MAX_SIDE}; lower one of them"
        )
    boxes = cfg.data.boxes
    if boxes is not None and (not isinstance(boxes, str) or not boxes):
        fail(f"data.boxes: must be the path of a box file, or null for the packaged one, got {quoted(boxes)}")


# --- one run --------------------------------------------------------------------------------------------------------


def resolved_config(cfg: DictConfig) -> str:
    """The config with its interpolations resolved, as YAML (config_resolved.yaml); a value missing (``???``) or an
    interpolation that cannot be resolved is a one-line error naming the key (the value is not echoed: it may come
    from the environment)."""
    try:
        return OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except MissingMandatoryValue as error:
        fail(f"{error.full_key}: missing; give it on the command line ({error.full_key}=...)")
    except OmegaConfBaseException as error:
        fail(f"{error.full_key or 'config'}: its interpolation cannot be resolved ({type(error).__name__})")


def _metrics_text(rows: List[Dict[str, float]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _folder_key() -> str:
    """The key that names a run's folder: ``hydra.sweep.dir`` for a sweep's job, else ``hydra.run.dir``."""
    return "hydra.sweep.dir" if HydraConfig.get().mode == RunMode.MULTIRUN else "hydra.run.dir"


def _place(output_dir: Path, name: str, text: str, key: str) -> None:
    """Write ``output_dir / name`` whole, never replacing a file there: one put there after the folder was checked
    (another run given the folder at once, or the user) stops this run with a one-line error naming it (``key``:
    the folder's)."""
    try:
        write_atomically(
            output_dir / name,
            lambda partial: partial.write_text(text, encoding="utf-8", newline=""),
            overwrite=False,
            what=name,
        )
    except featx.FeatxError as error:
        fail(taken_error(output_dir, name, key) if os.path.lexists(output_dir / name) else str(error))


def _build(cfg: DictConfig, num_classes: int, choice: str) -> FasterRCNN:
    """The detector on the configured backbone, or a one-line error naming the backbone and what works."""
    torch.manual_seed(cfg.seed)
    try:
        backbone = featx.build(cfg.backbone)
    except featx.FeatxError as error:
        fail(str(error))
    if backbone.out_channels is None:
        widths = ", ".join(f"{info.name}={info.channels}" for info in backbone.feature_info)
        fpn = ", ".join(name for name in backbone_names() if name.endswith("_fpn"))
        fail(
            f"backbone: {choice}'s outputs differ in channels ({widths}); the detector needs one count: choose an "
            f"FPN backbone ({fpn}) or add one with backbone.fpn.out_channels=256"
        )
    stride = max(info.stride for info in backbone.feature_info)
    if cfg.data.image_size < stride:
        fail(f"data.image_size: must be at least {stride} (the deepest output's stride), got {cfg.data.image_size}")
    fixed = backbone.spec.input_size
    if fixed is not None and tuple(fixed) != (cfg.data.image_size, cfg.data.image_size):
        height, width = fixed
        fail(
            f"data.image_size: {choice} takes inputs of exactly {height}x{width} (its input_size), got "
            f"{cfg.data.image_size}; "
            + (
                f"give data.image_size={height}"
                if height == width
                else "the photos are square: choose another backbone"
            )
        )
    if cfg.train.backbone_lr == 0:
        backbone.freeze()
    try:  # featx's anchors and pooler refuse outputs the detector would misuse (strides that skip a level)
        model = build_detector(backbone, num_classes, cfg.data.image_size, cfg.detector)
    except featx.FeatxError as error:
        fail(f"backbone: {choice}: {error}")
    return model.to(next(backbone.parameters()).device)


def _result(
    model: FasterRCNN, cfg: DictConfig, rows: List[Dict[str, float]], train_time: float, choice: str
) -> Dict[str, Any]:
    """The run's row: the backbone, its size, the last evaluation, training throughput, the job."""
    hydra_cfg = HydraConfig.get()
    spec = model.backbone.spec
    return {
        "backbone": choice,
        "model": spec.model,
        "weights": spec.weights or "random init",
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "iterations": cfg.train.iterations,
        "train_loss": rows[-1]["train_loss"],
        "val_loss": rows[-1]["val_loss"],
        "val_map50": rows[-1]["val_map50"],
        "train_time_s": round(train_time, 2),
        "images_per_s": round(cfg.train.iterations * cfg.train.batch_size / train_time, 1),
        "job": OmegaConf.select(hydra_cfg, "job.num", default=0),  # unset outside a sweep
        "sweep": os.environ.get(SWEEP_ENV),  # the sweep's id (experiment_summary.SweepSummary), null outside one
        "overrides": list(hydra_cfg.overrides.task),
    }


@hydra.main(version_base="1.3", config_path="experiment_conf", config_name="experiment")
def main(cfg: DictConfig) -> None:
    """One run: train the detector; write config_resolved.yaml, metrics.csv and result.json in the output dir."""
    torch.use_deterministic_algorithms(True)  # with the seeded data, init and order: a rerun repeats every number
    config_text = resolved_config(cfg)
    validate(cfg)
    output_dir, key = Path(HydraConfig.get().runtime.output_dir), _folder_key()
    refuse_a_used_folder(output_dir, key)
    try:
        classes, photos = load_annotations(cfg.data.boxes or BOXES)
    except (OSError, ValueError) as error:  # a missing file, bad JSON, a box outside its photo
        fail(f"data.boxes: {error}")
    choice = HydraConfig.get().runtime.choices.get("backbone") or cfg.backbone.model
    model = _build(cfg, len(classes), choice)
    # once nothing is left to refuse, and first: the folder is this run's from here on (a run given it at once stops)
    _place(output_dir, "config_resolved.yaml", config_text, key)
    data = cfg.data
    views = {"size": data.image_size, "scale": list(data.scale), "min_visible": data.min_visible}
    train_set = make_views(photos, data.train_views, seed=cfg.seed, **views)
    val_set = make_views(photos, data.val_views, seed=cfg.seed + 1, **views)
    log.info(
        "backbone=%s (%s, weights: %s) | %d classes | %d train / %d val views of %d photos, %dx%d | device %s",
        choice, model.backbone.spec.model, model.backbone.spec.weights or "random init", len(classes),
        len(train_set[0]), len(val_set[0]), len(photos), data.image_size, data.image_size,
        next(model.parameters()).device,
    )  # fmt: skip
    rows, train_time = train_detector(model, train_set, val_set, cfg.train, cfg.seed)
    result = _result(model, cfg, rows, train_time, choice)
    _place(output_dir, "result.json", json.dumps(result, indent=2) + "\n", key)
    _place(output_dir, "metrics.csv", _metrics_text(rows), key)
    log.info(
        "val loss %.4f mAP@0.5 %.3f | %s params, %s trainable | %.1f s training, %.1f images/s | %s",
        result["val_loss"], result["val_map50"], f"{result['params']:,}", f"{result['trainable_params']:,}",
        result["train_time_s"], result["images_per_s"], output_dir,
    )  # fmt: skip


def check_backbone_choices(arguments: Sequence[str]) -> None:
    """Refuse, before Hydra composes (its answer lists every config of the group, over a hundred lines), an unknown
    ``backbone=`` choice with the close names, and a choice that leaves the config roots (featx's apps' own check);
    any name is left to Hydra where ``--config-dir``, ``hydra.searchpath`` or a ``backbone/`` folder beside this
    script's config adds backbones."""
    flags, _ = hydra_flags(arguments)
    overrides = parsed_overrides("experiment", arguments)
    searchpath = any(override.key_or_group == "hydra.searchpath" for _, override in overrides)
    more_backbones = flags.config_dir is not None or searchpath or (CONF_DIR / "backbone").exists()
    chosen = [(argument, override) for argument, override in overrides if override.key_or_group == "backbone"]
    check_choices("experiment", chosen, custom_roots=more_backbones)  # the other top-level keys are values here


if __name__ == "__main__":
    sys.argv[1:] = plain_nested_overrides(sys.argv[1:])  # backbone.fpn.out_channels=N on a backbone without an FPN
    check_backbone_choices(sys.argv[1:])
    main()
