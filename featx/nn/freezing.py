"""Freezing, in one place: the norm policy a backbone's stages get, which stages are frozen, and which modules stay in
eval mode when the backbone is put in training mode.

Norm policies (the spec's ``norm``):

- ``frozen``: statistics and affine fixed. A plain ``BatchNorm2d`` becomes torchvision's ``FrozenBatchNorm2d``; any
  other BatchNorm layer (1d/3d, or a subclass with a forward of its own such as timm's ``BatchNormAct2d``, a norm
  followed by an activation, which a ``FrozenBatchNorm2d`` would silently drop) is kept, its affine parameters get
  ``requires_grad=False`` and it stays in eval mode.
- ``eval``: BatchNorm kept with trainable affine, but always in eval mode (running statistics never change).
- ``train``: plain BatchNorm.  ``sync``: ``torch.nn.SyncBatchNorm`` (needs a process group when training); a
  BatchNorm subclass with a forward of its own cannot be converted and is refused.

A frozen stage has ``requires_grad=False`` on every parameter at any depth and stays in eval mode across any
``train()`` (the backbone's, a parent's, a graph's sharing its layers), so its BatchNorm statistics never change.

Example::

    stage = apply_norm_policy(stage, "frozen")
    set_stage_frozen(stage, True, "frozen")
    pin_kept_layers(stages, frozen={"c2"}, norm="eval")     # c2's layers and every BatchNorm stay in eval mode
"""

from __future__ import annotations

import weakref
from typing import Collection, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

from featx.errors import SpecError
from featx.spec.keys import key_path


def _frozen_copy(norm: nn.BatchNorm2d) -> nn.Module:
    if norm.running_mean is None or norm.running_var is None:
        return norm  # no statistics to freeze: it normalises with batch statistics by design
    statistics = norm.running_mean
    frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps).to(statistics.device, statistics.dtype)
    with torch.no_grad():
        frozen.running_mean.copy_(norm.running_mean)
        frozen.running_var.copy_(norm.running_var)
        if norm.affine:
            frozen.weight.copy_(norm.weight)
            frozen.bias.copy_(norm.bias)
    return frozen


def _has_own_forward(norm: _BatchNorm) -> bool:
    """A BatchNorm subclass whose forward does more than normalise (timm's ``BatchNormAct2d``)."""
    return type(norm).forward is not _BatchNorm.forward


def _freeze_affine(module: nn.Module) -> None:
    """``requires_grad=False`` on the affine parameters of the BatchNorm layers ``frozen`` keeps in place."""
    for layer in norm_layers(module):
        layer.requires_grad_(False)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every plain ``BatchNorm2d`` below ``module`` (and ``module`` itself) by a ``FrozenBatchNorm2d`` copy;
    fix the affine parameters of the other BatchNorm layers (kept in place, see the module docstring)."""
    replaced = _replace_plain_batchnorm(module)
    _freeze_affine(replaced)
    return replaced


def _replace_plain_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not _has_own_forward(module):
        return _frozen_copy(module)
    for name, child in module.named_children():
        replacement = _replace_plain_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def apply_norm_policy(module: nn.Module, policy: str) -> nn.Module:
    """``module`` with its BatchNorm layers converted for ``policy``; ``eval``/``train`` convert nothing."""
    if policy == "frozen":
        return freeze_batchnorm(module)
    if policy == "sync":
        for path, layer in module.named_modules():
            if isinstance(layer, _BatchNorm) and _has_own_forward(layer):
                raise SpecError(
                    key_path("norm"),
                    f"sync cannot convert {path or 'the stage'} ({type(layer).__module__}.{type(layer).__name__}): "
                    "a BatchNorm subclass with a forward of its own (SyncBatchNorm would drop what it adds); "
                    "use norm: frozen, eval or train",
                )
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def norm_layers(module: nn.Module) -> Iterator[_BatchNorm]:
    """Every BatchNorm-family layer (BatchNorm1d/2d/3d, SyncBatchNorm) below ``module``."""
    return (layer for layer in module.modules() if isinstance(layer, _BatchNorm))


def set_stage_frozen(stage: nn.Module, frozen: bool, norm: str) -> None:
    """``requires_grad`` off (frozen) or on for every parameter of ``stage``, at any depth; with ``norm: frozen`` the
    BatchNorm layers kept in place stay fixed either way."""
    stage.requires_grad_(not frozen)
    if frozen:  # no gradient left: an optimiser (momentum, weight decay) skips a parameter whose grad is None
        for parameter in stage.parameters():
            parameter.grad = None
    if norm == "frozen":
        _freeze_affine(stage)


def _statistics_kept() -> None:
    """What ``reset_running_stats`` does on a BatchNorm layer kept in eval mode: nothing (its statistics stay)."""


class _FullReset:
    """``reset_parameters`` of a layer whose ``reset_running_stats`` is :func:`_statistics_kept`: torch's own, with
    the statistics reset too (a deliberate re-initialisation, unlike ``update_bn``'s reset). It holds the layer
    weakly (the layer holds it: a strong reference would keep the layer's tensors alive after the backbone is
    dropped, until the cycle collector runs); copies and pickles rebind it to the layer copied with it."""

    def __init__(self, layer: _BatchNorm) -> None:
        self._layer = weakref.ref(layer)

    def __call__(self) -> None:
        layer = self._layer()
        if layer is not None:
            type(layer).reset_running_stats(layer)  # mean 0, variance 1
            type(layer).reset_parameters(layer)  # weight 1, bias 0 (its own reset_running_stats call does nothing)

    def __reduce__(self) -> tuple:
        return _FullReset, (self._layer(),)


class _EvalOnly:
    """``train`` of a layer kept in eval mode: whatever mode is asked, the layer and the layers below it go to eval
    mode (torch's ``nn.Module.train`` with ``False``). ``nn.Module.train`` of any module holding the layer calls it,
    so the layer stays in eval mode through the backbone's ``train()``, a wrapper's, its own, and the ``train()`` of a
    graph sharing the layers (torch.fx, torchvision's ``create_feature_extractor``, which calls it on creation).
    Held weakly and rebound on copies, as :class:`_FullReset`."""

    def __init__(self, layer: nn.Module) -> None:
        self._layer = weakref.ref(layer)

    def __call__(self, mode: bool = True) -> nn.Module:
        layer = self._layer()
        if layer is None:
            raise ReferenceError("the layer this train() belonged to no longer exists")
        if not isinstance(mode, bool):  # torch's own refusal
            return type(layer).train(layer, mode)
        return type(layer).train(layer, False)

    def __reduce__(self) -> tuple:
        return _EvalOnly, (self._layer(),)


def pin_kept_layers(stages: nn.ModuleDict, frozen: Collection[str], norm: str) -> None:
    """The layers kept in eval mode — every layer of a frozen stage, and with ``norm: eval`` or ``frozen`` every
    BatchNorm layer — are put in eval mode and stay there through any ``train()`` (:class:`_EvalOnly`); the others
    get torch's ``train`` back.

    Their BatchNorm layers also keep their running statistics through ``reset_running_stats()``, which
    ``torch.optim.swa_utils.update_bn`` calls before ``train()`` to recompute them: such a layer stays in eval mode,
    so they were never recomputed and stayed reset (mean 0, variance 1). ``reset_parameters()`` still resets them,
    as torch's does. The others get both methods back."""
    kept_norm = norm in ("eval", "frozen")
    for name, stage in stages.items():
        for layer in stage.modules():
            kept = name in frozen or (kept_norm and isinstance(layer, _BatchNorm))
            if kept:
                if not isinstance(layer.__dict__.get("train"), _EvalOnly):
                    layer.train = _EvalOnly(layer)  # type: ignore[method-assign]
                layer.eval()
            else:
                layer.__dict__.pop("train", None)
            if not isinstance(layer, _BatchNorm):
                continue
            if kept:
                layer.reset_running_stats = _statistics_kept  # type: ignore[method-assign]
                layer.reset_parameters = _FullReset(layer)  # type: ignore[method-assign]
            else:
                for method in ("reset_running_stats", "reset_parameters"):
                    layer.__dict__.pop(method, None)
