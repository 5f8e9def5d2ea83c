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


#: loggers whose warnings are torch's own diagnostics, not the user's business: symbolic shapes logs a full sympy
#: traceback at WARNING each time it fails to simplify a guard (14 of them for a GoogLeNet ONNX export that is fine)
_DIAGNOSTICS = ("torch.fx.experimental.symbolic_shapes",)


def quiet_other_loggers() -> None:
    """Other libraries' loggers at WARNING (torch's diagnostics: errors only) unless verbose; featx's own unchanged."""
    if _verbose[0]:
        for name in _DIAGNOSTICS:
            diagnostics = logging.getLogger(name)
            for kept in [kept for kept in diagnostics.filters if isinstance(kept, _ErrorsOnly)]:
                diagnostics.removeFilter(kept)
        return
    logging.getLogger().setLevel(logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and not name.startswith("featx"):
            logger.setLevel(logging.WARNING)
    for name in _DIAGNOSTICS:  # a filter: importing torch (which the apps do later) resets its loggers' levels
        diagnostics = logging.getLogger(name)
        if not any(isinstance(kept, _ErrorsOnly) for kept in diagnostics.filters):
            diagnostics.addFilter(_ErrorsOnly())
    logging.getLogger("featx").setLevel(logging.INFO)


class _ErrorsOnly(logging.Filter):
    """Lets a logger's errors through, nothing below them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class QuietLibraries(Callback):
    """Quiets other libraries' loggers before a sweep launches its jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        quiet_other_loggers()
