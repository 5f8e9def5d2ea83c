"""featx backbones inside torchvision's detection models and segmentation heads (real models, small inputs)."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest
import torch
from helpers import randomize_norm_statistics
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import (
    FCOS,
    FasterRCNN,
    KeypointRCNN,
    MaskRCNN,
    RetinaNet,
    faster_rcnn,
    fasterrcnn_resnet50_fpn,
    retinanet,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops.misc import FrozenBatchNorm2d

import featx
from featx.tasks.detection import anchor_generator, pooled_level_names, roi_pooler

SMALL = {"min_size": 64, "max_size": 96}  # torchvision's detection transform resizes to this
EVAL_ALL = {"box_score_thresh": 0.0, **SMALL}  # untrained heads score low: keep every detection
FAMILIES = ["resnet18", "mobilenet_v3_large"]


def _rcnn_backbone(name: str) -> featx.Backbone:
    return featx.build(name, overrides=["device=cpu", "fpn={out_channels: 64, extra_blocks: maxpool}"])


def _one_stage_backbone(name: str) -> featx.Backbone:
    return featx.build(
        name, overrides=["device=cpu", "out_features=[c3,c4,c5]", "fpn={out_channels: 64, extra_blocks: p6p7}"]
    )


def _images() -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 64, 80, generator=generator), torch.rand(3, 72, 64, generator=generator)]


def _targets(masks: bool = False, keypoints: int = 0) -> List[Dict[str, torch.Tensor]]:
    targets = []
    for boxes, labels, (height, width) in (
        ([[4.0, 6.0, 40.0, 44.0]], [1], (64, 80)),
        ([[10.0, 8.0, 50.0, 60.0], [2.0, 3.0, 24.0, 30.0]], [2, 1], (72, 64)),
    ):
        target = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}
        if masks:
            target["masks"] = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
            for mask, (x0, y0, x1, y1) in zip(target["masks"], boxes, strict=True):
                mask[int(y0) : int(y1), int(x0) : int(x1)] = 1
        if keypoints:
            corners = [
                [[x0 + k * (x1 - x0) / keypoints, y0 + k * (y1 - y0) / keypoints, 1.0] for k in range(keypoints)]
                for x0, y0, x1, y1 in boxes
            ]
            target["keypoints"] = torch.tensor(corners)
        targets.append(target)
    return targets


def _detector(kind: str, family: str) -> nn.Module:
    if kind in ("retinanet", "fcos"):
        bb = _one_stage_backbone(family)
        cls = RetinaNet if kind == "retinanet" else FCOS
        return cls(bb, 3, anchor_generator=anchor_generator(bb, kind), score_thresh=0.0, detections_per_img=10, **SMALL)
    bb = _rcnn_backbone(family)
    common = dict(
        rpn_anchor_generator=anchor_generator(bb),
        box_roi_pool=roi_pooler(bb),
        box_detections_per_img=10,
        box_batch_size_per_image=64,
        **EVAL_ALL,
    )
    if kind == "faster_rcnn":
        return FasterRCNN(bb, num_classes=3, **common)
    if kind == "mask_rcnn":
        return MaskRCNN(bb, num_classes=3, mask_roi_pool=roi_pooler(bb, 14), **common)
    # a 2-layer keypoint head instead of the default 8 layers of 512 channels: the backbone is what is tested
    head = KeypointRCNNHeads(bb.out_channels, (64, 64))
    return KeypointRCNN(
        bb,
        num_classes=3,
        keypoint_roi_pool=roi_pooler(bb, 14),
        keypoint_head=head,
        keypoint_predictor=KeypointRCNNPredictor(64, 4),
        **common,
    )


OUTPUT_KEYS = {
    "faster_rcnn": {"boxes", "labels", "scores"},
    "mask_rcnn": {"boxes", "labels", "scores", "masks"},
    "keypoint_rcnn": {"boxes", "labels", "scores", "keypoints", "keypoints_scores"},
    "retinanet": {"boxes", "labels", "scores"},
    "fcos": {"boxes", "labels", "scores"},
}
LOSS_KEYS = {
    "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "mask_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
    "keypoint_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_keypoint"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", sorted(OUTPUT_KEYS))
def test_detector_trains_one_step_and_detects(kind: str, family: str) -> None:
    torch.manual_seed(0)
    model = _detector(kind, family)
    backbone: featx.Backbone = model.backbone
    frozen_before = {n: p.clone() for n, p in backbone.stages["c2"].named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01)

    model.train()
    losses = model(_images(), _targets(masks=kind == "mask_rcnn", keypoints=4 if kind == "keypoint_rcnn" else 0))
    assert set(losses) == LOSS_KEYS[kind]
    assert all(torch.isfinite(loss) for loss in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    deepest = next(p for p in backbone.stages["c5"].parameters() if p.requires_grad)
    assert deepest.grad is not None and torch.count_nonzero(deepest.grad) > 0
    optimizer.step()
    # the spec's frozen stage (c2) neither gets gradients nor changes
    for name, param in backbone.stages["c2"].named_parameters():
        assert not param.requires_grad and param.grad is None
        assert torch.equal(param, frozen_before[name]), name

    model.eval()
    with torch.no_grad():
        detections = model(_images())
    assert len(detections) == 2
    for detection in detections:
        assert set(detection) == OUTPUT_KEYS[kind]
        assert detection["boxes"].shape[0] > 0 and detection["boxes"].shape[1] == 4
        assert detection["scores"].shape == detection["labels"].shape == detection["boxes"].shape[:1]
        assert torch.isfinite(detection["boxes"]).all()


def _default_detector(kind: str) -> nn.Module:
    """torchvision's detector on a featx backbone with ``output_names: torchvision``: no anchor generator or pooler
    passed, torchvision's defaults read the outputs '0', '1', ... and 'pool' (or 'p6', 'p7')."""
    one_stage = kind in ("retinanet", "fcos")
    overrides = ["device=cpu", "output_names=torchvision"]
    overrides += ["out_features=[c3,c4,c5]", "fpn={out_channels: 64, extra_blocks: p6p7}"] if one_stage else []
    overrides += [] if one_stage else ["fpn={out_channels: 64, extra_blocks: maxpool}"]
    bb = featx.build("resnet18", overrides=overrides)
    if one_stage:
        return (RetinaNet if kind == "retinanet" else FCOS)(bb, 3, score_thresh=0.0, **SMALL)
    few = {"box_detections_per_img": 5}  # the mask and keypoint heads run on each detection (100 by default)
    if kind == "keypoint_rcnn":
        return KeypointRCNN(bb, 3, num_keypoints=4, **EVAL_ALL, **few)
    return (FasterRCNN if kind == "faster_rcnn" else MaskRCNN)(bb, 3, **EVAL_ALL, **few)


@pytest.mark.parametrize("kind", sorted(OUTPUT_KEYS))
def test_detectors_with_their_own_defaults_train_and_detect_on_torchvision_output_names(kind: str) -> None:
    torch.manual_seed(0)
    model = _default_detector(kind)
    assert [info.name for info in model.backbone.feature_info] == (
        ["0", "1", "2", "p6", "p7"] if kind in ("retinanet", "fcos") else ["0", "1", "2", "3", "pool"]
    )
    model.train()
    losses = model(_images(), _targets(masks=kind == "mask_rcnn", keypoints=4 if kind == "keypoint_rcnn" else 0))
    assert set(losses) == LOSS_KEYS[kind] and all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        detections = model(_images())
    assert [set(detection) for detection in detections] == [OUTPUT_KEYS[kind]] * 2
    assert all(detection["boxes"].shape[0] > 0 for detection in detections)


@pytest.mark.parametrize("kind", ["faster_rcnn", "retinanet", "fcos"])
def test_four_torchvision_named_maps_need_an_anchor_generator_of_four_sizes(kind: str) -> None:
    """A packaged ``_fpn`` file (``extra_blocks: null``) with ``output_names: torchvision`` has four maps '0'..'3':
    a detector's default anchor generator has five sizes and fails at the first forward (torchvision's
    AssertionError), as docs/detection.md says; an anchor generator of four sizes (Faster R-CNN: the default pooler
    reads '0'..'3') makes it train and detect."""
    torch.manual_seed(0)
    bb = featx.build("resnet18_fpn", overrides=["device=cpu", "output_names=torchvision", "fpn.out_channels=64"])
    assert [info.name for info in bb.feature_info] == ["0", "1", "2", "3"]
    one_stage = {"retinanet": RetinaNet, "fcos": FCOS}.get(kind)
    default = FasterRCNN(bb, 3, **SMALL) if one_stage is None else one_stage(bb, 3, **SMALL)
    with pytest.raises(AssertionError, match=r"^Anchors should be Tuple\[Tuple\[int\]\]"):
        default.eval()(_images())
    if one_stage is None:
        anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
        assert (anchors.sizes, anchors.aspect_ratios) == (
            anchor_generator(bb).sizes,
            anchor_generator(bb).aspect_ratios,
        )
        model = FasterRCNN(bb, 3, rpn_anchor_generator=anchors, **EVAL_ALL)
    else:
        model = one_stage(bb, 3, anchor_generator=anchor_generator(bb, kind), score_thresh=0.0, **SMALL)
    model.train()
    losses = model(_images(), _targets())
    assert set(losses) == LOSS_KEYS[kind] and all(torch.isfinite(loss) for loss in losses.values())
    model.eval()
    with torch.no_grad():
        detections = model(_images())
    assert [set(detection) for detection in detections] == [OUTPUT_KEYS[kind]] * 2
    assert all(detection["boxes"].shape[0] > 0 for detection in detections)


@pytest.mark.parametrize("layout", ["helpers", "torchvision_names"])
def test_faster_rcnn_with_featx_backbone_equals_torchvisions_own(layout: str) -> None:
    """Same weights in torchvision's fasterrcnn_resnet50_fpn and in FasterRCNN(featx resnet50_fpn): same detections,
    with featx's helpers (levels p2..p6) or with torchvision's own defaults (``output_names: torchvision``)."""
    torch.manual_seed(0)
    reference = randomize_norm_statistics(
        fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **EVAL_ALL)
    ).eval()
    overrides = ["device=cpu", "norm=eval", "fpn.extra_blocks=maxpool"]
    if layout == "helpers":
        bb = featx.build("resnet50_fpn", overrides=overrides)
        ours = FasterRCNN(bb, 91, rpn_anchor_generator=anchor_generator(bb), box_roi_pool=roi_pooler(bb), **EVAL_ALL)
    else:
        bb = featx.build("resnet50_fpn", overrides=[*overrides, "output_names=torchvision"])
        ours = FasterRCNN(bb, 91, **EVAL_ALL)
    ours.eval()

    def tensors(module: nn.Module) -> List[torch.Tensor]:
        return [t for key, t in module.state_dict().items() if not key.endswith("num_batches_tracked")]

    with torch.no_grad():
        for source, target in (
            (reference.backbone, bb),
            (reference.rpn, ours.rpn),
            (reference.roi_heads, ours.roi_heads),
        ):
            pairs = list(zip(tensors(source), tensors(target), strict=True))
            for theirs, mine in pairs:
                mine.copy_(theirs)
        expected = reference(_images())
        actual = ours(_images())
    for want, got in zip(expected, actual, strict=True):
        assert want["boxes"].shape[0] > 0
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_frozen_stages_one_trains_what_torchvisions_faster_rcnn_trains() -> None:
    """docs/detection.md called FasterRCNN on resnet50_fpn torchvision's fasterrcnn_resnet50_fpn without a word on
    fine-tuning: the packaged file freezes c2 and c3 (``frozen_stages: 2``), torchvision with a pretrained backbone
    (``trainable_backbone_layers=3``) only conv1 and layer1, which is featx's ``frozen_stages=1``; from random init
    torchvision trains every layer, with plain BatchNorm (``frozen_stages=0``, ``norm=train``)."""

    def trained(module: nn.Module) -> List[tuple]:
        return [(tuple(p.shape), p.requires_grad) for p in module.parameters()]

    # what fasterrcnn_resnet50_fpn builds for weights_backbone=ResNet50_Weights.IMAGENET1K_V1, without the download
    pretrained = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    random_init = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone
    packaged = featx.build("resnet50_fpn", overrides=["device=meta"])
    assert trained(featx.build("resnet50_fpn", overrides=["device=meta", "frozen_stages=1"])) == trained(pretrained)
    assert trained(featx.build("resnet50_fpn", overrides=["device=meta", "frozen_stages=0", "norm=train"])) == (
        trained(random_init)
    )

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    assert (count(packaged), count(pretrained), count(random_init)) == (25_364_480, 26_576_896, 26_852_416)


def test_anchor_sizes_equal_torchvisions_defaults() -> None:
    rcnn = anchor_generator(_rcnn_backbone("resnet18"))
    assert rcnn.sizes == faster_rcnn._default_anchorgen().sizes
    assert rcnn.aspect_ratios == faster_rcnn._default_anchorgen().aspect_ratios
    one_stage = _one_stage_backbone("resnet18")
    assert anchor_generator(one_stage, "retinanet").sizes == retinanet._default_anchorgen().sizes
    fcos = anchor_generator(one_stage, "fcos")
    assert fcos.sizes == ((8,), (16,), (32,), (64,), (128,)) and fcos.aspect_ratios == ((1.0,),) * 5
    custom = anchor_generator(one_stage, size_per_stride=2, sizes_per_octave=2, aspect_ratios=[1.0])
    assert custom.sizes[0] == (16, 22) and custom.num_anchors_per_location() == [2] * 5


def test_roi_pooler_uses_the_stage_levels_not_the_extra_ones() -> None:
    bb = _rcnn_backbone("resnet18")
    assert [info.name for info in bb.feature_info] == ["p2", "p3", "p4", "p5", "p6"]
    assert pooled_level_names(bb) == ["p2", "p3", "p4", "p5"]
    pooler = roi_pooler(bb, 14, sampling_ratio=0)
    assert pooler.featmap_names == ["p2", "p3", "p4", "p5"] and pooler.output_size == (14, 14)
    assert pooler.sampling_ratio == 0
    assert pooled_level_names(_one_stage_backbone("resnet18")) == ["p3", "p4", "p5"]


def test_a_compiled_or_data_parallel_backbone_gets_the_same_anchors_and_pooler() -> None:
    """torch.compile and DataParallel wrap the backbone: the helpers refused the wrapper as not a featx Backbone."""
    bb = _rcnn_backbone("resnet18")
    compiled, parallel = torch.compile(bb, backend="eager"), torch.nn.DataParallel(bb)
    wrappers = (compiled, parallel, torch.nn.DataParallel(compiled), torch.compile(parallel, backend="eager"))
    for wrapped in wrappers:
        assert anchor_generator(wrapped).sizes == anchor_generator(bb).sizes == faster_rcnn._default_anchorgen().sizes
        assert roi_pooler(wrapped).featmap_names == ["p2", "p3", "p4", "p5"]
    with pytest.raises(featx.ArgumentError, match=r"^roi_pooler\(\): expected a featx Backbone .*got Sequential$"):
        roi_pooler(torch.nn.Sequential(bb))


def test_single_map_backbone_gets_one_anchor_group() -> None:
    bb = featx.build("resnet34", overrides=["device=cpu"])  # the reference extractor: layer3 only
    assert anchor_generator(bb).sizes == ((128,),)
    assert roi_pooler(bb).featmap_names == [bb.feature_info[0].name]


def test_mixed_channel_counts_are_refused_with_the_channels_named() -> None:
    bb = featx.build("resnet18", overrides=["device=cpu"])
    with pytest.raises(featx.ArgumentError, match=r"anchor_generator\(\): .*c2=64, c3=128, c4=256, c5=512.*fpn"):
        anchor_generator(bb)
    with pytest.raises(featx.ArgumentError, match=r"roi_pooler\(\): .*one channel count"):
        roi_pooler(bb)


def test_a_backbone_of_mixed_widths_has_no_out_channels_as_documented() -> None:
    """docs/python.md: out_channels is None when the outputs differ in width; torchvision's detectors check only that
    the attribute exists and fail inside torch (docs/detection.md says so, and which featx settings fix it), while
    featx.detection's helpers refuse it with the widths named."""
    bb = featx.build("resnet18", overrides=["device=meta", "output_names=torchvision"])
    assert bb.out_channels is None
    with pytest.raises(TypeError, match=r"^unsupported operand type\(s\) for %: 'NoneType' and 'int'$"):
        FasterRCNN(bb, num_classes=3)
    with pytest.raises(
        featx.ArgumentError,
        match=r"^anchor_generator\(\): torchvision's detection heads need one channel count on every output, got "
        r"0=64, 1=128, 2=256, 3=512; add an FPN \(fpn\.out_channels\) or return a single stage \(out_features\)$",
    ):
        anchor_generator(bb)
    fixed = featx.build("resnet18", overrides=["device=meta", "output_names=torchvision", "fpn.out_channels=32"])
    assert fixed.out_channels == 32


def test_bad_anchor_arguments_are_refused() -> None:
    bb = _rcnn_backbone("resnet18")
    with pytest.raises(featx.ArgumentError, match="unknown style 'yolo'; choose one of rcnn, retinanet, fcos"):
        anchor_generator(bb, "yolo")
    with pytest.raises(featx.ArgumentError, match=r"sizes_per_octave must be an integer in 1\.\.16, got 0"):
        anchor_generator(bb, sizes_per_octave=0)
    with pytest.raises(featx.ArgumentError, match="expected a featx Backbone"):
        anchor_generator(nn.Conv2d(3, 3, 1))
    with pytest.raises(featx.ArgumentError, match=r"output_size \(an int or a pair\) must be an integer in 1\.\.256"):
        roi_pooler(bb, 0)


ANCHOR_ARGUMENT_CASES = [
    ({"sizes_per_octave": 1.5}, r"sizes_per_octave must be an integer in 1\.\.16, got 1\.5"),
    ({"sizes_per_octave": True}, r"sizes_per_octave must be an integer in 1\.\.16, got True"),
    ({"sizes_per_octave": 10**9}, r"sizes_per_octave must be an integer in 1\.\.16, got 1000000000"),
    ({"size_per_stride": "8"}, r"size_per_stride must be a finite number, got '8'"),
    ({"size_per_stride": float("nan")}, r"size_per_stride must be a finite number, got nan"),
    ({"size_per_stride": float("inf")}, r"size_per_stride must be a finite number, got inf"),
    ({"size_per_stride": 0.01}, r"size_per_stride=0\.01 makes anchors smaller than 1 pixel at stride 4"),
    ({"size_per_stride": -1}, r"size_per_stride=-1 makes anchors smaller than 1 pixel"),
    ({"aspect_ratios": 0.5}, r"aspect_ratios must be a list of 1\.\.16 positive numbers, got 0\.5"),
    ({"aspect_ratios": "12"}, r"aspect_ratios must be a list of 1\.\.16 positive numbers, got '12'"),
    ({"aspect_ratios": []}, r"aspect_ratios must be a list of 1\.\.16 positive numbers, got \[\]"),
    (
        {"aspect_ratios": [1.0, 0]},
        r"aspect_ratios must be distinct numbers in 1/1000\.\.1000 \(height over width\), got \[1\.0, 0\]",
    ),
    ({"aspect_ratios": [1.0, None]}, r"each aspect ratio must be a finite number, got None"),
    ({"aspect_ratios": [1.0, 1e300]}, r"aspect_ratios must be distinct numbers in 1/1000\.\.1000"),
    ({"aspect_ratios": [0.5, 0.5]}, r"aspect_ratios must be distinct numbers"),
    (  # whole pixels: 4 * 2**(k/8) gave 4 three times, identical anchors each with its own head output
        {"size_per_stride": 1, "sizes_per_octave": 8},
        r"sizes_per_octave=8 with size_per_stride=1 gives p2 \(stride 4\) the anchor sizes \(4, 4, 4, 5, 5, 6, 6, 7\), "
        r"some of them equal \(sizes are whole pixels\); give fewer sizes per octave or a larger size_per_stride$",
    ),
    ({"aspect_ratios": {0.5: 1, 2.0: 1}}, r"aspect_ratios must be a list of 1\.\.16 positive numbers, got \{"),
    ({"aspect_ratios": {0.5, 2.0}}, r"aspect_ratios must be a list of 1\.\.16 positive numbers, got \{"),
    ({"size_per_stride": 10**400}, r"size_per_stride must be a finite number, got 1000"),
    ({"size_per_stride": 1e307}, r"size_per_stride=1e\+307 makes anchors of .* pixels at stride 32"),  # overflowed
    (
        {"size_per_stride": 1e300},
        r"size_per_stride=1e\+300 makes anchors of 3\.2e\+301 pixels at stride 32, larger than any input \(16384\)",
    ),
    # numpy's 0-d array passes as iterable (TypeError when iterated); meta tensors hold no value (.item() and
    # .tolist() raised torch's RuntimeError and NotImplementedError)
    ({"aspect_ratios": np.array(1.0)}, r"aspect_ratios must be a list of 1\.\.16 positive numbers, got array\(1\.\)"),
    (
        {"size_per_stride": torch.tensor(8.0, device="meta")},
        r"size_per_stride must be a finite number, got tensor\(\.\.\., device='meta'",
    ),
    (
        {"aspect_ratios": torch.tensor([0.5, 1.0], device="meta")},
        r"each aspect ratio must be a finite number, got tensor\(\.\.\., device='meta'",
    ),
]


@pytest.mark.parametrize(("keywords", "message"), ANCHOR_ARGUMENT_CASES)
def test_bad_anchor_keywords_name_the_argument(keywords, message) -> None:
    bb = featx.build("resnet18_fpn", overrides=["device=meta"])
    with pytest.raises(featx.ArgumentError, match=r"^anchor_generator\(\): " + message):
        anchor_generator(bb, **keywords)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("7",), r"output_size \(an int or a pair\) must be an integer in 1\.\.256, got '7'"),
        (((7, 0),), r"output_size \(an int or a pair\) must be an integer in 1\.\.256, got 0"),
        ((10**6,), r"output_size \(an int or a pair\) must be an integer in 1\.\.256, got 1000000"),
        ((7, None), r"sampling_ratio must be an integer in 0\.\.256, got None"),
        ((7, -1), r"sampling_ratio must be an integer in 0\.\.256, got -1"),
    ],
)
def test_bad_pooler_arguments_name_the_argument(arguments, message) -> None:
    bb = featx.build("resnet18_fpn", overrides=["device=meta"])
    with pytest.raises(featx.ArgumentError, match=r"^roi_pooler\(\): " + message):
        roi_pooler(bb, *arguments)


def test_anchor_keywords_take_numpy_and_torch_numbers() -> None:
    bb = featx.build("resnet18_fpn", overrides=["device=meta"])
    plain = anchor_generator(bb, size_per_stride=8.0, sizes_per_octave=2, aspect_ratios=[0.5, 1.0, 2.0])
    for keywords in (
        {"size_per_stride": np.float32(8.0), "sizes_per_octave": np.int64(2), "aspect_ratios": np.array([0.5, 1, 2])},
        {
            "size_per_stride": torch.tensor(8.0),
            "sizes_per_octave": torch.tensor(2),
            "aspect_ratios": torch.tensor([0.5, 1, 2]),
        },
    ):
        other = anchor_generator(bb, **keywords)
        assert other.sizes == plain.sizes and other.aspect_ratios == plain.aspect_ratios


def test_roi_pooler_refuses_a_stride_that_is_not_a_power_of_two() -> None:
    """MultiScaleRoIAlign rounds a stride-14 map's scale to 1/16: boxes were pooled from the wrong region."""
    bb = featx.build("vit_h_14", overrides=["device=meta"])
    with pytest.raises(
        featx.ArgumentError,
        match=r"powers of two.*got blocks4 \(stride 14\); for a token model set tokens.stride to a power of two "
        r"\(vit_h_14_fpn uses 16\)$",
    ):
        roi_pooler(bb)


def test_roi_pooler_takes_a_height_and_width_as_torchvision_does() -> None:
    bb = featx.build("resnet18_fpn", overrides=["device=meta"])
    assert roi_pooler(bb, (7, 5)).output_size == (7, 5)


@pytest.mark.parametrize(
    ("source", "overrides", "levels"),
    [
        ("resnet50_fpn", ["out_features=[c3,c5]"], r"p3 \(stride 8\), p5 \(stride 32\)"),
        ("resnet18", ["out_features=[c3]", "fpn.out_channels=64"], None),
    ],
)
def test_roi_pooler_refuses_levels_that_skip_a_stride(source, overrides, levels) -> None:
    """MultiScaleRoIAlign pools a box of level k from map k - k_min: with p3 and p5 only, level-4 boxes were pooled
    from p5 and level-5 boxes came back as zeros."""
    bb = featx.build(source, overrides=["device=meta", *overrides])
    if levels is None:
        assert roi_pooler(bb).featmap_names == ["p3"]
        return
    with pytest.raises(
        featx.ArgumentError,  # an FPN keeps its stages' strides: the hint to add one misled
        match=r"^roi_pooler\(\): .*powers of two, doubling from one to the next .*got "
        + levels
        + r"; return consecutive stages \(out_features\)$",
    ):
        roi_pooler(bb)


@pytest.mark.parametrize(
    ("source", "overrides", "levels", "remedy"),
    [
        (
            "vgg16",
            ["out_features=[c1,c2,c3,c5]", "fpn={out_channels: 64, extra_blocks: maxpool}"],
            "'0' (c1, stride 1), '1' (c2, stride 2), '2' (c3, stride 4), '3' (c5, stride 16)",
            "return consecutive stages (out_features)",
        ),
        (
            "resnet18",
            ["out_features=[c2,c3,c5]", "fpn={out_channels: 64, extra_blocks: p6p7}"],
            "'0' (c2, stride 4), '1' (c3, stride 8), '2' (c5, stride 32)",
            "return consecutive stages (out_features)",
        ),
        (
            "vit_b_16",
            ["out_features=[blocks3,blocks4]"],
            "'0' (blocks3, stride 16), '1' (blocks4, stride 16)",
            "return one of them (out_features), or the simple pyramid's levels (fpn.style: simple)",
        ),
        (
            "vit_h_14",
            [],
            "'0' (blocks4, stride 14)",
            "for a token model set tokens.stride to a power of two (vit_h_14_fpn uses 16)",
        ),
    ],
)
def test_torchvision_output_names_refuse_maps_the_default_pooler_pools_wrongly(source, overrides, levels, remedy):
    """``output_names: torchvision`` with a stage skipped (vgg16 c1, c2, c3, c5 and ``maxpool``: '0'..'3', 'pool', as
    the docs' four returned stages): the R-CNNs' default MultiScaleRoIAlign pooled a 300-pixel box as zeros and the
    detector went on. Refused as roi_pooler() refuses the layout; the simple pyramid's levels always double."""
    with pytest.raises(featx.SpecError) as caught:
        featx.build(source, overrides=["device=meta", "output_names=torchvision", *overrides])
    assert str(caught.value) == (
        "backbone.output_names: torchvision: torchvision's detectors pool these maps with their default "
        "MultiScaleRoIAlign, which needs strides that are powers of two, doubling from one map to the next (else a box "
        f"is pooled from the wrong map, or as zeros), got {levels}; {remedy}, or keep output_names: featx"
    )
    if source == "vit_b_16":
        simple = ["output_names=torchvision", "out_features=[blocks4]", "fpn={out_channels: 64, style: simple}"]
        bb = featx.build(source, overrides=["device=meta", *simple])
        assert [(info.name, info.stride) for info in bb.feature_info] == [("0", 4), ("1", 8), ("2", 16), ("3", 32)]


def test_torchvision_output_names_of_consecutive_stages_pool_every_box_size() -> None:
    """The layout output_names: torchvision keeps: torchvision's own default pooler (FasterRCNN's box_roi_pool)
    pools boxes of every size from a map, none as zeros."""
    overrides = ["device=cpu", "output_names=torchvision", "fpn={out_channels: 32, extra_blocks: maxpool}"]
    bb = featx.build("resnet18", overrides=overrides).eval()
    model = FasterRCNN(bb, num_classes=3, min_size=256, max_size=256).eval()
    boxes = [torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 250.0, 250.0]])]
    with torch.no_grad():
        pooled = model.roi_heads.box_roi_pool(bb(torch.rand(1, 3, 256, 256)), boxes, [(256, 256)])
    assert model.roi_heads.box_roi_pool.scales == [0.25, 0.125, 0.0625, 0.03125]
    assert bool((pooled.abs().flatten(1).sum(1) > 0).all())


def test_roi_pooler_refuses_outputs_of_one_stride() -> None:
    """A ViT's blocks all have stride 16: every RoI would be pooled from the first of them."""
    bb = featx.build("vit_b_16", overrides=["device=meta", "out_features=[blocks3,blocks4]"])
    with pytest.raises(featx.ArgumentError) as caught:  # the advice to return consecutive stages could not help
        roi_pooler(bb)
    assert str(caught.value).endswith(
        "got blocks3 (stride 16), blocks4 (stride 16); return one of them (out_features), or the simple pyramid's "
        "levels (fpn.style: simple)"
    )


@pytest.mark.parametrize("output", ["c5", "p3"])
@pytest.mark.parametrize("head_type", [FCNHead, DeepLabHead])
def test_segmentation_heads_train_on_a_featx_output(head_type: type, output: str) -> None:
    torch.manual_seed(0)
    overrides = ["device=cpu"] + (["fpn={out_channels: 64}"] if output.startswith("p") else [])
    bb = featx.build("resnet18", overrides=overrides)
    info = next(i for i in bb.feature_info if i.name == output)
    head = head_type(info.channels, 5)
    images = torch.rand(2, 3, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))

    logits = head(bb(images)[output])
    assert logits.shape == (2, 5, 64 // info.stride, 64 // info.stride)
    upsampled = nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    loss = nn.functional.cross_entropy(upsampled, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is not None for p in bb.stages["c4"].parameters())  # trainable stage below the output
    assert all(p.grad is None and not p.requires_grad for p in bb.stages["c2"].parameters())  # frozen by the spec


@pytest.mark.parametrize("argument", [None, "resnet18", torch.nn.Linear(1, 1)])
def test_pooled_level_names_names_an_argument_that_is_not_a_backbone(argument) -> None:
    from featx.detection import pooled_level_names

    with pytest.raises(featx.ArgumentError, match=r"^pooled_level_names\(\): expected a featx Backbone"):
        pooled_level_names(argument)
