"""A Hydra callback of featx's apps: the folder Hydra is about to make for its logs (``hydra.run.dir``, or
``hydra.sweep.dir`` in a sweep) is checked first, so one that cannot be made (a file in its place, a read-only
``$TMPDIR``) is one featx error line instead of the traceback of Hydra's ``mkdir``. What Hydra then writes without
looking is checked first: its config records and every log handler's file lie inside the run folder (each sweep
job's own folder) with no link on the way, and a sweep's job folders (those of the jobs Hydra's sweeper lists) are
folders or not there yet. Under ``torchrun``, rank 0 alone writes Hydra's record of the run (``.hydra/``): the
ranks of one launch may share the run folder (a ``hydra.run.dir`` given), and a rank checking it while rank 0 writes
its record would take that half-written record for a stranger's file. For the same reason an app holds the user's
start lock (:func:`hold_start_lock`) from its check until Hydra has written its record (the first job's start): two
apps started at once in one folder take turns instead of one refusing the other's half-written record.

The default folders lie in ``$TMPDIR/featx-outputs-<uid>/`` (the ``featx.user`` resolver gives the user id). In a
shared ``/tmp`` anyone could make that name first, or plant links at the run folders' predictable names, so featx
makes it itself, readable and writable by its user alone, and refuses one that is a link, not its user's, or
writable by others. Nothing else is created here but the start lock's file in it.

The apps' configs register it::

    hydra:
      callbacks:
        output_folders:
          _target_: featx.cli.output_folders.OutputFolders
          app: featx
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import stat
import time
from pathlib import Path
from typing import IO, Any, List, Optional, Sequence, Set, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from featx.cli.errors import fail
from featx.cli.sweeps import check_sweep_size, group_options, parsed_sweep_arguments
from featx.errors import ArgumentError

#: the name of the default output root in ``$TMPDIR``, followed by the user id
PRIVATE_ROOT = "featx-outputs-"
#: the sweep folders of the sweeps started in this process (``-m``, or ``hydra.mode=MULTIRUN``): an app checks that
#: its sweep ran a job
sweeps_started: List[str] = []


def user_id() -> str:
    """The user's numeric id (the login name where there is none): what makes the default output root per user."""
    return str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()


def register_user_resolver() -> None:
    """Register ``${featx.user:}`` (:func:`user_id`), which the apps' configs use in their default output folders."""
    OmegaConf.register_new_resolver("featx.user", user_id, replace=True)


def _private_root(folder: Path) -> Optional[Path]:
    """The ``featx-outputs-<uid>`` folder ``folder`` lies in, if it does (the default output folders)."""
    return next((parent for parent in (folder, *folder.parents) if parent.name == PRIVATE_ROOT + user_id()), None)


def _secure(root: Path) -> Optional[str]:
    """Make ``root`` (mode 0700) if it is not there; why it cannot be trusted if it is, or None."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)  # $TMPDIR itself, as Hydra would make it
        os.mkdir(root, 0o700)
        return None
    except FileExistsError:
        pass
    except OSError as error:
        return f"{root} cannot be made ({error.strerror or error})"
    info = os.lstat(root)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return f"{root} is not a folder but {'a link' if stat.S_ISLNK(info.st_mode) else 'a file'}"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"{root} belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{root} can be written by other users"
    return None


#: the lock file in the user's default output root that apps hold while they check and Hydra writes its record
START_LOCK = ".start.lock"
#: how long an app waits for another's start (a few milliseconds as a rule) before it goes on without the lock
START_LOCK_WAIT_SECONDS = 30.0
#: the open lock file while this process holds the start lock
_held_start_lock: List[IO[bytes]] = []


def hold_start_lock() -> None:
    """Wait (at most :data:`START_LOCK_WAIT_SECONDS`) for the user's start lock, then hold it until
    :func:`release_start_lock`: ``$TMPDIR/featx-outputs-<uid>/.start.lock``, flock'ed. Where that folder cannot be
    made safely or the system has no ``flock``, apps start without it, as before. Example::

        hold_start_lock()       # before checking the run folder
        release_start_lock()    # once Hydra has written its record there
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        return
    root = Path(os.environ.get("TMPDIR") or "/tmp") / (PRIVATE_ROOT + user_id())  # as the apps' configs name it
    if _secure(root) is not None:  # made by another user, or not writable: the run folder's own check says so
        return
    try:
        handle = open(root / START_LOCK, "ab")  # held until release_start_lock
    except OSError:
        return
    deadline = time.monotonic() + START_LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:  # the other app hangs between its check and its job: go on alone
                handle.close()
                return
            time.sleep(0.02)
        except OSError:  # a file system without locks
            handle.close()
            return
    _held_start_lock.append(handle)


def release_start_lock() -> None:
    """Let the next app start (closing the lock file releases its flock); nothing when none is held."""
    while _held_start_lock:
        _held_start_lock.pop().close()


def _problem(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be made or written in, or None (checked on the path alone: nothing is created)."""
    for existing in (folder, *folder.parents):
        if not os.path.lexists(existing):
            continue
        if not existing.is_dir():
            return f"{existing} is not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} cannot be written in"
        return None
    return None


#: the job's number in ``hydra.sweep.subdir`` or a log file's name (``hydra.job.id`` is the same number in a sweep;
#: ``${hydra:job.num}`` reads it through Hydra's resolver)
_JOB_NUMBER = re.compile(r"\$\{hydra[.:]job\.(num|id)\}")
#: the run's (or sweep job's) folder in a log file's name: Hydra sets it as the job starts
_RUN_FOLDER = re.compile(r"\$\{hydra[.:]runtime\.output_dir\}")
#: the job's name in a log file's name
_JOB_NAME = re.compile(r"\$\{hydra[.:]job\.name\}")
#: Hydra's sweeper whose jobs featx lists before they run (its own split of the sweep)
_BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"


#: what Hydra's record of a featx app's run holds (its callbacks, in hydra.yaml and multirun.yaml): this callback
_FEATX_RECORD_MARK = f"_target_: {__name__}.OutputFolders"
#: how much of a record is read to find the mark (Hydra's records are a few kB)
_RECORD_BYTES = 1 << 16


def _is_featx_record(path: Path) -> bool:
    """Whether ``path`` is Hydra's record of a run of featx's apps (one they may replace on a rerun in its folder)."""
    try:
        with open(path, "rb") as record:
            return _FEATX_RECORD_MARK.encode() in record.read(_RECORD_BYTES)
    except OSError:
        return False


def _torchrun_rank() -> int:
    """This process's rank under ``torchrun`` (0 outside it, and where torchrun's variables are wrong: the app then
    stops naming the variable, see :func:`featx.tasks.extract.ranks.torchrun_environment`)."""
    if "WORLD_SIZE" not in os.environ:  # no torchrun (its rule too): the extraction task's modules left unimported
        return 0
    from featx.tasks.extract.ranks import torchrun_environment

    try:
        return torchrun_environment()[1]
    except ArgumentError:
        return 0


def _log_names(config: DictConfig, sections: Sequence[str]) -> List[Tuple[str, str]]:
    """(key, file name as the config gives it) of each handler with a ``filename`` in Hydra's logging ``sections``
    (``job_logging``, ``hydra_logging``), e.g. ``("hydra.job_logging.handlers.file.filename",
    "${hydra.runtime.output_dir}/${hydra.job.name}.log")``."""
    names = []
    for section in sections:
        logging = OmegaConf.select(config, f"hydra.{section}")
        content = OmegaConf.to_container(logging, resolve=False) if isinstance(logging, DictConfig) else None
        handlers = content.get("handlers") if isinstance(content, dict) else None
        for handler, settings in (handlers if isinstance(handlers, dict) else {}).items():
            if isinstance(settings, dict) and "filename" in settings:
                names.append((f"hydra.{section}.handlers.{handler}.filename", str(settings["filename"])))
    return names


class OutputFolders(Callback):
    """Checks Hydra's output folder before a run (``app`` names the app in the error)."""

    def __init__(self, app: str) -> None:
        self.app = app

    def _check(self, key: str, folder: Any) -> None:
        if not str(folder).strip():  # Path("") is the working directory, whose .hydra/ Hydra would replace
            fail(
                self.app,
                f"{key}: empty (an unset shell variable?), which Hydra would take as the working directory for this "
                f"run's logs; give a folder with {key}=... (the default is under $TMPDIR)",
            )
        path = Path(str(folder)).absolute()
        root = _private_root(path)
        problem = (_problem(root) or _secure(root)) if root is not None else None
        problem = problem or _problem(path)
        if problem is not None:
            fail(
                self.app,
                f"{key}: Hydra keeps this run's logs in {folder}, and {problem}; give another folder with {key}=... "
                "(the default is under $TMPDIR)",
            )

    def _log_file(self, key: str, given: str, folder: str, name: str, number: Optional[int]) -> Path:
        """The file a log handler writes (``key``: its ``filename``, ``given`` as the config gives it), resolved as
        Hydra resolves it for the run in ``folder`` (absolute, as Hydra's ``hydra.runtime.output_dir``), of job name
        ``name`` and (a sweep's job) ``number``: refused unless it lies inside ``folder``."""
        value = _JOB_NAME.sub(lambda _: name, _RUN_FOLDER.sub(lambda _: folder, given))
        if number is not None:
            value = _JOB_NUMBER.sub(lambda _: str(number), value)
        if "${" in value:
            fail(
                self.app,
                f"{key}: {given} refers to other values than the run folder (${{hydra.runtime.output_dir}}) and the "
                "job's name and number; featx checks where Hydra writes a log before it does, which it can for those "
                "alone",
            )
        path = Path(value).absolute()  # a relative name is opened in the working directory
        if ".." in Path(value).parts or Path(folder) not in path.parents:
            fail(
                self.app,
                f"{key}: Hydra would write this run's log to {value}, outside the run folder {folder}; give a file "
                "name below ${hydra.runtime.output_dir} (the default is ${hydra.runtime.output_dir}/${hydra.job.name}"
                ".log)",
            )
        return path

    def _check_hydra_files(
        self,
        config: DictConfig,
        folder: Any,
        files: Sequence[str],
        logs: Sequence[Tuple[str, str]],
        number: Optional[int] = None,
    ) -> None:
        """Refuse an ``hydra.output_subdir`` or ``hydra.job.name`` that would put Hydra's files outside the run
        folder, a log file (``logs``: :func:`_log_names`, resolved for the job ``number`` of a sweep) outside it,
        and a link where Hydra writes its files (``files`` in the folder, the config files in its
        ``output_subdir``, the logs): Hydra would write through it into a file elsewhere; and a folder in a file's
        place."""
        subdir, name = config.hydra.output_subdir, str(config.hydra.job.name)
        if subdir is not None and (Path(str(subdir)).is_absolute() or ".." in Path(str(subdir)).parts):
            fail(
                self.app,
                f"hydra.output_subdir: {subdir} is not a folder inside the run folder {folder}, where Hydra keeps "
                "its copy of the config; give a relative name (the default is .hydra) or null for none",
            )
        if name in ("", ".", "..") or "/" in name or os.sep in name:
            fail(self.app, f"hydra.job.name: {name!r} is not a file name (Hydra writes the run's log to <name>.log)")
        base = Path(os.path.abspath(str(folder)))  # as Hydra makes hydra.runtime.output_dir
        written = [base / file for file in files]
        written += [self._log_file(key, given, str(base), name, number) for key, given in logs]
        if subdir is not None:
            written += [base / str(subdir) / file for file in ("config.yaml", "hydra.yaml", "overrides.yaml")]
        for path in written:
            link = next((p for p in (path, *path.parents) if p != base and base in p.parents and p.is_symlink()), None)
            if link is not None:
                fail(
                    self.app,
                    f"{link} is a link, and Hydra would write this run's {path.name} through it into a file "
                    "elsewhere; remove the link or give another folder with hydra.run.dir / hydra.sweep.dir",
                )
            if path.is_dir():  # Hydra's logging would fail with "Unable to configure handler 'file'"
                fail(
                    self.app,
                    f"{path} is a folder, where Hydra writes this run's {path.name}; remove it or give another "
                    "folder with hydra.run.dir / hydra.sweep.dir",
                )
            # Hydra replaces these files (it appends to the log): only a featx run's own record may be replaced
            record = path if path.name == "multirun.yaml" else path.parent / "hydra.yaml"
            if path.suffix == ".yaml" and path.is_file() and not _is_featx_record(record):
                fail(
                    self.app,
                    f"{path} exists and is no record of a featx run, and Hydra would replace it with this run's "
                    f"{path.name}; give another folder with hydra.run.dir / hydra.sweep.dir",
                )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        hold_start_lock()
        self._check("hydra.run.dir", config.hydra.run.dir)
        if _torchrun_rank() > 0:  # rank 0 writes (and checks) Hydra's record; this rank writes its log alone
            with read_write(config.hydra):
                config.hydra.output_subdir = None
        self._check_hydra_files(config, config.hydra.run.dir, [], _log_names(config, ("job_logging", "hydra_logging")))

    def _job_count(self, config: DictConfig) -> Optional[int]:
        """How many jobs the sweep runs (numbered from 0), as Hydra's basic sweeper lists them: a config's
        ``hydra.sweeper.params`` and the command line's sweep, a ``glob`` matched against the config group. None
        where the sweeper cannot list them: it stops with its own error before any job runs."""
        sweeper = config.hydra.sweeper
        if sweeper.get("_target_") != _BASIC_SWEEPER:
            fail(
                self.app,
                f"hydra.sweeper: {sweeper.get('_target_')} is not Hydra's basic sweeper, whose jobs featx lists to "
                "check each job's folder before Hydra writes in it; leave hydra/sweeper at basic",
            )
        params = sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        try:
            return sum(map(len, BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)))
        except HydraException:
            return None

    def _check_job_folders(self, config: DictConfig) -> None:
        """Each job of a sweep writes Hydra's files in ``hydra.sweep.dir/<hydra.sweep.subdir>``, resolved by Hydra
        only as the job starts, after which it writes at once: the subfolder must be made of names and the job's
        number (so it stays inside the sweep folder whatever it resolves to). Each job's folder, the sweep's own
        jobs' alone (other entries of the sweep folder are left alone), is checked before the first job runs: a link
        or a file at it or at a folder above it inside the sweep folder is refused, and so are Hydra's files in it
        (:meth:`_check_hydra_files`)."""
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")  # type: ignore[union-attr]
        parts = Path(str(subdir)).parts
        if Path(str(subdir)).is_absolute() or ".." in parts or not parts:
            fail(
                self.app,
                f"hydra.sweep.subdir: {subdir} is not a folder inside the sweep folder {config.hydra.sweep.dir}, "
                "where each job keeps its logs; give a relative name (the default is the job's number)",
            )
        if any("${" in _JOB_NUMBER.sub("", part) for part in parts):
            fail(
                self.app,
                f"hydra.sweep.subdir: {subdir} refers to other values than the job's number; featx checks each job's "
                "folder before Hydra writes in it, which it can for names and ${hydra.job.num} (or ${hydra.job.id}) "
                "alone, e.g. runs/${hydra.job.num}",
            )
        if not _JOB_NUMBER.search(str(subdir)):
            fail(
                self.app,
                f"hydra.sweep.subdir: {subdir} names no job, so every job of the sweep would write its logs and "
                "Hydra's record of its config into that one folder; include the job's number, e.g. "
                "runs/${hydra.job.num}",
            )
        jobs = self._job_count(config)
        base = Path(os.path.abspath(str(config.hydra.sweep.dir)))
        logs = _log_names(config, ("job_logging",))
        checked: Set[Path] = set()
        for number in range(jobs or 0):
            parts = Path(_JOB_NUMBER.sub(str(number), str(subdir))).parts
            job = base.joinpath(*parts)
            for path in (base.joinpath(*parts[: depth + 1]) for depth in range(len(parts))):
                if path in checked:
                    continue
                checked.add(path)
                if path.is_symlink():
                    fail(
                        self.app,
                        f"{path} is a link, and a job of this sweep would write its logs through it into a folder "
                        "elsewhere; remove the link or give another folder with hydra.sweep.dir",
                    )
                if os.path.lexists(path) and not path.is_dir():
                    fail(
                        self.app,
                        f"{path} is not a folder, where job #{number} of this sweep keeps its logs; remove it or give "
                        "another folder with hydra.sweep.dir",
                    )
            self._check_hydra_files(config, job, [], logs, number)

    def _check_sweep_size(self, config: DictConfig) -> None:
        """The sweep's size with a config's ``hydra.sweeper.params`` (which the command line's check cannot see)
        counted, before Hydra's sweeper lists its jobs."""
        sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
        params = sweeper.get("params") if isinstance(sweeper, dict) else None
        arguments = [f"{key}={value}" for key, value in (params or {}).items()] + list(config.hydra.overrides.task)
        folders = [
            Path(source.path) for source in config.hydra.runtime.config_sources if source.get("schema") == "file"
        ]
        check_sweep_size(self.app, parsed_sweep_arguments(arguments), functools.partial(group_options, folders=folders))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hold_start_lock()
        self._check_sweep_size(config)
        sweeps_started.append(str(config.hydra.sweep.dir))
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
        self._check_hydra_files(
            config, config.hydra.sweep.dir, ["multirun.yaml"], _log_names(config, ("hydra_logging",))
        )
        self._check_job_folders(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_start_lock()  # Hydra has written the run's (the job's, and the sweep's) record
