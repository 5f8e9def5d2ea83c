"""The plan cache: a spec's plan (stages, channels, strides, kept paths, token layout) stored as JSON, so that
``featx.build``, ``featx-list`` and ``featx run=false`` skip planning a spec planned before.

An entry is looked up among the plans packaged with featx (``featx/plans/``, made by ``scripts/make_plans.py``
for the packaged specs), then in the user cache: ``$FEATX_CACHE_DIR/plans``, else ``$XDG_CACHE_HOME/featx/plans``,
else ``~/.cache/featx/plans``; ``FEATX_NO_CACHE=1`` turns both off. An entry's file name is a hash of the spec's
planning keys (:data:`~featx.construct.plan.PLAN_KEYS`) and the versions of featx, torch, torchvision (and timm, for
a timm model); the entry repeats both and is used only when they match exactly and its plan has the form featx
writes. A corrupt, stale or foreign entry is ignored and rewritten; a cache folder that cannot be written leaves
builds uncached. JSON only, never pickle: reading an entry runs nothing.

Example::

    plan = cached_plan(spec, lambda: plan_backbone(spec, MetaModel.create(spec.model).model))
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torchvision

from featx.construct.plan import BackbonePlan, plan_inputs
from featx.construct.token_layout import TokenLayout
from featx.errors import FeatxError
from featx.files import write_atomically
from featx.models.registry import is_timm_model
from featx.nn.feature_info import StageInfo
from featx.spec.schema import BackboneSpec

DIR_VARIABLE = "FEATX_CACHE_DIR"
DISABLE_VARIABLE = "FEATX_NO_CACHE"
#: the form of an entry; a change of form makes every older entry stale
ENTRY_FORMAT = 1
#: the largest entry read (plans of the largest models are tens of kilobytes)
MAX_ENTRY_BYTES = 4 * 2**20
PACKAGED_PLANS = Path(__file__).resolve().parent.parent / "plans"


def cache_disabled() -> bool:
    """Whether ``FEATX_NO_CACHE`` is set (to anything but ``""`` or ``"0"``, as ``FEATX_OFFLINE``)."""
    return os.environ.get(DISABLE_VARIABLE, "") not in ("", "0")


def user_plans_dir() -> Path:
    """Where plans made on this machine are kept (see the module docstring)."""
    if os.environ.get(DIR_VARIABLE):
        return Path(os.environ[DIR_VARIABLE]).expanduser() / "plans"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "featx" / "plans"


def _public(release: str) -> str:
    """A version without its local label (``2.14.1+cu130`` → ``2.14.1``): the build variant plans nothing."""
    return release.split("+")[0]


@functools.lru_cache(maxsize=None)
def _library_versions() -> Dict[str, str]:
    return {
        "featx": version("featx"),
        "torch": _public(torch.__version__),
        "torchvision": _public(torchvision.__version__),
    }


def _installed(distribution: str) -> Optional[str]:
    """The installed version of ``distribution`` (read from its metadata, without importing it), or None."""
    try:
        return _public(version(distribution))
    except PackageNotFoundError:
        return None


def plan_versions(model: str) -> Dict[str, Optional[str]]:
    """The library versions a plan of ``model`` depends on (timm's is None where timm is not installed: no entry
    matches, and planning says how to install it)."""
    versions: Dict[str, Optional[str]] = dict(_library_versions())
    if is_timm_model(model):
        versions["timm"] = _installed("timm")
    return versions


def entry_key(inputs: Dict[str, Any], versions: Dict[str, Optional[str]]) -> str:
    """The file name stem of the entry for planning ``inputs`` under ``versions``."""
    canonical = json.dumps({"format": ENTRY_FORMAT, "inputs": inputs, "versions": versions}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


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


def _count(value: object, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
    return value


def _pair(value: object) -> tuple[int, int]:
    if type(value) is not list or len(value) != 2:
        raise ValueError(f"expected [height, width], got {value!r}")
    return _count(value[0]), _count(value[1])


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
    return StageInfo(data["name"], _count(data["channels"]), _count(data["stride"]), tuple(paths), data["covers"])


def plan_from_data(value: object, spec: BackboneSpec) -> BackbonePlan:
    """The plan ``value`` holds for ``spec``; ValueError unless it has exactly the form :func:`plan_to_data` writes
    and the stages ``spec`` keeps."""
    data = _fields(value, ["stages", "in_channels", "parameters", "fixed_input_size", "tokens"])
    if type(data["stages"]) is not list:
        raise ValueError("stages must be a list")
    stages = tuple(_stage(stage) for stage in data["stages"])
    names = list(spec.stages)
    if [stage.name for stage in stages] != names[: names.index(spec.returned_stages[-1]) + 1]:
        raise ValueError("the stages are not the ones the spec keeps")
    fixed = data["fixed_input_size"]
    tokens = None
    if (data["tokens"] is None) != (spec.tokens is None):
        raise ValueError("tokens do not match the spec")
    if data["tokens"] is not None:
        layout = _fields(data["tokens"], ["patch", "embed_patch", "grid", "prefix_count", "embed_returns_tokens"])
        if type(layout["embed_returns_tokens"]) is not bool:
            raise ValueError("embed_returns_tokens must be a boolean")
        tokens = TokenLayout(
            spec.tokens,
            _count(layout["patch"]),
            _count(layout["embed_patch"]),
            _pair(layout["grid"]),
            _count(layout["prefix_count"], minimum=0),
            layout["embed_returns_tokens"],
        )
    return BackbonePlan(
        stages,
        _count(data["in_channels"]),
        _count(data["parameters"], minimum=0),
        tokens,
        None if fixed is None else _pair(fixed),
    )


def _read(
    path: Path, inputs: Dict[str, Any], versions: Dict[str, Optional[str]], spec: BackboneSpec
) -> Optional[BackbonePlan]:
    """The plan in the entry at ``path``, or None if there is none or it is unreadable, stale or malformed."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # never read a device (/dev/zero) or wait on a fifo
            return None
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            return None
        entry = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if type(entry) is not dict or entry.get("format") != ENTRY_FORMAT:
        return None
    if entry.get("inputs") != inputs or entry.get("versions") != versions:
        return None
    try:
        return plan_from_data(entry.get("plan"), spec)
    except ValueError:
        return None


def entry_data(spec: BackboneSpec, plan: BackbonePlan) -> Dict[str, Any]:
    """The whole entry for ``spec``'s ``plan``: form, planning inputs, versions and plan."""
    return {
        "format": ENTRY_FORMAT,
        "inputs": plan_inputs(spec),
        "versions": plan_versions(spec.model),
        "plan": plan_to_data(plan),
    }


def write_entry(folder: Path, spec: BackboneSpec, plan: BackbonePlan) -> Path:
    """Write ``spec``'s ``plan`` into ``folder`` (whole or not at all, replacing a stale entry); its path."""
    entry = entry_data(spec, plan)
    text = json.dumps(entry, indent=1, sort_keys=True) + "\n"
    path = folder / f"{entry_key(entry['inputs'], entry['versions'])}.json"
    return write_atomically(
        path, lambda partial: partial.write_text(text, encoding="utf-8"), overwrite=True, what="plan"
    )


def cached_plan(
    spec: BackboneSpec,
    make: Callable[[], BackbonePlan],
    usable: Callable[[BackbonePlan], bool] = lambda plan: True,
) -> BackbonePlan:
    """``spec``'s plan from the cache if an entry there is valid and ``usable``, else ``make()`` (stored in the
    user cache when it can be written)."""
    if cache_disabled():
        return make()
    inputs, versions = plan_inputs(spec), plan_versions(spec.model)
    name = f"{entry_key(inputs, versions)}.json"
    for folder in (PACKAGED_PLANS, user_plans_dir()):
        plan = _read(folder / name, inputs, versions, spec)
        if plan is not None and usable(plan):
            return plan
    plan = make()
    try:
        write_entry(user_plans_dir(), spec, plan)
    except FeatxError:  # a folder that cannot be written: the build goes on uncached
        pass
    return plan
