"""Hostile command lines: each app answers with one ``<app>: error: ...`` line naming the key, exit status 1, and
leaves the working directory and every user file as they were. The apps run in this process (as their console
scripts call them), planned on the meta device where a build is needed, so each case takes a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Tuple

import hydra
import pytest
import torch
import yaml
from helpers import folder_state, run_in_process
from hydra.experimental.callback import Callback
from PIL import Image

import featx
from featx.cli import catalog
from featx.cli import propose as propose_cli
from featx.cli.output_folders import PRIVATE_ROOT, START_LOCK
from featx.spec.config_files import config_dir
from featx.spec.limits import shortened
from featx.version import __version__


def run_app(
    app: str, arguments: List[str], folder: Path, logs: bool = False, run_dirs: bool = True
) -> Tuple[int, str, str]:
    """``app arguments`` as its console script runs it, in ``folder``: (exit status, stderr, stdout); Hydra's logging
    configured only with ``logs``, its run and sweep folders in ``folder`` unless not ``run_dirs``."""
    hydra_dirs = [f"hydra.run.dir={folder}/.hydra-run", f"hydra.sweep.dir={folder}/.hydra-sweep"] if run_dirs else []
    logging = [] if logs else ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    done = run_in_process(app, [*arguments, *hydra_dirs, *logging], folder)
    return done.returncode, done.stderr, done.stdout


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return folder


def _settings(folder: Path, *given: str, logs: bool = False) -> str:
    """The Hydra settings an app's error names for ``run_app(..., folder, logs)`` with the Hydra settings
    ``given``: those and the run folders and logging choices :func:`run_app` adds."""
    added = [f"hydra.run.dir={folder}/.hydra-run", f"hydra.sweep.dir={folder}/.hydra-sweep"]
    added += [] if logs else ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    return " ".join(shortened(setting) for setting in [*given, *added])


def _message(code: object, errors: str) -> str:
    """The error line an app ended with: the last line on stderr."""
    return errors.strip().splitlines()[-1] if errors.strip() else ""


CASES = [
    # config-group choices that leave the config roots, and unknown names
    (
        "featx",
        ["backbone=../../etc/passwd"],
        r"^featx: error: backbone=\.\./\.\./etc/passwd: a config choice is a name",
    ),
    ("featx", ["backbone=/etc/passwd"], r"^featx: error: backbone=/etc/passwd: a config choice is a name"),
    (  # the primary config's name: Hydra read any YAML file and --cfg job printed it
        "featx",
        ["--config-name", "../../../../../../etc/hosts", "--cfg", "job"],
        r"^featx: error: --config-name \.\./\.\./\.\./\.\./\.\./\.\./etc/hosts: a config name is a name inside the",
    ),
    ("featx-export", ["-cn=/etc/hosts"], r"^featx-export: error: --config-name /etc/hosts: a config name is a name"),
    (  # schemas and groups as the primary config: Hydra wrote outputs/ into the working directory, and ran
        "featx",
        ["--config-name", "featx_app_schema", "+backbone=resnet18", "run=false"],
        r"^featx: error: --config-name featx_app_schema: not an app config \(a schema or a config group\); the apps' "
        r"configs are config, extract and export, or a file of yours in --config-dir whose defaults start from one$",
    ),
    ("featx-extract", ["-cn", "featx/backbone_schema"], r"^featx-extract: error: --config-name featx/backbone_sch"),
    ("featx", ["--config-name=backbone/resnet18.yaml"], r"^featx: error: --config-name backbone/resnet18.yaml: not an"),
    (  # Hydra's own check raised a ValueError with a traceback
        "featx",
        ["-m", "backbone=resnet18,resnet34", "--cfg", "job"],
        r"^featx: error: --multirun and --cfg: give one of --run, --multirun \(-m\), --cfg, --info, "
        r"--shell-completion$",
    ),
    (  # an abbreviation argparse takes
        "featx",
        ["--config-n", "/etc/hosts", "--cfg", "job"],
        r"^featx: error: --config-name /etc/hosts: a config name is a name",
    ),
    ("featx", ["backbone='~/evil'"], r"^featx: error: backbone=~/evil: a config choice is a name"),
    # what Hydra's own code raises for values it does not check, and sweeps that run nothing
    (  # Python's own "range() arg 3 must not be zero", without the key
        "featx",
        ["-m", "input.height=range(32,64,0)", "run=false", "backbone=resnet18"],
        r"^featx: error: input\.height=range\(32,64,0\): the step of a range\(\) must not be 0; "
        r"range\(START,STOP,STEP\)$",
    ),
    # hydra.sweeper.params on the command line: Hydra's "not supported", OmegaConf's AttributeError and
    # "Unexpected type annotation: Set[str]"
    *[
        (
            "featx",
            ["-m", "run=false", "backbone=resnet18", argument],
            rf"^featx: error: {re.escape(argument)}: hydra\.sweeper\.params is for a config file; on the command line "
            r"give the sweep itself, e\.g\. -m backbone\.seed=range\(0,3\)$",
        )
        for argument in [
            "+hydra.sweeper.params.backbone.seed=range(0,2)",
            "+hydra.sweeper.params={backbone.seed:'range(0,2)'}",
            "hydra.sweeper.params={backbone.seed: range(0,3)}",
            "hydra.sweeper.params=5",
        ]
    ],
    (
        "featx",
        ["backbone=resnet18", "run=false", "hydra=null"],
        r"^featx: error: ValueError: Config group override must be a string or a list\. Got NoneType, raised by "
        r"Hydra's own code given the Hydra settings hydra=null hydra\.run\.dir=",
    ),
    (  # Hydra's sweeper asserts it: "AssertionError (HYDRA_FULL_ERROR=1 shows where)"
        "featx",
        ["-m", "backbone=resnet18", "run=false", "hydra.sweeper.max_batch_size=0"],
        r"^featx: error: hydra\.sweeper\.max_batch_size=0: the sweep launches its jobs in batches of this many; give a "
        r"number from 1 up, or null for all at once$",
    ),
    (
        "featx",
        ["-m", "backbone=glob(resnt*)", "run=false"],
        r"^featx: error: the sweep has no jobs \(a glob\(\) that matches no name, an empty range\(\)\?\); nothing ran$",
    ),
    (  # a sweep by hydra.mode, not -m: the check looked at -m
        "featx",
        ["hydra.mode=MULTIRUN", "backbone=glob(resnt*)", "run=false"],
        r"^featx: error: the sweep has no jobs",
    ),
    (
        "featx-export",
        ["-m", "export.height=range(64,32)", "export.path=x.pt"],
        r"^featx-export: error: the sweep has no jobs",
    ),
    (
        "featx",
        ["backbone=resnet18", "run=false", "input.height=" + "[" * 1500 + "]" * 1500],
        r"^featx: error: input\.height=\[\[\[.*: not an override in Hydra's grammar \(nested too deeply\)",
    ),
    (  # a group takes a list of names: its items were not checked, and --cfg hydra printed a file outside the roots
        "featx",
        ["--cfg", "hydra", "-p", "hydra.job_logging", "hydra/job_logging=[../../../../../../../../etc/hostname]"],
        r"^featx: error: hydra/job_logging=\.\./\.\./\.\./\.\./\.\./\.\./\.\./\.\./etc/hostname: a config choice is a ",
    ),
    (
        "featx",
        ["-m", "run=false", "hydra/job_logging=[default],[../../../../../../../../etc/hostname]"],
        r"^featx: error: hydra/job_logging=\.\./\.\./\.\./\.\./\.\./\.\./\.\./\.\./etc/hostname: a config choice is a ",
    ),
    # what Hydra's parser cannot place: argparse's usage block and "unrecognized arguments"
    (
        "featx-extract",
        ["extract.input=x", "--cfg", "job", "extract.output=y"],
        r"^featx-extract: error: extract\.output=y: Hydra reads the overrides as one group, before or after its "
        r"options \(--cfg, -m, \.\.\.\); put them together$",
    ),
    (  # Hydra unpickles the file (a ValueError traceback for one that is not there)
        "featx",
        ["--experimental-rerun", "config.pickle"],
        r"^featx: error: --experimental-rerun: featx does not read Hydra's pickled configs \(unpickling a file runs ",
    ),
    ("featx", ["--frobnicate"], r"^featx: error: --frobnicate: not an option of featx \(see featx --help\)$"),
    (  # Hydra took the folder's config.yaml as the primary config: none of featx's checks of it, and Hydra's
        # outputs/ folder written into the working directory
        "featx",
        ["-cp", "/tmp", "run=false"],
        r"^featx: error: --config-path: featx reads its own configs; add a folder of yours with --config-dir \(-cd\) "
        r"and name a config of yours in it with --config-name \(-cn\)$",
    ),
    ("featx-extract", ["--config-path=/tmp"], r"^featx-extract: error: --config-path: featx-extract reads its own"),
    # a --cfg package the config lacks (Hydra says so without the prefix or the valid keys)
    (
        "featx",
        ["--cfg", "job", "-p", "inpt"],
        r"^featx: error: --package \(-p\) inpt: no such key in the --cfg job config; did you mean input\? "
        r"\(valid: backbone, input, run\)$",
    ),
    ("featx", ["--cfg", "hydra", "-p", "input"], r"^featx: error: --package \(-p\) input: no such key in the --cfg "),
    (
        "featx-export",
        ["--cfg", "job", "--package", "export.heigth"],
        r"^featx-export: error: --package \(-p\) export\.heigth: unknown key; did you mean height\? \(valid here: "
        r"format, path, height, ",
    ),
    ("featx", ["--cfg", "job", "-p", "backbone.stage"], r"^featx: error: --package \(-p\) backbone\.stage: unknown "),
    (  # a key the schema has but the composed config leaves empty: Hydra's bare "package ... not found in config"
        "featx",
        ["--cfg", "job", "-p", "backbone.fpn", "backbone=resnet18"],
        r"^featx: error: --package \(-p\) backbone\.fpn: not in the --cfg job config, or without a value there "
        r"\(null, or \?\?\? for one still to give\)$",
    ),
    ("featx-extract", ["--cfg", "job", "-p", "extract.input"], r"^featx-extract: error: --package \(-p\) extract\.in"),
    # what Hydra's grammar does not take
    ("featx", ["backbone=~/evil"], r"^featx: error: backbone=~/evil: not an override in Hydra's grammar"),
    ("featx", ["input.height=[1,2"], r"^featx: error: input\.height=\[1,2: not an override in Hydra's grammar"),
    ("featx-extract", ["extract.size=(1"], r"^featx-extract: error: extract\.size=\(1: not an override"),
    ("featx", ["backbone=..\\..\\evil"], r"a config choice is a name inside the config roots"),
    ("featx", ["-m", "backbone=resnet18,../x"], r"^featx: error: backbone=\.\./x: a config choice is a name"),
    ("featx", ["-m", 'backbone=resnet18,"../x"'], r"^featx: error: backbone=\.\./x: a config choice is a name"),
    ("featx-export", ["backbone=../x", "export.path=a.pt"], r"^featx-export: error: backbone=\.\./x: a config choice"),
    ("featx-extract", ["backbone=/x", "extract.input=.", "extract.output=o"], r"^featx-extract: error: backbone=/x"),
    # an interpolation Hydra would resolve after the check above (to a path outside the config roots)
    (
        "featx",
        ["backbone=${oc.env:HOME}"],
        r"^featx: error: backbone=\$\{oc\.env:HOME\}: a config choice is a name, not",
    ),
    (
        "featx",
        ["--config-dir", ".", "-m", "backbone=resnet18,${oc.env:HOME}"],
        r"^featx: error: backbone=\$\{oc\.env:HOME\}: a config choice is a name, not an interpolation",
    ),
    ("featx", ["backbone=null"], r"^featx: error: backbone=null: a backbone is chosen by its name"),
    ("featx", ["backbone=[resnet18,vgg16]"], r"^featx: error: backbone=\[resnet18,vgg16\]: a backbone is chosen by"),
    ("featx", ["backbone=resnt18"], r"backbone=resnt18: no such packaged backbone; did you mean resnet18"),
    ("featx", ["backbone=RESNET18"], r"backbone=RESNET18: no such packaged backbone; did you mean resnet18"),
    # the featx app's own keys
    ("featx", ["input.height=0"], r"^featx: error: input\.height: must be an integer in 1\.\.16384, got 0$"),
    ("featx", ["input.width=-3"], r"^featx: error: input\.width: must be an integer in 1\.\.16384, got -3$"),
    ("featx", ["input.batch_size=0"], r"^featx: error: input\.batch_size: must be an integer in 1\.\.4096, got 0$"),
    (
        "featx",
        ["input.height=16384", "input.width=16384"],
        r"^featx: error: input: a batch of 1 inputs of 16384x16384 is more than 33554432 pixels",
    ),
    ("featx", ["input.height=100000"], r"input\.height: must be an integer in 1\.\.16384, got 100000"),
    (
        "featx",
        ["input.batch_size=4096", "input.height=16384", "input.width=16384"],
        r"^featx: error: input: a batch of 4096 inputs of 16384x16384 is more than 33554432 pixels",
    ),
    ("featx", ["backbone=vgg16", "input.height=4", "input.width=4"], r"input 4x4: the forward pass failed"),
    # keys the apps' schemas do not have, added with + (Hydra would let them through, unused)
    (
        "featx",
        ["+input.heigth=300"],
        r"^featx: error: input\.heigth: unknown key; did you mean height\? \(valid here: batch_size, height, width\)$",
    ),
    (
        "featx",
        ["+runn=false"],
        r"^featx: error: runn: unknown key; did you mean run\? \(valid here: backbone, input, run\)$",
    ),
    (
        "featx-export",
        ["+export.dynamc=false", "export.path=a.pt"],
        r"^featx-export: error: export\.dynamc: unknown key",
    ),
    (
        "featx-extract",
        ["+extract.poolin=max", "extract.input=.", "extract.output=o"],
        r"^featx-extract: error: extract\.poolin: unknown key; did you mean pooling\? \(valid here: input, output, ",
    ),
    ("featx", ["+backbone.frozen=1", "run=false"], r"^featx: error: backbone\.frozen: unknown key 'frozen'"),
    # the same keys without + (Hydra's own answer spans lines and suggests the + form), and values of a wrong type
    (
        "featx",
        ["input.heigth=300"],
        r"^featx: error: input\.heigth: unknown key; did you mean height\? \(valid here: batch_size, height, width\)$",
    ),
    (  # Hydra's _target_ (featx sets it) was listed as valid
        "featx",
        ["backbone.modle=x"],
        r"^featx: error: backbone\.modle: unknown key; did you mean model\? \(valid here: model, weights, seed, .*"
        r"channels_last\)$",
    ),
    (
        "featx",
        ["-m", "runn=true,false"],
        r"^featx: error: runn: unknown key; did you mean run\? \(valid here: backbone, "
        r"input, run\)$",
    ),
    ("featx", ["run=maybe"], r"^featx: error: run: must be true or false, got 'maybe'$"),
    ("featx", ["input.height=abc"], r"^featx: error: input\.height: Value 'abc' of type 'str' could not be converted"),
    ("featx-export", ["export.dynamic=maybe", "export.path=a.pt"], r"^featx-export: error: export\.dynamic: must be"),
    (
        "featx-extract",
        ["extract.size=64", "extract.input=.", "extract.output=o"],
        r"^featx-extract: error: extract\.size: Invalid value assigned: int is not a ListConfig, list or tuple\.$",
    ),
    # spec keys through the app
    ("featx", ["backbone.frozen_stages=99", "run=false"], r"backbone\.frozen_stages: 99 is out of range"),
    (  # Hydra's hint (+backbone.stages.c3.slice=...) gave a stage with both forms
        "featx",
        ["backbone=resnet18", "backbone.stages.c3.slice=[5,6]", "run=false"],
        r"^featx: error: backbone\.stages\.c3\.slice: the stage c3 is given by 'modules' in its file, and a stage "
        r"takes one of 'slice' or 'modules': replace it with ~backbone\.stages\.c3\.modules "
        r"\+backbone\.stages\.c3\.slice=\.\.\.$",
    ),
    (  # a stage named like a form that the file lacks is a missing stage, not the other form
        "featx",
        ["backbone=resnet18", "backbone.stages.modules.slice=[0,2]", "run=false"],
        r"^featx: error: backbone\.stages\.modules: the backbone has no stage 'modules' \(stages: c2, c3, c4, c5\); "
        r"\+backbone\.stages\.modules=\{modules: \[\.\.\.\]\} adds one$",
    ),
    (  # Hydra's "Key 'C5' is not in struct" named no stage and advised +, which adds one
        "featx",
        ["backbone=resnet18", "backbone.stages.C5.modules=[layer4]", "run=false"],
        r"^featx: error: backbone\.stages\.C5: the backbone has no stage 'C5'; did you mean c5\? \(stages: c2, c3, c4, "
        r"c5\); \+backbone\.stages\.C5=\{modules: \[\.\.\.\]\} adds one$",
    ),
    (
        "featx",
        ["backbone=resnet18", "backbone.stages.c9=null", "run=false"],
        r"^featx: error: backbone\.stages\.c9: the",
    ),
    (
        "featx",
        ["backbone=resnet18", "backbone.stages.c3.modlues=[layer2]", "run=false"],
        r"^featx: error: backbone\.stages\.c3\.modlues: unknown key; did you mean modules\? \(valid here: slice, "
        r"modules\)$",
    ),
    ("featx", ["backbone.model=${oc.env:HOME}", "run=false"], r"backbone\.model: calls an OmegaConf resolver"),
    ("featx", ["backbone.device=gpu"], r"backbone\.device: .*valid: auto, cpu, cuda, cuda:N, mps, meta"),
    ("featx", ["backbone.device=cpu:1", "run=false"], r"backbone\.device: unknown device 'cpu:1' \(valid: auto,"),
    ("featx", ["backbone.weights=DEFAULT", "backbone=resnet18"], r"FEATX_OFFLINE|offline"),
    ("featx", ["backbone.weights=/nonexistent/w.pth", "backbone=resnet18"], r"/nonexistent/w\.pth"),
    ("featx", ["+backbone.fpn.out_channels=100000000", "backbone=resnet18", "run=false"], r"fpn\.out_channels"),
    # featx-export's keys
    ("featx-export", ["export.height=0", "export.path=a.pt"], r"^featx-export: error: export\.height: must be an"),
    (
        "featx-export",
        [
            "backbone=resnet18",
            "backbone.device=cpu",
            "backbone.input_size=[64,64]",
            "export.height=96",
            "export.path=a.pt",
        ],
        r"^featx-export: error: export\.height, export\.width: 96x64, but the backbone takes 64x64 only "
        r"\(backbone\.input_size\); leave them out or set them to that size$",
    ),
    (  # the default size, written out, is a size the user asked for: not replaced by the model's
        "featx-export",
        [
            "backbone=resnet18",
            "backbone.device=cpu",
            "backbone.input_size=[64,64]",
            "export.height=224",
            "export.width=224",
            "export.path=a.pt",
        ],
        r"^featx-export: error: export\.height, export\.width: 224x224, but the backbone takes 64x64 only ",
    ),
    ("featx-export", ["export.width=0", "export.path=a.pt"], r"^featx-export: error: export\.width: must be an"),
    ("featx-export", ["export.batch_size=0", "export.path=a.pt"], r"^featx-export: error: export\.batch_size"),
    (
        "featx-export",
        ["export.path=''"],
        r"^featx-export: error: export\.path must be a file system path \(not empty\), got ''$",
    ),
    (  # notes.txt/ replaced the file notes.txt with overwrite
        "featx-export",
        ["export.path=notes.txt/", "export.overwrite=true"],
        r"^featx-export: error: export\.path: 'notes\.txt/' ends in '/', so it names a folder; give a file path$",
    ),
    (  # '-' is standard output on a command line (featx-propose --output - writes there), not a file named '-'
        "featx-export",
        ["export.path=-"],
        r"^featx-export: error: export\.path: '-' would mean standard output, which featx-export does not write to; "
        r"give a file path \(\./- for a file named '-'\)$",
    ),
    (  # it made a folder named '-' (status 0)
        "featx-extract",
        ["extract.input=.", "extract.output=-"],
        r"^featx-extract: error: extract\.output: '-' would mean standard output, which featx-extract does not use; "
        r"give a folder \(\./-\)$",
    ),
    ("featx-extract", ["extract.input=-", "extract.output=o"], r"^featx-extract: error: extract\.input: '-' would "),
    ("featx-export", ["export.format=pickle", "export.path=a.pt"], r"export\.format: 'pickle' is unknown \(valid: "),
    ("featx-export", ["export.path=notes.txt", "backbone=resnet18"], r"notes\.txt"),
    # featx-extract's keys
    ("featx-extract", ["extract.output=o"], r"^featx-extract: error: extract\.input: missing"),
    ("featx-extract", ["extract.input=."], r"^featx-extract: error: extract\.output: missing"),
    ("featx-extract", ["extract.input=nowhere", "extract.output=o"], r"extract\.input"),
    ("featx-extract", ["extract.input=.", "extract.output=.", "backbone=resnet18"], r"extract\.output"),
    (
        "featx-extract",
        ["extract.input=.", "extract.output=o", "extract.size=[100000,100000]"],
        r"extract\.size",
    ),
    ("featx-extract", ["extract.input=.", "extract.output=o", "extract.batch_size=0"], r"extract\.batch_size"),
    ("featx-extract", ["extract.input=.", "extract.output=o", "extract.pooling=mean"], r"extract\.pooling"),
    ("featx-extract", ["extract.input=.", "extract.output=o", "extract.outputs=[c9]"], r"extract\.outputs"),
    # keys deleted or unset, and values of the spec's types (Hydra's composition answered on several lines)
    ("featx", ["backbone=resnet18", "~input"], r"^featx: error: input: missing \(deleted with ~input\?\); the app"),
    ("featx", ["~backbone"], r"^featx: error: backbone: missing \(deleted with ~backbone\?\)"),
    (
        "featx",
        ["backbone=resnet18", "input.height=???"],
        r"^featx: error: input\.height: missing; give it on the command line \(input\.height=\.\.\.\)$",
    ),
    ("featx-export", ["export.path=???"], r"^featx-export: error: export\.path: missing; give it on the command line"),
    ("featx", ["backbone=resnet18", "backbone.weights=???"], r"^featx: error: backbone\.weights: missing value"),
    (
        "featx",
        ["backbone=resnet18", "backbone.frozen_stages=true"],
        r"^featx: error: backbone\.frozen_stages: Value 'True' of type 'bool' could not be converted to Integer$",
    ),
    (
        "featx",
        ["backbone=resnet18", "backbone.out_features=c3"],
        r"^featx: error: backbone\.out_features: Invalid value assigned: str is not a ListConfig",
    ),
    (
        "featx",
        ["backbone=resnet18", "backbone.stages.c2=[1]"],
        r"^featx: error: Error merging override backbone\.stages\.c2=\[1\]: Cannot merge DictConfig with ListConfig$",
    ),
    ("featx", ["backbone=resnet18", "input=null"], r"^featx: error: Error merging override input=null: .*not Optional"),
    ("featx", ["backbone=resnet18", "~backbone.stages"], r"^featx: error: .*~backbone\.stages: .*not support deletion"),
    ("featx", ["backbone@foo=resnet18"], r"^featx: error: Could not override 'backbone@foo'\. Did you mean to overr"),
    (
        "featx",
        ["backbone=resnet18", "hydra/launcher=nosuch"],
        r"^featx: error: In 'hydra/config': Could not find 'hydra/launcher/nosuch' \(available: basic\)$",
    ),
    # a sweep value of the wrong type is refused before any job runs (Hydra would stop the sweep while composing)
    ("featx", ["-m", "input.height=64,abc,96"], r"^featx: error: input\.height: Value 'abc' of type 'str' could not"),
    ("featx", ["-m", "++input.height=64,abc,96"], r"^featx: error: input\.height: Value 'abc' of type 'str' could no"),
    ("featx", ["-m", "backbone.frozen_stages=0,true"], r"^featx: error: backbone\.frozen_stages: Value 'True'"),
    ("featx", ["-m", "run=range(0,3)"], r"^featx: error: run: must be true or false, got 0$"),
    ("featx", ["run=yes"], r"^featx: error: run: must be true or false, got 'yes'$"),
    ("featx-export", ["export.overwrite=1", "export.path=a.pt"], r"export\.overwrite: must be true or false, got 1$"),
    ("featx", ["--resolve"], r"^featx: error: --resolve shows a config resolved: use it with --cfg job"),
    ("featx", ["backbone=resnet18", "run=${oc.env:FEATX_NOT_SET,maybe}"], r"^featx: error: run: its interpolation"),
    # what Hydra's grammar does not take, through featx.build's overrides too
    ("featx", ["backbone.weights=~/x.pth"], r"^featx: error: backbone\.weights=~/x\.pth: not an override in Hydra's"),
    # an element of a list the backbone's file leaves null: Hydra's bare "AssertionError: Unexpected type for root"
    (
        "featx",
        ["backbone=resnet18", "backbone.out_features.0=c5"],
        r"^featx: error: backbone\.out_features\.0: Hydra cannot set an element of a list that is null in this config, "
        r"as backbone\.out_features may be \(the backbone's file leaves it null unless it sets one\); give the whole "
        r"list: backbone\.out_features=\[\.\.\.\]$",
    ),
    (  # resnet34's file sets out_features, not input_size: both indexed overrides are named, neither blamed alone
        "featx",
        ["backbone=resnet34", "backbone.out_features.0=c4", "backbone.input_size.0.1=3"],
        r"^featx: error: backbone\.out_features\.0, backbone\.input_size\.0\.1: Hydra cannot set an element of a list "
        r"that is null in this config, as backbone\.out_features and backbone\.input_size may be",
    ),
]


@pytest.mark.parametrize(
    "app, arguments, pattern", CASES, ids=[f"{app} {' '.join(arguments)}"[:70] for app, arguments, _ in CASES]
)
def test_bad_command_lines_are_one_error_line_and_change_nothing(workdir, app, arguments, pattern):
    before = folder_state(workdir)
    code, errors, _ = run_app(app, arguments, workdir)
    assert code not in (0, None), errors
    message = _message(code, errors)
    assert message.startswith(f"{app}: error: ") and "Traceback" not in errors, (message, errors)
    assert re.search(pattern, message), message
    after = {path: state for path, state in folder_state(workdir).items() if not path.startswith(".hydra")}
    assert after == before


def test_a_file_name_with_line_breaks_and_terminal_escapes_stays_on_the_error_line(workdir):
    """A weights path holding a newline and ANSI escapes printed a second, green "build OK" line under the error."""
    forged = f"{workdir}/missing\n\x1b[32mfeatx: build OK.pth"
    code, errors, _ = run_app("featx", ["backbone=resnet18", f"backbone.weights='{forged}'"], workdir)
    assert (code, errors) == (
        1,
        f"featx: error: backbone.weights: cannot read {workdir}/missing\\n\\x1b[32mfeatx: build OK.pth: not found\n",
    )


def test_a_sweep_runs_every_job_and_lists_the_failed_ones(workdir):
    code, errors, output = run_app(
        "featx", ["-m", "backbone=resnet18", "backbone.frozen_stages=99,0,77", "run=false"], workdir
    )
    # the overrides as typed (Hydra's record says run=False), the error prefix said once
    assert _message(code, errors) == (
        "featx: error: 2 of 3 jobs failed: #0 (backbone=resnet18 backbone.frozen_stages=99 run=false); "
        "#2 (backbone=resnet18 backbone.frozen_stages=77 run=false)"
    )
    assert output.count("featx backbone=resnet18 (resnet18)") == 1  # the good job printed its table
    assert errors.count("run=false) failed: backbone.frozen_stages:") == 2 and "failed: featx: error:" not in errors


def test_a_failed_sweep_job_of_a_key_below_a_null_node_is_named_as_typed(workdir):
    """featx makes backbone.fpn.out_channels=... a ++ override (fpn may be null): the failure showed the ++ the user
    never typed."""
    code, errors, _ = run_app(
        "featx", ["-m", "backbone=resnet18", "run=false", "backbone.fpn.out_channels=8,0"], workdir
    )
    assert _message(code, errors) == (
        "featx: error: 1 of 2 jobs failed: #1 (backbone=resnet18 run=false backbone.fpn.out_channels=0)"
    )


def test_interpolations_and_quoted_booleans_still_work_in_the_apps(workdir):
    """A value may refer to another node (${backbone.frozen_stages}), read the environment, or be a quoted bool."""
    arguments = [
        "backbone=resnet18",
        "input.batch_size=${backbone.frozen_stages}",
        "run=${oc.env:FEATX_NOT_SET,false}",
        "input.height='64'",
        "input.width=${input.height}",
    ]
    for run in ([], ["run='false'"], ["run=FALSE"]):
        code, errors, output = run_app("featx", arguments + run, workdir)
        assert code in (0, None), errors
        assert "input 1x3x64x64" in output and "meta device: structure only" in output, output


def test_an_interpolated_app_value_of_the_wrong_type_is_named_without_its_value(workdir, monkeypatch):
    monkeypatch.setenv("FEATX_TEST_SECRET", "s3cr3t-value")
    code, errors, _ = run_app("featx", ["backbone=resnet18", "input.height=${oc.env:FEATX_TEST_SECRET}"], workdir)
    assert _message(code, errors) == (
        "featx: error: input.height: its interpolation cannot be resolved to a value of its type "
        "(InterpolationValidationError)"
    )
    assert "s3cr3t" not in errors + str(code)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"model: resnet18\nstages:\n\tc2: 1\n", r"not valid YAML: found character that cannot start any token at"),
        (b"model: resnet18\nmodel: resnet50\n", r"not valid YAML: key 'model' is given twice at line 2, column 1$"),
        ("model: r\xe9snet\n".encode("latin-1"), r"not UTF-8 text \(byte 8 cannot be decoded\)"),
    ],
)
@pytest.mark.parametrize("flag", ["--config-dir", "hydra.searchpath", "glob"])
def test_a_broken_file_of_the_users_config_folder_is_one_error_line(workdir, content, problem, flag):
    """Hydra's loader answers these with a traceback (yaml's ScannerError, UnicodeDecodeError); a backbone chosen by
    a glob() sweep was not read first."""
    (workdir / "mine" / "backbone").mkdir(parents=True)
    (workdir / "mine" / "backbone" / "broken.yaml").write_bytes(content)
    folder = [f"hydra.searchpath=[file://{workdir}/mine]"] if flag == "hydra.searchpath" else ["--config-dir", "mine"]
    choice = ["-m", "backbone=glob(bro*)"] if flag == "glob" else ["backbone=broken"]
    code, errors, _ = run_app("featx", [*folder, *choice, "run=false"], workdir)
    message = _message(code, errors)
    assert re.search(r"^featx: error: \S*mine/backbone/broken\.yaml: backbone: " + problem, message), message
    assert "Traceback" not in errors


def test_a_key_typo_in_a_file_of_the_users_config_folder_lists_the_valid_keys(workdir):
    """Hydra's composition error named the unknown key only; the same typo on the command line lists them."""
    (workdir / "mine" / "backbone").mkdir(parents=True)
    (workdir / "mine" / "backbone" / "typo.yaml").write_text(
        "defaults:\n  - /featx/backbone_schema@_here_\n  - _self_\nmodel: resnet18\nfrozen_stage: 1\n"
        "stages:\n  c2: {modules: [conv1]}\n"
    )
    code, errors, _ = run_app("featx", ["--config-dir", "mine", "backbone=typo", "run=false"], workdir)
    message = _message(code, errors)
    assert message == (  # named with the file before Hydra composes it
        "featx: error: mine/backbone/typo.yaml: backbone.frozen_stage: unknown key; did you mean frozen_stages? "
        "(valid here: model, weights, seed, source, tokens, stages, out_features, output_names, frozen_stages, "
        "reinit, norm, fpn, layout, input_size, device, channels_last)"
    ), message


def test_a_sweep_whose_jobs_all_pass_exits_zero(workdir):
    code, errors, output = run_app("featx", ["-m", "backbone=resnet18,vgg11", "run=false"], workdir)
    assert code in (0, None), errors
    assert output.count("| weights: random init") == 2


def test_propose_never_overwrites_a_file_without_force(workdir, capsys):
    target = workdir / "notes.txt"
    with pytest.raises(SystemExit) as caught:
        propose_cli.main(["resnet18", "-o", str(target)])
    message = capsys.readouterr().err
    assert caught.value.code == 1 and message.startswith("featx-propose: error: --output: ")
    assert "pass --force to replace it" in message
    assert target.read_text() == "mine"


def test_propose_writes_to_standard_output_for_a_dash(workdir, capsys):
    propose_cli.main(["resnet18", "-o", "./-"])  # a file named -, as other tools take it
    assert (workdir / "-").read_text(encoding="utf-8").startswith("# resnet18 as c2, c3, c4, c5")
    (workdir / "-").unlink()
    propose_cli.main(["resnet18", "-o", "-"])
    output = capsys.readouterr().out
    assert output.startswith("# resnet18 as c2, c3, c4, c5") and "model: resnet18" in output
    assert not (workdir / "-").exists()


@pytest.mark.parametrize(
    "arguments, pattern",
    [
        (["resnet5"], r"resnet50"),
        (["resnet18", "--min-stride", "64"], r"gives fewer than two stages"),
        (["resnet18", "-o", "/proc/x/y.yaml"], r"--output: cannot create the folder /proc/x"),
        (  # a file named newdir was written and reported as "wrote newdir/"
            ["resnet18", "-o", "newdir/"],
            r"^featx-propose: error: --output: 'newdir/' ends in '/', so it names a folder; give a file path$",
        ),
    ],
)
def test_propose_names_what_it_cannot_do(workdir, arguments, pattern, capsys):
    before = folder_state(workdir)
    with pytest.raises(SystemExit) as caught:
        propose_cli.main(arguments)
    message = capsys.readouterr().err
    assert caught.value.code == 1 and message.startswith("featx-propose: error: "), message
    assert re.search(pattern, message.strip()), message
    assert folder_state(workdir) == before


@pytest.mark.parametrize(
    "command",
    [
        ["featx.cli.catalog", "resnet*"],
        ["featx", "backbone=resnet18", "run=false", "hydra/job_logging=disabled"],
        ["featx", "--info"],  # written through logging: a "--- Logging error ---" traceback per line
    ],
    ids=["featx-list", "featx", "featx --info"],
)
def test_a_reader_that_stops_early_ends_the_app_quietly(command, tmp_path):
    """`featx-list | head -1`: the reader goes away before the app writes; no BrokenPipeError traceback."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    )
    process.stdout.close()  # before the app has printed anything (it is still importing)
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 1
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors and b"Logging error" not in errors, (
        errors.decode()[-2000:]
    )


def test_with_stderr_closed_the_status_lines_stay_out_of_the_results(tmp_path):
    """`featx-list 2>&-` wrote its count line into the table on stdout (print falls back to stdout where stderr is
    None), and `featx-propose -o FILE >&- 2>&-` wrote the file, then failed on that line with exit status 1."""
    listed = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m featx.cli.catalog 'resnet1*' 2>&-"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "name",
        "resnet101",
        "resnet152",
        "resnet18",
        "resnet18_fpn",
    ]
    written = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m featx.cli.propose resnet18 -o c.yaml >&- 2>&-"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert written.returncode == 0 and "model: resnet18" in (tmp_path / "c.yaml").read_text()


STDOUT_CASES = [
    (["featx.cli.catalog", "resnet18"], "featx-list"),
    (["featx.cli.propose", "resnet18"], "featx-propose"),
    (["featx", "backbone=resnet18", "run=false", "hydra/job_logging=disabled"], "featx"),
    (["featx", "--cfg", "job"], "featx"),  # Hydra's own writing
    (["featx.cli.extract", "-sc", "install=bash"], "featx-extract"),
    (["featx.cli.catalog", "--help"], "featx-list"),  # argparse swallows its own write errors
    (["featx", "--version"], "featx"),
    (["featx", "--info"], "featx"),  # Hydra writes it through logging, which swallowed each failure (status 0)
    (["featx", "backbone=resnet18", "run=false", "input.height=48"], "featx"),  # Hydra's job log goes to stdout
]
STDOUT_IDS = [
    "featx-list",
    "featx-propose",
    "featx",
    "featx --cfg",
    "featx-extract -sc",
    "featx-list --help",
    "--version",
    "--info",
    "featx with its log",
]

INFO = STDOUT_IDS.index("--info")
#: the cases run as whole processes: featx's own writing, Hydra's --info through logging, Hydra's job log
WHOLE_PROCESS = (0, INFO, len(STDOUT_CASES) - 1)


def _closed_or_full_stdout_run(command: List[str], stdout: str, folder: Path) -> subprocess.CompletedProcess:
    """``python -m command`` with stdout on /dev/full, or closed (Python's sys.stdout is then None)."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", *command],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(folder)},
            cwd=folder,
            preexec_fn=(lambda: os.close(1)) if stdout == "closed" else None,
        )


def _stdout_failure(app: str, stdout: str) -> str:
    reason = "standard output is closed" if stdout == "closed" else "No space left on device"
    return f"{app}: error: cannot write to standard output: {reason}"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device every write to fails)")
@pytest.mark.parametrize(
    "command, app", [STDOUT_CASES[i] for i in WHOLE_PROCESS], ids=[STDOUT_IDS[i] for i in WHOLE_PROCESS]
)
@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
def test_standard_output_that_cannot_be_written_is_one_error_line(command, app, stdout, tmp_path):
    """`featx-list > /dev/full` (a full disk): a traceback after the work was done. `featx-list >&-` (no stdout at
    all: Python's sys.stdout is None): an AttributeError traceback in every app, also at exit. A whole process, as
    the console script runs: what Python does at exit included (the other cases run in this process below); --info
    writes through the logging Hydra configures for a whole process."""
    done = _closed_or_full_stdout_run(command, stdout, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == _stdout_failure(app, stdout)
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr[-2000:]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device every write to fails)")
@pytest.mark.parametrize(
    "command, app",
    [case for i, case in enumerate(STDOUT_CASES) if i != INFO],
    ids=[name for i, name in enumerate(STDOUT_IDS) if i != INFO],
)
@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
def test_every_way_an_app_writes_a_lost_stdout_is_one_error_line(command, app, stdout, tmp_path):
    """Each app and each writer (featx's, argparse's, Hydra's, logging's) on a stdout that fails, run in this process
    as its console script calls it: sys.stdout on /dev/full, or None as Python sets it for a closed stdout."""
    full = open("/dev/full", "w")
    try:
        environment = {**os.environ, "TMPDIR": str(tmp_path)}
        done = run_in_process(command[0], command[1:], tmp_path, environment, None if stdout == "closed" else full)
    finally:
        with contextlib.suppress(OSError):
            full.close()
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == _stdout_failure(app, stdout), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr[-2000:]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device every write to fails)")
def test_every_job_of_a_sweep_whose_output_is_lost_fails(tmp_path):
    """Once stdout failed, it was pointed at /dev/null for the rest of the process: the next job "succeeded" with
    its table thrown away."""
    command = ["featx", "-m", "backbone=resnet18,resnet34", "run=false", "input.height=48", "input.width=48"]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", *command, "hydra/job_logging=disabled", f"hydra.sweep.dir={tmp_path}/sweep"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("featx: error: 2 of 2 jobs failed: #0 ("), done.stderr
    assert lines[-2].endswith(" not run: standard output is lost (No space left on device)"), done.stderr


def test_a_sweep_whose_reader_went_away_runs_no_more_jobs_and_ends_quietly(tmp_path):
    """`featx-export -m ... | head -1`: the next jobs did all their work (here: wrote their files) for a reader that
    was gone, and the sweep printed "job #0 ... failed: 1", a line per job and a summary."""
    command = ["featx.cli.export", "-m", "backbone=resnet18", "export.format=torchscript", "export.height=32"]
    command += ["export.width=32", "export.dynamic=false", "export.path=first.pt,second.pt"]
    process = subprocess.Popen(
        [sys.executable, "-m", *command, "hydra/job_logging=disabled", f"hydra.sweep.dir={tmp_path}/sweep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    process.stdout.close()
    _, errors = process.communicate(timeout=300)
    assert (process.returncode, errors) == (1, "")
    assert (tmp_path / "first.pt").is_file() and not (tmp_path / "second.pt").exists()


def test_a_failed_standard_output_does_not_stop_a_later_call_with_another(tmp_path, capsys):
    """The failure is the stream's: a library user calling an app's main again with a working stdout gets its
    output (a process-wide flag failed every later call)."""
    with open("/dev/full", "w") as full, contextlib.redirect_stdout(full):
        with pytest.raises(SystemExit) as stopped:
            catalog.main(["resnet18"])
        assert stopped.value.code == "featx-list: error: cannot write to standard output: No space left on device"
        with pytest.raises(SystemExit) as again:  # the same lost stream (now /dev/null): it "succeeded", output lost
            catalog.main(["resnet18"])
        assert again.value.code == stopped.value.code
    catalog.main(["resnet18"])
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["resnet18", "resnet18"]
    assert logging.raiseExceptions  # turned off only while a block's stdout is lost


def test_a_standard_output_whose_write_returns_nothing_takes_the_table(capsys):
    """A stdout object whose write() returns None (a minimal collector) was a raw TypeError from int(None)."""

    class Collector:
        def __init__(self) -> None:
            self.parts: List[str] = []

        def write(self, text: str) -> None:
            self.parts.append(text)

        def flush(self) -> None:
            pass

    collector = Collector()
    with contextlib.redirect_stdout(collector):
        catalog.main(["resnet18"])
    assert "".join(collector.parts).splitlines()[1].split()[:2] == ["resnet18", "resnet18"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device every write to fails)")
def test_a_log_handler_made_inside_an_app_gets_the_streams_own_errors_after_it(tmp_path):
    """Hydra's log handler, set up inside the app, keeps featx's stdout guard: a failure after the app returned
    turned Python's logging errors off for the rest of the process."""
    script = """
import logging, os, sys
from featx.cli.output import reader_may_stop
with reader_may_stop("featx"):
    handler = logging.StreamHandler(sys.stdout)
os.dup2(os.open("/dev/full", os.O_WRONLY), 1)
logger = logging.getLogger("later")
logger.addHandler(handler)
logger.warning("after the app")
sys.stderr.write(f"raiseExceptions={logging.raiseExceptions}\\n")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.stderr.strip().splitlines()[-1] == "raiseExceptions=True", done.stderr[-2000:]
    assert "--- Logging error ---" in done.stderr  # Python's own report of a failing handler, as without featx


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, where no folder can be made")
def test_a_run_folder_hydra_cannot_make_is_one_line(tmp_path):
    """The path check passes /proc (writable for root), and os.mkdir fails there: a FileNotFoundError traceback (and,
    for a moment, "cannot write to standard output")."""
    done = subprocess.run(
        [sys.executable, "-m", "featx", "backbone=resnet18", "run=false", "hydra.run.dir=/proc/featx-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "featx: error: /proc/featx-run: No such file or directory", done.stderr[-2000:]


@pytest.mark.parametrize("value", ["0", ""])
def test_hydra_full_error_other_than_1_keeps_the_one_line_error(workdir, monkeypatch, value):
    """Hydra shows its full error for HYDRA_FULL_ERROR=1 only; featx took any value (0 too) as asking for it."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", value)
    code, errors, _ = run_app("featx", ["backbone=resnet18", "run=false", "hydra=null"], workdir)
    assert (code, errors) == (
        1,
        "featx: error: ValueError: Config group override must be a string or a list. Got NoneType, raised by Hydra's "
        f"own code given the Hydra settings {_settings(workdir, 'hydra=null')} (HYDRA_FULL_ERROR=1 shows where)\n",
    )
    assert os.environ["HYDRA_FULL_ERROR"] == value  # the user's value, back


def test_hydra_full_error_1_shows_hydras_own_error(workdir, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match=r"^Config group override must be a string or a list\. Got NoneType$"):
        run_app("featx", ["backbone=resnet18", "run=false", "hydra=null"], workdir)
    assert os.environ["HYDRA_FULL_ERROR"] == "1"


def test_an_empty_tmpdir_is_unset_not_the_root_folder(workdir, monkeypatch):
    """TMPDIR= put the run folders at /featx-outputs-<uid>; Python's tempfile takes an empty TMPDIR as unset."""
    monkeypatch.setenv("TMPDIR", "")
    done = run_in_process("featx", ["backbone=resnet18", "--cfg", "hydra", "--resolve", "-p", "hydra.run.dir"], workdir)
    assert done.stdout.startswith(f"/tmp/featx-outputs-{os.getuid()}/runs/"), done.stdout + done.stderr


@pytest.mark.parametrize("value", [".", "tmp", "~/tmp"])
def test_a_relative_tmpdir_is_refused(workdir, monkeypatch, value):
    """TMPDIR=. put featx-outputs-<uid>/ (Hydra's logs and .hydra/) into the working directory."""
    monkeypatch.setenv("TMPDIR", value)
    before = folder_state(workdir)
    done = run_in_process("featx", ["backbone=resnet18", "run=false"], workdir)
    assert (done.returncode, done.stderr) == (
        1,
        f"featx: error: TMPDIR='{value}': the run folders go below it; give an absolute path, or unset it\n",
    )
    assert folder_state(workdir) == before


def test_a_folder_where_hydra_writes_its_log_is_one_line_naming_it(workdir):
    """A folder main.log in the run folder: "ValueError: Unable to configure handler 'file'", naming nothing."""
    (workdir / ".hydra-run" / "main.log").mkdir(parents=True)
    code, errors, _ = run_app("featx", ["backbone=resnet18", "run=false"], workdir, logs=True)
    assert (code, errors) == (
        1,
        f"featx: error: {workdir}/.hydra-run/main.log is a folder, where Hydra writes this run's main.log; remove it "
        "or give another folder with hydra.run.dir / hydra.sweep.dir\n",
    )


def test_a_log_file_hydra_cannot_open_is_named(workdir):
    log = workdir / ".hydra-run" / "missing" / "x.log"
    code, errors, _ = run_app(
        "featx",
        ["backbone=resnet18", "run=false", f"hydra.job_logging.handlers.file.filename={log}"],
        workdir,
        logs=True,
    )
    assert (code, errors) == (
        1,
        f"featx: error: ValueError: Unable to configure handler 'file' (No such file or directory: {log}) "
        "(HYDRA_FULL_ERROR=1 shows where)\n",
    )


HYDRA_FILE_CASES = [
    (
        "hydra-folder-link",
        ["hydra.run.dir=run"],
        ("run/.hydra", "elsewhere"),
        "{w}/run/.hydra is a link, and Hydra would write this run's config.yaml through it into a file elsewhere",
    ),
    (
        "log-link",
        ["hydra.run.dir=run", "hydra.job.name=job"],
        ("run/job.log", "elsewhere/notes.txt"),
        "{w}/run/job.log is a link, and Hydra would write this run's job.log through it into a file elsewhere",
    ),
    (
        "multirun-link",
        ["-m", "hydra.sweep.dir=sweep"],
        ("sweep/multirun.yaml", "elsewhere/notes.txt"),
        "{w}/sweep/"
        "multirun.yaml is a link, and Hydra would write this run's multirun.yaml through it into a file elsewhere",
    ),
    (
        "job-folder-hydra-link",
        ["-m", "hydra.sweep.dir=sweep"],
        ("sweep/0/.hydra", "elsewhere"),
        "{w}/sweep/0/.hydra is a link, and Hydra would write this run's config.yaml through it into a file elsewhere",
    ),
    (
        "job-folder-link",
        ["-m", "hydra.sweep.dir=sweep"],
        ("sweep/0", "elsewhere"),
        "{w}/sweep/0 is a link, and a job of this sweep would write its logs through it into a folder elsewhere",
    ),
    (  # a job folder below a subfolder of the sweep folder: checked as the sweep folder's own children are
        "nested-job-folder-link",
        ["-m", "hydra.sweep.dir=sweep", "hydra.sweep.subdir=runs/${{hydra.job.num}}"],
        ("sweep/runs/0/.hydra/config.yaml", "elsewhere/config.yaml"),
        "{w}/sweep/runs/0/.hydra/config.yaml is a link, and Hydra would write this run's config.yaml through it",
    ),
    (  # resolved by Hydra as each job starts, then written in at once: here, into the working directory
        "interpolated-sweep-subdir",
        ["-m", "hydra.sweep.dir=sweep", "hydra.sweep.subdir=${{hydra:runtime.cwd}}/elsewhere"],
        None,
        "hydra.sweep.subdir: ${{hydra:runtime.cwd}}/elsewhere refers to other values than the job's number; featx "
        "checks each job's folder before Hydra writes in it",
    ),
    (  # every job wrote its log and Hydra's record of its config into sweep/7, the last one's replacing the others
        "jobless-sweep-subdir",
        ["-m", "hydra.sweep.dir=sweep", "hydra.sweep.subdir=7"],
        None,
        "hydra.sweep.subdir: 7 names no job, so every job of the sweep would write its logs and Hydra's record of its "
        "config into that one folder; include the job's number, e.g. runs/${{hydra.job.num}}",
    ),
    (
        "climbing-sweep-subdir",
        ["-m", "hydra.sweep.dir=sweep", "hydra.sweep.subdir=../elsewhere"],
        None,
        "hydra.sweep.subdir: ../elsewhere is not a folder inside the sweep folder sweep, where each job keeps its logs",
    ),
    (
        "absolute-subdir",
        ["hydra.run.dir=run", "hydra.output_subdir={w}/elsewhere"],
        None,
        "hydra.output_subdir: "
        "{w}/elsewhere is not a folder inside the run folder run, where Hydra keeps its copy of the config",
    ),
    (
        "climbing-subdir",
        ["hydra.run.dir=run", "hydra.output_subdir=../elsewhere"],
        None,
        "hydra.output_subdir: ../elsewhere is not a folder inside the run folder run",
    ),
    (
        "job-name-path",
        ["hydra.run.dir=run", "hydra.job.name=../elsewhere/notes"],
        None,
        "hydra.job.name: '../elsewhere/notes' is not a file name (Hydra writes the run's log to <name>.log)",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "link", "message"), [case[1:] for case in HYDRA_FILE_CASES], ids=[c[0] for c in HYDRA_FILE_CASES]
)
def test_hydras_files_never_land_outside_the_run_folder(workdir, arguments, link, message):
    """Hydra writes .hydra/config.yaml, hydra.yaml, overrides.yaml, <job>.log and (sweeps) multirun.yaml: through a
    link planted at one of those names, or an output_subdir or job name leading out of the run folder, it replaced
    or appended to the user's own files elsewhere."""
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("mine\n")
    (elsewhere / "notes.txt").write_text("mine too\n")
    if link is not None:
        (workdir / link[0]).parent.mkdir(parents=True, exist_ok=True)
        (workdir / link[0]).symlink_to(workdir / link[1])
    before = folder_state(elsewhere)
    arguments = [argument.format(w=workdir) for argument in arguments]
    code, errors, _ = run_app("featx", [*arguments, "backbone=resnet18", "run=false"], workdir, True, run_dirs=False)
    assert code == 1 and errors.startswith("featx: error: " + message.format(w=workdir)), errors
    assert errors.count("\n") == 1, errors
    assert folder_state(elsewhere) == before


USER_RECORD_CASES = [
    ("run-config", ["hydra.run.dir=run"], "run/.hydra/config.yaml"),
    ("run-overrides", ["hydra.run.dir=run"], "run/.hydra/overrides.yaml"),
    ("sweep-record", ["-m", "hydra.sweep.dir=sweep"], "sweep/multirun.yaml"),
    ("job-config", ["-m", "hydra.sweep.dir=sweep"], "sweep/0/.hydra/config.yaml"),
]


@pytest.mark.parametrize(
    ("arguments", "file"), [c[1:] for c in USER_RECORD_CASES], ids=[c[0] for c in USER_RECORD_CASES]
)
def test_hydras_files_replace_no_file_but_a_featx_runs_own_record(workdir, arguments, file):
    """hydra.run.dir (or hydra.sweep.dir) at another Hydra app's run folder: Hydra replaced the record of the user's
    training run (.hydra/config.yaml, overrides.yaml, multirun.yaml) without a word. A featx run's own folder is
    used again as Hydra does."""
    (workdir / file).parent.mkdir(parents=True)
    (workdir / file).write_text("lr: 0.1  # the user's training run\n")
    code, errors, _ = run_app("featx", [*arguments, "backbone=resnet18", "run=false"], workdir, True, run_dirs=False)
    assert (code, errors) == (
        1,
        f"featx: error: {workdir / file} exists and is no record of a featx run, and Hydra would replace it with this "
        f"run's {Path(file).name}; give another folder with hydra.run.dir / hydra.sweep.dir\n",
    )
    assert (workdir / file).read_text() == "lr: 0.1  # the user's training run\n"
    for backbone in ("resnet18", "resnet34"):  # again into a featx run's folder: its record is replaced
        again = [*arguments[:-1], arguments[-1] + "-featx", f"backbone={backbone}", "run=false"]
        assert run_app("featx", again, workdir, True, run_dirs=False)[0] == 0
    record = workdir / (arguments[-1].split("=")[1] + "-featx") / Path(file).relative_to(Path(file).parts[0])
    assert "resnet34" in record.read_text()


def _holds_file(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux's /proc)."""
    try:
        return any(Path(os.readlink(entry)) == path for entry in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process ended, or a descriptor closed while listed
        return False


@pytest.mark.parametrize("sweep", [False, True])
def test_two_apps_started_at_once_in_one_folder_take_turns(tmp_path, sweep):
    """Two featx apps started at once with one hydra.run.dir: one checked the folder between the other's writes of
    .hydra/config.yaml and hydra.yaml and refused that half-written record as a stranger's ("exists and is no record
    of a featx run", 1 in 12 pairs). An app now holds the user's start lock from its check until Hydra has written
    its record. Here another process holds it with the record half written: the app waits, then runs."""
    environment = {**os.environ, "TMPDIR": str(tmp_path), "FEATX_OFFLINE": "1"}
    run_folder = tmp_path / "sweep" / "0" if sweep else tmp_path / "run"  # the sweep's job 0
    holder_code = (
        "import sys\nfrom pathlib import Path\nfrom featx.cli.output_folders import hold_start_lock, "
        "release_start_lock\nhold_start_lock()\nrecord = Path(sys.argv[1]) / '.hydra'\nrecord.mkdir(parents=True)\n"
        "(record / 'config.yaml').write_text('backbone: {}\\n')\nprint('held', flush=True)\nsys.stdin.readline()\n"
        "(record / 'hydra.yaml').write_text('hydra:\\n  callbacks:\\n    output_folders:\\n      _target_: '\n"
        "    'featx.cli.output_folders.OutputFolders\\n')\nrelease_start_lock()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(run_folder)],
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    app = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        command = [sys.executable, "-m", "featx.cli.main", *(["-m"] if sweep else []), "backbone=resnet18", "run=false"]
        folder = f"hydra.sweep.dir={tmp_path / 'sweep'}" if sweep else f"hydra.run.dir={run_folder}"
        app = subprocess.Popen([*command, folder], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lock = tmp_path / f"{PRIVATE_ROOT}{os.getuid()}" / START_LOCK
        deadline = time.monotonic() + 240
        while app.poll() is None and not _holds_file(app.pid, lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert app.poll() is None, app.communicate()[1].decode()  # waiting for the lock, not refused
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
        _, errors = app.communicate(timeout=300)
        assert app.returncode == 0, errors.decode()
        assert "resnet18" in (run_folder / ".hydra" / "config.yaml").read_text()  # the app's record replaced it
    finally:
        for process in (holder, app):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_an_app_refused_in_its_folder_check_releases_the_start_lock(tmp_path, monkeypatch, workdir):
    """A run refused between taking the start lock and its job's start (here: its run folder is a file) lets the
    next app start at once, in this process or another."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (workdir / "taken").write_text("mine")
    code, errors, _ = run_app(
        "featx", ["backbone=resnet18", "run=false", "hydra.run.dir=taken"], workdir, run_dirs=False
    )
    assert code == 1 and "taken is not a folder" in errors, errors
    lock = tmp_path / f"{PRIVATE_ROOT}{os.getuid()}" / START_LOCK
    assert lock.is_file()  # the run took the lock
    with open(lock, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a run holds it


class StartLockProbe(Callback):
    """A user's callback that notes, as the job starts, whether another app could take the start lock now."""

    free: List[bool] = []

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        lock = Path(os.environ["TMPDIR"]) / f"{PRIVATE_ROOT}{os.getuid()}" / START_LOCK
        with open(lock, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                StartLockProbe.free.append(True)
            except BlockingIOError:
                StartLockProbe.free.append(False)


@pytest.mark.parametrize("sweep", [False, True])
def test_an_app_lets_the_next_one_start_once_its_job_has_started(tmp_path, monkeypatch, workdir, sweep):
    """The start lock covers the check and Hydra's writes of its record, not the job: an extraction running for hours
    keeps no other app waiting (each job of a sweep too)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    StartLockProbe.free.clear()
    arguments = [*(["-m", "backbone=resnet18,resnet34"] if sweep else ["backbone=resnet18"]), "run=false"]
    arguments += ["+hydra.callbacks.probe={_target_: test_hostile_apps.StartLockProbe}"]
    code, errors, _ = run_app("featx", arguments, workdir)
    assert code == 0, errors
    assert StartLockProbe.free == ([True, True] if sweep else [True])


def _bounded_app(arguments: List[str], folder: Path) -> subprocess.CompletedProcess:
    """``featx arguments`` in a process of its own with 4 GiB of address space and 5 minutes: a sweep the job
    limit misses fills the memory (or runs for hours) there, and fails the test, not the machine."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    command = [sys.executable, "-m", "featx.cli.main", *arguments, "hydra/job_logging=disabled"]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, preexec_fn=limit)


@pytest.mark.parametrize(
    ("config", "arguments", "sweep", "jobs"),
    [
        (  # a glob was counted as no sweep: 117 backbones x 10,000 widths, which Hydra composed one by one for hours
            None,
            ["-m", "backbone=glob(*)", "input.width=range(32,10032)"],
            "backbone=glob(*) input.width=range(32,10032)",
            "1,170,000",
        ),
        (  # a config's own hydra.sweeper.params, which the command line does not show: a range of 10^8 heights
            # filled the memory (240 MB/s) while Hydra listed the jobs
            "defaults: [config, _self_]\nhydra: {sweeper: {params: {input.height: 'range(1,100000000)'}}}\n",
            ["-cn", "big", "-m", "backbone=resnet18"],
            "input.height=range(1,100000000)",
            "99,999,999",
        ),
        (  # two ranges of a thousand values: Hydra lists the million jobs (and composes each) before the first runs
            None,
            ["-m", "input.height=range(1,1000)", "input.width=range(1,1000)"],
            "input.height=range(1,1000) input.width=range(1,1000)",
            "998,001",
        ),
        # sweeps Hydra would list in full before the first job (unbounded memory), counted without listing them
        (None, ["-m", "backbone=range(1,100000000)"], "backbone=range(1,100000000)", "99,999,999"),
        (None, ["-m", "input.height=range(1,inf)"], "input.height=range(1,inf)", "10,001"),
        (None, ["-m", "input.height=range(1,nan)"], "input.height=range(1,nan)", "10,001"),
        (
            None,
            ["-m", "input.height=shuffle(range(1,100000000))"],
            "input.height=shuffle(range(1,100000000))",
            "99,999,999",
        ),
    ],
    ids=["glob", "sweeper-params", "two-ranges", "backbone-range", "endless", "nan", "shuffled"],
)
def test_every_sweep_is_held_to_the_job_limit(workdir, config, arguments, sweep, jobs):
    mine = workdir / "mine"
    mine.mkdir()
    if config is not None:
        (mine / "big.yaml").write_text(config)
    before = folder_state(workdir)
    done = _bounded_app(["-cd", str(mine), *arguments, "run=false", f"hydra.sweep.dir={workdir}/sweep"], workdir)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        f"featx: error: the sweep {sweep} has more than 10,000 jobs ({jobs} or more); sweep fewer values"
    ), done.stderr[-2000:]
    assert folder_state(workdir) == before


def test_a_config_files_range_of_step_0_is_refused_naming_its_key(workdir):
    """A config's own hydra.sweeper.params, which the command line's check cannot see, is held to the same rule."""
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "zero.yaml").write_text(
        "defaults: [config, _self_]\nhydra: {sweeper: {params: {input.height: 'range(1,9,0)'}}}\n"
    )
    before = folder_state(workdir)
    code, errors, _ = run_app(
        "featx", ["-cd", str(mine), "-cn", "zero", "-m", "backbone=resnet18", "run=false"], workdir
    )
    assert (code, _message(code, errors)) == (
        1,
        "featx: error: input.height=range(1,9,0): the step of a range() must not be 0; range(START,STOP,STEP)",
    )
    assert folder_state(workdir) == before


def test_a_sweep_runs_in_job_folders_below_a_subfolder(workdir):
    """The job's number may sit below a subfolder of names (runs/0, runs/1): only other interpolations are
    refused."""
    arguments = ["-m", "hydra.sweep.dir=sweep", "hydra.sweep.subdir=runs/${hydra.job.num}", "input.height=64,96"]
    code, errors, _ = run_app("featx", [*arguments, "backbone=resnet18", "run=false"], workdir, True, run_dirs=False)
    assert code == 0, errors
    assert sorted(path.name for path in (workdir / "sweep" / "runs").iterdir()) == ["0", "1"]
    assert all((workdir / "sweep" / "runs" / job / ".hydra" / "config.yaml").is_file() for job in ("0", "1"))


_SCHEMA_FIRST = "defaults:\n  - featx_app_schema\n  - backbone: resnet18\n  - _self_\nrun: false\n"
_CONFIG_FIRST = "defaults:\n  - config\n  - override backbone: resnet18\n  - _self_\nrun: false\n"


@pytest.mark.parametrize(
    ("files", "arguments", "message"),
    [
        (  # Hydra's usual layout, without featx's run folders and checks: outputs/ in the working directory
            {"myapp.yaml": _SCHEMA_FIRST},
            ["--config-name", "myapp"],
            r"--config-name myapp: .*myapp\.yaml does not start from featx's config: the first entry of its defaults "
            r"list must be config \(or a file of yours that starts from it\)",
        ),
        (  # through another file of the user's
            {"myapp.yaml": "defaults:\n  - base\n  - _self_\n", "base.yaml": _SCHEMA_FIRST},
            ["--config-name", "myapp"],
            r"--config-name myapp: .*base\.yaml does not start from featx's config",
        ),
        (  # another app's config: Hydra failed on the first key that app's schema lacks
            {"myapp.yaml": "defaults:\n  - extract\n  - _self_\n"},
            ["--config-name", "myapp"],
            r"--config-name myapp: .*myapp\.yaml starts from extract, the config of featx-extract; featx runs from "
            r"config$",
        ),
        (  # Hydra read featx's own config.yaml and ignored the user's, values and all
            {"config.yaml": _SCHEMA_FIRST},
            [],
            r".*config\.yaml is named like featx's app config config\.yaml, which Hydra reads instead and ignores "
            r"yours; rename it \(e\.g\. my_config\.yaml\) and pass --config-name my_config$",
        ),
    ],
    ids=["schema-first", "through-a-file", "other-apps-config", "named-config"],
)
def test_a_users_primary_config_must_start_from_an_app_config(workdir, files, arguments, message):
    mine = workdir / "mine"
    mine.mkdir()
    for name, text in files.items():
        (mine / name).write_text(text)
    before = folder_state(workdir)
    code, errors, _ = run_app("featx", ["--config-dir", "mine", *arguments], workdir, True, run_dirs=False)
    assert code == 1 and re.match(r"^featx: error: " + message, errors.strip()), errors
    assert folder_state(workdir) == before  # no outputs/ in the working directory


def test_a_projects_own_config_beside_its_backbone_folder_is_left_alone(workdir):
    """A Hydra project keeps its own conf/config.yaml next to conf/backbone/: featx reads its own config.yaml and
    the project's backbone files, as before; only a config.yaml meant for featx (starting from one of its configs
    or schemas) is refused."""
    conf = workdir / "conf"
    (conf / "backbone").mkdir(parents=True)
    (conf / "config.yaml").write_text("defaults:\n  - trainer: default\n  - _self_\nlr: 0.1\n")
    (conf / "backbone" / "my_bb.yaml").write_text("defaults:\n  - resnet18\n  - _self_\nfrozen_stages: 0\n")
    code, errors, output = run_app("featx", ["--config-dir", "conf", "backbone=my_bb", "run=false"], workdir)
    assert code == 0 and "resnet18" in output, errors


def test_a_users_primary_config_that_starts_from_an_app_config_runs(workdir):
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "myapp.yaml").write_text(_CONFIG_FIRST)
    code, errors, output = run_app("featx", ["--config-dir", "mine", "--config-name", "myapp"], workdir)
    assert code == 0 and "resnet18" in output, errors


def test_a_dumped_config_is_rerun_as_dumped_with_the_advice_of_the_refusal(workdir):
    """A ``--cfg job --resolve`` dump given as ``--config-name``: the refusal advised ``defaults: [config, _self_]``,
    with which Hydra merged the dump's backbone onto config's choice (resnet50_fpn): the stages c4, c5 the dump left
    out came back. Its advice, ``override backbone: null``, reruns the dump as it was."""
    code, errors, dump = run_app("featx", ["--cfg", "job", "backbone=resnet18", "backbone.frozen_stages=2"], workdir)
    assert code == 0, errors
    stages = yaml.safe_load(dump)
    del stages["backbone"]["stages"]["c4"], stages["backbone"]["stages"]["c5"]
    dump = yaml.safe_dump(stages, sort_keys=False)
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "saved.yaml").write_text(dump)
    code, errors, _ = run_app("featx", ["--config-dir", "mine", "--config-name", "saved"], workdir, run_dirs=False)
    assert _message(code, errors) == (
        "featx: error: --config-name saved: mine/saved.yaml does not start from featx's config: the first "
        "entry of its defaults list must be config (or a file of yours that starts from it), whose run folders and "
        "checks the app needs (without them Hydra writes into the working directory); it holds its own backbone "
        "mapping, which config's backbone choice would be merged into (keys and stages it leaves out coming back): "
        "to run it as written, start it with defaults: [config, override backbone: null, _self_]"
    )
    (mine / "saved.yaml").write_text("defaults: [config, override backbone: null, _self_]\n" + dump)
    code, errors, again = run_app("featx", ["--cfg", "job", "--config-dir", "mine", "--config-name", "saved"], workdir)
    assert code == 0 and again == dump, errors
    code, errors, table = run_app("featx", ["--config-dir", "mine", "--config-name", "saved", "run=false"], workdir)
    assert code == 0 and "featx backbone=resnet18 (resnet18) |" in table and " c4 " not in table, errors


def test_the_app_runs_a_fixed_size_backbone_at_its_own_size(workdir):
    """input.height/width defaulted to 224: a backbone that takes one size (a proposal's input_size) failed in the
    featx app, run=false too, unless the user typed that size."""
    backbones = workdir / "mine" / "backbone"
    backbones.mkdir(parents=True)
    text = (Path(__file__).resolve().parents[1] / "conf" / "backbone" / "vit_b_16.yaml").read_text()
    assert "\ninput_size: null" in text
    (backbones / "v64.yaml").write_text(text.replace("\ninput_size: null", "\ninput_size: [64, 96]"))
    root = ["--config-dir", str(workdir / "mine"), "backbone=v64", "run=false"]
    code, errors, output = run_app("featx", root, workdir)
    assert code == 0 and "| input 1x3x64x96 |" in output, errors
    code, errors, output = run_app("featx", [*root, "input.width=32"], workdir)
    assert _message(code, errors) == (
        "featx: error: input 64x32: the forward pass failed (featx backbone 'vit_b_16' takes inputs of exactly 64x96 "
        "(its spec's input_size), got 64x32)"
    )
    (backbones / "v256.yaml").write_text(text.replace("\ninput_size: null", "\ninput_size: [256, 256]"))
    code, errors, output = run_app("featx", [*root[:2], "backbone=v256", "run=false", "input.batch_size=600"], workdir)
    assert _message(code, errors) == (  # the batch limit applies at the backbone's own size, not at 224 only
        "featx: error: input: a batch of 600 inputs of 256x256 is more than 33554432 pixels; lower input.batch_size "
        "or backbone.input_size"
    )
    code, errors, output = run_app(
        "featx", [*root[:2], "backbone=v256", "run=false", "input.batch_size=600", "input.height=256"], workdir
    )
    assert _message(code, errors) == (  # the width is still the backbone's own
        "featx: error: input: a batch of 600 inputs of 256x256 is more than 33554432 pixels; lower input.batch_size "
        "or input.height/backbone.input_size"
    )
    (backbones / "v128.yaml").write_text(text.replace("\ninput_size: null", "\ninput_size: [128, 128]"))
    code, errors, output = run_app("featx", [*root[:2], "backbone=v128", "run=false", "input.batch_size=700"], workdir)
    assert code == 0 and "| input 700x3x128x128 |" in output, errors  # 700 x 224 x 224 would be over the limit
    arguments = [*root[:2], "backbone=v256", "export.batch_size=600", "export.path=v.onnx"]
    code, errors, output = run_app("featx-export", arguments, workdir)
    assert _message(code, errors) == (
        "featx-export: error: export: a batch of 600 inputs of 256x256 is more than 33554432 pixels; lower "
        "export.batch_size or backbone.input_size"
    )
    assert not (workdir / "v.onnx").exists()


def test_an_empty_package_shows_the_whole_config_as_hydra_does(workdir):
    code, errors, output = run_app("featx", ["--cfg", "job", "-p", ""], workdir)
    assert code == 0 and "\nbackbone:\n  model: resnet50\n" in output and output.endswith("\nrun: true\n"), errors


def _completion(app_module: str, arguments: List[str], folder: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m app_module arguments`` in ``folder`` with ``env`` added (``COMP_LINE`` only where given)."""
    environment = {key: value for key, value in os.environ.items() if key != "COMP_LINE"} | env
    return run_in_process(app_module, arguments, folder, environment)


def test_hydras_shell_completion_installs_and_completes_and_a_wrong_use_is_one_line(tmp_path):
    """Hydra's documented `-sc install=bash` was refused as an unknown key 'install'; a bare -sc was a ValueError
    traceback, and a query outside a completion a KeyError for COMP_LINE."""
    installed = _completion("featx.cli.extract", ["-sc", "install=bash"], tmp_path)
    assert installed.returncode == 0 and "-F hydra_bash_completion" in installed.stdout, installed.stderr[-2000:]
    with_root = _completion("featx.cli.extract", ["--config-dir", str(tmp_path), "-sc", "install=bash"], tmp_path)
    assert with_root.returncode == 0 and with_root.stdout == installed.stdout, with_root.stderr[-2000:]
    line = "featx backbone=resnet1"
    completed = _completion("featx", ["-sc", "query=bash"], tmp_path, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert "backbone=resnet18" in completed.stdout.split(), completed.stderr[-2000:]
    for arguments, problem in [
        (["-sc"], "got none"),
        (["-sc", "install=tcsh"], "got install=tcsh"),
        (["-sc", "install=bash", "backbone=vgg16"], "got install=bash backbone=vgg16"),
    ]:
        done = _completion("featx.cli.export", arguments, tmp_path)
        assert done.stderr.strip() == (
            "featx-export: error: --shell-completion takes one of install=SHELL, uninstall=SHELL, query=SHELL "
            f'(SHELL: bash, zsh, fish), e.g. eval "$(featx-export -sc install=bash)"; {problem}'
        )
    done = _completion("featx", ["-sc", "query=bash"], tmp_path)
    assert done.returncode == 1 and done.stderr.strip() == (
        "featx: error: --shell-completion query=bash is what the installed completion runs (it sets COMP_LINE)"
    )


def test_a_resolver_in_a_users_backbone_file_is_refused_naming_the_file(workdir):
    backbones = workdir / "mine" / "backbone"
    backbones.mkdir(parents=True)
    (backbones / "env.yaml").write_text("defaults:\n  - resnet18\n  - _self_\nmodel: ${oc.env:MODEL,resnet18}\n")
    code, errors, _ = run_app("featx", ["--config-dir", str(workdir / "mine"), "backbone=env", "run=false"], workdir)
    assert _message(code, errors) == (
        f"featx: error: {backbones / 'env.yaml'}: backbone.model: calls an OmegaConf resolver (${{name:...}}); a "
        "backbone spec is data, and featx resolves no resolver (they can read the environment). Put the value itself"
    )


@pytest.mark.parametrize(
    ("app", "file", "content", "arguments", "message"),
    [
        (
            "featx",
            "backbone/cl.yaml",
            "defaults:\n  - resnet18\n  - _self_\nchannels_last: 2\n",
            ["backbone=cl", "run=false"],
            "backbone.channels_last: must be true or false, got 2",
        ),
        (  # the same file through featx.build says so: the apps took it as true
            "featx",
            "backbone/cl.yaml",
            "defaults:\n  - resnet18\n  - _self_\nchannels_last: 'yes'\n",
            ["backbone=cl", "run=false"],
            "backbone.channels_last: must be true or false, got 'yes'",
        ),
        (
            "featx",
            "mine.yaml",
            "defaults:\n  - config\n  - _self_\nrun: 'no'\n",
            ["-cn", "mine", "backbone=resnet18"],
            "run: must be true or false, got 'no'",
        ),
        (
            "featx",
            "mine.yaml",
            "defaults:\n  - config\n  - _self_\nbackbone:\n  channels_last: 1\n",
            ["-cn", "mine", "backbone=resnet18", "run=false"],
            "backbone.channels_last: must be true or false, got 1",
        ),
        (  # an overwrite nobody asked for: it replaced a folder of features
            "featx-extract",
            "mine.yaml",
            "defaults:\n  - extract\n  - _self_\nextract:\n  overwrite: 2\n",
            ["-cn", "mine", "backbone=resnet18", "extract.input=photos", "extract.output=feats"],
            "extract.overwrite: must be true or false, got 2",
        ),
    ],
)
def test_a_flag_in_a_users_config_file_takes_true_or_false_only(workdir, app, file, content, arguments, message):
    """OmegaConf took 2, 1, 'yes' and 'no' in a file as booleans while Hydra composed; the command line (and
    featx.build of the same backbone file) refused them."""
    path = workdir / "mine" / file
    path.parent.mkdir(parents=True)
    path.write_text(content)
    before = folder_state(workdir)
    code, errors, _ = run_app(app, ["--config-dir", str(workdir / "mine"), *arguments], workdir)
    assert _message(code, errors) == f"{app}: error: {path}: {message}"
    assert folder_state(workdir) == before


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (  # a file the primary config brings in other than first: only the first entries were read
            {"mine.yaml": "defaults: [config, extra, _self_]\n", "extra.yaml": "run: 'no'\n"},
            "extra.yaml: run: must be true or false, got 'no'",
        ),
        (  # a group's file holds its group's keys
            {"mine.yaml": "defaults: [config, {input: small}, _self_]\n", "input/small.yaml": "height: abc\n"},
            "input/small.yaml: input.height: Value 'abc' of type 'str' could not be converted to Integer",
        ),
        (  # the primary config's backbone node: OmegaConf's "field 'norm' is not Optional" named no choice
            {"mine.yaml": "defaults: [config, _self_]\nbackbone:\n  norm: null\n"},
            "mine.yaml: backbone.norm: null is not allowed (valid: frozen, eval, train, sync)",
        ),
    ],
)
def test_values_in_every_config_file_of_the_users_the_primary_config_brings_in_are_checked(workdir, files, message):
    for name, content in files.items():
        (workdir / "mine" / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / "mine" / name).write_text(content)
    before = folder_state(workdir)
    code, errors, _ = run_app(
        "featx", ["--config-dir", str(workdir / "mine"), "-cn", "mine", "backbone=resnet18"], workdir
    )
    assert _message(code, errors) == f"featx: error: {workdir / 'mine'}/{message}"
    assert folder_state(workdir) == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("seed: abc", "backbone.seed: Value 'abc' of type 'str' could not be converted to Integer"),
        ("seed: null", "backbone.seed: null is not allowed; it takes an integer in 0..9223372036854775807, the seed "),
        ("out_features: [null]", "backbone.out_features[0]: null is not allowed; it takes a name"),
        ("norm: null", "backbone.norm: null is not allowed (valid: frozen, eval, train, sync)"),
        ("fpn: {style: null}", "backbone.fpn.style: null is not allowed (valid: fpn, simple)"),
        ("frozen_stages: 1.5", "backbone.frozen_stages: Value '1.5' of type 'float' could not be converted to Integer"),
        ("out_features: c2", "backbone.out_features: expected a list (or null), got 'c2'"),
        (
            "devise: cpu",
            "backbone.devise: unknown key; did you mean device? (valid here: model, weights, seed, source, ",
        ),
    ],
)
def test_a_value_in_a_users_backbone_file_is_named_with_its_key(workdir, line, message):
    """Hydra's composition named the file only: "In 'backbone/mine': ValidationError raised while composing config:
    Value 'abc' of type 'str' could not be converted to Integer"."""
    path = workdir / "mine" / "backbone" / "mine.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(f"defaults:\n  - resnet18\n  - _self_\n{line}\n")
    code, errors, _ = run_app("featx", ["--config-dir", str(workdir / "mine"), "backbone=mine", "run=false"], workdir)
    assert _message(code, errors).startswith(f"featx: error: {path}: {message}"), errors


#: each key of fixed choices that takes no null, with its choices, as the app's line names them
APP_NULL_REFUSED = [
    ("featx", ["backbone=resnet18", "backbone.norm=null"], "backbone.norm", "frozen, eval, train, sync"),
    ("featx", ["-m", "backbone=resnet18", "backbone.norm=train,null"], "backbone.norm", "frozen, eval, train, sync"),
    ("featx", ["backbone=resnet18", "++backbone.norm=null"], "backbone.norm", "frozen, eval, train, sync"),
    ("featx", ["backbone=resnet18", "backbone.layout=null"], "backbone.layout", "nchw, nhwc"),
    ("featx", ["backbone=resnet18", "backbone.output_names=null"], "backbone.output_names", "featx, torchvision"),
    ("featx", ["backbone=resnet18", "backbone.device=null"], "backbone.device", "auto, cpu, cuda, cuda:N, mps, meta"),
    ("featx", ["backbone=resnet50_fpn", "backbone.fpn.style=null"], "backbone.fpn.style", "fpn, simple"),
    ("featx", ["backbone=resnet18", "backbone.fpn.style=null"], "backbone.fpn.style", "fpn, simple"),  # fpn: null
    ("featx-export", ["export.path=a.onnx", "backbone.norm=null"], "backbone.norm", "frozen, eval, train, sync"),
]


@pytest.mark.parametrize(
    ("app", "arguments", "key", "choices"),
    APP_NULL_REFUSED,
    ids=[f"{app} {' '.join(arguments)}" for app, arguments, _, _ in APP_NULL_REFUSED],
)
def test_null_for_a_backbone_key_of_fixed_choices_names_the_choices(workdir, app, arguments, key, choices):
    """``backbone.norm=null`` was OmegaConf's "field 'norm' is not Optional", which named no choice."""
    before = folder_state(workdir)
    code, errors, _ = run_app(app, [*arguments, "run=false"] if app == "featx" else arguments, workdir)
    assert code == 1
    assert _message(code, errors) == f"{app}: error: {key}: null is not allowed (valid: {choices})"
    assert folder_state(workdir) == before


#: null for keys without fixed choices that take none: (app, arguments, the key named, what it takes)
APP_NULL_TAKES = [
    ("featx", ["backbone.model=null"], "backbone.model", "a string"),
    ("featx", ["backbone.stages=null"], "backbone.stages", "a mapping of stage name to {slice: [start, end]} or {"),
    ("featx", ["backbone.frozen_stages=null"], "backbone.frozen_stages", "how many stages to freeze, counted from"),
    ("featx", ["backbone.seed=null"], "backbone.seed", "an integer in 0..9223372036854775807, the seed of the random"),
    ("featx", ["backbone.reinit=null"], "backbone.reinit", "a list"),
    ("featx", ["backbone.fpn.out_channels=null"], "backbone.fpn.out_channels", "an integer"),
    ("featx", ["backbone.out_features=[null]"], "backbone.out_features[0]", "a name"),
    ("featx", ["backbone.input_size=[224,null]"], "backbone.input_size[1]", "a number"),
    ("featx", ["input.batch_size=null"], "input.batch_size", "an integer"),
    ("featx", ["run=null"], "run", "true or false"),
    ("featx-export", ["export.path=null"], "export.path", "a string"),
    ("featx-export", ["export.path=a.onnx", "export.dynamic=null"], "export.dynamic", "true or false"),
    ("featx-extract", ["extract.size=[224,null]"], "extract.size[1]", "a number"),
]


@pytest.mark.parametrize(
    ("app", "arguments", "key", "takes"),
    APP_NULL_TAKES,
    ids=[f"{app} {' '.join(arguments)}" for app, arguments, _, _ in APP_NULL_TAKES],
)
def test_null_for_another_key_that_takes_no_null_says_what_it_takes(workdir, app, arguments, key, takes):
    """``backbone.reinit=null`` and ``input.batch_size=null`` were OmegaConf's "field 'reinit' is not Optional",
    ``backbone.out_features=[null]`` its "Invalid type assigned: NoneType is not a subclass of str": none said what
    the key takes."""
    chosen = {"featx": ["backbone=resnet50_fpn", "run=false"], "featx-export": [], "featx-extract": []}[app]
    code, errors, _ = run_app(app, [*chosen, *arguments], workdir)
    assert code == 1
    assert _message(code, errors).startswith(f"{app}: error: {key}: null is not allowed; it takes {takes}"), errors


@pytest.mark.parametrize(
    ("app", "arguments"),
    [("featx", ["backbone=resnet18"]), ("featx-export", ["export.path=a.onnx"])],
)
def test_a_device_index_torch_refuses_is_a_featx_error_naming_the_valid_forms(workdir, app, arguments):
    """``backbone.device=cuda:01`` passed the spec's check and reached torch.device: Hydra's "Error executing job"
    line, then "RuntimeError: Invalid device string: 'cuda:01'"."""
    code, errors, _ = run_app(app, [*arguments, "backbone.device=cuda:01"], workdir)
    assert code == 1
    assert errors.strip() == (
        f"{app}: error: backbone.device: unknown device 'cuda:01' (valid: auto, cpu, cuda, cuda:N, mps, meta)"
    )


def test_an_absurdly_long_integer_in_a_users_backbone_file_is_refused_at_its_line(workdir):
    """PyYAML's int constructor raised Python's ValueError (a traceback) for more than 4,300 digits."""
    path = workdir / "mine" / "backbone" / "long.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("defaults:\n  - resnet18\n  - _self_\nseed: " + "9" * 5000 + "\n")
    code, errors, _ = run_app("featx", ["--config-dir", str(workdir / "mine"), "backbone=long", "run=false"], workdir)
    assert code == 1
    assert errors.strip() == (
        f"featx: error: {path}: backbone: not a spec value: an integer of 5000 digits; a spec's integers have at "
        "most 100 digits at line 4, column 7"
    )


def test_null_where_a_backbone_key_of_fixed_choices_allows_it_runs(workdir):
    code, errors, output = run_app(
        "featx", ["backbone=resnet50_fpn", "backbone.fpn.extra_blocks=null", "run=false"], workdir
    )
    assert code == 0, errors
    assert "(meta device: structure only)" in output


def test_flags_in_a_users_config_file_given_as_true_false_or_an_interpolation_run(workdir):
    mine = workdir / "mine"
    (mine / "backbone").mkdir(parents=True)
    (mine / "backbone" / "cl.yaml").write_text("defaults:\n  - resnet18\n  - _self_\nchannels_last: 'false'\n")
    (mine / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nrun: ${oc.decode:'false'}\n")
    code, errors, output = run_app("featx", ["--config-dir", str(mine), "-cn", "mine", "backbone=cl"], workdir)
    assert code == 0, errors
    assert "(meta device: structure only)" in output


@pytest.mark.parametrize("entry", ["leak", "/backbone/leak"])
def test_a_resolver_in_a_backbone_file_another_one_brings_in_is_refused(workdir, monkeypatch, entry):
    """A file chosen on the command line was read; one its defaults list brings in was not, and --cfg job --resolve
    printed the environment variable it reads."""
    monkeypatch.setenv("FEATX_TEST_SECRET", "hunter2")
    backbones = workdir / "mine" / "backbone"
    backbones.mkdir(parents=True)
    (backbones / "leak.yaml").write_text("defaults:\n  - resnet18\n  - _self_\nweights: ${oc.env:FEATX_TEST_SECRET}\n")
    (backbones / "wrap.yaml").write_text(f"defaults:\n  - {entry}\n  - _self_\nfrozen_stages: 0\n")
    arguments = ["--config-dir", str(workdir / "mine"), "--cfg", "job", "--resolve", "backbone=wrap"]
    code, errors, output = run_app("featx", arguments, workdir)
    assert _message(code, errors) == (
        f"featx: error: {backbones / 'leak.yaml'}: backbone.weights: calls an OmegaConf resolver (${{name:...}}); a "
        "backbone spec is data, and featx resolves no resolver (they can read the environment). Put the value itself"
    )
    assert "hunter2" not in output + errors


def test_two_files_of_one_name_in_a_subfolder_of_backbone_are_refused(workdir):
    """backbone=sub/x with sub/x.yaml in two config roots: Hydra took the first without a word (only files directly
    in backbone/ were compared)."""
    for root, model in (("first", "resnet18"), ("second", "resnet34")):
        (workdir / root / "backbone" / "sub").mkdir(parents=True)
        (workdir / root / "backbone" / "sub" / "x.yaml").write_text(f"defaults:\n  - /backbone/{model}\n  - _self_\n")
    arguments = ["--config-dir", "first", f"hydra.searchpath=[file://{workdir / 'second'}]", "backbone=sub/x"]
    code, errors, _ = run_app("featx", [*arguments, "run=false"], workdir)
    assert code == 1 and re.match(
        r"^featx: error: backbone=sub/x names 2 files on the config search path: .*first/backbone/sub/x\.yaml \(which "
        r"Hydra would use\) and .*second/backbone/sub/x\.yaml \(ignored\)\. Rename your file, e\.g\. to "
        r"sub/my_x\.yaml$",
        _message(code, errors),
    ), errors


def test_an_export_path_torchs_writer_cannot_take_is_named_before_the_build(workdir):
    path = os.fsdecode(b"out\xff.pt")
    arguments = ["backbone=squeezenet1_1", "export.format=torchscript", f"export.path='{path}'"]
    code, errors, _ = run_app("featx-export", arguments, workdir)
    assert _message(code, errors) == (
        "featx-export: error: export.path: 'out\\xff.pt' is not valid UTF-8, and torch's TorchScript trace writer "
        "takes UTF-8 paths only; rename it"
    )


@pytest.mark.parametrize(
    "entry",
    ["/frag/t@_here_", "{/frag: t}", "{sub: t}", "{optional override /frag@_here_: t}", "{foo /frag@_here_: t}"],
)
def test_a_resolver_in_a_config_file_of_another_group_a_backbone_file_brings_in_is_refused(workdir, monkeypatch, entry):
    monkeypatch.setenv("FEATX_TEST_SECRET", "hunter2")
    mine = workdir / "mine"
    target = mine / ("backbone/sub" if "sub" in entry else "frag")
    target.mkdir(parents=True)
    (mine / "backbone").mkdir(exist_ok=True)
    (target / "t.yaml").write_text("weights: ${oc.env:FEATX_TEST_SECRET}\n")
    (mine / "backbone" / "other.yaml").write_text(f"defaults:\n  - resnet18\n  - {entry}\n  - _self_\n")
    arguments = ["--config-dir", str(mine), "--cfg", "job", "--resolve", "backbone=other"]
    code, errors, output = run_app("featx", arguments, workdir)
    assert _message(code, errors).startswith(f"featx: error: {target / 't.yaml'}: backbone.weights: calls an OmegaConf")
    assert "hunter2" not in output + errors


def test_a_backbone_file_choosing_a_file_by_interpolation_is_refused(workdir):
    """Hydra resolves an interpolated choice as it composes; featx cannot read that file beforehand to refuse a
    resolver in it (--cfg job --resolve printed the environment variable it read)."""
    mine = workdir / "mine"
    (mine / "backbone").mkdir(parents=True)
    (mine / "backbone" / "other.yaml").write_text("defaults:\n  - resnet18\n  - /frag@_here_: ${backbone}\n")
    code, errors, _ = run_app("featx", ["--config-dir", str(mine), "--cfg", "job", "backbone=other"], workdir)
    assert _message(code, errors) == (
        f"featx: error: {mine / 'backbone' / 'other.yaml'}: its defaults list chooses frag/${{backbone}} by an "
        "interpolation, whose file featx cannot read before Hydra composes it (to refuse a resolver in it); write the "
        "name"
    )


def test_a_primary_config_in_a_subfolder_reads_its_defaults_from_its_own_folder(workdir):
    """Relative entries of a file in sub/ name files in sub/ (as Hydra reads them): a valid chain was refused, and a
    chain reaching featx's config only through a root file of the same name was let through."""
    mine = workdir / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "my.yaml").write_text("defaults:\n  - sub/base@_global_\n  - _self_\nrun: false\n")
    (mine / "sub" / "base.yaml").write_text("defaults:\n  - base2@_global_\n")
    (mine / "sub" / "base2.yaml").write_text("defaults:\n  - /config@_global_\n")
    code, errors, _ = run_app("featx", ["--config-dir", "mine", "--config-name", "my"], workdir)
    assert code == 0, errors
    (mine / "base2.yaml").write_text("defaults:\n  - /config@_global_\n")  # at the root: not the one sub/ names
    (mine / "sub" / "base2.yaml").write_text("foo: 1\n")
    code, errors, _ = run_app("featx", ["--config-dir", "mine", "--config-name", "my"], workdir)
    assert code == 1 and "sub/base2.yaml does not start from featx's config" in errors, errors


def test_completion_composes_only_a_line_featx_would_run(tmp_path):
    """Hydra's completion composed the config from the words of COMP_LINE with none of featx's checks: it printed
    an environment variable a file outside the config roots read, and expanded an alias bomb for minutes."""
    backbones = tmp_path / "mine" / "backbone"
    backbones.mkdir(parents=True)
    (backbones / "evil.yaml").write_text("model: ${oc.env:SECRET_TOKEN}\n")
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    (backbones / "bomb.yaml").write_text("model: resnet18\n" + "\n".join(levels) + "\nb: *a5\n")
    outside = "../" * len(tmp_path.parts) + str(backbones / "evil").lstrip("/")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'mine'}]"
    for line in [
        f"featx backbone={outside} backbone.model=",  # a file outside the config roots
        f"featx {searchpath} backbone=evil backbone.model=",  # a resolver in a user's file
        f"featx {searchpath} backbone=bomb backbone.mo",  # an alias bomb
        "featx input.heigth=3 input.h",  # a key the schema lacks
    ]:
        done = _completion("featx", ["-sc", "query=bash"], tmp_path, COMP_LINE=line, SECRET_TOKEN="hunter2")
        assert (done.returncode, done.stdout, done.stderr) == (1, "", ""), (line, done.stdout, done.stderr[-2000:])
    line = "featx backbone=resnet18 input.height=3 backbone.model="
    done = _completion("featx", ["-sc", "query=bash"], tmp_path, COMP_LINE=line)
    assert done.returncode == 0 and done.stdout.split() == ["backbone.model=resnet18"], done.stderr[-2000:]


def test_non_ascii_paths_are_written_as_utf8_under_an_ascii_locale(tmp_path):
    """With the C locale and no UTF-8 mode, Python's default encoding is ASCII: featx writes its text files as
    UTF-8 whatever the locale (a proposal naming its own path, an extraction's config naming its folders)."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "TMPDIR": str(tmp_path)}
    env.pop("LANG", None)
    proposal = tmp_path / "prop_é.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "featx.cli.propose", "resnet18", "-o", str(proposal)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prop_é.yaml" in proposal.read_text(encoding="utf-8")
    photos = tmp_path / "photos_é"
    photos.mkdir()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(photos / "one.png")
    arguments = [
        "backbone=resnet18",
        "backbone.device=cpu",
        f"extract.input='{photos}'",
        f"extract.output='{photos}/o'",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "featx.cli.extract", *arguments, "extract.size=[32,32]", "extract.workers=0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = yaml.safe_load((photos / "o" / "featx-config.yaml").read_text(encoding="utf-8"))
    assert os.fsencode(written["extract"]["input"]) == os.fsencode(photos)  # the same bytes the argument had


def test_export_traces_a_fixed_size_backbone_at_its_size_unless_told_otherwise(workdir):
    """export.height/width left out: the backbone's input_size (not 224); a static export keeps the traced shape."""
    arguments = ["backbone=resnet18", "backbone.device=cpu", "backbone.input_size=[64,64]"]
    arguments += ["backbone.out_features=[c2]", "export.format=exported", "export.dynamic=false", "export.path=r.pt2"]
    code, errors, output = run_app("featx-export", arguments, workdir)
    assert code in (0, None), errors
    assert output.startswith("featx-export: wrote r.pt2 (exported, "), output
    program = torch.export.load(workdir / "r.pt2")
    inputs = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    shapes = [tuple(node.meta["val"].shape) for node in program.graph.nodes if node.name in inputs]
    assert shapes == [(1, 3, 64, 64)]


def test_a_stage_given_by_modules_is_replaced_by_a_slice_as_the_error_says(workdir):
    code, errors, output = run_app(
        "featx",
        ["backbone=resnet18", "~backbone.stages.c3.modules", "+backbone.stages.c3.slice=[5,6]", "run=false"],
        workdir,
    )
    assert code in (0, None), errors
    assert re.search(r"\bc3\s+model\[5:6\]\s+128\s+8\b", output), output


def test_a_config_root_given_twice_is_one_root(workdir):
    """--config-dir mine plus hydra.searchpath=[file://mine]: the app refused backbone=x as defined in two files (one
    file, twice) and told the user to rename it; featx-list marked the file an ignored duplicate of itself."""
    (workdir / "mine" / "backbone").mkdir(parents=True)
    (workdir / "mine" / "backbone" / "x.yaml").write_text((config_dir() / "backbone" / "resnet18.yaml").read_text())
    arguments = ["--config-dir", "mine", f"hydra.searchpath=[file://{workdir / 'mine'}]", "backbone=x", "run=false"]
    code, errors, _ = run_app("featx", arguments, workdir)
    assert code == 0, errors
    done = run_in_process("featx-list", ["--config-dir", "mine", "--config-dir", str(workdir / "mine"), "x"], workdir)
    assert done.returncode == 0, done.stderr
    (row,) = done.stdout.splitlines()[1:]
    assert row.endswith("from mine/backbone/x.yaml") and "duplicate" not in row
    (workdir / "linked" / "backbone").mkdir(parents=True)  # the same file linked from another root: one file too
    (workdir / "linked" / "backbone" / "x.yaml").symlink_to(workdir / "mine" / "backbone" / "x.yaml")
    done = run_in_process("featx-list", ["--config-dir", "mine", "--config-dir", "linked", "x"], workdir)
    assert done.returncode == 0 and "duplicate" not in done.stdout, done.stdout


def test_featx_list_shows_a_file_name_with_line_breaks_on_its_own_row(workdir):
    """A backbone file named with line breaks printed a forged row (another resnet50 with other channels) under the
    genuine one, and terminal escapes reached the terminal."""
    (workdir / "mine" / "backbone").mkdir(parents=True)
    forged = "zz\nresnet50  resnet50  c2..c5  4,8,16,32  1,2,3,4  23.5M\n\x1b[31mzz"
    (workdir / "mine" / "backbone" / f"{forged}.yaml").write_text(
        (config_dir() / "backbone" / "resnet18.yaml").read_text()
    )
    done = run_in_process("featx-list", ["--config-dir", "mine", "zz*"], workdir)
    assert done.returncode == 0, done.stderr
    (row,) = done.stdout.splitlines()[1:]
    assert row.startswith("zz\\nresnet50  resnet50  c2..c5  4,8,16,32  1,2,3,4  23.5M\\n\\x1b[31mzz  resnet18 ")


@pytest.mark.parametrize("app", ["featx", "featx-extract", "featx-export", "featx-list", "featx-propose"])
def test_version_gives_featxs_version(workdir, app):
    """``featx --version`` printed Hydra's version alone (``Hydra 1.3.8``), and featx-list and featx-propose had no
    --version."""
    done = run_in_process(app, ["--version"], workdir)
    assert done.returncode == 0, done.stderr
    hydras = f" (Hydra {hydra.__version__})" if app in ("featx", "featx-extract", "featx-export") else ""
    assert done.stdout == f"{app} {__version__}{hydras}\n"


_SWEEP_CONFIGS = {"featx": "config", "featx-extract": "extract"}


@pytest.mark.parametrize(
    ("app", "params", "arguments", "message"),
    [
        (  # read as true: the sweep replaced a folder of features made with another seed
            "featx-extract",
            "{extract.overwrite: 2}",
            ["backbone=resnet18", "backbone.seed=7", "extract.input=photos", "extract.output=feats"],
            "extract.overwrite: must be true or false, got 2",
        ),
        (  # job #0 ran with channels_last false, job #1 with true
            "featx",
            "{backbone.channels_last: 'false,2'}",
            ["backbone=resnet18", "run=false"],
            "backbone.channels_last: must be true or false, got 2",
        ),
        ("featx", "{run: 'true,2'}", ["backbone=resnet18"], "run: must be true or false, got 2"),
        (  # quoted, the sweeper sets the string 'yes', which OmegaConf takes as true
            "featx",
            "{run: \"'yes'\"}",
            ["backbone=resnet18"],
            "run: must be true or false, got 'yes'",
        ),
        (
            "featx",
            "{input.height: '64,abc'}",
            ["backbone=resnet18", "run=false"],
            "input.height: Value 'abc' of type 'str' could not be converted to Integer",
        ),
        (
            "featx",
            "{input.heigth: '64,96'}",
            ["backbone=resnet18", "run=false"],
            "input.heigth: unknown key; did you mean height? (valid here: batch_size, height, width)",
        ),
        (  # Hydra read the file outside the config roots
            "featx",
            "{backbone: ../outside/evil}",
            ["run=false"],
            "backbone=../outside/evil: a config choice is a name inside the config roots, not a path; put the file "
            "in a folder backbone/ and pass that folder's parent with --config-dir (or hydra.searchpath)",
        ),
        (
            "featx",
            "{run: 'range(0,2'}",
            ["backbone=resnet18"],
            "run=range(0,2: not an override in Hydra's grammar (no viable alternative at input 'range(0,2'); quote "
            "values holding special characters (key='a value'), see https://hydra.cc/docs/advanced/override_grammar/"
            "basic/",
        ),
    ],
    ids=[
        "overwrite-2",
        "channels-last-sweep",
        "run-sweep",
        "quoted-yes",
        "height-abc",
        "unknown-key",
        "escape",
        "grammar",
    ],
)
def test_a_config_files_sweep_is_checked_as_the_command_line_is(workdir, app, params, arguments, message):
    """hydra.sweeper.params of a config file is a second command line: its values passed no check (check_file_values
    skipped the hydra key), where ``-m extract.overwrite=2`` and ``extract.overwrite: 2`` in the file are refused."""
    mine = workdir / "mine"
    (workdir / "outside").mkdir()
    (workdir / "outside" / "evil.yaml").write_text("defaults: [/backbone/resnet18, _self_]\n")
    path = mine / "sweep.yaml"
    mine.mkdir()
    path.write_text(f"defaults: [{_SWEEP_CONFIGS[app]}, _self_]\nhydra: {{sweeper: {{params: {params}}}}}\n")
    before = folder_state(workdir)
    code, errors, output = run_app(app, ["-cd", str(mine), "-cn", "sweep", "-m", *arguments], workdir)
    assert (code, _message(code, errors)) == (1, f"{app}: error: {path}: hydra.sweeper.params: {message}"), errors
    assert output == "" and folder_state(workdir) == before


def test_a_config_files_sweep_replaced_on_the_command_line_is_not_checked(workdir):
    """The command line's value of a key replaces the config's sweep of it (the sweeper keeps the last), so the
    config's value is never set; a backbone file of the user's chosen by the sweep is read first."""
    mine = workdir / "mine"
    (mine / "backbone").mkdir(parents=True)
    (mine / "backbone" / "leak.yaml").write_text("defaults: [resnet18, _self_]\nweights: ${oc.env:HOME}\n")
    (mine / "sweep.yaml").write_text("defaults: [config, _self_]\nhydra: {sweeper: {params: {run: 2}}}\n")
    code, errors, output = run_app(
        "featx", ["-cd", str(mine), "-cn", "sweep", "-m", "backbone=resnet18", "run=false"], workdir
    )
    assert code == 0 and "(meta device: structure only)" in output, errors
    (mine / "sweep.yaml").write_text("defaults: [config, _self_]\nhydra: {sweeper: {params: {backbone: leak}}}\n")
    code, errors, output = run_app("featx", ["-cd", str(mine), "-cn", "sweep", "-m", "run=false"], workdir)
    assert _message(code, errors) == (
        f"featx: error: {mine / 'backbone' / 'leak.yaml'}: backbone.weights: calls an OmegaConf resolver "
        "(${name:...}); a backbone spec is data, and featx resolves no resolver (they can read the environment). Put "
        "the value itself"
    )
    assert output == ""


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            "backbone.fpn.out_channels=64,abc",
            "backbone.fpn.out_channels: Value 'abc' of type 'str' could not be converted to Integer",
        ),
        (
            "backbone.fpn.out_channels=64,1e9",
            "backbone.fpn.out_channels: Value '1000000000.0' of type 'float' could not be converted to Integer",
        ),
        (
            "backbone.fpn.channels_last=true,2",
            "backbone.fpn.channels_last: unknown key; did you mean out_channels? (valid here: out_channels, "
            "extra_blocks, style)",
        ),
        (
            "backbone.tokens.position_covers_prefix=true,2",
            "backbone.tokens.position_covers_prefix: must be true or false, got 2",
        ),
    ],
)
def test_each_swept_value_below_a_nullable_node_is_checked_before_the_sweep(workdir, sweep, message):
    """Below backbone.fpn and backbone.tokens (typed Any in the schema) nothing was checked: job #0 ran, #1 failed."""
    code, errors, output = run_app("featx", ["-m", "backbone=resnet18_fpn", sweep, "run=false"], workdir)
    assert (code, _message(code, errors), output) == (1, f"featx: error: {message}", "")


@pytest.mark.parametrize("value", ["0", "-1", "'0'"])
def test_a_sweep_batch_size_below_one_is_named(workdir, value):
    """Hydra's sweeper asserts it: "featx: error: AssertionError (HYDRA_FULL_ERROR=1 shows where)"."""
    code, errors, output = run_app(
        "featx", ["-m", "backbone=resnet18", "run=false", f"hydra.sweeper.max_batch_size={value}"], workdir
    )
    assert (code, _message(code, errors), output) == (
        1,
        f"featx: error: hydra.sweeper.max_batch_size={value}: the sweep launches its jobs in batches of this many; "
        "give a number from 1 up, or null for all at once",
        "",
    )
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "batch.yaml").write_text(f"defaults: [config, _self_]\nhydra: {{sweeper: {{max_batch_size: {value}}}}}\n")
    code, errors, output = run_app(
        "featx", ["-cd", str(mine), "-cn", "batch", "-m", "backbone=resnet18", "run=false"], workdir
    )
    assert (code, _message(code, errors), output) == (
        1,
        f"featx: error: {mine / 'batch.yaml'}: hydra.sweeper.max_batch_size: the sweep launches its jobs in batches "
        "of this many; give a number from 1 up, or null for all at once",
        "",
    )


def test_a_sweep_in_batches_runs(workdir):
    code, errors, output = run_app(
        "featx",
        ["-m", "backbone=resnet18", "run=false", "input.height=64,96,128", "hydra.sweeper.max_batch_size=2"],
        workdir,
    )
    assert code == 0 and output.count("(meta device: structure only)") == 3, errors


def test_an_error_in_hydras_own_code_names_the_hydra_settings_given(workdir):
    """Logging's "ValueError: Unable to configure root logger" named neither the level nor the setting; an error
    of the app's own code names no Hydra setting (the test's run folders are Hydra settings too)."""
    code, errors, _ = run_app(
        "featx", ["backbone=resnet18", "run=false", "hydra.job_logging.root.level=NOPE"], workdir, logs=True
    )
    assert (code, _message(code, errors)) == (
        1,
        "featx: error: ValueError: Unable to configure root logger (Unknown level: 'NOPE'), raised by Hydra's own "
        f"code given the Hydra settings {_settings(workdir, 'hydra.job_logging.root.level=NOPE', logs=True)} "
        "(HYDRA_FULL_ERROR=1 shows where)",
    )


def test_hydra_help_refuses_the_apps_own_overrides(workdir):
    """Hydra composes its help without the app's config: "Could not override 'backbone'. No match in the defaults
    list. To append to your default list use +backbone=resnet18", advice that does not help."""
    code, errors, output = run_app("featx", ["--hydra-help", "backbone=resnet18", "input.height=64"], workdir)
    assert (code, _message(code, errors), output) == (
        1,
        "featx: error: backbone=resnet18: --hydra-help shows Hydra's own options, composed without the app's config, "
        "so it takes Hydra's settings only (hydra.*, hydra/...); the app's options: featx --help",
        "",
    )
    code, errors, output = run_app("featx", ["--hydra-help", "hydra.job.name=x"], workdir)
    assert code == 0 and output.startswith("Hydra (1.3"), errors


@pytest.mark.parametrize(
    ("file", "content", "arguments"),
    [
        ("mine.yaml", "defaults: [config, _self_]\nrun: off\n", ["-cn", "mine", "backbone=resnet18"]),
        ("mine.yaml", "defaults: [config, _self_]\nrun: yes\n", ["-cn", "mine", "backbone=resnet18"]),
        ("mine.yaml", "defaults: [config, extra, _self_]\n", ["-cn", "mine", "backbone=resnet18"]),
        ("backbone/cl.yaml", "defaults: [resnet18, _self_]\nchannels_last: yes\n", ["backbone=cl", "run=false"]),
    ],
    ids=["run-off", "run-yes", "brought-in", "backbone-file"],
)
def test_yaml_11_words_for_true_and_false_in_a_users_config_are_refused(workdir, file, content, arguments):
    """Hydra's loader reads yes/no/on/off as true and false: ``run: off`` ran with run=false and ``run: yes`` was
    taken, where the command line's run=yes (the string 'yes') is refused."""
    mine = workdir / "mine"
    (mine / "backbone").mkdir(parents=True)
    (mine / file).write_text(content)
    (mine / "extra.yaml").write_text("input:\n  height: 64\nrun: on\n")
    named = mine / ("extra.yaml" if "extra" in content else file)
    word = "on" if "extra" in content else content.rsplit(": ", 1)[1].strip()
    before = folder_state(workdir)
    code, errors, output = run_app("featx", ["-cd", str(mine), *arguments], workdir)
    message = _message(code, errors)
    assert code == 1 and output == "" and message.startswith(f"featx: error: {named}: "), errors
    assert re.search(rf"\b{word}\b.*'{word}'", message) and "line" in message, message
    assert folder_state(workdir) == before


def test_a_users_config_file_without_keys_is_taken(workdir):
    """A file holding comments only is an empty config to Hydra (featx's reader wants a mapping)."""
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "mine.yaml").write_text("defaults: [config, notes, _self_]\nrun: false\n")
    (mine / "notes.yaml").write_text("# nothing yet\n")
    code, errors, output = run_app("featx", ["-cd", str(mine), "-cn", "mine", "backbone=resnet18"], workdir)
    assert code == 0 and "(meta device: structure only)" in output, errors


def test_an_error_in_the_apps_own_code_names_no_hydra_setting(workdir, monkeypatch):
    """An error raised in a task (here featx's own check, made to fail as a library's bug would) is not Hydra's: the
    Hydra settings given (the test's run folders) are not named."""

    def broken(*arguments: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr("featx.cli.main.check_batch_shape", broken)
    code, errors, _ = run_app("featx", ["backbone=resnet18", "run=false"], workdir)
    assert (code, _message(code, errors)) == (1, "featx: error: ValueError: a bug (HYDRA_FULL_ERROR=1 shows where)")


@pytest.mark.parametrize("app, key", [("featx", "backbone.stages.c2.modules.0"), ("featx-extract", "extract.size.1")])
def test_deleting_an_item_of_a_list_is_refused_as_featx_build_refuses_it(workdir, app, key):
    """OmegaConf's ``del`` on a list item raised a bare TypeError ("list indices must be integers or slices, not
    str") as Hydra composed; featx.build refuses the same override naming the list."""
    arguments = ["backbone=resnet18", f"~{key}", *(["run=false"] if app == "featx" else [])]
    code, errors, _ = run_app(app, arguments, workdir)
    listed = key.rpartition(".")[0]
    assert (code, _message(code, errors)) == (
        1,
        f"{app}: error: {key}: '~{key}' deletes an item of the list {listed}; an override deletes keys of a mapping "
        f"only: give the whole list ({listed}=[...])",
    )
    with pytest.raises(featx.SpecError) as built:  # featx.build's words for the same override
        featx.build("resnet18", overrides=["~stages.c2.modules.0"])
    assert "deletes an item of the list stages.c2.modules; an override deletes keys of a mapping only" in str(
        built.value
    )


def test_a_mapping_giving_a_key_twice_is_refused_on_the_command_line_and_in_a_config_files_sweep(workdir):
    """Hydra's parser keeps the last value of a key given twice: backbone.fpn={out_channels:8,out_channels:16}
    silently built 16 channels."""
    argument = "backbone.fpn={out_channels:8,out_channels:16}"
    code, errors, output = run_app("featx", ["backbone=resnet18", "run=false", argument], workdir)
    assert (code, _message(code, errors), output) == (
        1,
        f"featx: error: {argument}: key 'out_channels' is given twice in a mapping; give each key once",
        "",
    )
    below = "backbone.fpn.extra={a:1,a:2}"  # made a ++ override by featx, named as typed
    code, errors, _ = run_app("featx", ["backbone=resnet18", "run=false", below], workdir)
    assert _message(code, errors) == f"featx: error: {below}: key 'a' is given twice in a mapping; give each key once"
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "sweep.yaml").write_text(
        "defaults: [config, _self_]\nhydra: {sweeper: {params: {backbone.fpn: '{out_channels:8,out_channels:16}'}}}\n"
    )
    code, errors, _ = run_app("featx", ["-cd", str(mine), "-cn", "sweep", "-m", "backbone=resnet18"], workdir)
    assert _message(code, errors) == (
        f"featx: error: {mine / 'sweep.yaml'}: hydra.sweeper.params: {argument}: key 'out_channels' is given twice "
        "in a mapping; give each key once"
    )


@pytest.mark.parametrize("where", ["backbone", "primary"])
def test_a_fifo_in_place_of_a_users_config_file_is_named_unopened(workdir, where):
    """Hydra passes over what is not a regular file ("Could not find 'backbone/pipe'"); featx names it, and never
    opens it (reading a fifo waits for a writer)."""
    mine = workdir / "mine"
    (mine / "backbone").mkdir(parents=True)
    pipe = mine / ("backbone/pipe.yaml" if where == "backbone" else "pipe.yaml")
    os.mkfifo(pipe)
    arguments = ["backbone=pipe", "run=false"] if where == "backbone" else ["-cn", "pipe", "backbone=resnet18"]
    before = folder_state(workdir)
    code, errors, _ = run_app("featx", ["--config-dir", str(mine), *arguments], workdir)
    assert (code, _message(code, errors)) == (
        1,
        f"featx: error: {pipe} is not a regular file (a device, fifo or socket), not a spec file",
    )
    assert folder_state(workdir) == before


_CALLBACK_REFUSED = (
    "featx's callback hydra.callbacks.output_folders checks the run folders before Hydra writes there (it refuses to "
    "replace a file of yours): it is not removed or changed; add a callback of yours beside it "
    "(+hydra.callbacks.NAME={_target_: ...})"
)


@pytest.mark.parametrize(
    "argument",
    [
        "~hydra.callbacks.output_folders",
        "hydra.callbacks.output_folders=null",
        "~hydra.callbacks.output_folders._target_",
        "hydra.callbacks.output_folders._target_=builtins.dict",
        "++hydra.callbacks.output_folders.app=x",
        "hydra.callbacks={output_folders:null}",
        "~hydra.callbacks",
        "hydra={callbacks:{output_folders:null}}",
        "+hydra=mine",  # a file of the user's placed at hydra (or below hydra.callbacks), which featx does not read
        "+hydra/callbacks=mine",
        "+mine@hydra.callbacks.output_folders=x",
    ],
)
def test_featxs_run_folder_callback_cannot_be_removed(workdir, argument):
    """Without its callback, a run replaced the user's .hydra/config.yaml with exit status 0."""
    record = workdir / "run" / ".hydra" / "config.yaml"
    record.parent.mkdir(parents=True)
    record.write_text("lr: 0.1  # the user's training run\n")
    arguments = [argument, "backbone=resnet18", "run=false", "hydra.run.dir=run"]
    code, errors, _ = run_app("featx", arguments, workdir, run_dirs=False)
    assert (code, _message(code, errors)) == (1, f"featx: error: {argument}: {_CALLBACK_REFUSED}")
    assert record.read_text() == "lr: 0.1  # the user's training run\n"


@pytest.mark.parametrize(
    "hydra_node",
    ["{callbacks: {output_folders: null}}", "{callbacks: null}", "{callbacks: {output_folders: {app: x}}}"],
)
def test_featxs_run_folder_callback_cannot_be_removed_by_a_users_primary_config(workdir, hydra_node):
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "base.yaml").write_text(f"defaults: [config, _self_]\nhydra: {hydra_node}\n")
    (mine / "mine.yaml").write_text("defaults: [base, _self_]\n")
    record = workdir / "run" / ".hydra" / "config.yaml"
    record.parent.mkdir(parents=True)
    record.write_text("lr: 0.1\n")
    arguments = ["-cd", str(mine), "-cn", "mine", "backbone=resnet18", "run=false", "hydra.run.dir=run"]
    code, errors, _ = run_app("featx", arguments, workdir, run_dirs=False)
    assert (code, _message(code, errors)) == (1, f"featx: error: {mine / 'base.yaml'}: {_CALLBACK_REFUSED}")
    assert record.read_text() == "lr: 0.1\n"


@pytest.mark.parametrize(
    "how",
    [
        "+hydra.callbacks.mine={_target_:hydra.experimental.callback.Callback}",
        "a config file",
    ],
)
def test_a_callback_of_the_users_beside_featxs_runs(workdir, how):
    """A config file's mapping at hydra.callbacks is merged into Hydra's (featx's callback stays): that form, the way
    Hydra documents adding a callback, was refused as removing featx's."""
    arguments = [how]
    if how == "a config file":
        (workdir / "mine").mkdir()
        (workdir / "mine" / "withcb.yaml").write_text(
            "defaults: [config, _self_]\nhydra:\n  callbacks:\n    mine:\n"
            "      _target_: hydra.experimental.callback.Callback\n"
        )
        arguments = ["--config-dir", str(workdir / "mine"), "--config-name", "withcb"]
    code, errors, output = run_app("featx", [*arguments, "backbone=resnet18", "run=false"], workdir)
    assert code == 0 and "resnet18" in output, errors


_LOG_FILE_REFUSED = (
    "Hydra opens hydra.hydra_logging's log files as it composes, before featx can check where they lie: it takes "
    "no handler with a filename (nor an interpolation, which may give one) and hydra/hydra_logging= takes default, "
    "disabled or none; a log file of the run goes in hydra.job_logging"
)


def _users_hydra_logging(workdir: Path) -> Tuple[Path, Path]:
    """(a file of the user's notes, a config folder whose hydra/hydra_logging option ``mine`` writes to that file)."""
    log = workdir / "keep.txt"
    log.write_text("the user's notes\n")
    mine = workdir / "mine"
    (mine / "hydra" / "hydra_logging").mkdir(parents=True)
    (mine / "hydra" / "hydra_logging" / "mine.yaml").write_text(
        f"version: 1\nhandlers: {{f: {{class: logging.FileHandler, filename: {log}, mode: w}}}}\n"
        "root: {handlers: [f]}\n"
    )
    return log, mine


@pytest.mark.parametrize(
    "argument",
    [
        "+hydra.hydra_logging.handlers.f={class:logging.FileHandler,filename:LOG,mode:w}",
        "hydra.hydra_logging.handlers.console.filename=LOG",
        "hydra={hydra_logging:{handlers:{f:{class:logging.FileHandler,filename:LOG,mode:w}}}}",
        "hydra.hydra_logging=${hydra.job_logging}",
        "hydra/hydra_logging=hydra_debug",
        "hydra/hydra_logging=mine",
        "hydra/job_logging@hydra.hydra_logging=default",
        "hydra/hydra_logging=glob(*)",
    ],
)
def test_a_log_file_of_hydras_own_logging_is_refused_before_hydra_opens_it(workdir, argument):
    """Hydra opens hydra.hydra_logging's handlers as it composes, before featx's callback checks them: a file
    handler emptied the user's file, with exit status 0 (or the callback's refusal after)."""
    log, mine = _users_hydra_logging(workdir)
    argument = argument.replace("LOG", str(log))
    code, errors, _ = run_app("featx", ["-cd", str(mine), argument, "backbone=resnet18", "run=false"], workdir, True)
    assert (code, _message(code, errors)) == (1, f"featx: error: {shortened(argument)}: {_LOG_FILE_REFUSED}")
    assert log.read_text() == "the user's notes\n"


@pytest.mark.parametrize(
    "content",
    [
        "defaults: [config, _self_]\nhydra: {hydra_logging: {handlers: {f: {class: logging.FileHandler, "
        "filename: LOG, mode: w}}, root: {handlers: [f]}}}\n",
        "defaults: [config, {override hydra/hydra_logging: mine}, _self_]\n",
        "defaults: [config, {/hydra/job_logging@hydra.hydra_logging: default}, _self_]\n",
    ],
    ids=["handler", "choice", "package"],
)
def test_a_log_file_of_hydras_own_logging_in_a_users_primary_config_is_refused(workdir, content):
    log, mine = _users_hydra_logging(workdir)
    (mine / "my.yaml").write_text(content.replace("LOG", str(log)))
    code, errors, _ = run_app("featx", ["-cd", str(mine), "-cn", "my", "backbone=resnet18", "run=false"], workdir, True)
    assert (code, _message(code, errors)) == (1, f"featx: error: {mine / 'my.yaml'}: {_LOG_FILE_REFUSED}")
    assert log.read_text() == "the user's notes\n"


@pytest.mark.parametrize("choice", ["default", "disabled", "none"])
def test_hydras_own_logging_choices_run(workdir, choice):
    code, errors, output = run_app(
        "featx", [f"hydra/hydra_logging={choice}", "backbone=resnet18", "run=false"], workdir, True
    )
    assert code == 0 and "resnet18" in output, errors


def test_a_log_file_of_hydras_own_logging_in_a_config_files_sweep_is_refused(workdir):
    mine = workdir / "mine"
    (mine / "hydra" / "hydra_logging").mkdir(parents=True)
    (mine / "hydra" / "hydra_logging" / "mine.yaml").write_text("version: 1\n")
    (mine / "sweep.yaml").write_text(
        "defaults: [config, _self_]\nhydra: {sweeper: {params: {hydra/hydra_logging: mine}}}\n"
    )
    code, errors, _ = run_app("featx", ["-cd", str(mine), "-cn", "sweep", "-m", "backbone=resnet18"], workdir, True)
    assert _message(code, errors) == (
        f"featx: error: {mine / 'sweep.yaml'}: hydra.sweeper.params: hydra/hydra_logging=mine: {_LOG_FILE_REFUSED}"
    )
