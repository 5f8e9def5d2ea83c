"""Which maps featx's necks take as their levels: one rule for the builder (checking a spec's ``fpn``) and for the
necks themselves (checking the maps they are made for), so a neck made by hand cannot name its levels by strides its
maps do not have.

An FPN names each level after its map's stride (``p2`` = stride 4 ... ``p5`` = stride 32), so the strides must be
powers of two and strictly increasing; a simple pyramid rescales one map by powers of two, so it takes one map
whose stride is a power of two.

Example::

    level_problem([FeatureInfo("c4", 1024, 16), FeatureInfo("c5", 2048, 16)], "fpn").kind   # 'order'
    level_problem([FeatureInfo("blocks4", 768, 16)], "simple")                             # None
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Optional, Sequence

from featx.errors import ArgumentError
from featx.nn.feature_info import FeatureInfo


class LevelProblem(NamedTuple):
    """Why maps cannot be a neck's levels: ``kind`` is ``several`` (a simple pyramid given more than one map),
    ``stride`` (not a power of two) or ``order`` (an FPN's strides not strictly increasing); ``text`` says it with
    the maps' names."""

    kind: str
    text: str


def level_problem(levels: Sequence[FeatureInfo], style: str) -> Optional[LevelProblem]:
    """The first reason the maps ``levels`` (shallow to deep) cannot be the levels of a neck of ``style``, else
    ``None``."""
    if style == "simple" and len(levels) > 1:  # the others would be computed, listed as returned, and dropped
        names = ", ".join(level.name for level in levels)
        return LevelProblem(
            "several", f"style: simple builds every level from one map, but {len(levels)} maps are given ({names})"
        )
    for level in levels if style == "fpn" else levels[-1:]:
        if level.stride & (level.stride - 1):
            return LevelProblem(
                "stride",
                f"{level.name!r} has stride {level.stride}, not a power of two: the neck's levels are named and sized "
                "by powers of two (p2 = stride 4 ... p5 = stride 32)",
            )
    if style == "simple":
        return None
    for shallower, deeper in itertools.pairwise(levels):
        if deeper.stride <= shallower.stride:
            return LevelProblem(
                "order",
                f"FPN levels need strictly increasing strides, but {deeper.name!r} has stride {deeper.stride} after "
                f"{shallower.name!r} with stride {shallower.stride}",
            )
    return None


def refuse_levels(levels: Sequence[FeatureInfo], style: str, caller: str) -> None:
    """:class:`ArgumentError` from ``caller`` (a neck's constructor) when ``levels`` cannot be its levels."""
    if not levels:
        raise ArgumentError(f"{caller}: no input maps; give the FeatureInfo of each map it takes, shallow to deep")
    for level in levels:
        if type(level.stride) is not int or level.stride < 1:
            raise ArgumentError(f"{caller}: {level.name!r} has stride {level.stride!r}; a stride is a positive integer")
    problem = level_problem(levels, style)
    if problem is not None:
        raise ArgumentError(f"{caller}: {problem.text}")
