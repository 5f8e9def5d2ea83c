"""Constructing torchvision models without paying for what a backbone drops.

- :func:`construct_on_meta`: the model on the meta device (no memory, init skipped), plus every parameter and
  buffer registration in construction order.
- :func:`construct_keeping`: the model for real, torchvision's own init included, but with only the registrations
  marked ``keep`` allocated; the others (a classifier the backbone drops) stay on meta.

Example::

    model, registrations = construct_on_meta("vgg16")
    real = construct_keeping("vgg16", registrations, [r.module is not model.classifier[0] for r in registrations])
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.overrides import TorchFunctionMode

from featx.errors import FeatxError, SpecError, first_line
from featx.models.registry import check_model_name, construct, library_version
from featx.spec.keys import key_path
from featx.spec.limits import quoted


@dataclass(frozen=True)
class Registration:
    """One parameter or buffer registered while a model was constructed, in construction order."""

    module: nn.Module
    name: str
    shape: Tuple[int, ...]


#: per thread, the :func:`_on_registration` blocks open in it, innermost last
_open_blocks = threading.local()


@contextlib.contextmanager
def _on_registration(
    to_meta: Callable[[int, Tensor], bool], record: Optional[List[Registration]] = None
) -> Iterator[None]:
    """Inside the block, the ``i``-th parameter or buffer registered by this thread is replaced by its meta twin
    when ``to_meta(i, tensor)`` says so, and (with ``record``) each such registration is appended to ``record``.

    torch's registration hooks are global: modules other threads construct meanwhile pass through untouched, and
    so do those of a block opened inside this one (a model whose constructor builds a backbone of its own).
    """
    counter = itertools.count()
    token = object()

    def decide(module: nn.Module, name: str, tensor: Optional[Tensor]) -> Optional[Tensor]:
        innermost = getattr(_open_blocks, "stack", None)  # this thread's blocks: another thread's are not there
        if tensor is None or not innermost or innermost[-1] is not token:
            return None
        index = next(counter)
        if record is not None:
            record.append(Registration(module, name, tuple(tensor.shape)))
        if tensor.is_meta or not to_meta(index, tensor):
            return None
        twin = tensor.to("meta")
        return nn.Parameter(twin, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else twin

    hook = cast(
        Callable[..., None], decide
    )  # torch types hooks as returning None; a returned tensor replaces the original
    handles = (register_module_parameter_registration_hook(hook), register_module_buffer_registration_hook(hook))
    try:
        with _innermost(token):
            yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _innermost(token: object) -> Iterator[None]:
    """``token`` on top of this thread's stack of open blocks while inside."""
    blocks = _open_blocks.__dict__.setdefault("stack", [])
    blocks.append(token)
    try:
        yield
    finally:
        blocks.remove(token)


def registrations_untouched() -> contextlib.AbstractContextManager[None]:
    """Inside the block, the :func:`_on_registration` blocks this thread has open leave registrations alone (a
    backbone built inside a model's constructor, which featx itself is constructing)."""
    return _innermost(object())


#: in-place ops that only write values: on a meta tensor (which has none) they can be skipped. The ``torch.nn.init``
#: functions that dispatch to the mode themselves are listed too (``uniform_``, ``normal_``, ``constant_``,
#: ``kaiming_uniform_``): the mode is off while a function it intercepted runs, so the ``uniform_`` inside
#: ``kaiming_uniform_`` would otherwise reach its (Python) meta kernel. The others only call Tensor methods above.
_VALUE_WRITES = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "random_", "exponential_", "bernoulli_", "erfinv_", "mul_", "add_",
    "sub_", "div_", "clamp_", "copy_", "orthogonal_", "trunc_normal_", "kaiming_uniform_", "constant_",
})  # fmt: skip


class SkipValueWritesOnMeta(TorchFunctionMode):
    """Weight init on meta tensors is pure cost (meta kernels of ``normal_`` and friends are Python
    decompositions: 0.1 s of ResNet-50's meta construction); inside this mode such in-place writes to a meta tensor
    return the tensor untouched. Shapes, and everything on real devices, are unaffected."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _VALUE_WRITES:
            # Tensor methods get the tensor first; torch.nn.init's functions pass it as the keyword ``tensor``
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Modules constructed inside the block live on the meta device, their init skipped."""
    with torch.device("meta"), SkipValueWritesOnMeta():
        yield


def construct_on_meta(name: str) -> Tuple[nn.Module, Tuple[Registration, ...]]:
    """The model ``name`` on the meta device, with its registrations in order; SpecError naming the model and its
    library's version if its constructor fails.

    The constructor runs without allocating or initialising. One that computes with tensors (RegNet derives its
    widths with ``torch`` ops) cannot run under ``torch.device("meta")``; it runs on the CPU instead while each
    parameter and buffer moves to meta as it is registered, so weight init is still skipped. One that runs its own
    layers (timm before 1.0.21 measures a hybrid ViT's CNN on a zero image) needs them real: it is constructed for
    real on the CPU, then moved to meta.
    """
    check_model_name(name)
    record: List[Registration] = []
    try:
        try:
            with on_meta(), _on_registration(lambda index, tensor: False, record):
                return construct(name), tuple(record)
        except RuntimeError:  # NotImplementedError included: a meta kernel missing, or .item() of a meta tensor
            record.clear()
        try:  # on the CPU whatever the caller's default device (meta included)
            with torch.device("cpu"), SkipValueWritesOnMeta(), _on_registration(lambda index, tensor: True, record):
                return construct(name), tuple(record)
        except RuntimeError:  # a layer ran with its parameters on meta
            record.clear()
        with torch.device("cpu"), _on_registration(lambda index, tensor: False, record):
            return construct(name).to("meta"), tuple(record)
    except FeatxError:  # a featx build inside the constructor
        raise
    except Exception as error:  # noqa: BLE001 - any other failure of the library's (or the user's) constructor
        raise SpecError(
            key_path("model"),
            f"constructing {quoted(name)} fails ({library_version(name)}): {type(error).__name__}: {first_line(error)}",
        ) from None


def construct_keeping(name: str, registrations: Sequence[Registration], keep: Sequence[bool]) -> nn.Module:
    """torchvision's ``name`` constructed for real on the CPU, its own init included, with only the registrations
    whose ``keep`` is true allocated; the others stay on meta.

    ``registrations`` come from :func:`construct_on_meta`: the constructor registers the same tensors in the same
    order. If the order turns out different, or the constructor fails running a layer left on meta, the model is
    constructed whole instead.
    """
    mismatches: List[int] = []

    def to_meta(index: int, tensor: Tensor) -> bool:
        if index >= len(keep) or tuple(tensor.shape) != registrations[index].shape:
            mismatches.append(index)
            return False
        return not keep[index]

    check_model_name(name)
    try:
        with _on_registration(to_meta):
            model: Optional[nn.Module] = construct(name)
    except RuntimeError:  # a constructor that runs its own layers ran one left on meta
        model = None
    if model is None or mismatches:
        with torch.device("cpu"):
            return construct(name)
    return model
