"""torchvision's model registry, as featx uses it: the classification builders' names, constructing one, its
weights enum and the input size its weights were evaluated at.

Example::

    check_model_name("resnet50")
    construct("resnet50")            # torchvision.models.get_model("resnet50", weights=None)
    default_crop_size("maxvit_t")    # 224
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, List

import torchvision
from torch import nn

from featx.errors import SpecError
from featx.spec.keys import key_path, suggest
from featx.spec.limits import quoted


@functools.lru_cache(maxsize=1)
def classification_models() -> List[str]:
    """Names of torchvision's classification builders
    (``torchvision.models.list_models(module=torchvision.models)``)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    """Raise :class:`SpecError` unless ``name`` is a torchvision classification model."""
    names = classification_models()
    if name not in names:
        raise SpecError(
            key_path("model"),
            f"unknown torchvision model {quoted(name)}{suggest(name, names)} "
            "(valid: torchvision.models.list_models(module=torchvision.models))",
        )


def construct(name: str) -> nn.Module:
    """torchvision's ``name`` with its own random init (on the current default device)."""
    with warnings.catch_warnings():
        # googlenet and inception_v3 announce a future change of their default init; featx keeps today's default
        warnings.filterwarnings("ignore", message="The default weight initialization of", category=FutureWarning)
        return torchvision.models.get_model(name, weights=None)


def weights_enum(name: str) -> Any:
    """The torchvision weights enum of model ``name`` (e.g. ``ResNet50_Weights``)."""
    return torchvision.models.get_model_weights(name)


def default_crop_size(name: str) -> int:
    """The square input size torchvision evaluates ``name`` at (its default weights' crop size), 224 if unknown."""
    try:
        crop = weights_enum(name).DEFAULT.transforms().crop_size
    except (AttributeError, ValueError, TypeError):
        return 224
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
