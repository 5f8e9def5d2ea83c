"""A Hydra callback of featx's apps: the folder Hydra is about to make for its logs (``hydra.run.dir``, or
``hydra.sweep.dir`` in a sweep) is checked first, so one that cannot be made (a file in its place, a read-only
``$TMPDIR``) is one featx error line instead of the traceback of Hydra's ``mkdir``. Nothing is created here.

The apps' configs register it::

    hydra:
      callbacks:
        output_folders:
          _target_: featx.cli.output_folders.OutputFolders
          app: featx
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from featx.cli.errors import fail


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


class OutputFolders(Callback):
    """Checks Hydra's output folder before a run (``app`` names the app in the error)."""

    def __init__(self, app: str) -> None:
        self.app = app

    def _check(self, key: str, folder: Any) -> None:
        problem = _problem(Path(str(folder)).absolute())
        if problem is not None:
            fail(
                self.app,
                f"{key}: Hydra keeps this run's logs in {folder}, and {problem}; give another folder with {key}=... "
                "(the default is under $TMPDIR)",
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)
