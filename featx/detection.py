"""The documented path of :mod:`featx.tasks.detection` (anchors and RoI poolers for torchvision's detectors).

Example: ``from featx.detection import anchor_generator, roi_pooler``.
"""

from featx.tasks.detection import ANCHOR_STYLES, anchor_generator, pooled_level_names, roi_pooler

__all__ = ["ANCHOR_STYLES", "anchor_generator", "pooled_level_names", "roi_pooler"]
