"""An app's results on stdout, for readers that stop early: ``featx-list | head -3`` ends the app quietly (status 1,
as Python's own handling of a closed pipe gives) instead of with a BrokenPipeError traceback; stdout that cannot be
written (``> /dev/full``) is one error line. Only a failure of stdout itself counts: writes go through a guard that
marks its errors, so no other OSError (a folder Hydra cannot make) is taken for one.

Example::

    with reader_may_stop("featx-list"):
        print(table)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import weakref
from typing import Any, Iterator, Optional

#: why each stream given as stdout could not be written, once it failed ("" for a reader that went away): a sweep's
#: later jobs are not run (their results would be lost); another stdout (a later call in the process) is not marked
_lost: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


class _StdoutLost(Exception):
    """Writing stdout failed with ``error`` (not an OSError: argparse and others swallow those)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _GuardedStdout:
    """``stream`` whose failures to write or flush raise :class:`_StdoutLost` while ``active`` (its block runs) and
    are kept in ``failure`` (a caller such as a logging handler may swallow the exception) until ``reported``;
    anything else is the stream's. After the block, a holder of it (Hydra's log handler) gets the stream's own
    errors."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.failure: Optional[OSError] = None
        self.reported = False
        self.active = True

    def _lost(self, error: OSError) -> _StdoutLost:
        if self.failure is None:
            self.failure = error
        logging.raiseExceptions = False  # a handler writing here (Hydra's --info) would print a traceback per line
        return _StdoutLost(error)

    def write(self, text: str) -> Any:
        try:
            return self._stream.write(text)
        except OSError as error:
            if not self.active:
                raise
            raise self._lost(error) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            if not self.active:
                raise
            raise self._lost(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _ClosedStdout:
    """What stands for stdout when the app started without one (``>&-``: Python's ``sys.stdout`` is None): writing
    fails as a closed file descriptor does, so an app that prints is one error line, and one that writes files works."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed")

    def flush(self) -> None:
        """Nothing was written, so nothing waits."""

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "standard output is closed")

    def isatty(self) -> bool:
        return False


def _underlying(stream: Any) -> Any:
    while isinstance(stream, _GuardedStdout):
        stream = stream._stream
    return stream


def _mark_reported(stream: Any) -> None:
    """The failure of ``stream`` and of the guards below it has been reported (by an inner block: a sweep's job)."""
    while isinstance(stream, _GuardedStdout):
        stream.reported = True
        stream = stream._stream


def _reason(stream: Any) -> Optional[str]:
    try:
        return _lost.get(stream)
    except TypeError:  # a stream that takes no weak reference: never marked
        return None


def status_line(text: str) -> None:
    """Print ``text`` (a count, ``wrote PATH``) to stderr, for the person at the terminal: nothing where stderr is
    closed (``2>&-``: ``print`` would write it to stdout, among the results) or cannot be written (the work is done,
    its exit status stands). Example: ``status_line(f"{len(names)} backbones")``."""
    if sys.stderr is None:
        return
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def stdout_lost() -> Optional[str]:
    """Why writing the current stdout failed (a full disk), else None (a reader that went away is
    :func:`reader_went_away`). Example: ``if stdout_lost() is not None: ...`` (skip work whose results are lost)."""
    return _reason(_underlying(sys.stdout)) or None


def reader_went_away() -> bool:
    """Whether the reader of the current stdout went away (``| head``): the app ends quietly, with status 1."""
    return _reason(_underlying(sys.stdout)) == ""


@contextlib.contextmanager
def reader_may_stop(app: str) -> Iterator[None]:
    """Inside the block (and for what it left buffered, also when the block exits), a reader of stdout that went
    away stops ``app`` quietly, and any other failure to write stdout (a full disk) stops it with one error line; the
    stream is marked lost (:func:`stdout_lost`)."""
    if sys.stdout is None:  # started with stdout closed
        sys.stdout = _ClosedStdout()
    stream = _underlying(sys.stdout)
    earlier = _reason(stream)
    if earlier is not None:  # an earlier call found it lost, and pointed it at /dev/null: this output is lost too
        raise SystemExit(1 if earlier == "" else f"{app}: error: cannot write to standard output: {earlier}")
    guarded = _GuardedStdout(sys.stdout)
    logging_errors_shown = logging.raiseExceptions
    try:
        with contextlib.redirect_stdout(guarded):
            try:
                yield
            finally:
                guarded.flush()
        if guarded.failure is not None and not guarded.reported:  # swallowed on its way (by a logging handler)
            raise _StdoutLost(guarded.failure)
    except _StdoutLost as failure:
        _mark_reported(guarded)
        with contextlib.suppress(OSError, ValueError, AttributeError):  # the interpreter's flush at exit: nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        error = failure.error
        with contextlib.suppress(TypeError):
            _lost[stream] = "" if isinstance(error, BrokenPipeError) else (error.strerror or str(error))
        if isinstance(error, BrokenPipeError):
            raise SystemExit(1) from None
        raise SystemExit(f"{app}: error: cannot write to standard output: {error.strerror or error}") from None
    finally:
        guarded.active = False
        logging.raiseExceptions = logging_errors_shown
