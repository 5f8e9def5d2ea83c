"""Command-line argument checks shared by the scripts: a bad value is argparse's one-line error (exit 2) naming the
option, before any work. Example::

    parser.add_argument("--repeats", type=whole_number(1, 1000), default=7)
    spec = check_rows_device(parser, "resnet50", args.device)   # --device: cpu or cuda[:N], present here
    check_page(parser, args.output, "# Benchmark results (generated)", "--output")   # not a file of the user's
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import featx
from featx.construct.device import resolve_device
from featx.files import refuse_a_foreign_page


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


def check_rows_device(parser: argparse.ArgumentParser, backbone: str, device: str) -> featx.BackboneSpec:
    """``backbone``'s packaged spec on ``device``; argparse's error naming --device for a device featx does not know,
    one not on this machine, and one a benchmark row cannot name (``auto``, ``mps``, ``meta``): rows run on cpu or
    cuda[:N]."""
    try:
        spec = featx.load_spec(backbone, overrides=[f"device={device}"])
        resolved = resolve_device(spec.device)
    except featx.FeatxError as error:
        parser.error(f"argument --device: {error}")
    if spec.device == "auto" or resolved.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: the rows run on cpu or cuda[:N], named; got {spec.device!r}")
    if device != spec.device:  # the rows use the argument as given: torch.device("cpu ") fails
        parser.error(f"argument --device: write it as {spec.device!r}, not {device!r}")
    return spec


def check_page(parser: argparse.ArgumentParser, path: Path, title: str, option: str) -> None:
    """argparse's error, before any work, for a file at ``path`` that is not a page this script wrote (its first line
    is not ``title``); the write checks again (a file put there meanwhile is kept)."""
    try:
        refuse_a_foreign_page(path, title, option)
    except featx.FeatxError as error:
        parser.error(str(error))
