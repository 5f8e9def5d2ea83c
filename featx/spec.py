"""The backbone spec: the schema of a ``conf/backbone/*.yaml`` file and its torch-free validation.

The dataclasses double as the Hydra/OmegaConf structured-config schema (see :mod:`featx.hydra_conf`), so
unknown keys and wrong types fail while composing. :func:`validate_spec` adds the checks that need no model:
fixed choices, slice shapes, stage names, ``out_features``, ``frozen_stages``. Checks that need the model
(slice ends, module paths) run in :mod:`featx.stages`.

Example::

    spec = BackboneSpec(model="resnet34", stages={"c4": StageSpec(modules=["conv1", "bn1", "layer1"])})
    validate_spec(spec)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from featx.errors import SpecError

ROOT = "backbone"
NORM_POLICIES = ("frozen", "eval", "train", "sync")
LAYOUTS = ("nchw", "nhwc")
EXTRA_BLOCKS = ("maxpool", "p6p7")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps", "meta")
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|meta|cuda(:\d+)?")
_STAGE_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class StageSpec:
    """One stage: ``slice`` over the source container's children **or** ``modules`` (paths from the model root)."""

    slice: Optional[List[int]] = None
    modules: Optional[List[str]] = None


@dataclass
class FpnSpec:
    """The optional FPN neck on top of the returned stages."""

    out_channels: int = 256
    extra_blocks: Optional[str] = None


@dataclass
class BackboneSpec:
    """A backbone as data; see the config reference in the README.

    ``fpn`` holds an :class:`FpnSpec` or ``None``. It is typed ``Any`` in the schema because OmegaConf cannot
    override a field of a typed node that is ``None`` (``backbone.fpn.out_channels=128`` on ``fpn: null``);
    :func:`featx.loader.load_spec` checks its keys and types instead.
    """

    model: str = MISSING
    weights: Optional[str] = None
    source: Optional[str] = None
    stages: Dict[str, StageSpec] = MISSING
    out_features: Optional[List[str]] = None
    frozen_stages: int = 0
    reinit: List[str] = field(default_factory=list)
    norm: str = "frozen"
    fpn: Any = None
    layout: str = "nchw"
    input_size: Optional[List[int]] = None
    device: str = "auto"
    channels_last: bool = False

    @property
    def returned_stages(self) -> List[str]:
        """Names of the stages whose outputs are returned (or fed to the FPN), in stage order."""
        return list(self.out_features) if self.out_features is not None else list(self.stages)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (dicts, lists, scalars) that rebuilds this spec: ``build(spec.to_dict())``."""
        return dataclasses.asdict(self)


def key_path(*parts: str) -> str:
    """``key_path("stages", "c2", "slice")`` → ``"backbone.stages.c2.slice"``."""
    return ".".join((ROOT, *parts))


def suggest(word: str, choices: List[str] | tuple, n: int = 3) -> str:
    """A ``"; did you mean x?"`` hint, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _check_choice(value: Optional[str], choices: tuple, *parts: str, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if value not in choices:
        valid = ", ".join((["null"] if allow_null else []) + list(choices))
        raise SpecError(key_path(*parts), f"unknown value {value!r}{suggest(str(value), choices)} (valid: {valid})")


def _validate_slice(name: str, bounds: List[int], previous: Optional[tuple]) -> None:
    """``previous`` is ``(name, end)`` of the stage just before when that one is a slice too, else ``None``;
    a first stage passes ``("the input", 0)`` since nothing may be skipped before it."""
    key = key_path("stages", name, "slice")
    if len(bounds) != 2:
        raise SpecError(key, f"expected [start, end], got {list(bounds)}")
    start, end = bounds
    if start < 0:
        raise SpecError(key, f"start {start} is negative; slices count children from 0")
    if end <= start:
        raise SpecError(key, f"[{start}, {end}] is empty; end is exclusive and must be greater than start")
    if previous is None:
        return
    previous_name, previous_end = previous
    if start < previous_end:
        raise SpecError(key, f"[{start}, {end}] overlaps {previous_name}, which ends at {previous_end}")
    if start > previous_end:
        raise SpecError(
            key,
            f"starts at {start} but {previous_name} ends at {previous_end}: children {previous_end}..{start - 1} "
            "would never run (stages feed each other, so slices must be contiguous)",
        )


def _validate_stages(spec: BackboneSpec) -> None:
    if not spec.stages:
        raise SpecError(key_path("stages"), "no stages; give at least one stage as name: {slice: [start, end]}")
    previous: Optional[tuple] = ("the input", 0)
    for name, stage in spec.stages.items():
        if not _STAGE_NAME_PATTERN.fullmatch(name):
            raise SpecError(key_path("stages", name), "a stage name must be an identifier (letters, digits, _)")
        if (stage.slice is None) == (stage.modules is None):
            raise SpecError(key_path("stages", name), "give exactly one of 'slice' or 'modules'")
        if stage.slice is not None:
            _validate_slice(name, list(stage.slice), previous)
            previous = (f"stage {name!r}", stage.slice[1])
            continue
        if not stage.modules:
            raise SpecError(key_path("stages", name, "modules"), "empty list; name at least one module path")
        for position, path in enumerate(stage.modules):
            if not path or any(not part for part in path.split(".")):
                raise SpecError(key_path("stages", name, f"modules[{position}]"), f"{path!r} is not a module path")
        previous = None


def _validate_outputs(spec: BackboneSpec) -> None:
    names = list(spec.stages)
    if spec.out_features is not None:
        if not spec.out_features:
            raise SpecError(key_path("out_features"), "empty list; use null to return every stage")
        for position, name in enumerate(spec.out_features):
            if name not in spec.stages:
                raise SpecError(
                    key_path(f"out_features[{position}]"),
                    f"unknown stage {name!r}{suggest(name, names)} (stages: {', '.join(names)})",
                )
        order = [names.index(name) for name in spec.out_features]
        if order != sorted(set(order)):
            raise SpecError(
                key_path("out_features"),
                f"{list(spec.out_features)} must name distinct stages in stage order ({', '.join(names)})",
            )
    kept = names[: names.index(spec.returned_stages[-1]) + 1]
    for position, name in enumerate(spec.reinit):
        if name not in kept or name in spec.reinit[:position]:
            raise SpecError(
                key_path(f"reinit[{position}]"),
                f"{name!r} is not a kept stage or is listed twice{suggest(name, kept)} (kept stages: {', '.join(kept)})",
            )
    if not 0 <= spec.frozen_stages <= len(kept):
        raise SpecError(
            key_path("frozen_stages"),
            f"{spec.frozen_stages} is out of range; valid: 0..{len(kept)} (kept stages: {', '.join(kept)})",
        )


def validate_spec(spec: BackboneSpec) -> None:
    """Raise :class:`SpecError` for the first problem found without looking at the model.

    Example::

        validate_spec(BackboneSpec(model="vgg16", stages={"c1": StageSpec(slice=[0, 4])}, norm="bn"))
        # SpecError: backbone.norm: unknown value 'bn' (valid: frozen, eval, train, sync)
    """
    if not spec.model:
        raise SpecError(key_path("model"), "empty; name a torchvision classification model, e.g. resnet50")
    _validate_stages(spec)
    _validate_outputs(spec)
    _check_choice(spec.norm, NORM_POLICIES, "norm")
    _check_choice(spec.layout, LAYOUTS, "layout")
    if spec.input_size is not None and (len(spec.input_size) != 2 or min(spec.input_size) < 1):
        raise SpecError(
            key_path("input_size"), f"expected [height, width] of positive sizes or null, got {list(spec.input_size)}"
        )
    if not _DEVICE_PATTERN.fullmatch(spec.device):
        raise SpecError(key_path("device"), f"unknown device {spec.device!r} (valid: {', '.join(DEVICE_CHOICES)})")
    if spec.fpn is not None:
        if spec.fpn.out_channels <= 0:
            raise SpecError(key_path("fpn", "out_channels"), f"must be a positive channel count, got {spec.fpn.out_channels}")
        _check_choice(spec.fpn.extra_blocks, EXTRA_BLOCKS, "fpn", "extra_blocks", allow_null=True)
