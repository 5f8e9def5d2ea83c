"""Helpers shared by the tests: a small spec, BatchNorm statistics worth testing, checkpoints the tests write, featx
run from a checkout that is not installed, an app run in the test's process as its console script runs it."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def resnet18_spec(**changes: Any) -> Dict[str, Any]:
    """A small three-stage ResNet-18 spec (c2..c4) used where the model does not matter."""
    spec: Dict[str, Any] = {
        "model": "resnet18",
        "stages": {
            "c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]},
            "c3": {"modules": ["layer2"]},
            "c4": {"modules": ["layer3"]},
        },
        "device": "cpu",
    }
    spec.update(changes)
    return spec


def randomize_norm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so norm handling is really tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, _BatchNorm):
                shape = layer.running_mean.shape
                layer.running_mean.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
                layer.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                layer.bias.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
    return model


def save_state_dict(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def folder_state(folder: Path) -> Dict[str, Any]:
    """Every entry under ``folder``: relative path → file bytes, ``"<folder>"``, ``"<fifo>"``, or ``"-> target"`` for
    a link; what a hostile-input test compares before and after, so nothing outside the output is created, changed or
    lost."""
    state: Dict[str, Any] = {}
    for path in sorted(Path(folder).rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            state[relative] = f"-> {path.readlink()}"
        elif path.is_dir():
            state[relative] = "<folder>"
        elif path.is_fifo():
            state[relative] = "<fifo>"
        else:
            state[relative] = path.read_bytes()
    return state


ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """A module of scripts/ (a script's ``main`` is not run), imported as a script imports its neighbours. Example:
    ``load_script("bench")._goal(0.4, 0.5)``."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def run_not_installed(
    folder: Path, code: str, *args: str, env: Optional[Mapping[str, str]] = None
) -> "subprocess.CompletedProcess[str]":
    """Run ``code`` (``sys.argv[1:]`` are ``args``) in a fresh interpreter that imports featx from a copy of the
    package folder alone (with the packaged configs), with the environment's other packages but no distribution
    metadata of featx: a checkout run without installing it (as on a lent GPU machine). Works in ``folder``; the
    caller asserts on the result."""
    installed = Path(sysconfig.get_paths()["purelib"])
    site_packages = folder / "site-packages"  # the environment's packages, less featx's install
    site_packages.mkdir()
    for entry in installed.iterdir():
        if "featx" not in entry.name:
            (site_packages / entry.name).symlink_to(entry)
    source = folder / "source"  # the package alone: the checkout's folder holds an editable install's metadata
    shutil.copytree(  # without a featx/conf link a checkout may hold (scripts/gpu_session.sh makes one)
        ROOT / "featx",
        source / "featx",
        ignore=lambda folder, names: [
            name for name in names if name == "__pycache__" or (Path(folder) == ROOT / "featx" and name == "conf")
        ],
    )
    shutil.copytree(ROOT / "conf", source / "featx" / "conf")  # the packaged configs, as gpu_session.sh links them
    prelude = f"import sys; sys.path[:0] = [{str(source)!r}, {str(site_packages)!r}]\n"
    return subprocess.run(  # -S: no site processing, so no editable install's finder and no metadata of featx
        [sys.executable, "-S", "-c", prelude + code, *args],
        capture_output=True,
        text=True,
        cwd=folder,  # not the checkout, for the same reason
        env=None if env is None else dict(env),
    )


@contextlib.contextmanager
def loggers_restored() -> Iterator[None]:
    """Every logger's level, ``disabled`` and ``propagate`` as they were before the block (Hydra's logging config
    disables every existing logger and resets levels; featx's apps quiet other libraries' loggers), and loggers made
    in the block (an import) as a fresh import makes them: enabled, level NOTSET (an app that quieted them would
    otherwise keep a later run's INFO messages from them)."""
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    saved = [(logger, logger.disabled, logger.level, logger.propagate) for logger in loggers]
    known = {id(logger) for logger in loggers}
    try:
        yield
    finally:
        for logger, disabled, level, propagate in saved:
            logger.disabled, logger.propagate = disabled, propagate
            logger.setLevel(level)
        for logger in logging.root.manager.loggerDict.values():
            if isinstance(logger, logging.Logger) and id(logger) not in known:
                logger.disabled, logger.propagate = False, True
                logger.setLevel(logging.NOTSET)


#: featx's console scripts (as installed), and ``python -m NAME`` -> the module whose ``main`` it calls
APP_MODULES = {
    script.name: script.module for script in entry_points(group="console_scripts") if script.module.startswith("featx.")
} | {"featx": "featx.cli.main"}


#: run_in_process's default: stdout captured into the result
CAPTURED = object()


def run_in_process(
    module: str,
    arguments: List[str],
    folder: Path,
    env: Optional[Mapping[str, str]] = None,
    stdout: Any = CAPTURED,
) -> subprocess.CompletedProcess:
    """``module arguments`` (a console script, or ``python -m module``) run in ``folder`` with ``env`` (the whole
    environment; this process's when None), in this process: the app's ``main`` as its console script calls it,
    with Python's handling of its exit (a message exit is printed to stderr with status 1). Far faster than a
    subprocess (no imports); the process-wide state an app sets (environment, working directory, argv, Hydra's, the
    loggers' levels and the root logger's handlers, torch's deterministic algorithms) is put back. ``stdout``: the
    stream ``sys.stdout`` is during the run (None: closed, as Python sets it for ``>&-``), else captured into the
    result. Example::

        run_in_process("featx", ["backbone=resnet18", "run=false"], tmp_path).returncode == 0
    """
    main = importlib.import_module(APP_MODULES.get(module, module)).main
    return _run_here(main, module, arguments, folder, env, stdout)


def run_script_in_process(script: Path, arguments: List[str], folder: Path) -> subprocess.CompletedProcess:
    """``python script arguments`` run in ``folder``, in this process: the script run as ``__main__``, as Python
    runs it (so Hydra finds the config folder beside it), with the state put back as ``run_in_process`` puts it
    (the script's folder stays on ``sys.path``, as ``load_script`` leaves it). For a script's runs that need none of
    a subprocess's seconds of imports, such as its refusals. Example::

        run_script_in_process(SCRIPTS / "experiment.py", ["train.lr=-1"], tmp_path).returncode == 1
    """
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))  # as Python puts a script's folder first
    run = functools.partial(runpy.run_path, str(script), run_name="__main__")
    return _run_here(run, str(script), arguments, folder, None, CAPTURED)


def _run_here(
    main: Callable[[], object],
    command: str,
    arguments: List[str],
    folder: Path,
    env: Optional[Mapping[str, str]],
    stdout: Any,
) -> subprocess.CompletedProcess:
    """``main()`` as the command ``command arguments`` in ``folder``: see ``run_in_process``."""
    saved_environment, saved_argv, saved_folder = dict(os.environ), sys.argv, os.getcwd()
    saved_handlers, deterministic = logging.root.handlers[:], torch.are_deterministic_algorithms_enabled()
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    sys.argv = [command, *arguments]
    os.chdir(folder)
    GlobalHydra.instance().clear()
    output, errors, code = io.StringIO(), io.StringIO(), 0
    try:
        shown = output if stdout is CAPTURED else stdout
        with loggers_restored(), contextlib.redirect_stdout(shown), contextlib.redirect_stderr(errors):
            main()
    except SystemExit as exit_:
        code = 1 if isinstance(exit_.code, str) else (exit_.code or 0)
        if isinstance(exit_.code, str):
            errors.write(exit_.code + "\n")
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)
        sys.argv = saved_argv
        os.chdir(saved_folder)
        GlobalHydra.instance().clear()
        for handler in logging.root.handlers:
            if handler not in saved_handlers:
                handler.close()
        logging.root.handlers[:] = saved_handlers  # Hydra's logging config removed the test's own
        torch.use_deterministic_algorithms(deterministic)
    return subprocess.CompletedProcess([command, *arguments], code, output.getvalue(), errors.getvalue())


def stand_in_for_published(cached: Path, monkeypatch: Any) -> None:
    """Let ``cached``, a file the test saved in the torch hub cache under a published file's name (whose SHA-256 it
    cannot have), be taken as that file: featx's cache (turned on, in a folder of its own beside the hub's) records
    it as matching the hash its name begins, as featx records a file it has hashed. featx's hash check itself is
    tested in test_weights.py; a record is void once the file changes (size, inode, modification or status change
    time: a new hard link to it too)."""
    from featx.file_records import records_folder, remember_facts
    from featx.models.weights_enums import VERIFIED_FOLDER, named_hash_prefix

    monkeypatch.delenv("FEATX_NO_CACHE", raising=False)
    monkeypatch.setenv("FEATX_CACHE_DIR", str(cached.parent.parent.parent / "featx-cache"))
    absolute = Path(os.path.abspath(cached))
    prefix = named_hash_prefix(absolute)
    folder = records_folder(VERIFIED_FOLDER)
    assert prefix is not None and folder is not None
    remember_facts(folder, absolute, os.stat(absolute), {"sha256": prefix.ljust(64, "0")})
