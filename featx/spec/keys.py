"""Naming things in errors: key paths under ``backbone`` and "did you mean" hints.

Example::

    key_path("stages", "c2", "slice")          # 'backbone.stages.c2.slice'
    suggest("resnet5", ["resnet50", "vgg16"])   # '; did you mean resnet50?'
"""

from __future__ import annotations

import difflib
from typing import Iterable

ROOT = "backbone"


def key_path(*parts: str) -> str:
    """``key_path("stages", "c2", "slice")`` → ``"backbone.stages.c2.slice"``."""
    return ".".join((ROOT, *parts))


def suggest(word: str, choices: Iterable[str], n: int = 3, prefix: str = "") -> str:
    """A ``"; did you mean x?"`` hint, or ``""`` when nothing is close (or ``word`` is too long to be a typo); each
    choice named with ``prefix`` (``suggest("resnt18", timm_models(), prefix="timm:")``: ``timm:resnet18``)."""
    if len(word) > 200:
        return ""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + by_lower[match] for match in close)}?" if close else ""
