"""How every featx app reports an error: one line ``<app>: error: <message>`` and exit status 1, never a traceback.

Example::

    with reported_errors("featx-export"):
        backbone = featx.build(cfg.backbone)
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NoReturn

from featx.errors import FeatxError


def fail(app: str, message: str) -> NoReturn:
    """Stop the app with ``<app>: error: <message>``."""
    raise SystemExit(f"{app}: error: {message}")


@contextlib.contextmanager
def reported_errors(app: str) -> Iterator[None]:
    """A :class:`~featx.errors.FeatxError` raised inside the block stops the app with its one-line message."""
    try:
        yield
    except FeatxError as error:
        fail(app, str(error))
