"""Weights a model's library publishes, named in the ``weights`` key (``DEFAULT``, ``IMAGENET1K_V2`` for
torchvision; ``DEFAULT``, ``fb_in22k`` for a ``timm:`` model): which weights a name means, their cached file, and
the evaluation transform featx's stages take them with.

Example::

    published_weights_id("resnet50", "DEFAULT")          # 'ResNet50_Weights.IMAGENET1K_V2'
    published_weights_id("timm:resnet18", "DEFAULT")     # 'timm:resnet18.a1_in1k'
    path = published_weights_file("resnet50", "DEFAULT")  # $TORCH_HOME/hub/checkpoints/resnet50-11ad3fa6.pth
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Tuple

from torchvision.transforms._presets import ImageClassification  # what every classifier's weights enum gives

from featx.models.registry import weights_enum
from featx.models.timm_models import is_timm_model, pretrained_config, pretrained_tags, timm_name
from featx.models.timm_weights import timm_weights_file, timm_weights_id, timm_weights_transform
from featx.models.weights_enums import enum_member, enum_weights_file


def published_weights_id(model: str, name: str) -> str:
    """Which weights ``name`` means for ``model`` (``DEFAULT`` resolved); SpecError naming the valid ones."""
    if is_timm_model(model):
        return timm_weights_id(timm_name(model), name)
    return str(enum_member(model, name))


def published_weights_file(model: str, name: str) -> Path:
    """The cached file of ``model``'s published weights ``name``, downloaded if absent (unless offline)."""
    if is_timm_model(model):
        return timm_weights_file(timm_name(model), name)
    return enum_weights_file(model, name)


#: torchvision models whose builder turns on ``transform_input`` with published weights: the model's forward first
#: renormalises ImageNet-normalised images to mean = std = 0.5, what those weights were trained with; featx's stages
#: skip that step (it is no module), so they take such images directly
HALF_NORMALISED_MODELS = ("googlenet", "inception_v3")
HALF = (0.5, 0.5, 0.5)


def trained_half_normalised(model: str) -> bool:
    """Whether ``model``'s published weights take images normalised with mean = std = 0.5 in featx's stages."""
    return model in HALF_NORMALISED_MODELS


def published_normalisation(model: str, name: str) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    """``(mean, std)`` the published weights ``name`` of ``model`` take images normalised with in featx's stages
    (timm's pretrained config for a tag, the enum's preset, 0.5 for :data:`HALF_NORMALISED_MODELS`); None where the
    preset says none. Example: ``published_normalisation("googlenet", "DEFAULT") == ((0.5,) * 3, (0.5,) * 3)``."""
    if is_timm_model(model):
        config = pretrained_config(timm_name(model), name)
        return tuple(config.mean), tuple(config.std)
    if trained_half_normalised(model):
        return HALF, HALF
    preset = enum_member(model, name).transforms()
    if not isinstance(preset, ImageClassification):
        return None
    return tuple(preset.mean), tuple(preset.std)


def published_weights_transform(model: str, name: str) -> Callable[[Any], Any]:
    """The evaluation transform of ``model``'s weights ``name`` (resize, crop, normalise) as featx's stages take it:
    the one they were published with, normalised to mean = std = 0.5 where the model's forward would have done that
    (:data:`HALF_NORMALISED_MODELS`)."""
    if is_timm_model(model):
        return timm_weights_transform(timm_name(model), name)
    preset = enum_member(model, name).transforms()
    if not (trained_half_normalised(model) and isinstance(preset, ImageClassification)):
        return preset
    return ImageClassification(
        crop_size=preset.crop_size[0],
        resize_size=preset.resize_size[0],
        mean=HALF,
        std=HALF,
        interpolation=preset.interpolation,
        antialias=preset.antialias,
    )


def published_weights_summary(model: str) -> str:
    """One line for a proposal's header: the ``weights`` values ``model`` takes."""
    if is_timm_model(model):
        tags = pretrained_tags(timm_name(model))
        if not tags:
            return "weights: null = random init (timm publishes none); or give a .pth/.pt/.safetensors path"
        return (
            f"weights: null = random init; timm publishes the tags {', '.join(tags)} (DEFAULT = {tags[0]}; "
            f"files from the Hugging Face hub cache), or give a .pth/.pt/.safetensors path in timm's key layout"
        )
    try:
        enum: Any = weights_enum(model)
    except ValueError:
        return "weights: none published by torchvision"
    names = [member.name for member in enum]
    return (
        f"weights: null = random init; torchvision publishes {enum.__name__}."
        + ", .".join(names)
        + f" (DEFAULT = {enum.DEFAULT.name}), or give a .pth/.pt/.safetensors path"
    )
