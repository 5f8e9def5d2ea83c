"""How every featx app reports an error: one line ``<app>: error: <message>`` and exit status 1, never a traceback.

Example::

    with reported_errors("featx-export"):
        backbone = featx.build(cfg.backbone)
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NoReturn

from featx.errors import FeatxError
from featx.spec.limits import escaped


def fail(app: str, message: str) -> NoReturn:
    """Stop the app with ``<app>: error: <message>``, on one line (control characters of a file name in the message
    escaped: a name holding a line break and terminal escapes would forge a line of its own)."""
    raise SystemExit(f"{app}: error: {escaped(message)}")


@contextlib.contextmanager
def reported_errors(app: str) -> Iterator[None]:
    """A :class:`~featx.errors.FeatxError` raised inside the block stops the app with its one-line message."""
    try:
        yield
    except FeatxError as error:
        fail(app, str(error))
