"""Checkpoint files whose tensor records were found to hold what their pickles claim
(:mod:`featx.construct.tensor_records`), remembered in featx's user cache (``checked-checkpoints/``,
:mod:`featx.file_records`) so that the next build of the same, unchanged file skips the pickle walk (a Python
walk of every opcode: a sizeable part of a pretrained build).

A record counts only for the featx and torch versions that wrote it (either may read pickles differently), and only a
file found to match is remembered: a mismatch is refused every time. The file's status is taken before it is opened
and again after the check, and nothing is remembered where they differ: a file replaced meanwhile is never recorded
under the verdict of the one read.

Example::

    remembered = RememberedCheck(path)          # before the file is opened
    mismatch = None if remembered.passed else record_mismatch(reader)
    if mismatch is None:
        remembered.remember_pass()
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from featx.file_records import recalled_facts, records_folder, remember_facts, same_file
from featx.version import __version__

CHECKED_FOLDER = "checked-checkpoints"


def _facts() -> Dict[str, Any]:
    return {"tensor_records": "held as claimed", "featx": __version__, "torch": torch.__version__}


class RememberedCheck:
    """The tensor record check of the checkpoint file ``path``, as featx's user cache remembers it."""

    def __init__(self, path: Path) -> None:
        self._path = Path(os.path.abspath(path))
        self._folder = records_folder(CHECKED_FOLDER)
        self._status: Optional[os.stat_result] = None
        if self._folder is not None:
            try:
                status = os.stat(self._path)
            except OSError:  # the reader says what is wrong with it
                return
            self._status = status if stat.S_ISREG(status.st_mode) else None

    @property
    def passed(self) -> bool:
        """Whether this very file (unchanged since it was recorded) passed the check before."""
        if self._folder is None or self._status is None:
            return False
        return recalled_facts(self._folder, self._path, self._status) == _facts()

    def remember_pass(self) -> None:
        """Record that the file passed, where it is the same, unchanged file as when this was created."""
        if self._folder is None or self._status is None:
            return
        try:
            now = os.stat(self._path)
        except OSError:
            return
        if same_file(self._status, now):
            remember_facts(self._folder, self._path, self._status, _facts())
