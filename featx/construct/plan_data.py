"""A :class:`~featx.construct.plan.BackbonePlan` as plain JSON data and back, for the plan cache: reading checks
that the data has exactly the form :func:`plan_to_data` writes (strict types, the spec's kept stages), so a corrupt
or edited entry is refused, never half-used.

Example::

    data = plan_to_data(plan)                       # dicts, lists, ints, strings
    assert plan_from_data(json.loads(json.dumps(data)), spec) == plan
"""

from __future__ import annotations

from typing import Any, Dict, List

from featx.construct.plan import BackbonePlan
from featx.construct.token_layout import TokenLayout
from featx.nn.feature_info import StageInfo
from featx.spec.limits import MAX_SIDE
from featx.spec.schema import BackboneSpec


def plan_to_data(plan: BackbonePlan) -> Dict[str, Any]:
    """``plan`` as plain JSON data (the spec it was made for is stored beside it, not in it)."""
    tokens = plan.tokens
    return {
        "stages": [
            {"name": s.name, "channels": s.channels, "stride": s.stride, "paths": list(s.paths), "covers": s.covers}
            for s in plan.stages
        ],
        "in_channels": plan.in_channels,
        "parameters": plan.parameters,
        "fixed_input_size": list(plan.fixed_input_size) if plan.fixed_input_size is not None else None,
        "changed_later": list(plan.changed_later),
        "tokens": None
        if tokens is None
        else {
            "patch": tokens.patch,
            "embed_patch": tokens.embed_patch,
            "grid": list(tokens.grid),
            "prefix_count": tokens.prefix_count,
            "embed_returns_tokens": tokens.embed_returns_tokens,
        },
    }


#: the widest stage (or input) and the most parameters a cached plan may give: far above any model (RegNetY-128GF's
#: widest stage has 7,392 channels, its trunk 640 million parameters); strides, sizes and patches stay within
#: MAX_SIDE. A hand-edited entry beyond them (2**40 channels, which an FPN would then allocate) is no plan of featx's
MAX_PLANNED_WIDTH = 1 << 16
MAX_PLANNED_PARAMETERS = 1 << 40


def _count(value: object, minimum: int = 1, maximum: int = MAX_PLANNED_WIDTH) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise ValueError(f"expected an integer in {minimum}..{maximum}, got {value!r:.80}")
    return value


def _pair(value: object) -> tuple[int, int]:
    if type(value) is not list or len(value) != 2:
        raise ValueError(f"expected [height, width], got {value!r}")
    return _count(value[0], maximum=MAX_SIDE), _count(value[1], maximum=MAX_SIDE)


def _fields(value: object, names: List[str]) -> Dict[str, Any]:
    if type(value) is not dict or sorted(value) != sorted(names):
        raise ValueError(f"expected a mapping of {names}")
    return value


def _stage(value: object) -> StageInfo:
    data = _fields(value, ["name", "channels", "stride", "paths", "covers"])
    paths = data["paths"]
    if type(paths) is not list or not paths or not all(type(path) is str and path for path in paths):
        raise ValueError("stage paths must be a list of module paths")
    if type(data["name"]) is not str or type(data["covers"]) is not str:
        raise ValueError("stage name and covers must be strings")
    return StageInfo(
        data["name"], _count(data["channels"]), _count(data["stride"], maximum=MAX_SIDE), tuple(paths), data["covers"]
    )


def plan_from_data(value: object, spec: BackboneSpec) -> BackbonePlan:
    """The plan ``value`` holds for ``spec``; ValueError unless it has exactly the form :func:`plan_to_data` writes
    and the stages ``spec`` keeps."""
    data = _fields(value, ["stages", "in_channels", "parameters", "fixed_input_size", "changed_later", "tokens"])
    if type(data["stages"]) is not list:
        raise ValueError("stages must be a list")
    stages = tuple(_stage(stage) for stage in data["stages"])
    names = list(spec.stages)
    if [stage.name for stage in stages] != names[: names.index(spec.returned_stages[-1]) + 1]:
        raise ValueError("the stages are not the ones the spec keeps")
    fixed = data["fixed_input_size"]
    changed = data["changed_later"]
    names = [stage.name for stage in stages]
    if type(changed) is not list or not all(type(name) is str and name in names for name in changed):
        raise ValueError("changed_later must list kept stages")
    if changed != [name for name in names if name in changed]:
        raise ValueError("changed_later must list kept stages once each, in stage order")
    tokens = None
    if (data["tokens"] is None) != (spec.tokens is None):
        raise ValueError("tokens do not match the spec")
    if data["tokens"] is not None:
        layout = _fields(data["tokens"], ["patch", "embed_patch", "grid", "prefix_count", "embed_returns_tokens"])
        if type(layout["embed_returns_tokens"]) is not bool:
            raise ValueError("embed_returns_tokens must be a boolean")
        tokens = TokenLayout(
            spec.tokens,
            _count(layout["patch"], maximum=MAX_SIDE),
            _count(layout["embed_patch"], maximum=MAX_SIDE),
            _pair(layout["grid"]),
            _count(layout["prefix_count"], minimum=0),
            layout["embed_returns_tokens"],
        )
    if fixed is not None and max(_pair(fixed)) > MAX_SIDE:
        raise ValueError(f"fixed_input_size beyond {MAX_SIDE}")
    return BackbonePlan(
        stages,
        _count(data["in_channels"]),
        _count(data["parameters"], minimum=0, maximum=MAX_PLANNED_PARAMETERS),
        tokens,
        None if fixed is None else _pair(fixed),
        tuple(changed),
    )
