"""Mean average precision of detections at one IoU threshold (mAP@0.5), in a few lines.

Per class, the detections of every image are ranked by score; each is a true positive when it overlaps a ground
truth box of its image and class that no higher-scored detection took, with IoU >= the threshold (COCO's matching:
a detection whose best box is taken is matched to the next best untaken one; PASCAL VOC's devkit counts it a false
positive and needs IoU > 0.5). AP is the area under the precision-recall curve after making precision
non-increasing (VOC's all-point interpolation); the mean is over the classes that have ground truth boxes. Example::

    from box_metrics import mean_average_precision
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    found = [{"boxes": torch.tensor([[1.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    mean_average_precision(found, truth)      # 1.0
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.ops import box_iou


def _ranked_hits(
    detections: Sequence[Dict[str, Tensor]], truths: Sequence[Dict[str, Tensor]], label: int, iou_threshold: float
) -> Tuple[List[Tuple[float, bool]], int]:
    """(score, true positive?) of every detection of ``label``, and the number of ground truth boxes."""
    ranked: List[Tuple[float, bool]] = []
    total = 0
    for found, truth in zip(detections, truths, strict=True):
        boxes = truth["boxes"][truth["labels"] == label]
        total += len(boxes)
        mine = found["labels"] == label
        scores, order = found["scores"][mine].sort(descending=True, stable=True)
        ious = box_iou(found["boxes"][mine][order], boxes)
        taken = torch.zeros(len(boxes), dtype=torch.bool)
        for score, overlaps in zip(scores.tolist(), ious, strict=True):
            overlaps = overlaps.masked_fill(taken, -1.0)
            best = int(overlaps.argmax()) if len(boxes) else -1
            hit = best >= 0 and float(overlaps[best]) >= iou_threshold
            if hit:
                taken[best] = True
            ranked.append((score, hit))
    return ranked, total


def average_precision(hits: Sequence[bool], total: int) -> float:
    """AP of detections already sorted by score, best first, against ``total`` ground truth boxes."""
    if not hits:
        return 0.0
    true_positives = torch.tensor(hits, dtype=torch.float64).cumsum(0)
    precision = true_positives / torch.arange(1, len(hits) + 1)
    envelope = precision.flip(0).cummax(0).values.flip(0)
    recall_steps = torch.diff(true_positives / total, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_steps * envelope).sum())


def mean_average_precision(
    detections: Sequence[Dict[str, Tensor]], truths: Sequence[Dict[str, Tensor]], iou_threshold: float = 0.5
) -> float:
    """mAP over the classes with ground truth; ``detections`` as torchvision's detectors return them (``boxes``,
    ``scores``, ``labels`` per image), ``truths`` their targets (``boxes``, ``labels``), image for image."""
    labels = sorted({int(label) for truth in truths for label in truth["labels"]})
    precisions = []
    for label in labels:
        ranked, total = _ranked_hits(detections, truths, label, iou_threshold)
        ranked.sort(key=lambda item: -item[0])  # stable: ties keep image order
        precisions.append(average_precision([hit for _, hit in ranked], total))
    return sum(precisions) / len(precisions) if precisions else 0.0
