"""Anchors and RoI poolers for torchvision's detection models, derived from a featx backbone's ``feature_info``.

A featx backbone with an FPN (one channel count on every output) is accepted as-is by ``FasterRCNN``, ``MaskRCNN``,
``KeypointRCNN`` (FPN levels + ``extra_blocks: maxpool``), ``RetinaNet`` and ``FCOS`` (c3..c5 + ``extra_blocks: p6p7``).
What torchvision cannot infer are the anchor sizes per level and the names of the maps to pool RoIs from; these
functions read them off ``feature_info`` so nobody types them. Example::

    from torchvision.models.detection import FasterRCNN
    from featx.detection import anchor_generator, roi_pooler
    bb = featx.build("resnet50_fpn", overrides=["fpn.extra_blocks=maxpool"])
    model = FasterRCNN(bb, num_classes=3, rpn_anchor_generator=anchor_generator(bb), box_roi_pool=roi_pooler(bb))
    anchor_generator(bb).sizes     # ((32,), (64,), (128,), (256,), (512,)): torchvision's own for strides 4..64
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from featx.errors import ArgumentError
from featx.nn.backbone import Backbone

# style -> (anchor size per unit of stride, anchor sizes per octave, aspect ratios): torchvision's defaults
ANCHOR_STYLES: Dict[str, Tuple[float, int, Tuple[float, ...]]] = {
    "rcnn": (8.0, 1, (0.5, 1.0, 2.0)),  # FasterRCNN / MaskRCNN / KeypointRCNN: 32 at stride 4 .. 512 at stride 64
    "retinanet": (4.0, 3, (0.5, 1.0, 2.0)),  # 32, 40, 50 at stride 8 .. 512, 645, 812 at stride 128
    "fcos": (1.0, 1, (1.0,)),  # one anchor per location, its size the stride (FCOS is anchor-free)
}


def _require_one_channel_count(backbone: Backbone, caller: str) -> None:
    if not isinstance(backbone, Backbone):
        raise ArgumentError(f"{caller}(): expected a featx Backbone (featx.build(...)), got {type(backbone).__name__}")
    if backbone.out_channels is None:
        channels = ", ".join(f"{info.name}={info.channels}" for info in backbone.feature_info)
        raise ArgumentError(
            f"{caller}(): torchvision's detection heads need one channel count on every output, got {channels}; "
            "add an FPN (fpn.out_channels) or return a single stage (out_features)"
        )


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
    for ``k < n = sizes_per_octave``. Example: ``anchor_generator(bb, "retinanet").sizes[0] == (32, 40, 50)``.
    """
    _require_one_channel_count(backbone, "anchor_generator")
    if style not in ANCHOR_STYLES:
        raise ArgumentError(f"anchor_generator(): unknown style {style!r}; choose one of {', '.join(ANCHOR_STYLES)}")
    default_size, default_octave, default_ratios = ANCHOR_STYLES[style]
    size = default_size if size_per_stride is None else size_per_stride
    per_octave = default_octave if sizes_per_octave is None else sizes_per_octave
    ratios = tuple(default_ratios if aspect_ratios is None else aspect_ratios)
    if size <= 0 or per_octave < 1 or not ratios or any(r <= 0 for r in ratios):
        raise ArgumentError(
            "anchor_generator(): size_per_stride and aspect_ratios must be positive and sizes_per_octave >= 1, got "
            f"size_per_stride={size}, sizes_per_octave={per_octave}, aspect_ratios={ratios}"
        )
    sizes = tuple(
        tuple(int(size * info.stride * 2 ** (k / per_octave)) for k in range(per_octave))
        for info in backbone.feature_info
    )
    return AnchorGenerator(sizes, (ratios,) * len(sizes))


def pooled_level_names(backbone: Backbone) -> List[str]:
    """The outputs RoIs are pooled from: every output except an FPN's extra levels (``maxpool``/``p6p7``)."""
    extra = set(getattr(backbone.neck, "extra_level_names", ()))
    return [info.name for info in backbone.feature_info if info.name not in extra]


def roi_pooler(backbone: Backbone, output_size: int = 7, sampling_ratio: int = 2) -> MultiScaleRoIAlign:
    """torchvision's ``MultiScaleRoIAlign`` over :func:`pooled_level_names`.

    ``output_size`` 7 is the box head's (``box_roi_pool``), 14 the mask and keypoint heads' (``mask_roi_pool``,
    ``keypoint_roi_pool``). Example: ``MaskRCNN(bb, 2, mask_roi_pool=roi_pooler(bb, 14), ...)``.
    """
    _require_one_channel_count(backbone, "roi_pooler")
    if output_size < 1 or sampling_ratio < 0:
        raise ArgumentError(
            f"roi_pooler(): output_size must be >= 1 and sampling_ratio >= 0, got {output_size}, {sampling_ratio}"
        )
    return MultiScaleRoIAlign(pooled_level_names(backbone), output_size=output_size, sampling_ratio=sampling_ratio)
