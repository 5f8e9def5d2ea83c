"""How an extraction turns a decoded RGB image into the backbone's input tensor (the ``extract.transform`` key).

- ``weights``: the transforms of the published weights the backbone loads (``backbone.weights`` naming a
  torchvision enum member or a timm pretrained tag, e.g. ``DEFAULT``): their resize, crop and normalisation (for
  GoogLeNet and Inception-v3 the normalisation their forward would have made, mean = std = 0.5).
- ``center_crop``: shorter side resized to ``size / 0.875``, centre crop of ``size`` (ImageNet evaluation style),
  ImageNet mean and std (refused with published weights trained otherwise).
- ``resize``: resized (stretched) to exactly ``size``, nothing cropped, ImageNet mean and std (same).
- ``auto``: ``weights`` when ``backbone.weights`` names published weights, else ``center_crop``.

Example::

    transform = image_transform("auto", spec, size=(224, 224))
    transform(PIL.Image.open("cat.jpg").convert("RGB")).shape    # torch.Size([3, 224, 224])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from PIL.Image import Image
from torch import Tensor
from torchvision import transforms
from torchvision.transforms._presets import ImageClassification  # what every classifier's weights enum gives

from featx.errors import ArgumentError
from featx.models.published_weights import (
    HALF,
    published_normalisation,
    published_weights_transform,
    trained_half_normalised,
)
from featx.models.weights_enums import is_weights_file
from featx.spec.limits import MAX_SIDE
from featx.spec.schema import BackboneSpec

TRANSFORMS = ("auto", "weights", "center_crop", "resize")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875

#: takes a decoded image (an RGB Pillow image, a 3×H×W float tensor in [0, 1] for 16-bit images, or with
#: ``extract.decode=gpu`` a 3×H×W uint8 tensor)
ImageTransform = Callable[[Union[Image, Tensor]], Tensor]


@dataclass(frozen=True)
class TensorSteps:
    """A transform's tensor path in two parts: ``per_image`` (resize, crop; an 8-bit image stays 8-bit) and
    ``per_batch`` (to float, normalise), which takes one image or a stack of them alike. The GPU decoder runs the
    second once per batch: a torchvision ``Normalize`` copies its mean and std to the device and waits for it on
    every call, which per image serialised the whole batch."""

    per_image: Callable[[Tensor], Tensor]
    per_batch: Callable[[Tensor], Tensor]


class PillowOrTensor:
    """One transform for every decoded form: Pillow's own resampling for Pillow images (ImageNet evaluation style),
    torchvision's antialiased tensor resampling for tensors (float in [0, 1], or uint8 from the GPU decoder), whose
    steps are also exposed (``tensor_steps``) for a batch::

        transform.tensor_steps.per_batch(torch.stack([transform.tensor_steps.per_image(i) for i in images]))
    """

    def __init__(
        self, for_pillow: Callable[[Image], Tensor], tensor_steps: TensorSteps, shorter_side: Optional[int] = None
    ) -> None:
        self.for_pillow, self.tensor_steps = for_pillow, tensor_steps
        self.shorter_side = shorter_side  # what the image's shorter side is resized to before the crop, if it is

    def __call__(self, image: Union[Image, Tensor]) -> Tensor:
        if isinstance(image, Tensor):
            return self.tensor_steps.per_batch(self.tensor_steps.per_image(image))
        return self.for_pillow(image)

    def __repr__(self) -> str:
        return repr(self.for_pillow)


def _to_normalised_floats(mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """uint8 (decode=gpu) or float in [0, 1] to float32, normalised by ``mean`` and ``std``."""
    return transforms.Compose([transforms.ConvertImageDtype(torch.float32), transforms.Normalize(mean, std)])


def _split_preset(preset: ImageClassification) -> PillowOrTensor:
    """torchvision's evaluation preset (what a weights enum's ``transforms()`` gives) with its tensor steps: its own
    resize, crop, dtype conversion and normalisation, in its order, from its own settings."""
    geometry = transforms.Compose(
        [
            transforms.Resize(preset.resize_size, interpolation=preset.interpolation, antialias=preset.antialias),
            transforms.CenterCrop(preset.crop_size),
        ]
    )
    steps = TensorSteps(geometry, _to_normalised_floats(preset.mean, preset.std))
    return PillowOrTensor(preset, steps, shorter_side=preset.resize_size[0] if len(preset.resize_size) == 1 else None)


def _names_published_weights(spec: BackboneSpec) -> bool:
    return spec.weights is not None and not is_weights_file(spec.weights)


def _is_imagenet_normalisation(mean: Sequence[float], std: Sequence[float]) -> bool:
    """Whether ``mean``/``std`` are ImageNet's (as timm and torchvision round them: 0.485 or 0.48500001)."""
    given = [*mean, *std]
    imagenet = [*IMAGENET_MEAN, *IMAGENET_STD]
    return len(given) == len(imagenet) and all(abs(a - b) < 1e-6 for a, b in zip(given, imagenet, strict=True))


def _listed(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{value:g}" for value in values) + ")"


def resolve_transform_name(name: str, spec: BackboneSpec) -> str:
    """``auto`` made concrete for ``spec``; the other names checked against the spec."""
    if name not in TRANSFORMS:
        raise ArgumentError(f"extract.transform: unknown {name!r}; choose one of {', '.join(TRANSFORMS)}")
    if name == "auto":
        return "weights" if _names_published_weights(spec) else "center_crop"
    if name == "weights" and not _names_published_weights(spec):
        raise ArgumentError(
            f"extract.transform: 'weights' needs backbone.weights to name published weights (e.g. DEFAULT), got "
            f"{spec.weights!r}; use center_crop or resize"
        )
    return name


def image_transform(name: str, spec: BackboneSpec, size: Sequence[int]) -> ImageTransform:
    """The transform ``name`` (see the module docstring) for ``spec`` at ``size`` (height, width)."""
    name = resolve_transform_name(name, spec)
    if name == "weights":
        published = published_weights_transform(spec.model, str(spec.weights))
        return _split_preset(published) if isinstance(published, ImageClassification) else published
    trained = published_normalisation(spec.model, str(spec.weights)) if _names_published_weights(spec) else None
    if trained is not None and not _is_imagenet_normalisation(*trained):
        mean, std = trained
        said = "mean = std = 0.5" if mean == std == HALF else f"mean {_listed(mean)} and std {_listed(std)}"
        why = (
            " (what torchvision's transform_input makes of them, a step featx's stages skip)"
            if trained_half_normalised(spec.model)
            else ""
        )
        raise ArgumentError(
            f"extract.transform: {name} normalises with ImageNet's mean and std, and {spec.model}'s published weights "
            f"({spec.weights}) take images normalised with {said}{why}; use auto or weights"
        )
    if len(size) != 2 or not all(1 <= int(side) <= MAX_SIDE for side in size):
        raise ArgumentError(f"extract.size: expected [height, width] of sizes in 1..{MAX_SIDE}, got {list(size)}")
    height, width = int(size[0]), int(size[1])
    if spec.input_size is not None and [height, width] != list(spec.input_size):
        raise ArgumentError(
            f"extract.size: {spec.model} takes inputs of exactly {spec.input_size} (its spec's input_size), got "
            f"{[height, width]}; set extract.size={list(spec.input_size)}"
        )
    shorter: Optional[int] = None
    if name == "resize":
        geometry = [transforms.Resize((height, width), antialias=True)]
    else:
        shorter = int(max(height, width) / CROP_FRACTION)
        geometry = [transforms.Resize(shorter, antialias=True), transforms.CenterCrop((height, width))]
    for_pillow = transforms.Compose(
        [*geometry, transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    steps = TensorSteps(transforms.Compose(geometry), _to_normalised_floats(IMAGENET_MEAN, IMAGENET_STD))
    return PillowOrTensor(for_pillow, steps, shorter_side=shorter)


def resized_shorter_side(transform: ImageTransform) -> Optional[int]:
    """What ``transform`` resizes an image's shorter side to before its crop, where it says (featx's transforms and
    torchvision's presets); ``None`` for a stretch to the final size, or a transform that does not say (timm's)."""
    return transform.shorter_side if isinstance(transform, PillowOrTensor) else None
