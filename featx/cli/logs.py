"""What featx's apps log: other libraries' messages below WARNING are hidden (torch's ONNX exporter announces every
pass at INFO, Hydra's launcher every sweep job on stdout), featx's own kept; ``-v``/``--verbose`` keeps them all.

The apps' configs register :class:`QuietLibraries`, which quiets them as soon as Hydra has set up its logging for a
sweep, before the launcher's first message; each job quiets them again after Hydra sets up the job's::

    hydra:
      callbacks:
        quiet_libraries:
          _target_: featx.cli.logs.QuietLibraries
"""

from __future__ import annotations

import logging
from typing import Any, List

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: featx's own flag: keep other libraries' INFO messages
VERBOSE_FLAGS = ("-v", "--verbose")
_verbose: List[bool] = [False]


def set_verbose(verbose: bool) -> None:
    """Whether this process's app was given ``-v``/``--verbose``."""
    _verbose[0] = verbose


def quiet_other_loggers() -> None:
    """Other libraries' loggers at WARNING (unless verbose); featx's own unchanged."""
    if _verbose[0]:
        return
    logging.getLogger().setLevel(logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and not name.startswith("featx"):
            logger.setLevel(logging.WARNING)
    logging.getLogger("featx").setLevel(logging.INFO)


class QuietLibraries(Callback):
    """Quiets other libraries' loggers before a sweep launches its jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        quiet_other_loggers()
