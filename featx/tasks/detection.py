"""Anchors and RoI poolers for torchvision's detection models, derived from a featx backbone's ``feature_info``.

A featx backbone with an FPN (one channel count on every output) is accepted as-is by ``FasterRCNN``, ``MaskRCNN``,
``KeypointRCNN`` (FPN levels + ``extra_blocks: maxpool``), ``RetinaNet`` and ``FCOS`` (c3..c5 + ``extra_blocks: p6p7``)
when it names its outputs as torchvision does (``output_names: torchvision``: the R-CNNs' default pooler reads the
maps ``'0'``..``'3'``). Otherwise, and for other anchors, what torchvision cannot infer are the anchor sizes per level
and the names of the maps to pool RoIs from; these functions read them off ``feature_info`` so nobody types them.
Example::

    from torchvision.models.detection import FasterRCNN
    from featx.detection import anchor_generator, roi_pooler
    bb = featx.build("resnet50_fpn", overrides=["fpn.extra_blocks=maxpool"])
    model = FasterRCNN(bb, num_classes=3, rpn_anchor_generator=anchor_generator(bb), box_roi_pool=roi_pooler(bb))
    anchor_generator(bb).sizes     # ((32,), (64,), (128,), (256,), (512,)): torchvision's own for strides 4..64
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import AbstractSet, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from featx.errors import ArgumentError
from featx.nn.backbone import Backbone, backbone_of
from featx.nn.neck_levels import pooling_remedy
from featx.spec.limits import MAX_SIDE, real_value

# style -> (anchor size per unit of stride, anchor sizes per octave, aspect ratios): torchvision's defaults
ANCHOR_STYLES: Dict[str, Tuple[float, int, Tuple[float, ...]]] = {
    "rcnn": (8.0, 1, (0.5, 1.0, 2.0)),  # FasterRCNN / MaskRCNN / KeypointRCNN: 32 at stride 4 .. 512 at stride 64
    "retinanet": (4.0, 3, (0.5, 1.0, 2.0)),  # 32, 40, 50 at stride 8 .. 512, 645, 812 at stride 128
    "fcos": (1.0, 1, (1.0,)),  # one anchor per location, its size the stride (FCOS is anchor-free)
}
#: at most this many anchor sizes per octave and aspect ratios (torchvision's detectors use 1..3 of each)
MAX_ANCHORS = 16
#: the widest and the tallest anchor shape (height over width)
MAX_ASPECT_RATIO = 1000
#: the largest side of a pooled RoI and the largest sampling ratio (torchvision's heads use 7 and 14, ratio 2)
MAX_POOLED_SIDE = 256


def _require_one_channel_count(module: torch.nn.Module, caller: str) -> Backbone:
    """:func:`~featx.nn.backbone.backbone_of` ``module``, with one channel count on every output; else
    :class:`ArgumentError`."""
    module = backbone_of(module, caller)
    if module.out_channels is None:
        channels = ", ".join(f"{info.name}={info.channels}" for info in module.feature_info)
        raise ArgumentError(
            f"{caller}(): torchvision's detection heads need one channel count on every output, got {channels}; "
            "add an FPN (fpn.out_channels) or return a single stage (out_features)"
        )
    return module


def _scalar(value: object) -> object:
    """A one-element tensor as its Python number (``torch.tensor(8.0)``), else ``value`` (numpy's numbers are
    ``numbers.Real`` already)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.device.type != "meta":  # meta: no value
        return value.item()
    return value


def _number(value: object, what: str, caller: str) -> float:
    """``value`` as a finite real number (not a bool; numpy and one-element torch numbers too), else
    :class:`ArgumentError` naming ``what``."""
    value = _scalar(value)
    number = real_value(value)
    if not math.isfinite(number):
        raise ArgumentError(f"{caller}(): {what} must be a finite number, got {value!r:.80}")
    return number


def _integer(value: object, what: str, caller: str, low: int, high: int) -> int:
    """``value`` as an int (not a bool; numpy and one-element torch integers too) in ``low..high``, else
    :class:`ArgumentError` naming ``what``."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise ArgumentError(f"{caller}(): {what} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _aspect_ratios(value: object) -> Tuple[float, ...]:
    """A list, tuple, array or tensor of 1..MAX_ANCHORS positive numbers (an iterable is read that far only)."""
    items = value.tolist() if isinstance(value, torch.Tensor) and value.device.type != "meta" else value
    listed = None
    one_number = getattr(items, "ndim", None) == 0  # numpy's 0-d array: iterable by type, not in fact
    if isinstance(items, Iterable) and not isinstance(items, (str, bytes, Mapping, AbstractSet)) and not one_number:
        listed = list(itertools.islice(items, MAX_ANCHORS + 1))
    if listed is None or not 1 <= len(listed) <= MAX_ANCHORS:
        raise ArgumentError(
            f"anchor_generator(): aspect_ratios must be a list of 1..{MAX_ANCHORS} positive numbers, got {value!r}"
        )
    ratios = tuple(_number(ratio, "each aspect ratio", "anchor_generator") for ratio in listed)
    if any(not 1 / MAX_ASPECT_RATIO <= ratio <= MAX_ASPECT_RATIO for ratio in ratios) or len(set(ratios)) < len(ratios):
        raise ArgumentError(
            f"anchor_generator(): aspect_ratios must be distinct numbers in 1/{MAX_ASPECT_RATIO}..{MAX_ASPECT_RATIO} "
            f"(height over width), got {listed!r:.80}"
        )
    return ratios


def anchor_generator(
    backbone: Backbone,
    style: str = "rcnn",
    *,
    size_per_stride: Optional[float] = None,
    sizes_per_octave: Optional[int] = None,
    aspect_ratios: Optional[Sequence[float]] = None,
) -> AnchorGenerator:
    """An ``AnchorGenerator`` with one size group per backbone output, scaled by that output's stride.

    ``style`` picks torchvision's defaults: ``rcnn`` (Faster/Mask/Keypoint R-CNN), ``retinanet`` or ``fcos``;
    the keywords override parts of it. Level ``i`` gets sizes ``int(size_per_stride * stride_i * 2**(k / n))``
    for ``k < n = sizes_per_octave`` (at most 16 sizes and 16 aspect ratios; every size at least 1 pixel).
    Example: ``anchor_generator(bb, "retinanet").sizes[0] == (32, 40, 50)``.
    """
    backbone = _require_one_channel_count(backbone, "anchor_generator")
    if not isinstance(style, str) or style not in ANCHOR_STYLES:
        raise ArgumentError(f"anchor_generator(): unknown style {style!r}; choose one of {', '.join(ANCHOR_STYLES)}")
    default_size, default_octave, default_ratios = ANCHOR_STYLES[style]
    size = default_size if size_per_stride is None else _number(size_per_stride, "size_per_stride", "anchor_generator")
    per_octave = default_octave
    if sizes_per_octave is not None:
        per_octave = _integer(sizes_per_octave, "sizes_per_octave", "anchor_generator", 1, MAX_ANCHORS)
    ratios = default_ratios if aspect_ratios is None else _aspect_ratios(aspect_ratios)
    largest = size * max(info.stride for info in backbone.feature_info) * 2 ** ((per_octave - 1) / per_octave)
    if largest > MAX_SIDE:  # before the sizes are made ints: 1e307 x 64 is past a float's range
        raise ArgumentError(
            f"anchor_generator(): size_per_stride={size_per_stride!r:.40} makes anchors of {float(largest):.3g} pixels "
            f"at stride {backbone.feature_info[-1].stride}, larger than any input ({MAX_SIDE})"
        )
    sizes = tuple(
        tuple(int(size * info.stride * 2 ** (k / per_octave)) for k in range(per_octave))
        for info in backbone.feature_info
    )
    if size <= 0 or min(min(level) for level in sizes) < 1:
        raise ArgumentError(
            f"anchor_generator(): size_per_stride={size_per_stride!r} makes anchors smaller than 1 pixel at stride "
            f"{backbone.feature_info[0].stride}; it must be at least 1/stride"
        )
    for info, level in zip(backbone.feature_info, sizes, strict=True):
        if len(set(level)) < len(level):  # whole pixels: sizes within one octave of a small stride coincide
            raise ArgumentError(
                f"anchor_generator(): sizes_per_octave={per_octave} with size_per_stride={size:g} gives {info.name} "
                f"(stride {info.stride}) the anchor sizes {level}, some of them equal (sizes are whole pixels); give "
                "fewer sizes per octave or a larger size_per_stride"
            )
    return AnchorGenerator(sizes, (ratios,) * len(sizes))


def pooled_level_names(backbone: Backbone) -> List[str]:
    """The outputs RoIs are pooled from: every output except an FPN's extra levels (``maxpool``/``p6p7``)."""
    backbone = backbone_of(backbone, "pooled_level_names")
    extra = set(getattr(backbone.neck, "extra_level_names", ()))
    return [info.name for info in backbone.feature_info if info.name not in extra]


def _require_consecutive_levels(backbone: Backbone, names: Sequence[str]) -> None:
    """ArgumentError unless ``MultiScaleRoIAlign`` pools the maps ``names`` right (:func:`pooling_remedy`)."""
    strides = {info.name: info.stride for info in backbone.feature_info}
    remedy = pooling_remedy([strides[name] for name in names])
    if remedy is not None:
        levels = ", ".join(f"{name} (stride {strides[name]})" for name in names)
        raise ArgumentError(
            f"roi_pooler(): torchvision's MultiScaleRoIAlign needs levels whose strides are powers of two, doubling "
            f"from one to the next (it rounds each map's scale to a power of two), got {levels}; {remedy}"
        )


def roi_pooler(
    backbone: Backbone, output_size: Union[int, Sequence[int]] = 7, sampling_ratio: int = 2
) -> MultiScaleRoIAlign:
    """torchvision's ``MultiScaleRoIAlign`` over :func:`pooled_level_names` (their strides must double level by
    level, as it assumes).

    ``output_size`` (an int or ``(height, width)``) 7 is the box head's (``box_roi_pool``), 14 the mask and keypoint
    heads' (``mask_roi_pool``, ``keypoint_roi_pool``). Example: ``MaskRCNN(bb, 2, mask_roi_pool=roi_pooler(bb, 14),
    ...)``.
    """
    backbone = _require_one_channel_count(backbone, "roi_pooler")
    sides = output_size if isinstance(output_size, (list, tuple)) and len(output_size) == 2 else [output_size]
    size = [_integer(side, "output_size (an int or a pair)", "roi_pooler", 1, MAX_POOLED_SIDE) for side in sides]
    ratio = _integer(sampling_ratio, "sampling_ratio", "roi_pooler", 0, MAX_POOLED_SIDE)
    names = pooled_level_names(backbone)
    _require_consecutive_levels(backbone, names)
    return MultiScaleRoIAlign(names, output_size=size[0] if len(size) == 1 else tuple(size), sampling_ratio=ratio)
