"""``featx.build``: one generic builder from any backbone spec to a :class:`~featx.backbone.Backbone`.

Example::

    import featx, torch
    bb = featx.build("resnet50_fpn", overrides=["fpn.out_channels=128", "frozen_stages=1"])
    feats = bb(torch.randn(1, 3, 224, 224))
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from featx.backbone import Backbone, FeatureInfo
from featx.device import resolve_device
from featx.freezing import apply_norm_policy
from featx.loader import SpecSource, load_spec
from featx.neck import FeaturePyramid, level_name
from featx.plan import BackbonePlan, plan_backbone
from featx.stages import stage_containers
from featx.weights import Checkpoint, load_kept_weights, load_saved_backbone, read_checkpoint, resolve_weights
from featx.zoo import create_model_keeping


def build(source: SpecSource, overrides: Optional[Sequence[str]] = None) -> Backbone:
    """Build the backbone ``source`` describes: a packaged name (``"resnet50_fpn"``), a ``.yaml`` path, a mapping,
    a ``DictConfig`` or a :class:`~featx.spec.BackboneSpec`; ``overrides`` use Hydra's grammar relative to the
    backbone node (``["fpn.out_channels=128"]``).

    ``device: meta`` builds the structure only (no memory, no weights read): enough for ``feature_info``, parameter
    counts and output shapes, e.g. ``featx.build("resnet50_fpn", overrides=["device=meta"])``.

    Raises :class:`~featx.errors.SpecError` for an invalid spec, :class:`~featx.errors.WeightsError` for weights
    that cannot be had or do not fit, :class:`~featx.errors.DeviceError` for a device this machine lacks.
    """
    spec = load_spec(source, overrides)
    device = resolve_device(spec.device)
    plan = plan_backbone(spec)
    if device.type == "meta":  # structure only: the plan's model as it is, no weights read
        checkpoint, model = None, plan.meta_model
    else:
        checkpoint = read_checkpoint(resolve_weights(spec.model, spec.weights)) if spec.weights is not None else None
        if checkpoint is None:
            model = _random_init_kept(plan)
        elif checkpoint.saved is None:
            model = _kept_from_checkpoint(plan, checkpoint)
        else:  # a featx.save file: its tensors are loaded into the whole backbone below
            model = _materialise_kept(plan)
    stages = stage_containers(model, plan.stages)
    for name in stages:
        stages[name] = apply_norm_policy(stages[name], spec.norm)
    neck = None
    if spec.fpn is not None:
        levels = [FeatureInfo(level_name(info.stride), info.channels, info.stride) for info in plan.returned]
        neck = FeaturePyramid(levels, spec.fpn)
    backbone = Backbone(stages, plan, neck)
    if checkpoint is not None and checkpoint.saved is not None:
        load_saved_backbone(backbone, spec, checkpoint)
    if spec.reinit:
        backbone.reinit(*spec.reinit)
    memory_format = torch.channels_last if spec.channels_last else torch.preserve_format
    return backbone.to(device=device, memory_format=memory_format).train()


def _random_init_kept(plan: BackbonePlan) -> nn.Module:
    """The model constructed for real with torchvision's own init, but only the kept layers allocated (the dropped
    ones, e.g. VGG's 120 M-parameter classifier, stay on meta and cost nothing)."""
    return create_model_keeping(plan.spec.model, plan.meta_model, plan.registrations, plan.kept_paths)


def _kept_from_checkpoint(plan: BackbonePlan, checkpoint: Checkpoint) -> nn.Module:
    """The plan's meta model with the checkpoint's tensors assigned to the kept layers: no random init, no copy,
    dropped layers never allocated. Kept layers holding non-persistent buffers (which no checkpoint carries) are
    constructed for real first, then the checkpoint is copied into them."""
    if _kept_non_persistent_buffers(plan):
        model = _random_init_kept(plan)
        load_kept_weights(model, plan.kept_paths, checkpoint)
        return model
    load_kept_weights(plan.meta_model, plan.kept_paths, checkpoint, assign=True)
    return plan.meta_model


def _kept_non_persistent_buffers(plan: BackbonePlan) -> bool:
    kept = [plan.meta_model.get_submodule(path) for path in plan.kept_paths]
    return any(module._non_persistent_buffers_set for root in kept for module in root.modules())


def _materialise_kept(plan: BackbonePlan) -> nn.Module:
    """The plan's meta model with only the kept modules given (uninitialised) CPU tensors, for a build whose every
    kept tensor then comes from a checkpoint: no random init, and dropped layers (the classifier) never allocated.

    A model whose kept modules hold non-persistent buffers (which no checkpoint carries) gets its kept layers
    constructed for real instead (the checkpoint then overwrites their init).
    """
    if _kept_non_persistent_buffers(plan):
        return _random_init_kept(plan)
    for module in (plan.meta_model.get_submodule(path) for path in plan.kept_paths):
        module.to_empty(device="cpu")
        for name, buffer in module.named_buffers():
            if name.endswith("num_batches_tracked"):  # optional in checkpoints (see weights.py)
                buffer.zero_()
    return plan.meta_model
