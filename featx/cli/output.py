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
from typing import Iterator


@contextlib.contextmanager
def reader_may_stop(app: str) -> Iterator[None]:
    """Inside the block (and for what it left buffered), a reader of stdout that went away stops ``app`` quietly,
    and any other failure to write stdout (a full disk) stops it with one error line."""
    try:
        yield
        sys.stdout.flush()
    except OSError as error:
        # stdout now goes nowhere, so the interpreter's own flush at exit cannot fail on it again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(error, BrokenPipeError):
            raise SystemExit(1) from None
        raise SystemExit(f"{app}: error: cannot write to standard output: {error.strerror or error}") from None
