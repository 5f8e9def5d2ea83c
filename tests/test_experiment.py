"""scripts/experiment.py: single runs and a sweep as real subprocesses (tiny sizes), its data and its freezing."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Tuple

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiment.py"
CONF_DIR = SCRIPT.parent / "experiment_conf"
TINY = ["data.train_size=48", "data.val_size=24", "data.image_size=32", "train.epochs=1", "train.batch_size=16"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiment() -> ModuleType:
    """The script as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location("experiment_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("experiment", overrides=list(overrides))


def read_metrics(path: Path) -> List[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_single_run_writes_results_metrics_and_configs(tmp_path):
    run_dir = tmp_path / "run"
    done = run_script(*TINY, "train.epochs=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = run_script(*TINY, "train.epochs=2", f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    # deterministic on one machine: seeded data, init, loader order and deterministic algorithms
    assert (tmp_path / "again" / "metrics.csv").read_bytes() == (run_dir / "metrics.csv").read_bytes()

    result = json.loads((run_dir / "result.json").read_text())
    assert result["backbone"] == "resnet18" and result["model"] == "resnet18"
    assert result["weights"] == "random init" and result["head_features"] == "last" and result["epochs"] == 2
    assert 0 < result["trainable_params"] < result["params"]  # c2 is frozen (frozen_stages: 1)
    assert 0.0 <= result["val_acc"] <= 1.0 and result["val_loss"] > 0
    assert result["train_time_s"] > 0 and result["images_per_s"] > 0

    rows = read_metrics(run_dir / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"}
    assert float(rows[-1]["val_acc"]) == pytest.approx(result["val_acc"])

    resolved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert resolved.backbone.model == "resnet18" and resolved.backbone.frozen_stages == 1
    assert resolved.data.train_size == 48 and resolved.train.epochs == 2
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").backbone.model == "resnet18"
    assert "epoch 2/2" in (run_dir / "experiment.log").read_text()
    assert not (tmp_path / "outputs").exists()  # hydra.run.dir moved everything


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Tuple[Path, str]:
    """A tiny two-backbone sweep: its dir and its console output."""
    cwd = tmp_path_factory.mktemp("sweep")
    sweep_dir = cwd / "sweep"
    done = run_script(
        "-m",
        "backbone=resnet18,mobilenet_v3_large",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_page={sweep_dir / 'page.md'}",
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    return sweep_dir, done.stdout + done.stderr


def test_sweep_writes_one_table_and_a_png(sweep):
    sweep_dir, console = sweep
    jobs = sorted(path.parent.name for path in sweep_dir.glob("*/result.json"))
    assert jobs == ["0_resnet18", "1_mobilenet_v3_large"]
    table = (sweep_dir / "results.md").read_text().splitlines()
    assert table[0].startswith("| backbone | model | params | trainable | val acc")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["resnet18", "mobilenet_v3_large"]
    assert (sweep_dir / "results.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "| mobilenet_v3_large |" in console  # the table is logged too
    page = (sweep_dir / "page.md").read_text().splitlines()
    assert page[0] == "# Experiment results (generated)"
    assert page[2].startswith("Written by `python scripts/experiment.py -m backbone=resnet18,mobilenet_v3_large ")
    assert page[4] == "| backbone | model | params | trainable | val acc | val loss |"  # no timings
    assert page[6:] == [line.rsplit("|", 3)[0] + "|" for line in table[2:]]
    for job in jobs:
        assert (sweep_dir / job / ".hydra" / "config.yaml").is_file()
        assert (sweep_dir / job / "config_resolved.yaml").is_file()


def test_summary_without_matplotlib_still_writes_the_table(experiment, sweep, tmp_path, monkeypatch, capsys):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep[0], sweep_dir, ignore=shutil.ignore_patterns("results.*"))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("experiment", overrides=[f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets where it is not installed

    experiment.SweepSummary().on_multirun_end(cfg)

    assert (sweep_dir / "results.md").read_text() == (sweep[0] / "results.md").read_text()
    assert not (sweep_dir / "results.png").exists()
    assert "results.png not written: it needs matplotlib (pip install matplotlib)" in capsys.readouterr().out


def test_bad_value_is_a_one_line_error(tmp_path):
    done = run_script("head.features=mean", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "experiment: error: head.features: unknown value 'mean' (valid: last, all)"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.classes=[disk,blob]", "data.classes: unknown class 'blob' (valid: disk, square, triangle, "),
        ("data.classes=[disk]", "data.classes: must be a list of at least 2 distinct names"),
        ("train.epochs=0", "train.epochs: must be an integer >= 1, got 0"),
        ("train.batch_size=2.5", "train.batch_size: must be an integer >= 2, got 2.5"),
        ("train.lr=0", "train.lr: must be a number > 0, got 0"),
        ("train.backbone_lr=-1", "train.backbone_lr: must be a number >= 0, got -1"),
    ],
)
def test_validate_names_the_key(experiment, override, message):
    with pytest.raises(SystemExit) as raised:
        experiment.validate(compose_config(override))
    assert str(raised.value).startswith(f"experiment: error: {message}")


def test_defaults_are_valid_and_include_featx_backbones(experiment):
    cfg = compose_config("backbone=convnext_tiny")
    experiment.validate(cfg)
    assert cfg.backbone.model == "convnext_tiny" and cfg.backbone.frozen_stages == 1


def test_dataset_is_deterministic_balanced_and_in_range(experiment):
    classes = list(experiment.SHAPES)
    images, labels = experiment.make_dataset(62, 32, classes, seed=3)
    again_images, again_labels = experiment.make_dataset(62, 32, classes, seed=3)
    other_images, _ = experiment.make_dataset(62, 32, classes, seed=4)

    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    assert not torch.equal(images, other_images)
    assert images.shape == (62, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert labels.dtype == torch.int64
    counts = torch.bincount(labels, minlength=len(classes))
    assert len(counts) == len(classes) and counts.max() - counts.min() <= 1


def covered(experiment, name: str) -> torch.Tensor:
    """Foreground masks of the images of class ``name`` (with 2 classes and seed 0, always the same geometry)."""
    images, labels = experiment.make_dataset(24, 64, [name, "square"], seed=0, noise=0.0)
    return (images != images[:, :, :1, :1]).any(dim=1)[labels == 0]  # the corner pixel is background


def test_each_class_draws_its_own_shape(experiment):
    square = covered(experiment, "square").flatten(1).sum(1).float()
    ratio = {name: covered(experiment, name).flatten(1).sum(1) / square for name in experiment.SHAPES}
    assert ratio["square"].eq(1).all()
    assert ratio["disk"].mean().item() == pytest.approx(math.pi / 4, abs=0.03)
    assert ratio["triangle"].mean().item() == pytest.approx(0.5, abs=0.05)
    for texture in ("hstripes", "vstripes", "checkerboard"):
        assert 0.3 < ratio[texture].min() and ratio[texture].max() < 0.7
    for mask in covered(experiment, "hstripes"):  # within the texture, every column is the same
        columns = mask[:, mask.any(dim=0)]
        assert columns.eq(columns[:, :1]).all()
    for mask in covered(experiment, "vstripes"):
        rows = mask[mask.any(dim=1)]
        assert rows.eq(rows[:1]).all()


def train_tiny(experiment, backbone_lr: float):
    cfg = compose_config(*TINY, f"train.backbone_lr={backbone_lr}", "backbone.device=cpu")
    torch.manual_seed(0)
    model = experiment.build_probe(cfg.backbone, len(cfg.data.classes), "all", backbone_lr)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_set = experiment.make_dataset(49, 32, list(cfg.data.classes), seed=0)  # batches of 16, 16, 17
    val_set = experiment.make_dataset(24, 32, list(cfg.data.classes), seed=1)
    experiment.train_probe(model, train_set, val_set, cfg.train, seed=0)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    return model, changed


def test_spec_frozen_stages_stay_fixed_and_the_rest_trains(experiment):
    model, changed = train_tiny(experiment, backbone_lr=1e-3)
    assert model.backbone.frozen_stage_names == ("c2",)
    frozen = {f"backbone.stages.c2.{name}" for name, _ in model.backbone.stages["c2"].named_parameters()}
    assert frozen and all(not p.requires_grad for p in model.backbone.stages["c2"].parameters())
    assert not frozen & changed
    assert any(name.startswith("backbone.stages.c5.") for name in changed)
    assert "head.1.weight" in changed


def test_zero_backbone_lr_is_a_linear_probe(experiment):
    model, changed = train_tiny(experiment, backbone_lr=0)
    assert model.backbone.frozen_stage_names == ("c2", "c3", "c4", "c5")
    assert experiment.count_parameters(model, trainable_only=True) == sum(p.numel() for p in model.head.parameters())
    assert changed == {"head.1.weight", "head.1.bias"}


def test_row_labels_show_what_else_a_sweep_varies(experiment):
    results = [
        {"backbone": "resnet18", "overrides": ["backbone=resnet18", "head.features=last", "train.epochs=1"]},
        {"backbone": "resnet18", "overrides": ["backbone=resnet18", "head.features=all", "train.epochs=1"]},
        {"backbone": "vgg16", "overrides": ["backbone=vgg16", "head.features=last", "train.epochs=1"]},
    ]
    assert experiment.row_labels(results) == [
        "resnet18 head.features=last",
        "resnet18 head.features=all",
        "vgg16 head.features=last",
    ]
    assert experiment.row_labels(results[:1]) == ["resnet18"]


def test_summary_page_never_replaces_a_users_file(experiment, sweep, tmp_path, capsys):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep[0], sweep_dir, ignore=shutil.ignore_patterns("results.*", "page.md"))
    mine = tmp_path / "mine.md"
    mine.write_text("my own notes\n")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "experiment",
            overrides=[f"hydra.sweep.dir={sweep_dir}", f"summary_page={mine}"],
            return_hydra_config=True,
        )
    experiment.SweepSummary().on_multirun_end(cfg)
    assert mine.read_text() == "my own notes\n"
    logged = capsys.readouterr()
    assert f"summary_page: {mine} exists and is not a page this script wrote" in logged.out + logged.err
    assert (sweep_dir / "results.md").read_text() == (sweep[0] / "results.md").read_text()
