"""Ctrl-C while an app runs: it ends with ``<app>: interrupted`` and status 130, no traceback, also where C code
dropped the KeyboardInterrupt (torch's import of numpy goes on without it).

Example::

    with ending_on_interrupt("featx"):
        run_the_app()
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import FrameType
from typing import Iterator, List, Optional

#: the exit status of an app stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
INTERRUPTED = 130
#: the Ctrl-Cs (SIGINT) that arrived while an app ran (:func:`_on_interrupt`)
_interrupts: List[int] = []


def _on_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """SIGINT's handler while an app runs: Python's own (raise KeyboardInterrupt), the signal recorded first. C code
    may drop the KeyboardInterrupt (torch's, importing numpy as torch is imported, goes on without it): the record
    still ends the app (:func:`stop_if_interrupted`)."""
    _interrupts.append(signum)
    raise KeyboardInterrupt


def stop_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived while the app ran, though the one its handler raised was dropped."""
    if _interrupts:
        raise KeyboardInterrupt


@contextlib.contextmanager
def ending_on_interrupt(app: str) -> Iterator[None]:
    """Run the block with SIGINT recorded (:func:`_on_interrupt`); a Ctrl-C ends it with ``<app>: interrupted`` and
    :data:`INTERRUPTED`, what was written whole (atomic writes), no traceback, also where its KeyboardInterrupt was
    dropped and the block ended otherwise (numpy's "cannot load module more than once per process") or went on to
    its end. Python's own SIGINT handler is put back after; a SIGINT the process started with ignored (a script's
    background job), or given a handler of a program's own, is left so."""
    _interrupts.clear()
    ours = threading.current_thread() is threading.main_thread()  # signal.signal works in the main thread only
    ours = ours and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ours:
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
        stop_if_interrupted()
    except BaseException as error:
        if not (isinstance(error, KeyboardInterrupt) or _interrupts):
            raise
        print(f"{app}: interrupted", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
