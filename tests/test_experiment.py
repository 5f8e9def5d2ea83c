"""scripts/experiment.py (Faster R-CNN on featx backbones over skimage photos): runs and a sweep as real subprocesses
at tiny sizes, its box file, its views, its mAP and its summary."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Tuple

import pytest
import torch
import torchvision
from helpers import SCRIPTS, load_script, run_script_in_process
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

SCRIPT = SCRIPTS / "experiment.py"
CONF_DIR = SCRIPTS / "experiment_conf"
BOXES = SCRIPTS / "experiment_data" / "boxes.json"
TINY = [
    "data.image_size=64",
    "data.train_views=1",
    "data.val_views=1",
    "detector.proposals=32",
    "detector.rois_per_image=16",
    "detector.representation_size=32",
    "train.iterations=2",
    "train.eval_every=1",
    "train.batch_size=2",
    "backbone.device=cpu",
    "backbone.fpn.out_channels=64",  # on a backbone without an FPN, adds one
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiment() -> ModuleType:
    return load_script("experiment")


@pytest.fixture(scope="module")
def summary() -> ModuleType:
    return load_script("experiment_summary")


@pytest.fixture(scope="module")
def views() -> ModuleType:
    return load_script("skimage_views")


@pytest.fixture(scope="module")
def metrics() -> ModuleType:
    return load_script("box_metrics")


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("experiment", overrides=list(overrides))


def compose_config_with_hydra(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("experiment", overrides=list(overrides), return_hydra_config=True)


def read_metrics(path: Path) -> List[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def sweep_id(sweep_dir: Path) -> str:
    """The id the sweep that wrote ``sweep_dir`` recorded in its first job's result.json."""
    return json.loads((sweep_dir / "0_resnet18_fpn" / "result.json").read_text())["sweep"]


def taken(run_dir: Path, name: str, key: str = "hydra.run.dir") -> str:
    """The refusal of a run folder that already holds ``name``."""
    return (
        f"experiment: error: {key}: {run_dir} already holds {name} (another run's or yours), which is never "
        "overwritten: give another folder (the default names one per run, to the microsecond)"
    )


def table_rows(results_md: Path) -> List[str]:
    return [line.split("|")[1].strip() for line in results_md.read_text().splitlines()[2:]]


# --- runs -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    """One tiny run with the default backbone: its run dir."""
    cwd = tmp_path_factory.mktemp("run")
    done = run_script(*TINY, f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert not (cwd / "outputs").exists()  # hydra.run.dir moved everything
    return cwd / "run"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Tuple[Path, str]:
    """A tiny two-backbone sweep, the default backbone first, then one given an FPN by override: its dir and its
    console output."""
    cwd = tmp_path_factory.mktemp("sweep")
    sweep_dir = cwd / "sweep"
    done = run_script(
        "-m",
        "backbone=resnet18_fpn,mobilenet_v3_large",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_page={sweep_dir / 'page.md'}",
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    return sweep_dir, done.stdout + done.stderr


def test_a_rerun_writes_the_same_metrics(single_run, sweep):
    # the sweep's first job is the same run in another process: seeded views, init, batch order and val sampling,
    # and deterministic algorithms make every number the same
    assert (sweep[0] / "0_resnet18_fpn" / "metrics.csv").read_bytes() == (single_run / "metrics.csv").read_bytes()


def test_a_run_writes_its_metrics_result_and_configs(single_run):
    rows = read_metrics(single_run / "metrics.csv")
    assert [row["iteration"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == [
        "iteration", "train_loss", "train_loss_classifier", "train_loss_box_reg", "train_loss_objectness",
        "train_loss_rpn_box_reg", "val_loss", "val_map50",
    ]  # fmt: skip
    for row in rows:
        parts = sum(float(row[key]) for key in row if key.startswith("train_loss_"))
        assert float(row["train_loss"]) == pytest.approx(parts) and float(row["val_loss"]) > 0
        assert 0.0 <= float(row["val_map50"]) <= 1.0

    result = json.loads((single_run / "result.json").read_text())
    assert result["backbone"] == "resnet18_fpn" and result["model"] == "resnet18"
    assert result["weights"] == "random init" and result["iterations"] == 2
    # c2 is frozen (frozen_stages: 1): conv1 and layer1's convolutions, counted on torchvision's own resnet18 (their
    # BatchNorm layers are FrozenBatchNorm2d under norm: frozen, which holds buffers, not parameters)
    reference = torchvision.models.resnet18()
    c2 = [reference.conv1, *(layer for layer in reference.layer1.modules() if isinstance(layer, torch.nn.Conv2d))]
    assert result["params"] - result["trainable_params"] == sum(layer.weight.numel() for layer in c2)
    assert result["val_map50"] == float(rows[-1]["val_map50"])
    assert result["train_time_s"] > 0 and result["images_per_s"] > 0
    assert result["sweep"] is None  # a single run belongs to no sweep

    resolved = OmegaConf.load(single_run / "config_resolved.yaml")
    assert resolved.backbone.model == "resnet18" and resolved.backbone.fpn.out_channels == 64
    assert resolved.data.image_size == 64 and resolved.train.iterations == 2
    log = (single_run / "experiment.log").read_text()
    assert "iteration 2/2" in log and "5 train / 5 val views of 5 photos, 64x64" in log


def test_sweep_writes_one_table_row_and_one_loss_curve_per_backbone(sweep, summary):
    sweep_dir, console = sweep
    jobs = sorted(path.parent.name for path in sweep_dir.glob("*/result.json"))
    assert jobs == ["0_resnet18_fpn", "1_mobilenet_v3_large"]
    for job in jobs:
        assert (sweep_dir / job / ".hydra" / "config.yaml").is_file()
        resolved = OmegaConf.load(sweep_dir / job / "config_resolved.yaml").backbone
        assert resolved.fpn.out_channels == 64  # mobilenet_v3_large has no FPN in its file
    table = (sweep_dir / "results.md").read_text().splitlines()
    assert table[0].startswith("| backbone | model | params | trainable | train loss | val loss | val mAP@0.5 |")
    assert table_rows(sweep_dir / "results.md") == ["resnet18_fpn", "mobilenet_v3_large"]
    ids = {json.loads((sweep_dir / job / "result.json").read_text())["sweep"] for job in jobs}
    assert len(ids) == 1 and re.fullmatch("[0-9a-f]{32}", ids.pop())  # one id for the sweep's jobs
    assert "| mobilenet_v3_large |" in console  # the table is logged too
    page = (sweep_dir / "page.md").read_text().splitlines()
    assert page[0] == "# Experiment results (generated)"
    assert page[2].startswith("Written by `python scripts/experiment.py -m backbone=resnet18_fpn,mobilenet_v3_large ")
    assert page[4] == "| backbone | model | params | trainable | train loss | val loss | val mAP@0.5 |"  # no timings
    assert page[6:] == [line.rsplit("|", 3)[0] + "|" for line in table[2:]]

    assert (sweep_dir / "results.png").read_bytes().startswith(PNG_SIGNATURE)
    results = summary.load_results(sweep_dir, sweep_id(sweep_dir))
    losses, precision = summary.loss_figure(results).axes
    for axes in (losses, precision):
        labelled = [line for line in axes.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label() for line in labelled] == ["resnet18_fpn", "mobilenet_v3_large"]
    for line, result in zip(losses.get_lines()[::2], results, strict=True):  # val solid, train dashed, per job
        assert list(line.get_ydata()) == [row["val_loss"] for row in result["metrics"]]
        assert list(line.get_xdata()) == [1.0, 2.0]


def test_summary_without_matplotlib_still_writes_the_table(summary, sweep, tmp_path, monkeypatch, capsys):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep[0], sweep_dir, ignore=shutil.ignore_patterns("results.*"))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("experiment", overrides=[f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets where it is not installed

    summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)

    assert (sweep_dir / "results.md").read_text() == (sweep[0] / "results.md").read_text()
    assert not (sweep_dir / "results.png").exists()
    assert "results.png not written: it needs matplotlib (pip install matplotlib)" in capsys.readouterr().out


def test_summary_page_never_replaces_a_users_file(summary, sweep, tmp_path):
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
    # the page is refused before any job trains; a file of the user's put there during the sweep is refused after
    # it, with an exit status saying so once the sweep's own table and plot are written
    refusal = f"experiment: error: summary_page: {mine} exists and is not a page this script wrote"
    with pytest.raises(SystemExit) as before_the_jobs:
        summary.SweepSummary().on_multirun_start(cfg)
    assert str(before_the_jobs.value).startswith(refusal)
    with pytest.raises(SystemExit) as after_the_jobs:
        summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)
    assert str(after_the_jobs.value).startswith(refusal)
    assert mine.read_text() == "my own notes\n"
    assert (sweep_dir / "results.md").read_text() == (sweep[0] / "results.md").read_text()
    assert (sweep_dir / "results.png").is_file()  # matplotlib is in the test extras


def test_a_single_run_refuses_summary_page_before_training(tmp_path):
    """summary_page holds a -m sweep's table: a single run ignored it without a word."""
    done = run_script(*TINY, f"summary_page={tmp_path / 'page.md'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "experiment: error: summary_page: only a -m sweep writes it (the sweep's table); add -m, or leave "
        "summary_page out"
    )
    assert not (tmp_path / "run" / "result.json").exists() and not (tmp_path / "page.md").exists()


def test_the_sweep_summary_replaces_no_users_file_nor_writes_through_a_link(summary, sweep, tmp_path):
    """results.md and results.png were written with write_text and savefig: through a link planted at results.md
    into a file outside the sweep folder, and over a user's own results.png."""
    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep[0], sweep_dir, ignore=shutil.ignore_patterns("results.*", "page.md"))
    outside = tmp_path / "outside.txt"
    outside.write_text("elsewhere\n")
    (sweep_dir / "results.md").symlink_to(outside)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("experiment", overrides=[f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
    with pytest.raises(SystemExit, match="^experiment: error: results.md: "):  # the sweep's exit status says so
        summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)
    assert outside.read_text() == "elsewhere\n" and (sweep_dir / "results.md").is_symlink()
    assert (sweep_dir / "results.png").read_bytes().startswith(PNG_SIGNATURE)  # the rest is written (docs)
    (sweep_dir / "results.md").unlink()
    (sweep_dir / "results.png").write_text("my plot\n")
    with pytest.raises(
        SystemExit, match=f"^experiment: error: results.png: {re.escape(str(sweep_dir))}/results.png exists"
    ):
        summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)
    assert (sweep_dir / "results.png").read_text() == "my plot\n"
    assert (sweep_dir / "results.md").read_text() == (sweep[0] / "results.md").read_text()  # the table is written
    (sweep_dir / "results.png").unlink()
    summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)  # its own pair again: both replaced
    summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)
    assert (sweep_dir / "results.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_second_sweep_into_the_same_folder_summarises_its_own_jobs_alone(sweep, tmp_path):
    # the folder of a finished two-job sweep, given again to a one-job sweep whose job gets a folder of its own
    sweep_dir = tmp_path / "again"
    shutil.copytree(sweep[0], sweep_dir)
    earlier = {
        job: (sweep_dir / job / "result.json").read_bytes() for job in ("0_resnet18_fpn", "1_mobilenet_v3_large")
    }
    # a relative folder, as the default: the summary takes each job once (Hydra names the jobs' folders absolute)
    done = run_script("-m", "backbone=mobilenet_v3_large", *TINY, "hydra.sweep.dir=again", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    assert table_rows(sweep_dir / "results.md") == ["mobilenet_v3_large"]  # not the earlier sweep's two jobs
    logged = done.stdout + done.stderr
    assert "| mobilenet_v3_large |" in logged and "| resnet18_fpn |" not in logged
    result = json.loads((sweep_dir / "0_mobilenet_v3_large" / "result.json").read_text())
    assert result["job"] == 0 and result["sweep"] not in (None, sweep_id(sweep[0]))
    assert {job: (sweep_dir / job / "result.json").read_bytes() for job in earlier} == earlier  # left as they were
    assert (sweep_dir / "results.png").read_bytes().startswith(PNG_SIGNATURE)


def sweep_copy(sweep, tmp_path: Path) -> Tuple[Path, DictConfig]:
    """A copy of the sweep's folder without its summary, and the config its summary is written with."""
    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep[0], sweep_dir, ignore=shutil.ignore_patterns("results.*", "page.md"))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("experiment", overrides=[f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
    return sweep_dir, cfg


def test_the_summary_leaves_out_what_is_not_its_jobs_result(summary, sweep, tmp_path):
    """A result.json that was not JSON in the sweep folder made Hydra warn (the callback raised JSONDecodeError),
    the sweep exit 0, and no results.md be written."""
    sweep_dir, cfg = sweep_copy(sweep, tmp_path)
    for folder in ("notes", "dir/result.json", "zero", "list", "other"):
        (sweep_dir / folder).mkdir(parents=True)
    (sweep_dir / "notes" / "result.json").write_text("not json {\n")
    (sweep_dir / "zero" / "result.json").symlink_to("/dev/zero")
    (sweep_dir / "list" / "result.json").write_text("[1, 2]\n")
    (sweep_dir / "other" / "result.json").write_text('{"sweep": "another one"}\n')
    summary.SweepSummary(sweep=sweep_id(sweep_dir)).on_multirun_end(cfg)
    assert (sweep_dir / "results.md").read_text() == (sweep[0] / "results.md").read_text()


def test_a_jobs_result_that_is_not_whole_ends_the_sweep_with_status_1(summary, sweep, tmp_path):
    sweep_dir, cfg = sweep_copy(sweep, tmp_path)
    job = sweep_dir / "1_mobilenet_v3_large"
    result = json.loads((job / "result.json").read_text())
    refusal = "experiment: error: hydra.sweep.dir: no summary written: "

    def refused(message: str, jobs: Tuple[Path, ...] = ()) -> None:
        summarising = summary.SweepSummary(sweep=sweep_id(sweep_dir))
        for folder in jobs:  # as Hydra calls it after each job of the sweep
            summarising.on_job_end(OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}}}), None)
        with pytest.raises(SystemExit) as raised:
            summarising.on_multirun_end(cfg)
        assert str(raised.value) == refusal + message
        assert not (sweep_dir / "results.md").exists()

    (job / "metrics.csv").rename(job / "kept.csv")
    refused(f"{job}/metrics.csv: cannot be read: No such file or directory")
    (job / "metrics.csv").write_text("iteration,train_loss,val_loss,val_map50\n1,0.5,x,0.0\n")
    refused(f"{job}/metrics.csv: row 1: \"val_loss\" is not a number ('x')")
    (job / "metrics.csv").write_text("iteration,train_loss,val_map50\n1,0.5,0.0\n")
    refused(f'{job}/metrics.csv: no "val_loss" column')
    (job / "kept.csv").replace(job / "metrics.csv")
    (job / "result.json").write_text(json.dumps({**result, "val_loss": "low"}))
    refused(f'{job}/result.json: "val_loss": missing or not a number')
    (job / "result.json").write_text(json.dumps({key: value for key, value in result.items() if key != "job"}))
    refused(f'{job}/result.json: "job": missing or not an integer')
    # in a folder this sweep's job ran in, anything but this sweep's result is refused, not left out
    (job / "result.json").write_text("not json {\n")
    refused(f"{job}/result.json: not JSON (Expecting value: line 1 column 1 (char 0))", jobs=(job,))
    (job / "result.json").write_text(json.dumps({**result, "sweep": "another one"}))
    refused(f"{job}/result.json: not this sweep's (its \"sweep\" is 'another one')", jobs=(job,))
    (job / "result.json").unlink()
    refused(f"{job}/result.json: cannot be read: No such file or directory", jobs=(job,))


def test_row_labels_show_what_else_a_sweep_varies(summary):
    results = [
        {"backbone": "resnet18_fpn", "overrides": ["backbone=resnet18_fpn", "train.lr=0.001", "seed=1"]},
        {"backbone": "resnet18_fpn", "overrides": ["backbone=resnet18_fpn", "train.lr=0.0001", "seed=1"]},
        {"backbone": "vgg16_bn_fpn", "overrides": ["backbone=vgg16_bn_fpn", "train.lr=0.001", "seed=1"]},
    ]
    assert summary.row_labels(results) == [
        "resnet18_fpn train.lr=0.001",
        "resnet18_fpn train.lr=0.0001",
        "vgg16_bn_fpn train.lr=0.001",
    ]
    assert summary.row_labels(results[:1]) == ["resnet18_fpn"]


# --- errors ---------------------------------------------------------------------------------------------------------


def test_run_and_sweep_folders_are_named_to_the_microsecond():
    # two runs started in one second got one folder and wrote over each other's files
    cfg = compose_config_with_hydra()
    for key in ("run", "sweep"):
        folder = Path(cfg.hydra[key].dir)
        assert folder.parent == Path(f"outputs/experiment/{'runs' if key == 'run' else 'multirun'}")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", folder.name), folder


def test_a_folder_holding_another_runs_result_is_refused(single_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(single_run, run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("result.json", "metrics.csv", "config_resolved.yaml")}
    done = run_script(*TINY, "seed=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == taken(run_dir, "result.json")
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_of_two_runs_in_one_folder_at_once_one_keeps_it(tmp_path):
    # two runs given one folder at once: the first to place its config_resolved.yaml keeps the folder (its
    # result.json and metrics.csv), the other stops before training
    run_dir = tmp_path / "run"
    runs = {
        seed: subprocess.Popen(
            [sys.executable, str(SCRIPT), *TINY, f"seed={seed}", f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},  # side by side, not fighting over the cores
        )
        for seed in (1, 2)
    }  # fmt: skip
    outputs = {seed: run.communicate(timeout=600) for seed, run in runs.items()}
    codes = {seed: run.returncode for seed, run in runs.items()}
    assert sorted(codes.values()) == [0, 1], outputs
    winner, loser = sorted(codes, key=codes.get)
    assert outputs[loser][1].strip() in (taken(run_dir, "config_resolved.yaml"), taken(run_dir, "result.json"))
    result = json.loads((run_dir / "result.json").read_text())
    assert f"seed={winner}" in result["overrides"]
    assert OmegaConf.load(run_dir / "config_resolved.yaml").seed == winner
    last = read_metrics(run_dir / "metrics.csv")[-1]  # the winner's metrics, not the other run's
    assert (float(last["val_loss"]), float(last["val_map50"])) == (result["val_loss"], result["val_map50"])


def test_a_backbone_without_one_width_is_a_one_line_error(tmp_path):
    done = run_script_in_process(SCRIPT, ["backbone=resnet18", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 1
    message = done.stderr.strip()
    assert "\n" not in message
    assert message.startswith(
        "experiment: error: backbone: resnet18's outputs differ in channels (c2=64, c3=128, c4=256, c5=512); the "
        "detector needs one count: choose an FPN backbone (alexnet_fpn, "
    )
    assert "resnet18_fpn" in message and message.endswith("or add one with backbone.fpn.out_channels=256")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (  # featx's pooler refuses levels that skip a stride: the script printed the traceback of its refusal
            ["backbone=resnet18", "backbone.fpn.out_channels=64", "backbone.out_features=[c3,c5]"],
            "backbone: resnet18: roi_pooler(): torchvision's MultiScaleRoIAlign needs levels whose strides are powers "
            "of two, doubling from one to the next (it rounds each map's scale to a power of two), got p3 (stride 8), "
            "p5 (stride 32); return consecutive stages (out_features)",
        ),
        (  # a fixed-size model at the default 128: built, then the first training step ended in a traceback
            ["backbone=maxvit_t_fpn", "backbone.device=meta"],
            "data.image_size: maxvit_t_fpn takes inputs of exactly 224x224 (its input_size), got 128; give "
            "data.image_size=224",
        ),
    ],
    ids=["skipped-level", "fixed-size"],
)
def test_a_backbone_the_detector_cannot_use_is_a_one_line_error_before_training(tmp_path, arguments, message):
    done = run_script_in_process(SCRIPT, [*arguments, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert (done.returncode, done.stderr) == (1, f"experiment: error: {message}\n")
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.iterations=0", "train.iterations: must be an integer >= 1, got 0"),
        ("train.batch_size=2.5", "train.batch_size: must be an integer in 1..4096, got 2.5"),
        ("data.image_size=16", "data.image_size: must be an integer in 32..16384, got 16"),
        # no upper bound: 119 GB were allocated for one view
        ("data.image_size=100000", "data.image_size: must be an integer in 32..16384, got 100000"),
        ("data.train_views=1000000", "data.train_views: must be an integer in 1..100000, got 1000000"),
        (
            "data.image_size=8192",
            "train.batch_size, data.image_size: a batch of 4 images of 8192^2 is 268435456 pixels, more than 33554432; "
            "lower one of them",
        ),
        ("train.lr=0", "train.lr: must be a number > 0, got 0"),
        ("train.backbone_lr=-1", "train.backbone_lr: must be a number >= 0, got -1"),
        ("data.min_visible=1.5", "data.min_visible: must be a fraction in [0, 1], got 1.5"),
        ("data.scale=[1.2,0.8]", "data.scale: must be [low, high] with 0 < low <= high <= 10, got [1.2, 0.8]"),
        # the views are seeded with seed + 1, which torch takes below 2**63: a raw OverflowError
        ("seed=100000000000000000000000",
         "seed: must be an integer in 0..9223372036854775806, got 100000000000000000000000"),
        ("seed=9223372036854775807", "seed: must be an integer in 0..9223372036854775806, got 9223372036854775807"),
        ("seed=" + "9" * 400, "seed: must be an integer in 0..9223372036854775806, got " + "9" * 77 + "..."),
        # no upper bounds: a box head of 10^9 features (an allocation error), 10^12 proposals taken as given
        ("detector.representation_size=1000000000",
         "detector.representation_size: must be an integer in 1..4096, got 1000000000"),
        ("detector.proposals=1000000000000", "detector.proposals: must be an integer in 1..10000, got 1000000000000"),
        ("detector.rois_per_image=20000", "detector.rois_per_image: must be an integer in 1..10000, got 20000"),
        # a photo rescaled to 10^8 pixels a side (4.9e16 bytes) for one view
        ("data.scale=[1000000,1000000]",
         "data.scale: must be [low, high] with 0 < low <= high <= 10, got [1000000, 1000000]"),
        (
            "data.image_size=2048 data.scale=[1,9]",
            "data.scale, data.image_size: a photo's longer side becomes 2048 x 9 = 18432 pixels at the highest scale, "
            "more than 16384; lower one of them",
        ),
        ("data.boxes=5", "data.boxes: must be the path of a box file, or null for the packaged one, got 5"),
        ("data.boxes=''", "data.boxes: must be the path of a box file, or null for the packaged one, got ''"),
    ],
)  # fmt: skip
def test_validate_names_the_key(experiment, override, message):
    with pytest.raises(SystemExit) as raised:
        experiment.validate(compose_config(*override.split(" ")))
    assert str(raised.value) == f"experiment: error: {message}"


def test_defaults_are_valid_and_compose_featx_backbones(experiment):
    experiment.validate(compose_config())
    cfg = compose_config("backbone=convnext_tiny_fpn")
    assert cfg.backbone.model == "convnext_tiny" and cfg.backbone.fpn.out_channels == 256


def test_zero_backbone_lr_freezes_the_stages_and_trains_the_fpn_with_the_heads(experiment):
    cfg = compose_config(*TINY, "train.backbone_lr=0")
    model = experiment._build(cfg, 7, "resnet18_fpn")
    assert model.backbone.frozen_stage_names == ("c2", "c3", "c4", "c5")
    assert not any(p.requires_grad for p in model.backbone.stages.parameters())
    optimizer = experiment.make_optimizer(model, cfg.train)
    assert [group["name"] for group in optimizer.param_groups] == ["heads"]
    trained = [model.rpn, model.roi_heads, model.backbone.neck]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for m in trained for p in m.parameters()}
    assert model.roi_heads.box_predictor.cls_score.out_features == 8  # 7 classes + background

    default = compose_config(*TINY)
    trains = experiment.make_optimizer(experiment._build(default, 7, "resnet18_fpn"), default.train)
    assert [group["name"] for group in trains.param_groups] == ["heads", "c3", "c4", "c5", "neck"]  # c2: spec-frozen


@pytest.mark.parametrize(
    ("users", "extra", "message"),
    [
        # both were replaced by the run's own, the config before the run was even checked
        (("metrics.csv", "config_resolved.yaml"), [], "config_resolved.yaml"),
        (("metrics.csv",), [], "metrics.csv"),
        # refused, but only after Hydra had replaced the earlier run's record with the refused run's
        (("result.json", ".hydra/config.yaml", ".hydra/overrides.yaml"), [], "result.json"),
        # a refused run writes nothing (its config_resolved.yaml would hold the folder against a corrected rerun)
        ((), ["train.lr=-1"], "train.lr: must be a number > 0, got -1"),
        (("config_resolved.yaml",), ["train.lr=-1"], "config_resolved.yaml"),  # the folder is checked first
        ((), ["data.boxes=missing.json"], "data.boxes: missing.json: cannot be read: No such file or directory"),
        ((), ["backbone=resnet18"], "backbone: resnet18's outputs differ in channels"),
    ],
)
def test_a_users_files_in_the_run_folder_are_never_replaced(tmp_path, users, extra, message):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    for name in users:
        (run_dir / name).parent.mkdir(exist_ok=True)
        (run_dir / name).write_text(f"my own {name}\n")
    done = run_script_in_process(SCRIPT, [*TINY[:-1], *extra, f"hydra.run.dir={run_dir}"], tmp_path)  # -1: TINY's FPN
    assert done.returncode == 1
    refused_folder = message in users
    expected = taken(run_dir, message) if refused_folder else f"experiment: error: {message}"
    assert done.stderr.strip().startswith(expected)
    files = {str(path.relative_to(run_dir)): path.read_text() for path in run_dir.rglob("*") if path.is_file()}
    if not refused_folder:  # refused by the script, after Hydra wrote its record and log (a folder holding a run
        # file is refused before Hydra writes there)
        files = {name: text for name, text in files.items() if name != "experiment.log" and name[:7] != ".hydra/"}
    assert files == {name: f"my own {name}\n" for name in users}


def test_the_run_files_are_placed_without_replacing_one_put_there_meanwhile(experiment, tmp_path):
    # metrics.csv and the other files of the run are written after training: a file put there meanwhile is kept
    experiment._place(tmp_path, "metrics.csv", "iteration\n1\n", "hydra.run.dir")
    assert (tmp_path / "metrics.csv").read_text() == "iteration\n1\n"
    (tmp_path / "result.json").write_text("mine\n")
    with pytest.raises(SystemExit) as raised:
        experiment._place(tmp_path, "result.json", "{}\n", "hydra.sweep.dir")
    assert str(raised.value) == taken(tmp_path, "result.json", key="hydra.sweep.dir")
    assert (tmp_path / "result.json").read_text() == "mine\n"
    with pytest.raises(SystemExit) as raised:
        experiment._place(tmp_path, "metrics.csv", "iteration\n2\n", "hydra.run.dir")
    assert str(raised.value) == taken(tmp_path, "metrics.csv")
    assert (tmp_path / "metrics.csv").read_text() == "iteration\n1\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # OmegaConf's InterpolationResolutionError, raised writing config_resolved.yaml
        (["data.image_size=${oc.env:FEATX_TEST_NO_SUCH_VARIABLE}"],
         "data.image_size: its interpolation cannot be resolved (InterpolationResolutionError)"),
        (["train.lr=???"], "train.lr: missing; give it on the command line (train.lr=...)"),
        # Hydra's 127-line "Could not find 'backbone/mobilenet_v3_small_fpn'" with every option
        (["backbone=mobilenet_v3_small_fpn"],
         "backbone=mobilenet_v3_small_fpn: no such packaged backbone; did you mean mobilenet_v3_small or "
         "mobilenet_v3_large_fpn or mobilenet_v2_fpn? (featx-list lists them; your own files need --config-dir)"),
        (["-m", "backbone=resnet18_fpn,resnet_18_fpn"],
         "backbone=resnet_18_fpn: no such packaged backbone; did you mean resnet18_fpn or resnet50_fpn or "
         "resnet18? (featx-list lists them; your own files need --config-dir)"),
    ],
)  # fmt: skip
def test_a_bad_command_line_is_one_error_line_before_anything_is_written(tmp_path, arguments, message):
    done = run_script_in_process(SCRIPT, [*arguments, "train.iterations=1", f"hydra.run.dir={tmp_path / 'run'}",
                                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)  # fmt: skip
    assert (done.returncode, done.stderr.strip()) == (1, f"experiment: error: {message}")
    assert not [path.name for path in tmp_path.rglob("*") if path.name in ("config_resolved.yaml", "result.json")]


# --- the box file and the views -------------------------------------------------------------------------------------


def test_the_box_file_fits_its_photos():
    from skimage import data

    spec = json.loads(BOXES.read_text())
    classes = spec["classes"]
    assert len(set(classes)) == len(classes)
    used = set()
    for name, entry in spec["images"].items():
        height, width = getattr(data, name)().shape[:2]
        assert entry["size"] == [height, width], name
        for item in entry["objects"]:
            x0, y0, x1, y1 = item["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (name, item)
            assert (x1 - x0) * (y1 - y0) >= 100, (name, item)  # at least 10 x 10 pixels
            used.add(item["label"])
    assert used == set(classes)  # every class has a box
    assert sum(len(entry["objects"]) for entry in spec["images"].values()) == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda spec: spec["images"]["coffee"]["objects"][0].update(box=[172, 18, 612, 310]),
         "boxes.json: images.coffee.objects[0].box: [172, 18, 612, 310] is not a box inside the 600x400 image"),
        (lambda spec: spec["images"]["rocket"]["objects"][0].update(label="tower"),
         "boxes.json: images.rocket.objects[0].label: unknown class 'tower' (valid: person, helmet, rocket, "),
        (lambda spec: spec["images"].update(eagle=spec["images"].pop("rocket")),
         "boxes.json: images.eagle: unknown skimage.data photo 'eagle' (valid: astronaut, "),
        (lambda spec: spec["images"]["coins"].update(size=[300, 384]),
         "boxes.json: images.coins.size: the photo is [303, 384] (height, width), the file says [300, 384]"),
    ],
)  # fmt: skip
def test_a_bad_box_file_is_refused_with_the_key_named(views, tmp_path, change, message):
    spec = json.loads(BOXES.read_text())
    change(spec)
    (tmp_path / "boxes.json").write_text(json.dumps(spec))
    with pytest.raises(views.AnnotationError) as raised:
        views.load_annotations(tmp_path / "boxes.json")
    assert str(raised.value).startswith(message)


PHOTO = '{"classes": ["a"], "images": {"coins": {"size": [303, 384], "objects": %s}}}'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # each was a raw AttributeError or TypeError
        ("[1, 2]", 'must hold a JSON object with "classes" and "images", got a list'),
        ('{"classes": ["a"], "images": {"coins": [1]}}',
         'images.coins: must be an object with "size" and "objects", got [1]'),
        (PHOTO % "5", 'images.coins.objects: must be a list of objects with "label" and "box", got 5'),
        (PHOTO % "[1]", 'images.coins.objects[0]: must be an object with "label" and "box", got 1'),
        ('{"classes": [["a"]], "images": {}}', "classes: must be a list of distinct names, got [['a']]"),
        (PHOTO % '[{"label": "a", "box": [true, 0, 10, 10]}]',
         "images.coins.objects[0].box: must be [x0, y0, x1, y1], got [True, 0, 10, 10]"),
        ("not json {", "not JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[" * 100_000, "not JSON (nested too deeply)"),  # a RecursionError
        (b"\xff{}", "not JSON ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
    ],
)  # fmt: skip
def test_a_box_file_of_another_form_is_refused_naming_the_key(views, tmp_path, content, message):
    path = tmp_path / "boxes.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(views.AnnotationError) as raised:
        views.load_annotations(path)
    assert str(raised.value) == f"boxes.json: {message}"


def test_a_box_file_is_read_from_a_regular_file_of_bounded_size(views, tmp_path):
    # /dev/zero was read whole (a MemoryError), a fifo would be waited on
    large = tmp_path / "large.json"
    large.write_text(" " * views.MAX_BOX_FILE_BYTES + "{}")
    os.mkfifo(tmp_path / "fifo.json")
    cases = {
        Path("/dev/zero"): "not a regular file (a folder, device, fifo or socket)",
        tmp_path / "fifo.json": "not a regular file (a folder, device, fifo or socket)",
        tmp_path: "not a regular file (a folder, device, fifo or socket)",
        tmp_path / "missing.json": "cannot be read: No such file or directory",
        large: "larger than 1048576 bytes",
    }
    for path, message in cases.items():
        with pytest.raises(views.AnnotationError) as raised:
            views.load_annotations(path)
        assert str(raised.value) == f"{path}: {message}"


def test_boxes_move_with_the_pixels(views):
    """A white rectangle on black, its box given: in every view, the white pixels' extent is the moved box."""
    pixels = torch.zeros(3, 90, 120)
    pixels[:, 20:50, 30:70] = 1.0
    box, label = torch.tensor([[30.0, 20, 70, 50]]), torch.tensor([0])
    generator = torch.Generator().manual_seed(0)
    flips = 0
    for _ in range(12):
        view, boxes, labels = views.random_view(pixels, box, label, 64, (0.8, 1.6), generator, min_visible=0.0)
        white = view[0] > 0.5
        if not white.any():
            assert len(boxes) == 0
            continue
        ys, xs = white.any(dim=1).nonzero(), white.any(dim=0).nonzero()
        seen = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert labels.tolist() == [0]
        assert torch.allclose(boxes[0], seen, atol=1.5), (boxes[0], seen)
        flips += int(boxes[0, 0] > 64 - boxes[0, 2])  # the rectangle sits left of centre in the photo
    assert 0 < flips < 12


def test_views_are_seeded_and_drop_boxes_mostly_cut_away(views):
    """At scale 2 a 100 x 50 photo is 64 x 32 in a 32 x 32 view: of its left and right halves, the one with half
    or more of its area in view is kept, clipped; both only when the crop splits them evenly."""
    pixels = torch.rand(3, 50, 100, generator=torch.Generator().manual_seed(1))
    halves, labels = torch.tensor([[0.0, 0, 50, 50], [50.0, 0, 100, 50]]), torch.tensor([0, 1])
    first = views.random_view(pixels, halves, labels, 32, (2.0, 2.0), torch.Generator().manual_seed(5))
    again = views.random_view(pixels, halves, labels, 32, (2.0, 2.0), torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert first[0].shape == (3, 32, 32)
    outcomes = set()
    for seed in range(16):
        _, kept, kept_labels = views.random_view(
            pixels, halves, labels, 32, (2.0, 2.0), torch.Generator().manual_seed(seed)
        )
        widths = (kept[:, 2] - kept[:, 0]).tolist()
        assert len(kept) >= 1 and all(width >= 16 for width in widths), (seed, kept)
        assert len(kept) == 1 or sum(widths) == pytest.approx(32)  # both: they split the view
        assert kept[:, 1::2].tolist() == [[0.0, 32.0]] * len(kept)
        outcomes.add(tuple(kept_labels.tolist()))
    assert {(0,), (1,)} <= outcomes


# --- mAP ------------------------------------------------------------------------------------------------------------


def found(boxes, scores, labels):
    detections = truth(boxes, labels)
    detections["scores"] = torch.tensor(scores, dtype=torch.float32)
    return detections


def truth(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


def test_map_of_a_worked_example(metrics):
    truths = [truth([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    # ranked: hit (IoU 0.9), miss, hit: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3
    detections = [found([[0, 0, 10, 9], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert metrics.mean_average_precision(detections, truths) == pytest.approx(5 / 6)
    # a second detection of a box already taken is a false positive; IoU 0.45 is a miss at 0.5
    duplicate = [found([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert metrics.mean_average_precision(duplicate, truths) == pytest.approx(5 / 6)
    shifted = [found([[0, 0, 10, 10], [20, 20, 30, 24.5]], [0.9, 0.8], [1, 1])]  # IoU 0.45
    assert metrics.mean_average_precision(shifted, truths) == pytest.approx(0.5)


def test_map_averages_over_the_classes_with_boxes(metrics):
    truths = [truth([[0, 0, 10, 10]], [1]), truth([[5, 5, 25, 25]], [2])]
    perfect = [found([[0, 0, 10, 10]], [0.5], [1]), found([[5, 5, 25, 25]], [0.5], [2])]
    assert metrics.mean_average_precision(perfect, truths) == 1.0
    wrong_class = [found([[0, 0, 10, 10]], [0.5], [2]), found([[5, 5, 25, 25]], [0.5], [3])]
    assert metrics.mean_average_precision(wrong_class, truths) == 0.0
    one_of_two = [found([[0, 0, 10, 10]], [0.5], [1]), found([], [], [])]
    assert metrics.mean_average_precision(one_of_two, truths) == 0.5
    assert metrics.mean_average_precision([found([], [], [])], [truth([], [])]) == 0.0
