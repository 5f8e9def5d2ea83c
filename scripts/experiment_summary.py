"""The summary of a ``scripts/experiment.py -m`` sweep: one table row and one pair of loss curves per job.

Hydra calls :class:`SweepSummary` (``hydra.callbacks`` in ``experiment_conf/experiment.yaml``) as the sweep starts,
around each job and after the last one. As the sweep starts it draws the sweep's id, which each job finds in the
``FEATX_EXPERIMENT_SWEEP`` environment variable and records in its ``result.json`` (``"sweep"``); after the last job
it reads the ``result.json`` and ``metrics.csv`` of this sweep's jobs alone (a folder given to two sweeps holds the
earlier one's jobs too; any other ``result.json`` there, a file of the user's, is left out, but a job of this sweep
whose files are not whole ends the sweep with exit status 1 naming the file, no summary written) and writes, in the
sweep dir, ``results.md`` (also logged) and ``results.png`` (needs matplotlib; without it the table is still
written), and, with ``summary_page=PATH`` (checked as the sweep starts; a single run refuses it), the table as a page
naming the command and the machine; a file it may not replace ends the sweep with exit status 1. Example (on a
finished sweep)::

    from experiment_summary import load_results, results_table
    sweep_dir = Path("outputs/experiment/multirun/2026-01-01_12-00-00-000000")
    sweep = json.loads((sweep_dir / "0_resnet18_fpn" / "result.json").read_text())["sweep"]
    print(results_table(load_results(sweep_dir, sweep)))
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Collection, Dict, List, NoReturn, Optional

import torch
from hydra.core.utils import configure_log
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

import featx
from featx.errors import first_line
from featx.files import first_line_of, refuse_a_foreign_page, write_atomically, write_generated_page
from featx.spec.limits import escaped, quoted

from machine import machine_description
from skimage_views import parsed_json, read_small_file

log = logging.getLogger("experiment")

PAGE_TITLE = "# Experiment results (generated)"


def fail(message: str) -> NoReturn:
    """End the run or sweep with a one-line error (exit status 1), as the script's own checks do."""
    raise SystemExit(f"experiment: error: {escaped(message)}")


#: the environment variable that gives a sweep's job the sweep's id (set by :class:`SweepSummary` around each job)
SWEEP_ENV = "FEATX_EXPERIMENT_SWEEP"


#: the files a run writes in its folder, none of which it ever replaces (a folder holding one is refused)
RUN_FILES = ("result.json", "config_resolved.yaml", "metrics.csv")


def taken_error(output_dir: Path, name: str, key: str) -> str:
    """The refusal of a run folder (``key`` names it) that already holds the run file ``name``."""
    return (
        f"{key}: {output_dir} already holds {name} (another run's or yours), which is never overwritten: give "
        "another folder (the default names one per run, to the microsecond)"
    )


def refuse_a_used_folder(output_dir: Path, key: str) -> None:
    """Stop before writing anything of this run's where a file of another run's or of the user's has a run file's
    name (a folder given twice, or a folder of the user's)."""
    for name in RUN_FILES:
        if os.path.lexists(output_dir / name):
            fail(taken_error(output_dir, name, key))


#: the largest result.json and metrics.csv read (a job's are under a kilobyte, and 100 bytes per evaluation)
MAX_RESULT_BYTES = 1 << 20
MAX_METRICS_BYTES = 64 << 20
#: what the summary reads of a job's result.json: each key's type (``float``: any number)
RESULT_FORM = {
    "backbone": str, "model": str, "params": int, "trainable_params": int, "train_loss": float, "val_loss": float,
    "val_map50": float, "train_time_s": float, "images_per_s": float, "job": int, "overrides": list,
}  # fmt: skip
#: the metrics.csv columns the summary plots
METRIC_COLUMNS = ("iteration", "train_loss", "val_loss", "val_map50")


class ResultError(ValueError):
    """A job of the sweep whose result.json or metrics.csv is not one the script wrote; the message names the file."""


def _read_result(path: Path) -> Dict[str, Any]:
    """The JSON object the file ``path`` holds; ResultError saying why not."""
    try:
        raw = read_small_file(path, MAX_RESULT_BYTES)
    except ValueError as error:
        raise ResultError(f"{path}: {error}") from None
    try:
        result = parsed_json(raw)
    except ValueError as error:
        raise ResultError(f"{path}: {error}") from None
    if not isinstance(result, dict):
        raise ResultError(f"{path}: not a JSON object")
    return result


def _check_form(path: Path, result: Dict[str, Any]) -> None:
    """ResultError unless ``result`` holds each key of :data:`RESULT_FORM`, of its type."""
    kinds = {str: "a string", int: "an integer", float: "a number", list: "a list of strings"}
    for key, kind in RESULT_FORM.items():
        value = result.get(key)
        fits = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
        if not fits or (isinstance(value, list) and not all(isinstance(item, str) for item in value)):
            raise ResultError(f'{path}: "{key}": missing or not {kinds[kind]}')


def _read_metrics(path: Path) -> List[Dict[str, float]]:
    """The rows of the metrics.csv ``path``, every value a number; ResultError saying why not."""
    try:
        text = read_small_file(path, MAX_METRICS_BYTES).decode("utf-8")
    except ValueError as error:  # UnicodeDecodeError too
        raise ResultError(f"{path}: {first_line(error)}") from None
    rows = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [column for column in METRIC_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ResultError(f'{path}: no "{missing[0]}" column')
        for number, row in enumerate(reader, start=1):
            values = {}
            for key, value in row.items():
                try:
                    values[key] = float(value)
                except (TypeError, ValueError):  # a short row's None, a long row's list
                    raise ResultError(f'{path}: row {number}: "{key}" is not a number ({quoted(value)})') from None
            rows.append(values)
    except csv.Error as error:
        raise ResultError(f"{path}: not CSV ({first_line(error)})") from None
    return rows


def load_results(sweep_dir: Path, sweep: str, jobs: Collection[Path] = ()) -> List[Dict[str, Any]]:
    """The results of the jobs of the sweep ``sweep``, in job order, each with its ``metrics`` rows added: the
    ``result.json`` files of the sweep dir's subfolders whose ``"sweep"`` is ``sweep``, and of ``jobs`` (the folders
    the sweep's jobs ran in, where known). Another sweep's in the same folder, and any other file named so (not a
    JSON object: a file of the user's) are left out; ResultError (naming the file) for a result of this sweep that
    is not whole, or one of ``jobs`` without a result of this sweep."""
    ours = {Path(os.path.abspath(job)) for job in jobs}
    found = {path.parent for path in Path(os.path.abspath(sweep_dir)).glob("*/result.json")}
    results = []
    for folder in sorted(ours | found):
        path = folder / "result.json"
        try:
            result = _read_result(path)
        except ResultError:
            if folder in ours:
                raise
            continue
        if result.get("sweep") != sweep:
            if folder in ours:
                raise ResultError(f'{path}: not this sweep\'s (its "sweep" is {quoted(result.get("sweep"))})')
            continue
        _check_form(path, result)
        result["metrics"] = _read_metrics(folder / "metrics.csv")
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
    header = "| backbone | model | params | trainable | train loss | val loss | val mAP@0.5 |"
    rule = "|---|---|---:|---:|---:|---:|---:|"
    lines = [header + (" train time (s) | images/s |" if timings else ""), rule + ("---:|---:|" if timings else "")]
    for label, r in zip(row_labels(results), results, strict=True):
        row = (
            f"| {label} | {r['model']} | {r['params'] / 1e6:.2f}M | {r['trainable_params'] / 1e6:.2f}M | "
            f"{r['train_loss']:.3f} | {r['val_loss']:.3f} | {r['val_map50']:.3f} |"
        )
        lines.append(row + (f" {r['train_time_s']:.1f} | {r['images_per_s']:.1f} |" if timings else ""))
    return "\n".join(lines) + "\n"


def summary_page(results: List[Dict[str, Any]]) -> str:
    """The sweep's table as a page that says how it was made: what ``summary_page=PATH`` writes (for the docs)."""
    command = shlex.join(["python", "scripts/experiment.py", *sys.argv[1:]])
    return (
        f"{PAGE_TITLE}\n\n"
        f"Written by `{command}` on {machine_description()}, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}. "
        "Do not edit: rerun the command. The run is deterministic on one machine, so a rerun gives these numbers; "
        "training times vary and are left out.\n\n" + results_table(results, timings=False)
    )


def loss_figure(results: List[Dict[str, Any]]) -> Any:
    """A matplotlib figure: loss per iteration (left; val solid, train dashed) and val mAP@0.5 (right), one colour
    per job; the left axes' solid lines are labelled with the jobs' row labels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (losses, precision) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, r) in enumerate(zip(row_labels(results), results, strict=True)):
        steps = [row["iteration"] for row in r["metrics"]]
        losses.plot(steps, [row["val_loss"] for row in r["metrics"]], color=f"C{i}", marker="o", label=label)
        losses.plot(steps, [row["train_loss"] for row in r["metrics"]], color=f"C{i}", linestyle="--")
        precision.plot(steps, [row["val_map50"] for row in r["metrics"]], color=f"C{i}", marker="o", label=label)
    losses.set(xlabel="iteration", ylabel="detection loss (sum of 4 terms)", title="loss (val solid, train dashed)")
    precision.set(xlabel="iteration", ylabel="val mAP@0.5", ylim=(0, 1), title="val mAP@0.5")
    losses.legend()
    figure.tight_layout()
    return figure


def plot_results(results: List[Dict[str, Any]], path: Path, overwrite: bool = False) -> None:
    """:func:`loss_figure` as a PNG, written whole; an existing file is replaced only with ``overwrite`` (never
    through a link)."""
    figure = loss_figure(results)
    from matplotlib import pyplot as plt

    try:
        write_atomically(
            path,
            lambda partial: figure.savefig(partial, format="png", dpi=100),
            overwrite=overwrite,
            what=path.name,
            hint="give another hydra.sweep.dir, or move that file",
        )
    finally:
        plt.close(figure)


def _is_results_table(path: Path, table: str) -> bool:
    """Whether ``path`` is a regular file (not a link) starting as ``table`` does: a table this script wrote."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return first_line_of(path) == table.splitlines()[0]
    except OSError:  # unreadable: not known to be this script's (writing it is refused with the reason)
        return False


class SweepSummary(Callback):
    """After a ``-m`` sweep: ``results.md`` and ``results.png`` in the sweep dir, the table in the log, of this sweep's
    jobs alone. ``sweep`` is the id of the sweep to summarise; Hydra's instance draws a new one as the sweep starts
    and hands it to each job (``SWEEP_ENV``), which records it in its ``result.json``. Hydra gives a launcher that
    runs jobs in other processes this object with the id set, so their jobs get it too."""

    def __init__(self, sweep: Optional[str] = None) -> None:
        self.sweep = sweep
        #: the folders this sweep's jobs ran in (those run in this process: a launcher's other processes keep theirs)
        self.jobs: List[Path] = []

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "summary_page"):
            fail("summary_page: only a -m sweep writes it (the sweep's table); add -m, or leave summary_page out")
        # before Hydra makes the folder and writes its record there (.hydra/: an earlier run's would be replaced)
        refuse_a_used_folder(Path(OmegaConf.select(config, "hydra.run.dir")), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        page = OmegaConf.select(config, "summary_page")
        if page:  # refused before any job trains, not only logged after the last one
            try:
                refuse_a_foreign_page(Path(page), PAGE_TITLE, "summary_page")
            except featx.FeatxError as error:
                fail(str(error))
        self.sweep = uuid.uuid4().hex
        self.jobs = []

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is None:  # a single run: it belongs to no sweep, whatever the environment says
            os.environ.pop(SWEEP_ENV, None)
        else:
            os.environ[SWEEP_ENV] = self.sweep

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        os.environ.pop(SWEEP_ENV, None)
        if self.sweep is not None:
            self.jobs.append(Path(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)  # the last job's log file is done
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            results = load_results(sweep_dir, self.sweep, self.jobs) if self.sweep is not None else []
        except ResultError as error:  # a job's files changed after it wrote them: a table without it would mislead
            fail(f"hydra.sweep.dir: no summary written: {error}")
        if not results:
            log.warning("no result.json of this sweep under %s: nothing to summarise", sweep_dir)
            return
        table = results_table(results)
        # the folder's results.md and results.png are this script's when results.md is one of its tables (a rerun
        # into the folder): anything else there is the user's, kept (and never written through a link)
        ours = _is_results_table(sweep_dir / "results.md", table)
        refused = []
        try:
            write_generated_page(sweep_dir / "results.md", table, "results.md")
            log.info("sweep results (%s):\n%s", sweep_dir / "results.md", table)
        except featx.FeatxError as error:  # a file of the user's there: the table is logged alone
            refused.append(str(error))
            log.info("sweep results:\n%s", table)
        page = OmegaConf.select(config, "summary_page")
        if page:
            try:
                write_generated_page(Path(page), summary_page(results), "summary_page")
                log.info("summary page: %s", page)
            except featx.FeatxError as error:  # a file of the user's put there during the sweep
                refused.append(str(error))
        try:
            plot_results(results, sweep_dir / "results.png", overwrite=ours)
            log.info("plot: %s", sweep_dir / "results.png")
        except ImportError:
            log.warning("results.png not written: it needs matplotlib (pip install matplotlib)")
        except featx.FeatxError as error:
            refused.append(str(error))
        if refused:  # after writing what could be written: the sweep's exit status says something was refused
            fail("; ".join(refused))
