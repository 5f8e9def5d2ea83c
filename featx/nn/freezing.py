"""Freezing, in one place: the norm policy a backbone's stages get, which stages are frozen, and which modules stay in
eval mode when the backbone is put in training mode.

Norm policies (the spec's ``norm``):

- ``frozen``: every ``BatchNorm2d`` becomes torchvision's ``FrozenBatchNorm2d`` (statistics and affine fixed).
- ``eval``: BatchNorm kept with trainable affine, but always in eval mode (running statistics never change).
- ``train``: plain BatchNorm.  ``sync``: ``torch.nn.SyncBatchNorm`` (needs a process group when training).

A frozen stage has ``requires_grad=False`` on every parameter at any depth and stays in eval mode across
``train()``, so its BatchNorm statistics never change.

Example::

    stage = apply_norm_policy(stage, "frozen")
    set_stage_frozen(stage, True)
    keep_eval_modes(stages, frozen={"c2"}, norm="eval")     # after every .train()
"""

from __future__ import annotations

from typing import Collection, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d


def _frozen_copy(norm: nn.BatchNorm2d) -> nn.Module:
    if norm.running_mean is None or norm.running_var is None:
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


def set_stage_frozen(stage: nn.Module, frozen: bool) -> None:
    """``requires_grad`` off (frozen) or on for every parameter of ``stage``, at any depth."""
    stage.requires_grad_(not frozen)


def keep_eval_modes(stages: nn.ModuleDict, frozen: Collection[str], norm: str) -> None:
    """After ``train()``: frozen stages back to eval mode, and with ``norm: eval`` every BatchNorm layer too."""
    for name in frozen:
        stages[name].eval()
    if norm == "eval":
        for stage in stages.values():
            for layer in norm_layers(stage):
                layer.eval()
