"""The only module that talks to torchvision's model registry: names, construction, weights enums.

Example::

    model = create_model("resnet50", device="meta")   # no memory, no init cost
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Iterator, List, Optional

import torch
import torchvision
from torch import Tensor, nn
from torch.nn.modules.module import register_module_buffer_registration_hook, register_module_parameter_registration_hook

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

    On ``"meta"`` the constructor runs without allocating or initialising. A constructor that computes with
    tensors (RegNet derives its widths with ``torch`` ops) cannot run under ``torch.device("meta")``; it runs on the
    CPU instead while each parameter and buffer moves to meta as it is registered, so weight init is still skipped.
    """
    check_model_name(name)
    with warnings.catch_warnings():
        # googlenet and inception_v3 announce a future change of their default init; featx keeps today's default
        warnings.filterwarnings("ignore", message="The default weight initialization of", category=FutureWarning)
        if device != "meta":
            with torch.device(device):
                return torchvision.models.get_model(name, weights=None)
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None)
        except (NotImplementedError, RuntimeError):
            with _tensors_to_meta_on_registration():
                return torchvision.models.get_model(name, weights=None)


def _parameter_to_meta(module: nn.Module, name: str, param: Optional[nn.Parameter]) -> Optional[nn.Parameter]:
    if param is None or param.is_meta:
        return None
    return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)


def _buffer_to_meta(module: nn.Module, name: str, buffer: Optional[Tensor]) -> Optional[Tensor]:
    return None if buffer is None or buffer.is_meta else buffer.to("meta")


@contextlib.contextmanager
def _tensors_to_meta_on_registration() -> Iterator[None]:
    """Every parameter and buffer registered inside the block is replaced by its meta twin."""
    handles = (
        register_module_parameter_registration_hook(_parameter_to_meta),
        register_module_buffer_registration_hook(_buffer_to_meta),
    )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def default_crop_size(name: str) -> int:
    """The square input size torchvision evaluates ``name`` at (its default weights' crop size), 224 if unknown."""
    try:
        crop = weights_enum(name).DEFAULT.transforms().crop_size
    except (AttributeError, ValueError, TypeError):
        return 224
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)


def weights_enum(name: str) -> type:
    """The torchvision weights enum of model ``name`` (e.g. ``ResNet50_Weights``)."""
    return torchvision.models.get_model_weights(name)
