"""The only module that talks to torchvision's model registry: names, construction, weights enums.

Example::

    model = create_model("resnet50", device="meta")   # no memory, no init cost
"""

from __future__ import annotations

import functools
from typing import List

import torch
import torchvision
from torch import nn

from featx.errors import SpecError
from featx.spec import key_path, suggest


@functools.lru_cache(maxsize=1)
def classification_models() -> List[str]:
    """Names of torchvision's classification builders (``torchvision.models.list_models(module=torchvision.models)``)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    """Raise :class:`SpecError` unless ``name`` is a torchvision classification model."""
    names = classification_models()
    if name not in names:
        raise SpecError(
            key_path("model"),
            f"unknown torchvision model {name!r}{suggest(name, names)} "
            "(valid: torchvision.models.list_models(module=torchvision.models))",
        )


def create_model(name: str, device: str = "cpu") -> nn.Module:
    """Construct torchvision's ``name`` with random weights on ``device``.

    On ``"meta"`` the constructor runs without allocating; a model whose constructor cannot run there is built
    on the CPU and moved to meta.
    """
    check_model_name(name)
    if device != "meta":
        with torch.device(device):
            return torchvision.models.get_model(name, weights=None)
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(name, weights=None)
    except (NotImplementedError, RuntimeError):
        return torchvision.models.get_model(name, weights=None).to("meta")


def weights_enum(name: str) -> type:
    """The torchvision weights enum of model ``name`` (e.g. ``ResNet50_Weights``)."""
    return torchvision.models.get_model_weights(name)
