"""An app's results on stdout, for readers that stop early: ``featx-list | head -3`` ends the app quietly (status 1,
as Python's own handling of a closed pipe gives) instead of with a BrokenPipeError traceback.

Example::

    with reader_may_stop():
        print(table)
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def reader_may_stop() -> Iterator[None]:
    """Inside the block (and for what it left buffered), a reader of stdout that went away stops the app quietly."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout now goes nowhere, so the interpreter's own flush at exit cannot fail on the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
