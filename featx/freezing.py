"""Norm policies.

- ``frozen``: every ``BatchNorm2d`` becomes torchvision's ``FrozenBatchNorm2d`` (statistics and affine fixed).
- ``eval``: BatchNorm kept with trainable affine, but always in eval mode (running statistics never change).
- ``train``: plain BatchNorm.  ``sync``: ``torch.nn.SyncBatchNorm`` (needs a process group when training).

Example::

    stage = apply_norm_policy(stage, "frozen")
    set_norm_eval(stage)               # norm layers to eval mode (call again after every .train())
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d


def _frozen_copy(norm: nn.BatchNorm2d) -> nn.Module:
    if norm.running_mean is None:
        return norm  # no statistics to freeze: it normalises with batch statistics by design
    frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps).to(norm.running_mean.device)
    with torch.no_grad():
        frozen.running_mean.copy_(norm.running_mean)
        frozen.running_var.copy_(norm.running_var)
        if norm.affine:
            frozen.weight.copy_(norm.weight)
            frozen.bias.copy_(norm.bias)
    return frozen


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` below ``module`` (and ``module`` itself) by a ``FrozenBatchNorm2d`` copy."""
    if isinstance(module, nn.BatchNorm2d):
        return _frozen_copy(module)
    for name, child in module.named_children():
        replacement = freeze_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def apply_norm_policy(module: nn.Module, policy: str) -> nn.Module:
    """``module`` with its BatchNorm layers converted for ``policy``; ``eval``/``train`` convert nothing."""
    if policy == "frozen":
        return freeze_batchnorm(module)
    if policy == "sync":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def norm_layers(module: nn.Module) -> Iterator[_BatchNorm]:
    """Every BatchNorm-family layer (BatchNorm1d/2d/3d, SyncBatchNorm) below ``module``."""
    return (layer for layer in module.modules() if isinstance(layer, _BatchNorm))


def set_norm_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer below ``module`` in eval mode, so its running statistics stay fixed."""
    for layer in norm_layers(module):
        layer.eval()
