"""An app's results on stdout, for readers that stop early: ``featx-list | head -3`` ends the app quietly (status 1,
as Python's own handling of a closed pipe gives) instead of with a BrokenPipeError traceback; stdout that cannot be
written (``> /dev/full``) is one error line.

Example::

    with reader_may_stop("featx-list"):
        print(table)
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, List

#: why stdout could not be written, once it failed (a sweep's later jobs fail for it too: their results are lost)
_lost: List[str] = []


@contextlib.contextmanager
def reader_may_stop(app: str) -> Iterator[None]:
    """Inside the block (and for what it left buffered, also when the block exits), a reader of stdout that went
    away stops ``app`` quietly, and any other failure to write stdout (a full disk) stops it with one error line, as
    does every later block of the process."""
    if _lost:
        raise SystemExit(f"{app}: error: cannot write to standard output: {_lost[0]}")
    try:
        try:
            yield
        finally:
            sys.stdout.flush()
    except OSError as error:
        # stdout now goes nowhere, so the interpreter's own flush at exit cannot fail on it again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(error, BrokenPipeError):
            raise SystemExit(1) from None
        _lost.append(error.strerror or str(error))
        raise SystemExit(f"{app}: error: cannot write to standard output: {_lost[0]}") from None
