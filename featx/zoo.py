"""The only module that talks to torchvision's model registry: names, construction, weights enums.

Example::

    model = create_model("resnet50", device="meta")   # no memory, no init cost
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torchvision
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
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


@dataclass(frozen=True)
class Registration:
    """One parameter or buffer registered while a model was constructed, in construction order."""

    module: nn.Module
    name: str
    shape: Tuple[int, ...]


@contextlib.contextmanager
def _on_registration(to_meta: Callable[[int, Tensor], bool], record: Optional[List[Registration]] = None
                     ) -> Iterator[None]:
    """Inside the block, the ``i``-th parameter or buffer registered anywhere is replaced by its meta twin when
    ``to_meta(i, tensor)`` says so, and (with ``record``) every registration is appended to ``record``."""
    counter = itertools.count()

    def decide(module: nn.Module, name: str, tensor: Optional[Tensor]) -> Optional[Tensor]:
        if tensor is None:
            return None
        index = next(counter)
        if record is not None:
            record.append(Registration(module, name, tuple(tensor.shape)))
        if tensor.is_meta or not to_meta(index, tensor):
            return None
        twin = tensor.to("meta")
        return nn.Parameter(twin, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else twin

    handles = (register_module_parameter_registration_hook(decide), register_module_buffer_registration_hook(decide))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


#: in-place ops that only write values: on a meta tensor (which has none) they can be skipped. The ``torch.nn.init``
#: functions that dispatch to the mode themselves are listed too (``uniform_``, ``normal_``, ``constant_``,
#: ``kaiming_uniform_``): the mode is off while a function it intercepted runs, so the ``uniform_`` inside
#: ``kaiming_uniform_`` would otherwise reach its (Python) meta kernel. The others only call Tensor methods above.
_VALUE_WRITES = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "random_", "exponential_", "bernoulli_", "erfinv_", "mul_", "add_",
    "sub_", "div_", "clamp_", "copy_", "orthogonal_", "trunc_normal_", "kaiming_uniform_", "constant_",
})


class _SkipValueWritesOnMeta(TorchFunctionMode):
    """Weight init on meta tensors is pure cost (meta kernels of ``normal_`` and friends are Python
    decompositions: 0.1 s of ResNet-50's meta construction); inside this mode such in-place writes to a meta tensor
    return the tensor untouched. Shapes, and everything on real devices, are unaffected."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _VALUE_WRITES:
            # Tensor methods get the tensor first; torch.nn.init's functions pass it as the keyword ``tensor``
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def _construct(name: str) -> nn.Module:
    with warnings.catch_warnings():
        # googlenet and inception_v3 announce a future change of their default init; featx keeps today's default
        warnings.filterwarnings("ignore", message="The default weight initialization of", category=FutureWarning)
        return torchvision.models.get_model(name, weights=None)


def create_model(name: str, device: str = "cpu", record: Optional[List[Registration]] = None) -> nn.Module:
    """Construct torchvision's ``name`` with random weights on ``device``.

    On ``"meta"`` the constructor runs without allocating or initialising, and ``record`` (if given) receives every
    parameter and buffer registration in order (see :func:`create_model_keeping`). A constructor that computes with
    tensors (RegNet derives its widths with ``torch`` ops) cannot run under ``torch.device("meta")``; it runs on the
    CPU instead while each parameter and buffer moves to meta as it is registered, so weight init is still skipped.
    """
    check_model_name(name)
    if device != "meta":
        with torch.device(device):
            return _construct(name)
    record = [] if record is None else record
    try:
        with torch.device("meta"), _SkipValueWritesOnMeta(), _on_registration(lambda index, tensor: False, record):
            return _construct(name)
    except (NotImplementedError, RuntimeError):
        record.clear()
        with _SkipValueWritesOnMeta(), _on_registration(lambda index, tensor: True, record):
            return _construct(name)


def create_model_keeping(name: str, meta_model: nn.Module, registrations: Sequence[Registration],
                         kept_paths: Sequence[str]) -> nn.Module:
    """Construct ``name`` for real on the CPU, torchvision's own init included, but allocate only the parameters
    and buffers of the modules under ``kept_paths``; the others (a classifier the backbone drops) stay on meta.

    Which registration belongs to a kept module is known from the meta construction (``meta_model`` and its
    ``registrations``): the constructor registers the same tensors in the same order. If the order turns out
    different, the model is constructed whole instead.
    """
    path_of = {id(module): path for path, module in meta_model.named_modules()}

    def is_kept(registration: Registration) -> bool:
        path = path_of.get(id(registration.module))
        return path is not None and any(path == kept or path.startswith(kept + ".") for kept in kept_paths)

    keep = [is_kept(registration) for registration in registrations]
    mismatches: List[int] = []

    def to_meta(index: int, tensor: Tensor) -> bool:
        if index >= len(keep) or tuple(tensor.shape) != registrations[index].shape:
            mismatches.append(index)
            return False
        return not keep[index]

    check_model_name(name)
    with _on_registration(to_meta):
        model = _construct(name)
    return create_model(name) if mismatches else model


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
