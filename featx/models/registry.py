"""The model registries featx builds from: torchvision's classification builders (``model: resnet50``) and timm's
models (``model: timm:convnext_tiny``, see :mod:`featx.models.timm_models`). Names, constructing one, its weights
enum and the input size its weights were evaluated at.

Example::

    check_model_name("resnet50")
    construct("resnet50")               # torchvision.models.get_model("resnet50", weights=None)
    construct("timm:convnext_tiny")     # timm.create_model("convnext_tiny", pretrained=False)
    default_crop_size("maxvit_t")       # 224
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, List, Optional

import torchvision
from torch import nn

from featx.errors import SpecError
from featx.models.library_code import is_library_code
from featx.models.timm_models import (
    check_timm_name,
    construct_timm,
    is_timm_model,
    is_timms_own,
    timm_counterpart,
    timm_crop_size,
    timm_module,
    timm_name,
)
from featx.spec.keys import key_path, suggest
from featx.spec.limits import quoted


@functools.lru_cache(maxsize=1)
def classification_models() -> List[str]:
    """Names of torchvision's classification builders
    (``torchvision.models.list_models(module=torchvision.models)``)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    """Raise :class:`SpecError` unless ``name`` is a torchvision classification model or ``timm:`` a timm one."""
    if is_timm_model(name):
        check_timm_name(timm_name(name))
        return
    names = classification_models()
    if name not in names:
        kind = _other_torchvision_kind(name)
        if kind is not None:
            raise SpecError(
                key_path("model"),
                f"{quoted(name)} is a torchvision {kind} model, not one of the classifiers featx slices "
                f"(torchvision.models.list_models(module=torchvision.models)){_OTHER_KINDS_HINTS.get(kind, '')}"
                + (
                    f": its float classifier is {quoted(name.removeprefix('quantized_'))}"
                    if kind == "quantized"
                    else ""
                ),
            )
        raise SpecError(
            key_path("model"),
            f"unknown torchvision model {quoted(name)}{timm_counterpart(name) or suggest(name, names)} "
            "(valid: torchvision.models.list_models(module=torchvision.models))",
        )


#: torchvision's model packages other than the classifiers', with what their models are called
_OTHER_KINDS = {
    "detection": "detection",
    "segmentation": "segmentation",
    "video": "video",
    "optical_flow": "optical flow",
    "quantization": "quantized",
}


#: where a kind of model's backbone is found
_OTHER_KINDS_HINTS = {
    "detection": ": a detector's backbone is a classifier's (docs/detection.md)",
    "segmentation": ": a segmentation model's backbone is a classifier's",
}


def _other_torchvision_kind(name: str) -> Optional[str]:
    """What kind of torchvision model ``name`` is when it is one but no classifier (``fasterrcnn_resnet50_fpn``:
    detection), else None."""
    for package, kind in _OTHER_KINDS.items():
        if name in torchvision.models.list_models(module=getattr(torchvision.models, package)):
            return kind
    return None


def construct(name: str) -> nn.Module:
    """The model ``name`` with its library's own random init (on the current default device)."""
    if is_timm_model(name):
        return construct_timm(timm_name(name))
    with warnings.catch_warnings():
        # googlenet and inception_v3 announce a future change of their default init; featx keeps today's default
        warnings.filterwarnings("ignore", message="The default weight initialization of", category=FutureWarning)
        return torchvision.models.get_model(name, weights=None)


def weights_enum(name: str) -> Any:
    """The torchvision weights enum of torchvision model ``name`` (e.g. ``ResNet50_Weights``)."""
    return torchvision.models.get_model_weights(name)


def default_crop_size(name: str) -> int:
    """The square input size ``name``'s library evaluates it at (its default weights' crop size), 224 if unknown."""
    if is_timm_model(name):
        return timm_crop_size(timm_name(name))
    try:
        crop = weights_enum(name).DEFAULT.transforms().crop_size
    except (AttributeError, ValueError, TypeError):
        return 224
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)


def defined_by_library(name: str) -> bool:
    """Whether the code of model ``name`` is its library's own: torchvision's builder of that name, or timm's (not a
    function the user's code registered under a library's name or a new one)."""
    if is_timm_model(name):
        return is_timms_own(name)
    try:
        return is_library_code(torchvision.models.get_model_builder(name), torchvision)
    except ValueError:  # not registered: planning names it
        return False


def library_version(name: str) -> str:
    """The library and version that define model ``name``: ``torchvision 0.29.1``, ``timm 1.0.31``."""
    if is_timm_model(name):
        return f"timm {timm_module().__version__}"
    return f"torchvision {torchvision.__version__}"
