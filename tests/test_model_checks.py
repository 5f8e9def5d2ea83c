"""Checks that need the model: names, source paths, slice ends, module paths, overlaps, stages that do not chain."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from helpers import resnet18_spec
from torch import nn

import featx
from featx.construct.execution_order import check_execution_order
from featx.construct.members import StageMembers
from featx.construct.meta_model import MetaModel
from featx.construct.plan import plan_backbone
from featx.construct.probe import input_channels, stride_of


def _plan(spec):
    spec = featx.load_spec(spec)
    return plan_backbone(spec, MetaModel.create(spec.model).model)


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(featx.SpecError) as caught:
        _plan(resnet18_spec(model="resnet5"))
    assert str(caught.value).startswith("backbone.model: unknown torchvision model 'resnet5'; did you mean resnet50")


def test_detection_models_are_not_classification_backbones():
    with pytest.raises(
        featx.SpecError, match="'fasterrcnn_resnet50_fpn' is a torchvision detection model, not one of the classifiers"
    ):
        _plan(resnet18_spec(model="fasterrcnn_resnet50_fpn"))


def test_slice_past_the_end_counts_the_children():
    spec = {"model": "vgg16", "source": "features", "stages": {"c1": {"slice": [0, 4]}, "c5": {"slice": [4, 40]}}}
    with pytest.raises(featx.SpecError) as caught:
        _plan(spec)
    assert str(caught.value) == "backbone.stages.c5.slice: end 40 is past the end of 'features' (31 children)"


def test_missing_source_lists_the_children():
    spec = {"model": "vgg16", "source": "feature", "stages": {"c1": {"slice": [0, 4]}}}
    with pytest.raises(featx.SpecError) as caught:
        _plan(spec)
    message = str(caught.value)
    assert message.startswith("backbone.source: 'feature' not found: the model root has no child 'feature'")
    assert "did you mean features?" in message and "(its children: features, avgpool, classifier)" in message


def test_missing_module_path_lists_the_children_that_exist():
    with pytest.raises(featx.SpecError) as caught:
        _plan(resnet18_spec(stages={"c2": {"modules": ["conv1", "layer9"]}}))
    message = str(caught.value)
    assert message.startswith("backbone.stages.c2.modules[1]: 'layer9' not found: the model root has no child 'layer9'")
    assert "conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc" in message


def test_missing_dotted_path_names_the_parent():
    with pytest.raises(
        featx.SpecError, match=r"'layer1\.7' not found: 'layer1' has no child '7' \(its children: 0, 1\)"
    ):
        _plan(resnet18_spec(stages={"c2": {"modules": ["conv1", "layer1.7"]}}))


def test_dotted_paths_select_nested_blocks():
    plan = _plan(
        resnet18_spec(
            stages={"a": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1.0"]}, "b": {"modules": ["layer1.1"]}}
        )
    )
    assert [(s.name, s.channels, s.stride) for s in plan.stages] == [("a", 64, 4), ("b", 64, 4)]


def test_a_module_in_two_stages_is_rejected():
    spec = resnet18_spec(
        stages={
            "c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]},
            "c3": {"modules": ["layer1.1", "layer2"]},
        }
    )
    with pytest.raises(
        featx.SpecError, match=r"^backbone\.stages\.c3\.modules: 'layer1\.1' overlaps 'layer1' \(in stage 'c2' too\)"
    ):
        _plan(spec)


def test_a_skipped_module_is_named():
    spec = resnet18_spec(
        stages={"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "c4": {"modules": ["layer3"]}}
    )
    with pytest.raises(featx.SpecError) as caught:
        _plan(spec)
    assert str(caught.value).startswith(
        "backbone.stages.c4: the model's forward runs 'layer2' after 'layer1', but no stage lists it"
    )


def test_stages_that_do_not_chain_name_the_failing_stage():
    """In the model's order, but the forward flattens before ``fc``, which the stages do not."""
    stages = {
        "c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]},
        "c5": {"modules": ["layer2", "layer3", "layer4", "avgpool", "fc"]},
    }
    spec = resnet18_spec(stages=stages)
    with pytest.raises(featx.SpecError) as caught:
        _plan(spec)
    assert str(caught.value).startswith(
        "backbone.stages.c5: the model's own forward at 224x224 gives 'fc' an input of shape (1, 512), the stages "
        "give it (1, 512, 1, 1): the forward does more before it than call the listed modules"
    )


def test_an_input_size_the_model_cannot_take_is_blamed_and_names_the_module_it_never_reaches():
    """At an input_size too small for Inception, its own forward stops early: input_size is blamed, and the first
    member the forward never ran is named with its error."""
    spec = {"model": "inception_v3", "stages": {"c2": {"modules": ["Conv2d_1a_3x3", "Conv2d_2a_3x3"]}}}
    with pytest.raises(featx.SpecError) as caught:
        featx.build(spec, overrides=["device=meta", "input_size=[2,2]"])
    assert str(caught.value).startswith(
        "backbone.input_size: the model's own forward fails at 2x2 before it runs 'Conv2d_2a_3x3' (RuntimeError: "
        "Calculated padded input size per channel: (2 x 2)."
    )
    assert str(caught.value).endswith("; the model may take one input size only, or need a larger one")


def test_an_input_size_a_fixed_size_model_does_not_take_is_blamed():
    """timm's Swin takes 224x224 only; the stages were blamed for the forward's assertion."""
    pytest.importorskip("timm")
    with pytest.raises(
        featx.SpecError, match=r"^backbone\.input_size: .* fails at 256x256 before it runs 'layers\.0' "
    ):
        featx.build("timm_swin_tiny", overrides=["device=meta", "input_size=[256,256]"])


def test_a_member_the_forward_never_runs_at_the_models_own_size_is_blamed_on_its_stage():
    spec = {"model": "resnet18", "stages": {"c2": {"modules": ["conv1", "fc"]}}}
    with pytest.raises(featx.SpecError, match=r"^backbone\.stages\.c2: "):
        featx.build(spec, overrides=["device=meta"])


def test_a_stage_whose_output_is_not_a_feature_map_is_rejected():
    spec = {
        "model": "swin_t",
        "layout": "nhwc",
        "stages": {"body": {"modules": ["features"]}, "head": {"modules": ["norm", "permute", "avgpool", "flatten"]}},
    }
    with pytest.raises(featx.SpecError) as caught:
        _plan(spec)
    assert str(caught.value) == "backbone.stages.head: output is not a 4-D feature map (got (1, 768))"


def test_a_stage_ending_on_a_global_pool_is_rejected():
    spec = resnet18_spec(
        stages={
            "c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]},
            "pooled": {"modules": ["layer2", "layer3", "layer4", "avgpool"]},
        }
    )
    with pytest.raises(
        featx.SpecError, match=r"backbone\.stages\.pooled: output size 1x1 does not change with the input size"
    ):
        _plan(spec)


@pytest.mark.parametrize(
    ("model", "layout", "expected"),
    [("resnet18", "nhwc", "set layout: nchw"), ("swin_t", "nchw", "set layout: nhwc")],
)
def test_a_layout_that_does_not_fit_the_outputs_is_rejected(model, layout, expected):
    stages = (
        {"a": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}}
        if model == "resnet18"
        else {"a": {"modules": ["features"]}}
    )
    with pytest.raises(featx.SpecError) as caught:
        _plan({"model": model, "layout": layout, "stages": stages})
    assert str(caught.value).startswith(f"backbone.layout: '{layout}' does not fit stage 'a'")
    assert str(caught.value).endswith(expected)


def test_swin_with_nhwc_layout_reads_channels_from_the_last_dimension():
    plan = _plan(
        {
            "model": "swin_t",
            "layout": "nhwc",
            "source": "features",
            "stages": {"s1": {"slice": [0, 2]}, "s2": {"slice": [2, 4]}},
        }
    )
    assert [(s.channels, s.stride) for s in plan.stages] == [(96, 4), (192, 8)]


def test_a_slice_after_a_modules_stage_must_continue_where_it_ended():
    spec = {
        "model": "vgg16",
        "source": "features",
        "stages": {"a": {"modules": ["features.0"]}, "b": {"slice": [2, 9]}},
    }
    with pytest.raises(featx.SpecError) as caught:
        _plan(spec)
    assert str(caught.value) == (
        "backbone.stages.b.slice: starts at 2 but stage 'a' ends on child 0 ('0'); stages feed each other, "
        "so the slice must start right after it"
    )
    spec["stages"]["b"]["slice"] = [1, 9]
    assert [s.channels for s in _plan(spec).stages] == [64, 128]


def test_fpn_levels_with_equal_strides_are_rejected():
    spec = resnet18_spec(
        stages={"stem": {"modules": ["conv1", "bn1", "relu", "maxpool"]}, "c2": {"modules": ["layer1"]}},
        fpn={"out_channels": 32},
    )
    with pytest.raises(featx.SpecError, match=r"backbone\.fpn: FPN levels need strictly increasing strides"):
        featx.build(spec, overrides=["device=meta"])


def test_layers_after_the_last_returned_stage_are_dropped():
    plan = _plan(resnet18_spec(out_features=["c3"]))
    assert [s.name for s in plan.stages] == ["c2", "c3"]
    backbone = featx.build(resnet18_spec(out_features=["c3"]))
    names = {name for name, _ in backbone.named_parameters()}
    assert not any("layer3" in name or "fc" in name for name in names)
    assert list(backbone.stages) == ["c2", "c3"]


class _TwoOfThree(nn.Module):
    """A model whose forward runs ``a`` then ``b``; ``unused`` is never called (like a training-only branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.unused = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.b(self.a(x))


def test_a_member_listed_after_everything_the_forward_runs_is_refused():
    members = [StageMembers("c1", ("a",), "a"), StageMembers("c2", ("b", "unused"), "b, unused")]
    with pytest.raises(featx.SpecError) as caught:
        check_execution_order(_TwoOfThree(), members, (64, 64))
    assert str(caught.value).startswith(
        "backbone.stages.c2: the model's own forward at 64x64 (eval mode) never runs 'unused'"
    )


def test_strides_of_a_fixed_odd_input_size_are_rounded_to_the_nearest_power_of_two():
    """A model that takes one size only is measured at it: at 97x97 maps 25, 13 and 7 high (ratios 3.9, 7.5, 13.9)
    have strides 4, 8 and 16."""
    assert [stride_of((1, 64, height, height), "nchw", (97, 97)) for height in (25, 13, 7)] == [4, 8, 16]


@pytest.mark.parametrize("size", [[33, 33], [8, 8], [97, 97], [64, 200]])
def test_an_input_size_does_not_change_the_strides_of_a_model_that_takes_any_size(size):
    """ResNet at 33x33 makes maps 9, 5, 3 and 2 high: read at that size alone they gave strides 4, 8, 8, 16. A model
    that runs at the probe sizes is measured there; its declared input_size must still run."""
    stages = {"c5": {"modules": ["layer4"]}}
    backbone = featx.build(resnet18_spec(input_size=size, stages={**resnet18_spec()["stages"], **stages}))
    assert [(info.name, info.stride) for info in backbone.feature_info] == [
        ("c2", 4),
        ("c3", 8),
        ("c4", 16),
        ("c5", 32),
    ]
    with_fpn = featx.build(
        resnet18_spec(input_size=size, stages={**resnet18_spec()["stages"], **stages}, fpn={"out_channels": 8})
    )
    outputs = with_fpn(torch.zeros(1, 3, *size))
    assert list(outputs) == ["p2", "p3", "p4", "p5"]


class _ThreeConvs(nn.Module):
    """A user's model: three convolutions, and whatever its forward does before and between them."""

    def __init__(self, between=lambda x: x, first=lambda x: x, hooked=False, **kwargs) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1)
        self.conv3, self.between, self.first = nn.Conv2d(16, 16, 3, 2, 1), between, first
        if hooked:  # a pre-hook of the model's own: the stages call conv2 and run it too
            self.conv2.register_forward_pre_hook(lambda _module, args: (args[0] * 2.0,))

    def forward_features(self, x):
        return self.conv3(self.conv2(self.between(self.conv1(self.first(x)))))

    def forward(self, x):
        return self.forward_features(x).mean((2, 3))


#: model name -> (its keywords, the start of the refusal or None: it builds and equals the model's own features)
_VARIANTS = {
    "featx_test_scaled": ({"between": lambda x: torch.relu(x) * 10}, "computes on the output of 'conv1'"),
    "featx_test_flipped": ({"between": lambda x: torch.flip(x, [-1])}, "computes on the output of 'conv1'"),
    "featx_test_in_place": ({"between": lambda x: x.mul_(2)}, "changes the output of 'conv1' in place"),
    "featx_test_input_scaled": ({"first": lambda x: x * 2}, "computes on the model's input"),
    "featx_test_chain": ({}, None),
    "featx_test_hooked": ({"hooked": True}, None),
}
_THREE_STAGES = {"c1": {"modules": ["conv1"]}, "c2": {"modules": ["conv2"]}, "c3": {"modules": ["conv3"]}}


@pytest.mark.parametrize("name", list(_VARIANTS))
def test_an_operation_before_or_between_modules_that_keeps_the_shape_is_refused(name, tmp_path):
    """Shapes alone let a scaling, a flip or an in-place change before or between listed modules pass: the stages
    skipped it and their features differed from the model's (they pass the input and each output straight on). A
    forward pre-hook of the model's own is no such operation: the stages run it too."""
    timm = pytest.importorskip("timm")
    keywords, message = _VARIANTS[name]
    if name not in timm.list_models():
        timm.models.register_model(_builder(name, keywords))
    spec = {"model": f"timm:{name}", "device": "cpu", "stages": _THREE_STAGES}
    if message is not None:
        stage, following = ("c1", "conv1") if "input" in message else ("c2", "conv2")
        pattern = (
            rf"^backbone\.stages\.{stage}: the model's own forward {re.escape(message)} before it calls '{following}'"
        )
        with pytest.raises(featx.SpecError, match=pattern):
            featx.build(spec)
        return
    model = timm.create_model(name).eval()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    backbone = featx.build({**spec, "weights": str(tmp_path / "model.pth")}).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(x)["c3"], model.forward_features(x))


def _builder(name, keywords):
    """A timm model builder named ``name`` (timm registers a builder by its ``__name__``)."""

    def build(pretrained=False, **kwargs):
        return _ThreeConvs(**keywords)

    build.__name__ = build.__qualname__ = name
    return build


def test_a_stage_whose_stride_is_no_power_of_two_is_refused():
    """ConvMixer's stem is a 7x7 convolution of stride 7 (timm's feature_info says reduction 7): read as the
    nearest power of two, its stages were reported at stride 8 and an FPN's levels named and sized by it."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model("convmixer_768_32")
    assert {info["reduction"] for info in model.feature_info} == {7}
    spec = {
        "model": "timm:convmixer_768_32",
        "source": "blocks",
        "stages": {"c3": {"modules": ["stem", "blocks.0"]}, "c4": {"slice": [1, 16]}, "c5": {"slice": [16, 32]}},
        "device": "meta",
    }
    with pytest.raises(featx.SpecError) as caught:
        featx.build(spec)
    assert str(caught.value) == (
        "backbone.stages.c3: its maps grow by 13 rows for 96 more input rows (224x288 and 320x416): a stride of about "
        "7, not a power of two (stride 8 would grow them by 12); featx measures strides as powers of two, which name "
        "and size the levels (p2 = stride 4 ... p5 = stride 32)"
    )


class _ClashingNames(nn.Module):
    """``a.b`` and ``a_b`` (one name in a stage's container), and a child named ``append`` (nn.Sequential's)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(OrderedDict(b=nn.Conv2d(3, 3, 3, padding=1)))
        self.a_b = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.append = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.append(self.a_b(self.a(x))))


def featx_test_clashing_names(pretrained=False, **kwargs):
    return _ClashingNames()


@pytest.mark.parametrize(
    "modules, message",
    [
        (  # both members were named a_b: the container kept 'a_b' only and the stage skipped 'a.b' silently
            ["a.b", "a_b"],
            r"'a\.b' and 'a_b' would both be named 'a_b' in the stage \(a member is named by its path, '\.' as '_'\); "
            r"list a module that holds both instead$",
        ),
        (  # torch's KeyError: attribute 'append' already exists
            ["a", "a_b", "append"],
            r"'append' would be named 'append' in the stage, a name nn\.Sequential uses itself; list the module that ",
        ),
    ],
)
def test_member_paths_that_cannot_be_named_in_the_stage_are_refused(modules, message):
    timm = pytest.importorskip("timm")
    if "featx_test_clashing_names" not in timm.list_models():
        timm.models.register_model(featx_test_clashing_names)
    stages = {"s1": {"modules": modules}, "s2": {"modules": ["c"]}}
    with pytest.raises(featx.SpecError, match=r"^backbone\.stages\.s1\.modules: " + message):
        featx.build({"model": "timm:featx_test_clashing_names", "device": "cpu", "stages": stages})


@pytest.mark.parametrize("size, example", [([70, 70], "80x80"), ([72, 64], "80x64"), ([8, 224], "16x224")])
def test_an_input_size_that_is_no_multiple_of_the_patch_is_refused_at_build(size, example):
    """vit_b_16 built with input_size 70x70, then refused every input (that size too) with an InputShapeError
    naming no key."""
    with pytest.raises(featx.SpecError) as error:
        featx.build("vit_b_16", overrides=["device=meta", f"input_size=[{size[0]},{size[1]}]"])
    assert str(error.value).endswith(
        f"backbone.input_size: {size[0]}x{size[1]}: a token model takes sides that are multiples of its patch "
        f"stride 16 (e.g. {example})"
    )


class _SpaceToDepthNet(nn.Module):
    """A user's model that folds each 2x2 block of pixels into channels before its first convolution (as timm's
    TResNet folds 4x4 blocks), the convolution taking 4 x ``channels``; it declares no input channel count."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.s2d = nn.PixelUnshuffle(2)
        self.conv1 = nn.Conv2d(4 * channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.s2d(x)))


def featx_test_space_to_depth(pretrained=False, **kwargs):
    return _SpaceToDepthNet()


def featx_test_space_to_depth_5(pretrained=False, **kwargs):
    return _SpaceToDepthNet(channels=5)


_S2D_STAGES = {"c1": {"modules": ["s2d", "conv1"]}, "c2": {"modules": ["conv2"]}}


def _register(*builders):
    timm = pytest.importorskip("timm")
    for builder in builders:
        if builder.__name__ not in timm.list_models():
            timm.models.register_model(builder)
    return timm


def test_a_layer_that_changes_the_channels_before_the_first_convolution_takes_the_images_three(tmp_path):
    """The input was given the channels of the first layer with in_channels (12): the model's own forward failed
    on it and the spec was refused as never running 'conv2'; the 3 channels that run through are taken."""
    timm = _register(featx_test_space_to_depth)
    model = timm.create_model("featx_test_space_to_depth").eval()
    torch.save(model.state_dict(), tmp_path / "model.pth")
    spec = {"model": "timm:featx_test_space_to_depth", "device": "cpu", "stages": _S2D_STAGES}
    backbone = featx.build({**spec, "weights": str(tmp_path / "model.pth")}).eval()
    assert backbone.in_channels == 3
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [("c1", 8, 2), ("c2", 16, 4)]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        outputs = backbone(x)
        assert torch.equal(outputs["c1"], model.conv1(model.s2d(x)))
        assert torch.equal(outputs["c2"], model(x))


def test_a_first_layer_whose_channels_run_neither_as_found_nor_as_three_is_refused():
    _register(featx_test_space_to_depth_5)
    with pytest.raises(featx.SpecError) as caught:
        featx.build({"model": "timm:featx_test_space_to_depth_5", "device": "meta", "stages": _S2D_STAGES})
    assert str(caught.value) == (
        "backbone.model: featx cannot tell how many channels the model's input has: its first layer with "
        "in_channels (Conv2d) takes 20, but the layers registered before it (PixelUnshuffle) turn neither 20 nor 3 "
        "channels into 20 (they give 80 and 12)"
    )


@pytest.mark.parametrize("declare", ["in_chans", "pretrained_cfg"])
def test_the_input_channels_a_model_declares_are_taken_at_its_word(declare):
    """A one-channel model folding 2x2 blocks (its first convolution takes 4): neither 4 nor 3 channels run, but it
    says 1, as timm models do with in_chans and their pretrained_cfg's input_size."""
    model = _SpaceToDepthNet(channels=1)
    if declare == "in_chans":
        model.in_chans = 1
    else:
        model.pretrained_cfg = {"input_size": (1, 224, 224)}
    assert input_channels(model) == 1
