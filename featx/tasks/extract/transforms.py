"""How an extraction turns a decoded RGB image into the backbone's input tensor (the ``extract.transform`` key).

- ``weights``: the transforms of the torchvision weights the backbone loads (``backbone.weights`` naming an enum
  member such as ``DEFAULT``): their resize, crop and normalisation.
- ``center_crop``: shorter side resized to ``size / 0.875``, centre crop of ``size`` (ImageNet evaluation style),
  ImageNet mean and std.
- ``resize``: resized (stretched) to exactly ``size``, nothing cropped, ImageNet mean and std.
- ``auto``: ``weights`` when ``backbone.weights`` names torchvision weights, else ``center_crop``.

Example::

    transform = image_transform("auto", spec, size=(224, 224))
    transform(PIL.Image.open("cat.jpg").convert("RGB")).shape    # torch.Size([3, 224, 224])
"""

from __future__ import annotations

from typing import Callable, Sequence

from PIL.Image import Image
from torch import Tensor
from torchvision import transforms

from featx.errors import ArgumentError
from featx.models.weights_enums import enum_member, is_weights_file
from featx.spec.schema import BackboneSpec

TRANSFORMS = ("auto", "weights", "center_crop", "resize")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875

ImageTransform = Callable[[Image], Tensor]


def _names_torchvision_weights(spec: BackboneSpec) -> bool:
    return spec.weights is not None and not is_weights_file(spec.weights)


def resolve_transform_name(name: str, spec: BackboneSpec) -> str:
    """``auto`` made concrete for ``spec``; the other names checked against the spec."""
    if name not in TRANSFORMS:
        raise ArgumentError(f"extract.transform: unknown {name!r}; choose one of {', '.join(TRANSFORMS)}")
    if name == "auto":
        return "weights" if _names_torchvision_weights(spec) else "center_crop"
    if name == "weights" and not _names_torchvision_weights(spec):
        raise ArgumentError(
            f"extract.transform: 'weights' needs backbone.weights to name torchvision weights (e.g. DEFAULT), got "
            f"{spec.weights!r}; use center_crop or resize"
        )
    return name


def image_transform(name: str, spec: BackboneSpec, size: Sequence[int]) -> ImageTransform:
    """The transform ``name`` (see the module docstring) for ``spec`` at ``size`` (height, width)."""
    name = resolve_transform_name(name, spec)
    if name == "weights":
        return enum_member(spec.model, str(spec.weights)).transforms()
    if len(size) != 2 or any(int(side) < 1 for side in size):
        raise ArgumentError(f"extract.size: expected [height, width] of positive integers, got {list(size)}")
    height, width = int(size[0]), int(size[1])
    if spec.input_size is not None and [height, width] != list(spec.input_size):
        raise ArgumentError(
            f"extract.size: {spec.model} takes inputs of exactly {spec.input_size} (its spec's input_size), got "
            f"{[height, width]}; set extract.size={list(spec.input_size)}"
        )
    normalise = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if name == "resize":
        return transforms.Compose([transforms.Resize((height, width)), *normalise])
    shorter = int(max(height, width) / CROP_FRACTION)
    return transforms.Compose([transforms.Resize(shorter), transforms.CenterCrop((height, width)), *normalise])
