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


def pooling_remedy(strides: Sequence[int]) -> Optional[str]:
    """What makes maps of ``strides`` (shallow to deep) poolable by torchvision's ``MultiScaleRoIAlign``, or None
    where they are: it assigns each box a level ``k`` and pools from map ``k - k_min`` (the strides must double from
    one map to the next, or a box is pooled from the wrong map, or as zeros) and it rounds each map's scale to a power
    of two (a stride of 14 would be pooled as 16). A stride no power of two comes from a patch (``tokens.stride``
    resizes the image for it), one stride twice from blocks of a plain ViT, else a stride was left out between them.
    Example: ``pooling_remedy([4, 8, 32])`` is ``"return consecutive stages (out_features)"``."""
    if any(stride & (stride - 1) for stride in strides):
        return "for a token model set tokens.stride to a power of two (vit_h_14_fpn uses 16)"
    if len(set(strides)) < len(strides):
        return "return one of them (out_features), or the simple pyramid's levels (fpn.style: simple)"
    if any(later != 2 * earlier for earlier, later in itertools.pairwise(strides)):
        return "return consecutive stages (out_features)"
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
