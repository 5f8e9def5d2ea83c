"""Where a module's parameters and buffers are: the first one on the meta device, or the first floating one of
another dtype or device than a given tensor. A backbone's forward asks before and after its layers run: torch computes
a convolution whose weight is on meta as uninitialised memory, and refuses a stage left half in another dtype with
its own internal message.

Example::

    first_meta_tensor(bb)                  # "stages.c5.layer4.1.conv2.weight" after that layer was moved to meta
    first_other_tensor(bb.stages.c2, x)    # ("layer1.0.conv1.weight", torch.float16, cpu) where x is float32
"""

from __future__ import annotations

from typing import Iterator, Optional, Set, Tuple

import torch
from torch import Tensor, nn


def _named_tensors(module: nn.Module, prefix: str, seen: Set[int]) -> Iterator[Tuple[str, Tensor]]:
    """Every parameter and buffer of ``module`` and its submodules with its dotted name, each module once (a module
    held twice, or holding itself, is walked once)."""
    if id(module) in seen:
        return
    seen.add(id(module))
    for tensors in (module._parameters, module._buffers):
        for name, tensor in tensors.items():
            if tensor is not None:
                yield prefix + name, tensor
    for name, child in module._modules.items():
        if child is not None:
            yield from _named_tensors(child, f"{prefix}{name}.", seen)


def _holds_meta(module: nn.Module, seen: Set[int]) -> bool:
    """Whether ``module`` or a submodule holds a parameter or buffer on the meta device: the forward's check, a plain
    walk (twice as fast as :func:`_named_tensors`, which names the tensor once one is found)."""
    if id(module) in seen:
        return False
    seen.add(id(module))
    for tensors in (module._parameters, module._buffers):
        for tensor in tensors.values():
            if tensor is not None and tensor.is_meta:
                return True
    for child in module._modules.values():
        if child is not None and _holds_meta(child, seen):
            return True
    return False


def first_meta_tensor(module: nn.Module) -> Optional[str]:
    """The name of ``module``'s first parameter or buffer on the meta device (it holds no values), or None."""
    if not _holds_meta(module, set()):
        return None
    return next(name for name, tensor in _named_tensors(module, "", set()) if tensor.is_meta)


def first_other_tensor(module: nn.Module, reference: Tensor) -> Optional[Tuple[str, torch.dtype, torch.device]]:
    """The name, dtype and device of ``module``'s first floating-point parameter or buffer whose dtype or device
    differs from ``reference``'s, or None where all agree with it."""
    for name, tensor in _named_tensors(module, "", set()):
        if tensor.is_floating_point() and (tensor.dtype != reference.dtype or tensor.device != reference.device):
            return name, tensor.dtype, tensor.device
    return None
