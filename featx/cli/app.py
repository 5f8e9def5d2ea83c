"""What the three Hydra apps (``featx``, ``featx-export``, ``featx-extract``) share around their task function.

- Before Hydra composes anything, the command line is checked (:mod:`featx.cli.command_line`): its options, its
  overrides against the app's config schema (:mod:`featx.cli.override_checks`), the Hydra settings featx keeps
  (:mod:`featx.cli.hydra_settings`) and the user's config files they bring in (:mod:`featx.cli.user_configs`).
- A key the app's schema lacks (``+input.heigth=300``, which Hydra would add and the app ignore) is refused, and
  so are a ``backbone=`` choice naming two files on the config search path (Hydra would silently take the first)
  and ``hydra.job.chdir=true`` (the apps' paths are relative to where they are run).
- Every FeatxError in a job becomes one line ``<app>: error: <message>``, and so do Hydra's and OmegaConf's errors
  (:mod:`featx.cli.hydra_errors`; ``HYDRA_FULL_ERROR=1`` while Hydra runs; a user's ``HYDRA_FULL_ERROR=1``, the
  only value Hydra takes as asking, shows Hydra's full error instead), an error raised in Hydra's own code naming
  the Hydra settings given; the composed config's own keys are checked present, set and resolvable before the task
  runs.
- An empty ``TMPDIR`` is unset (as Python's ``tempfile`` takes it) and a relative one refused: Hydra would otherwise
  write its files in the working directory.
- In a sweep (``-m``) a failing job does not stop the others: each failure is reported when it happens, and when
  every job has run the app exits with status 1 and a summary of the failed jobs.
- Ctrl-C ends the app with status 130 (:mod:`featx.cli.interrupts`); other libraries' log messages below WARNING
  (Hydra's logging shows INFO) are silenced unless ``-v`` is given.

Example::

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
    @app_task("featx-export", ExportAppConfig)
    def run(cfg: DictConfig) -> None: ...

    def main() -> None:
        run_app("featx-export", run, ExportAppConfig)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.resources
import io
import os
import sys
import typing
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from featx.cli.command_line import (
    check_command_line,
    check_completed_line,
    check_completion_command,
    check_flags,
    hydra_flags,
)
from featx.cli.errors import fail, reported_errors
from featx.cli.hydra_errors import hydra_error_line, raised_in_featx
from featx.cli.hydra_settings import sets_hydra
from featx.cli.interrupts import ending_on_interrupt, stop_if_interrupted
from featx.cli.logs import VERBOSE_FLAGS, quiet_other_loggers, set_verbose
from featx.cli.output import reader_may_stop, reader_went_away, stdout_lost
from featx.cli.output_folders import register_user_resolver, release_start_lock, sweeps_started
from featx.cli.override_checks import as_typed, null_list_indexed, plain_nested_overrides, unknown_key
from featx.errors import ArgumentError, first_line
from featx.spec.limits import check_batch_shape, quoted, shortened
from featx.version import __version__

Result = TypeVar("Result")
#: the sweep jobs that failed in this process, as "#<num> <overrides>": <message>
_failed_jobs: List[str] = []
_jobs_run: List[int] = []
#: the sweep's jobs stopped or not run because the reader of stdout went away (the app then ends quietly, status 1)
_jobs_unread: List[int] = []
#: Hydra's switch that raises its errors instead of printing them (featx makes them one line)
FULL_ERROR = "HYDRA_FULL_ERROR"


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> List[Tuple[str, List[str]]]:
    """``(dotted key, the keys valid there)`` for each key of ``cfg`` that ``schema`` (an app's config dataclass) does
    not define, ``backbone`` aside (the spec layer checks it). Hydra lets ``+input.heigth=300`` add a key to a schema
    node; featx refuses it rather than ignore it."""
    hints = typing.get_type_hints(schema)
    unknown: List[Tuple[str, List[str]]] = []
    for key in map(str, cfg.keys()):
        name = f"{prefix}{key}"
        if name == "backbone":
            continue
        if key not in hints:
            unknown.append((name, list(hints)))
        elif dataclasses.is_dataclass(hints[key]) and OmegaConf.is_dict(cfg[key]):
            unknown += unknown_keys(cfg[key], hints[key], prefix=f"{name}.")
    return unknown


def _check_keys(cfg: DictConfig, schema: type) -> None:
    for name, valid in unknown_keys(cfg, schema)[:1]:
        raise ArgumentError(unknown_key(name, valid))


def _check_values(cfg: DictConfig, schema: type) -> None:
    """Each key of ``schema`` present and set, and the app's own ones resolvable to their types: ``~input`` deletes a
    node, ``input.height=???`` unsets it and ``${oc.env:HOME}`` may resolve to a string; the task would stop on
    OmegaConf's traceback. The backbone node is the spec layer's to check."""
    for name in typing.get_type_hints(schema):
        if name not in cfg:
            raise ArgumentError(f"{name}: missing (deleted with ~{name}?); the app needs it")
        if OmegaConf.is_missing(cfg, name):
            hint = "; choose one: backbone=<name> (featx-list lists them)" if name == "backbone" else ""
            raise ArgumentError(f"{name}: missing value{hint}")
        if name == "backbone":
            continue
        try:  # read in place: an interpolation may refer to another node (${backbone.device})
            value = cfg[name]
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            key = error.full_key or name
            raise ArgumentError(f"{key}: missing; give it on the command line ({key}=...)") from None
        except InterpolationResolutionError as error:  # the value it resolved to is not echoed: it may be a secret
            raise ArgumentError(
                f"{error.full_key or name}: its interpolation cannot be resolved to a value of its type "
                f"({type(error).__name__})"
            ) from None


def _config_roots() -> List[Path]:
    """The directories of Hydra's config search path, in its order (file:// and pkg:// sources)."""
    roots = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema == "file":
            roots.append(Path(source.path))
        elif source.schema == "pkg":
            try:
                roots.append(Path(str(importlib.resources.files(source.path))))
            except ModuleNotFoundError:
                continue
    return roots


def _refuse_shadowed_backbone() -> None:
    """Two ``backbone/<choice>.yaml`` on the search path (``choice`` may name a subfolder: ``sub/x``): Hydra silently
    takes the first; featx refuses."""
    choice = HydraConfig.get().runtime.choices.get("backbone")
    candidates = [root / "backbone" / f"{choice}.yaml" for root in _config_roots()] if choice is not None else []
    files: Dict[Path, Path] = {}  # by the file it is: a root on the search path twice gives one file twice
    for path in candidates:
        if path.is_file():
            files.setdefault(path.resolve(), path)
    if len(files) > 1:
        used, *ignored = files.values()
        folder, _, name = str(choice).rpartition("/")
        raise ArgumentError(
            f"backbone={choice} names {len(files)} files on the config search path: {used} (which "
            f"Hydra would use) and {', '.join(map(str, ignored))} (ignored). Rename your file, e.g. to "
            f"{folder + '/' if folder else ''}my_{name}.yaml"
        )


def _refuse_changed_directory() -> None:
    """featx's apps read and write paths relative to where they are run; Hydra's ``job.chdir`` would move them."""
    if HydraConfig.get().job.chdir:
        raise ArgumentError(
            "hydra.job.chdir: featx's apps never change the working directory (paths such as export.path and "
            "extract.input are relative to where you run them); remove hydra.job.chdir=true"
        )


def app_task(
    app: str, schema: type
) -> Callable[[Callable[[DictConfig], Result]], Callable[[DictConfig], Optional[Result]]]:
    """Wrap an app's task function (under ``@hydra.main``): keys ``schema`` lacks refused, FeatxErrors reported on
    one line; in a sweep, a failed job is recorded and the next one runs."""

    def wrap(task: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Optional[Result]]:
        def checked(cfg: DictConfig) -> Result:
            quiet_other_loggers()
            _refuse_changed_directory()
            _check_values(cfg, schema)
            _check_keys(cfg, schema)
            _refuse_shadowed_backbone()
            try:
                return task(cfg)
            except Exception:  # Hydra would report it (and go on with a sweep): one that came of a dropped Ctrl-C
                stop_if_interrupted()  # (numpy's ImportError, imported again) is no error of the job's
                raise

        @functools.wraps(task)
        def run(cfg: DictConfig) -> Optional[Result]:
            if not _in_sweep():
                with reported_errors(app):
                    return checked(cfg)  # run_app looks for a dropped Ctrl-C when the app ends
            job = HydraConfig.get().job
            _jobs_run.append(job.num)
            if reader_went_away():  # quietly, as a single run ends: the reader asked for no more
                _jobs_unread.append(job.num)
                return None
            lost = stdout_lost()
            if lost is not None:  # an earlier job found stdout gone: this job's results would be lost too
                overrides = _job_overrides()
                print(f"{app}: job #{job.num} ({overrides}) not run: standard output is lost ({lost})", file=sys.stderr)
                _failed_jobs.append(f"#{job.num} ({overrides})")
                return None
            try:
                with reported_errors(app):
                    result = checked(cfg)
            except SystemExit as stop:
                stop_if_interrupted()  # the job's error may come of the Ctrl-C: the sweep ends, with no job failed
                if reader_went_away():  # this job's reader went away as it wrote
                    _jobs_unread.append(job.num)
                    return None
                overrides = _job_overrides()
                reason = str(stop.code).removeprefix(f"{app}: error: ")  # said once, by the line's own prefix
                print(f"{app}: job #{job.num} ({overrides}) failed: {reason}", file=sys.stderr, flush=True)
                _failed_jobs.append(f"#{job.num} ({overrides})")
                return None
            stop_if_interrupted()  # the sweep's later jobs are not run
            return result

        return run

    return wrap


#: the height and width of an app's example input for a backbone that takes any size
DEFAULT_SIDE = 224


def input_size(height: Optional[int], width: Optional[int], fixed: Optional[Sequence[int]]) -> Tuple[int, int]:
    """An app's example input size: ``height`` and ``width`` where given (not null), else the backbone's own
    ``input_size`` (``fixed``, a model that takes one size), else :data:`DEFAULT_SIDE`. Example:
    ``input_size(None, None, [384, 384])`` is ``(384, 384)``; ``input_size(None, 96, None)`` is ``(224, 96)``."""
    default = (DEFAULT_SIDE, DEFAULT_SIDE) if fixed is None else (fixed[0], fixed[1])
    return (default[0] if height is None else height, default[1] if width is None else width)


def example_size(
    where: str, batch_size: object, height: Optional[int], width: Optional[int], fixed: Optional[Sequence[int]]
) -> Tuple[int, int]:
    """An app's example input size (:func:`input_size`) for a batch of ``batch_size``, checked against the batch
    limits (:func:`~featx.spec.limits.check_batch_shape`) naming the settings each side came from: ``<where>.height``
    or ``width``, or ``backbone.input_size`` where that side is null and the backbone takes one size. Example:
    ``example_size("input", 1, None, None, [384, 384])`` is ``(384, 384)``."""
    size = input_size(height, width, fixed)
    sides = [
        f"{where}.{side}" if given is not None or fixed is None else "backbone.input_size"
        for side, given in (("height", height), ("width", width))
    ]
    check_batch_shape(where, batch_size, *size, names=(f"{where}.batch_size", sides[0], sides[1]))
    return size


def _job_overrides() -> str:
    """The running sweep job's overrides as the command line gives them: a value that is not swept as typed (Hydra
    writes ``run=false`` as ``run=False``), and without the ``++`` featx puts before a key below a nullable node
    (:func:`plain_nested_overrides`)."""
    typed: Dict[str, str] = {}
    for argument in sys.argv[1:]:
        try:
            (override,) = OverridesParser.create().parse_overrides([argument])
        except (HydraException, ValueError):
            continue
        if not override.is_sweep_override():
            typed[override.key_or_group] = argument
    shown = []
    for argument in HydraConfig.get().overrides.task:
        key = argument.lstrip("+~").split("=", 1)[0]
        shown.append(as_typed(typed.get(key, argument)))
    return " ".join(shown)


@contextlib.contextmanager
def shown_package(app: str, flags: argparse.Namespace) -> Iterator[None]:
    """For ``--cfg ... -p KEY``: Hydra's own line for a key the composed config lacks or leaves without a value
    (``package 'KEY' not found in config``, on stderr, then exit 1) as a featx error; nothing otherwise."""
    if not flags.cfg or not flags.package:
        yield
        return
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            yield
    except SystemExit:
        if errors.getvalue().startswith("package "):
            fail(
                app,
                f"--package (-p) {shortened(flags.package)}: not in the --cfg {flags.cfg} config, or without a value "
                "there (null, or ??? for one still to give)",
            )
        raise
    finally:
        if not errors.getvalue().startswith("package "):
            sys.stderr.write(errors.getvalue())


def run_app(app: str, hydra_main: Callable[[], object], schema: type) -> None:
    """Check the command line (``sys.argv``) against the app's config ``schema``, run the Hydra app, and after a
    sweep exit 1 if any of its jobs failed. ``-v`` is featx's: it keeps other libraries' INFO messages. Ctrl-C ends
    the app with status 130 (:func:`~featx.cli.interrupts.ending_on_interrupt`): one whose KeyboardInterrupt C code
    dropped (torch's import) ends it when the job it came in ends, a sweep's later jobs not run."""
    with ending_on_interrupt(app):
        _run_app(app, hydra_main, schema)


def _run_app(app: str, hydra_main: Callable[[], object], schema: type) -> None:
    """:func:`run_app`'s work, Ctrl-C left to it."""
    given = sys.argv[1:]
    if "--version" in given:  # Hydra's own flag prints Hydra's version alone
        with reader_may_stop(app):
            print(f"{app} {__version__} (Hydra {hydra.__version__})")
        raise SystemExit(0)
    set_verbose(any(flag in given for flag in VERBOSE_FLAGS))
    given = plain_nested_overrides([argument for argument in given if argument not in VERBOSE_FLAGS])
    flags, unplaced = hydra_flags(given)
    check_flags(app, flags, unplaced)
    if flags.shell_completion:
        check_completion_command(app, flags.overrides)
        if flags.overrides[0].startswith("query="):
            given = [*given, *check_completed_line(app, flags, schema)]
    else:
        check_command_line(app, flags, given, schema)
    sys.argv[1:] = given
    if os.environ.get("TMPDIR") == "":  # unset, as Python's tempfile takes it: the run folders go under /tmp
        del os.environ["TMPDIR"]
    if not Path(os.environ.get("TMPDIR", "/")).is_absolute():  # the run folders would land in the working directory
        fail(
            app,
            f"TMPDIR={quoted(os.environ['TMPDIR'])}: the run folders go below it; give an absolute path, or unset it",
        )
    register_user_resolver()
    _failed_jobs.clear()
    _jobs_run.clear()
    _jobs_unread.clear()
    sweeps_started.clear()
    users_value = os.environ.get(FULL_ERROR)
    full_error = users_value == "1"  # Hydra's own rule: only 1 asks for the full error (0 or empty do not)
    os.environ[FULL_ERROR] = "1"  # Hydra raises its errors instead of printing them over several lines
    try:
        with reader_may_stop(app), shown_package(app, flags):  # Hydra's output too: --cfg, --help, -sc install=bash
            hydra_main()
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as error:
        if full_error:  # the user asked for Hydra's full error
            raise
        fail(app, hydra_error_line(error))
    except OSError as error:  # Hydra's own file work (a run folder it cannot make where the path check cannot tell)
        if full_error:
            raise
        where = f"{error.filename}: " if error.filename else ""
        fail(app, f"{where}{error.strerror or first_line(error)}")
    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:
        if full_error:  # what Hydra's own code raises for values it does not check (range step 0, a foreign launcher)
            raise
        hydras = isinstance(error, AssertionError) and "Unexpected type" in str(error)  # OmegaConf's, composing
        indexed = null_list_indexed(flags.overrides, schema) if hydras else []
        if indexed:
            keys, lists = ", ".join(key for key, _ in indexed), " and ".join(dict.fromkeys(key for _, key in indexed))
            fail(
                app,
                f"{keys}: Hydra cannot set an element of a list that is null in this config, as {lists} may be (the "
                f"backbone's file leaves it null unless it sets one); give the whole list: "
                + ", ".join(f"{key}=[...]" for key in dict.fromkeys(key for _, key in indexed)),
            )
        reason = quoted(first_line(error))[1:-1]
        cause = error.__cause__  # logging's "Unable to configure handler 'file'" hides the file's own error
        if isinstance(cause, OSError) and cause.strerror:
            reason += f" ({cause.strerror}: {cause.filename})" if cause.filename else f" ({cause.strerror})"
        elif cause is not None and first_line(cause) not in reason:  # logging's "Unable to configure root logger"
            reason += f" ({quoted(first_line(cause))[1:-1]})"
        settings = [shortened(argument) for argument in flags.overrides if sets_hydra(argument)]
        if settings and not isinstance(cause, OSError) and not raised_in_featx(error):  # a file explains itself
            reason += f", raised by Hydra's own code given the Hydra settings {' '.join(settings)}"
        fail(app, f"{type(error).__name__}{': ' if reason else ''}{reason} (HYDRA_FULL_ERROR=1 shows where)")
    finally:
        release_start_lock()  # a run stopped between its folder's check and its job's start
        if users_value is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = users_value
    if sweeps_started and not _jobs_run:  # -m, or hydra.mode=MULTIRUN
        fail(app, "the sweep has no jobs (a glob() that matches no name, an empty range()?); nothing ran")
    if _failed_jobs:
        fail(app, f"{len(_failed_jobs)} of {len(_jobs_run)} jobs failed: {'; '.join(_failed_jobs)}")
    if _jobs_unread:
        raise SystemExit(1)
