"""Command-line argument types shared by the benchmark scripts: a bad value is argparse's one-line error (exit 2)
naming the option, before any work. Example::

    parser.add_argument("--repeats", type=whole_number(1, 1000), default=7)
"""

from __future__ import annotations

import argparse
from typing import Callable


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` taking a whole number in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    parse.__name__ = "whole number"  # what argparse's own messages call the type
    return parse
