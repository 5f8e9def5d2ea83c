"""The Backbone module's contract: input checks, out_channels, device handling."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from helpers import resnet18_spec

import featx


@pytest.fixture(scope="module")
def backbone():
    return featx.build(resnet18_spec()).eval()


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 1, 3, 64, 64), (64,)])
def test_input_that_is_not_4d_names_the_expected_shape(backbone, shape):
    with pytest.raises(featx.InputShapeError) as caught:
        backbone(torch.randn(*shape))
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, featx.FeatxError)
    assert str(caught.value) == (
        f"featx backbone 'resnet18' expects a floating-point batch of shape (N, 3, H, W), got {shape} torch.float32"
    )


def test_input_with_the_wrong_channel_count_names_the_expected_shape(backbone):
    with pytest.raises(featx.InputShapeError, match=r"shape \(N, 3, H, W\), got \(2, 1, 64, 64\) torch.float32"):
        backbone(torch.randn(2, 1, 64, 64))


def test_integer_images_are_refused_before_the_first_conv(backbone):
    with pytest.raises(
        featx.InputShapeError, match=r"expects a floating-point batch .* got \(1, 3, 64, 64\) torch.uint8"
    ):
        backbone(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_out_channels_is_none_when_outputs_differ(backbone):
    assert [i.channels for i in backbone.feature_info] == [64, 128, 256]
    assert backbone.out_channels is None


def test_auto_device_picks_what_this_machine_has():
    backbone = featx.build(resnet18_spec(device="auto"))
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert next(backbone.parameters()).device.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_unavailable_cuda_is_an_error_never_a_fallback(device):
    with pytest.raises(featx.DeviceError) as caught:
        featx.build(resnet18_spec(device=device))
    assert str(caught.value).startswith(f"backbone.device: '{device}' is not available on this machine")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_unavailable_mps_is_an_error():
    with pytest.raises(featx.DeviceError, match="backbone.device: 'mps' is not available"):
        featx.build(resnet18_spec(device="mps"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backbone_runs_on_cuda():
    backbone = featx.build(resnet18_spec(device="cuda", fpn={"out_channels": 32})).eval()
    with torch.inference_mode():
        outputs = backbone(torch.randn(1, 3, 64, 64, device="cuda"))
    assert all(t.is_cuda for t in outputs.values())


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    reference = featx.build(resnet18_spec(norm="eval")).eval()
    state = reference.state_dict()
    channels_last = featx.build(resnet18_spec(norm="eval", channels_last=True)).eval()
    channels_last.load_state_dict(state)
    conv = channels_last.stages["c2"].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for name, tensor in reference(x).items():
            torch.testing.assert_close(
                channels_last(x.contiguous(memory_format=torch.channels_last))[name], tensor, rtol=1e-4, atol=1e-4
            )


def test_meta_device_builds_the_structure_without_memory():
    spec = resnet18_spec(fpn={"out_channels": 16, "extra_blocks": "p6p7"}, weights="DEFAULT")  # weights not read
    meta = featx.build(spec, overrides=["device=meta"])
    real = featx.build({**spec, "weights": None})
    assert all(t.is_meta for t in meta.state_dict().values())
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}
    assert meta.feature_info == real.feature_info
    outputs = meta(torch.empty(2, 3, 97, 131, device="meta"))
    assert {k: v.shape for k, v in outputs.items()} == {
        k: v.shape for k, v in real.eval()(torch.randn(2, 3, 97, 131)).items()
    }


def test_a_hand_made_neck_must_name_an_input_for_every_returned_stage():
    """Backbone built by hand: a neck describing fewer inputs than there are returned stages would silently get only
    some of them; it is refused with both lists named."""
    from featx.nn.backbone import Backbone
    from featx.nn.feature_info import FeatureInfo, StageInfo

    stages = {"a": torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), "b": torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)}
    info = [StageInfo("a", 4, 2, ("a",), "a"), StageInfo("b", 8, 4, ("b",), "b")]
    spec = featx.BackboneSpec(
        model="custom", stages={"a": featx.StageSpec(modules=["a"]), "b": featx.StageSpec(modules=["b"])}
    )

    class Fuse(torch.nn.Module):
        feature_info = [FeatureInfo("fused", 8, 4)]

        def forward(self, features):
            return {"fused": features["b"]}

    with pytest.raises(featx.ArgumentError) as caught:
        Backbone(stages, info, spec, Fuse())
    assert str(caught.value) == (
        "Backbone(): 2 returned stages (a, b) but the neck names 1 inputs (fused); give the neck input_names, one per "
        "returned stage"
    )
    named = Fuse()
    named.input_names = ["a", "b"]
    backbone = Backbone(stages, info, spec, named).eval()
    assert backbone(torch.randn(1, 3, 16, 16))["fused"].shape == (1, 8, 4, 4)


def _described(backbone, x):
    """(name, channels, stride) of each output as the forward computes it."""
    return [(name, t.shape[1], x.shape[-1] // t.shape[-1]) for name, t in backbone(x).items()]


def test_assigning_the_neck_re_describes_the_outputs():
    """bb.neck = None (or another neck) changed what the forward returns while feature_info and out_channels still
    described the FPN's levels."""
    from featx.nn.feature_info import FeatureInfo

    backbone = featx.build("resnet18_fpn", overrides=["device=cpu", "fpn.out_channels=32"]).eval()
    x = torch.randn(1, 3, 64, 64)
    backbone.neck = None
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == _described(backbone, x)
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [
        ("c2", 64, 4),
        ("c3", 128, 8),
        ("c4", 256, 16),
        ("c5", 512, 32),
    ]
    assert backbone.out_channels is None

    class Deepest(torch.nn.Module):
        input_names = ["c2", "c3", "c4", "c5"]
        feature_info = [FeatureInfo("top", 512, 32)]

        def forward(self, features):
            return {"top": features["c5"]}

    backbone.neck = Deepest()
    assert (
        [(i.name, i.channels, i.stride) for i in backbone.feature_info] == _described(backbone, x) == [("top", 512, 32)]
    )
    assert backbone.out_channels == 512


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"frozen_stages": -1}, r"^backbone\.frozen_stages: -1 is out of range; valid: 0\.\.4"),
        ({"norm": "fozen"}, r"^backbone\.norm: unknown value 'fozen'; did you mean frozen\?"),
        ({"out_features": []}, r"^backbone\.out_features: empty list"),
        ({"frozen_stages": 1.5}, r"^backbone\.frozen_stages: "),
    ],
    ids=["frozen-negative", "norm-typo", "no-outputs", "frozen-float"],
)
def test_a_hand_made_backbone_checks_its_spec_as_build_does(changes, message):
    """A BackboneSpec made by hand reached Backbone() unchecked: frozen_stages=-1 froze all but the last stage, a norm
    typo meant train, out_features=[] returned nothing, and frozen_stages=1.5 was a TypeError from a slice."""
    built = featx.build("resnet18", overrides=["device=cpu"])
    spec = dataclasses.replace(built.spec, **changes)
    with pytest.raises(featx.SpecError, match=message):
        featx.Backbone(dict(built.stages.items()), list(built.stage_info), spec)


def test_a_neck_that_does_not_fit_is_refused_and_the_old_one_kept():
    backbone = featx.build("resnet18_fpn", overrides=["device=cpu", "fpn.out_channels=32"])
    fpn = backbone.neck
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.neck = torch.nn.Identity()
    assert str(caught.value) == "Backbone.neck: the neck Identity has no feature_info describing its outputs"
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.neck = "fpn"
    assert str(caught.value) == "Backbone.neck: the neck must be a torch.nn.Module or None, got str"
    other = featx.build("resnet50_fpn", overrides=["device=meta"]).neck  # built for ResNet-50's widths
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.neck = other
    assert str(caught.value) == (
        "Backbone.neck: the neck takes maps of 256 channels at stride 4, 512 channels at stride 8, 1024 channels at "
        "stride 16, 2048 channels at stride 32, the returned stages give c2=64 at 4, c3=128 at 8, c4=256 at 16, "
        "c5=512 at 32"
    )
    assert backbone.neck is fpn and [i.name for i in backbone.feature_info] == ["p2", "p3", "p4", "p5"]


def test_a_neck_built_for_other_strides_is_refused_though_the_widths_fit():
    """Only the widths were compared: VGG's c3/c4 FPN (512, 512 channels at strides 8, 16) on c4/c5 (512, 512 at 16,
    32) was taken, and feature_info named strides 8 and 16 for maps at 16 and 32 (anchors for the wrong scales)."""
    other = featx.build("vgg11", overrides=["device=meta", "out_features=[c3,c4]", "fpn={out_channels: 64}"]).neck
    backbone = featx.build("vgg11", overrides=["device=meta", "out_features=[c4,c5]"])
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.neck = other
    assert str(caught.value) == (
        "Backbone.neck: the neck takes maps of 512 channels at stride 8, 512 channels at stride 16, the returned "
        "stages give c4=512 at 16, c5=512 at 32"
    )
    assert backbone.neck is None and [i.name for i in backbone.feature_info] == ["c4", "c5"]


def test_deleting_or_adding_the_neck_as_a_module_re_describes_the_outputs():
    """``del bb.neck`` and ``add_module("neck", ...)`` (``register_module``) go through nn.Module's own paths, which
    left feature_info describing the old outputs (or the forward failing on a missing attribute)."""
    backbone = featx.build("resnet18_fpn", overrides=["device=cpu", "fpn.out_channels=32"]).eval()
    fpn, x = backbone.neck, torch.randn(1, 3, 64, 64)
    del backbone.neck
    assert backbone.neck is None and "neck" not in dict(backbone.named_children())
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == _described(backbone, x)
    assert [i.name for i in backbone.feature_info] == ["c2", "c3", "c4", "c5"]
    backbone.register_module("neck", fpn)
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == _described(backbone, x)
    assert [i.name for i in backbone.feature_info] == ["p2", "p3", "p4", "p5"] and backbone.out_channels == 32
    backbone.add_module("neck", None)
    assert [i.name for i in backbone.feature_info] == ["c2", "c3", "c4", "c5"] and backbone.out_channels is None
    with pytest.raises(featx.ArgumentError, match=r"^Backbone\.neck: the neck Identity has no feature_info"):
        backbone.add_module("neck", torch.nn.Identity())


def test_a_hand_made_backbone_names_a_bad_argument():
    """Backbone() is documented for hand-made stages; its arguments failed with raw errors (or a string for copied
    became a set of letters, so a stage changed in place later was returned changed)."""
    built = featx.build("resnet18", overrides=["device=cpu"])
    stages, info, spec = dict(built.stages.items()), list(built.stage_info), built.spec
    cases = [
        ((None, info, spec), {}, r"stages must be a non-empty mapping of name to nn\.Module, got None"),
        (({}, [], spec), {}, r"stages must be a non-empty mapping"),
        ((stages, None, spec), {}, r"stage_info must be a list of StageInfo, got None"),
        ((stages, info, spec.to_dict()), {}, r"spec must be a featx\.BackboneSpec, got dict"),
        ((stages, info, spec, None, 3.0), {}, r"in_channels must be an integer in 1\.\.4096, got 3\.0"),
        ((stages, info, spec, None, 0), {}, r"in_channels must be an integer in 1\.\.4096, got 0"),
        ((stages, info, spec), {"copied": "c2"}, r"copied must be a list of stage names \(c2, c3, c4, c5\), got 'c2'"),
        ((stages, info, spec), {"copied": ["c9"]}, r"copied must be a list of stage names"),
        ((stages, info, spec), {"copied": [["c2"]]}, r"copied must be a list of stage names"),  # was unhashable
        (({1: stages["c2"]}, [dataclasses.replace(info[0], name=1)], spec), {}, r"stages must be a non-empty mapping"),
        (  # another spec's stages: feature_info came out empty and forward returned an empty dict
            ({"a": stages["c2"]}, [dataclasses.replace(info[0], name="a")], spec),
            {},
            r"stages are \['a'\], but the spec's stages are \['c2', 'c3', 'c4', 'c5'\]; give the spec",
        ),
        (  # a stage the spec returns is left out: nothing said so
            ({"c2": stages["c2"]}, info[:1], spec),
            {},
            r"the spec returns c3, c4, c5, which stages lack$",
        ),
    ]
    for arguments, keywords, message in cases:
        with pytest.raises(featx.ArgumentError, match=rf"^Backbone\(\): {message}"):
            featx.Backbone(*arguments, **keywords)
    assert featx.Backbone(stages, info, spec, None, np.int64(3)).in_channels == 3  # numpy's integers are integers


def test_featx_necks_refuse_maps_whose_strides_cannot_name_their_levels():
    """A neck made by hand and assigned to a backbone skipped the builder's checks: a simple pyramid over a stride-14
    ViT map (tokens.stride: 14) reported p2..p5 at strides 4..32 for maps at 7, 14, 14, 28, and an FPN over two maps
    named alike returned one of them (the dict key taken twice) while feature_info listed both."""
    from featx.nn.feature_info import FeatureInfo
    from featx.nn.fpn import FeaturePyramid
    from featx.nn.simple_pyramid import SimpleFeaturePyramid
    from featx.spec.schema import FpnSpec

    with pytest.raises(featx.ArgumentError) as caught:
        SimpleFeaturePyramid([FeatureInfo("blocks4", 768, 14)], FpnSpec(32, None, style="simple"))
    assert str(caught.value) == (
        "SimpleFeaturePyramid(): 'blocks4' has stride 14, not a power of two: the neck's levels are named and sized "
        "by powers of two (p2 = stride 4 ... p5 = stride 32)"
    )
    with pytest.raises(featx.ArgumentError) as caught:
        FeaturePyramid([FeatureInfo("p4", 768, 16)] * 2, FpnSpec(32, "maxpool"))
    assert str(caught.value) == (
        "FeaturePyramid(): FPN levels need strictly increasing strides, but 'p4' has stride 16 after 'p4' with "
        "stride 16"
    )
    with pytest.raises(featx.ArgumentError, match=r"^SimpleFeaturePyramid\(\): style: simple builds every level"):
        SimpleFeaturePyramid([FeatureInfo("c4", 256, 16), FeatureInfo("c5", 512, 32)], FpnSpec(32, None, "simple"))
    with pytest.raises(featx.ArgumentError, match=r"^FeaturePyramid\(\): no input maps"):
        FeaturePyramid([], FpnSpec(32, None))
    for stride in (0, 16.0):  # a ZeroDivisionError and a TypeError; FeaturePyramid took stride 0 as a power of two
        with pytest.raises(featx.ArgumentError) as caught:
            FeaturePyramid([FeatureInfo("c4", 64, stride), FeatureInfo("c5", 64, 32)], FpnSpec(32, None))
        assert str(caught.value) == f"FeaturePyramid(): 'c4' has stride {stride!r}; a stride is a positive integer"


class _TwoInputsOneName(torch.nn.Module):
    """A neck of the user's whose input_names name one key twice."""

    def __init__(self, input_names, output_names):
        super().__init__()
        from featx.nn.feature_info import FeatureInfo

        self.input_names = input_names
        self.feature_info = [FeatureInfo(name, 512, 32) for name in output_names]

    def forward(self, features):
        return features


@pytest.mark.parametrize(
    ("input_names", "output_names", "message"),
    [
        (["a", "a"], ["top"], "Backbone.neck: the neck's input_names name 'a' twice; every map needs its own name"),
        (
            ["a", "b"],
            ["top", "top"],
            "Backbone.neck: the neck's feature_info name 'top' twice; every map needs its own name",
        ),
        (  # its maps are keyed by its feature_info's names: those are what name one twice, not input_names
            None,
            ["a", "a"],
            "Backbone.neck: the neck's feature_info name 'a' twice; every map needs its own name",
        ),
    ],
    ids=["inputs", "outputs", "outputs as inputs"],
)
def test_a_neck_naming_two_maps_alike_is_refused(input_names, output_names, message):
    """Two returned stages stored under one key: the first map was silently replaced by the second."""
    backbone = featx.build("resnet18", overrides=["device=meta", "out_features=[c4,c5]"])
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.neck = _TwoInputsOneName(input_names, output_names)
    assert str(caught.value) == message
    assert backbone.neck is None and [i.name for i in backbone.feature_info] == ["c4", "c5"]


def test_a_neck_on_another_device_or_dtype_than_the_stages_is_named_before_the_forward():
    """A neck on the meta device fed real maps returned uninitialised memory (torch's conv2d accepts meta weights
    there), different on every call; a half-precision neck failed with torch's raw dtype RuntimeError."""
    backbone = featx.build("resnet18_fpn", overrides=["device=cpu", "fpn.out_channels=32"]).eval()
    real, x = backbone.neck, torch.randn(1, 3, 64, 64)
    backbone.neck = featx.build("resnet18_fpn", overrides=["device=meta", "fpn.out_channels=32"]).neck
    with pytest.raises(featx.ArgumentError) as caught:  # its advice was bb.to('cpu'), which torch refuses for meta
        backbone(x)
    assert str(caught.value) == (
        "featx backbone 'resnet18': neck.inner_blocks.0.0.weight is on the meta device (it holds no values) and the "
        "input on cpu: torch would compute with uninitialised memory; give it values (load_state_dict(..., "
        "assign=True) with every key, or bb.to_empty(device=...) then load them)"
    )
    backbone.neck = real.half()
    with pytest.raises(featx.ArgumentError) as caught:
        backbone(x)
    assert str(caught.value) == (
        "featx backbone 'resnet18': its neck (FeaturePyramid) is in torch.float16, the stages in torch.float32; move "
        "them together (bb.to(torch.float32))"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts both: as torch's own modules run
        backbone.neck = real.bfloat16()
        mixed = backbone(x)
        backbone.neck = real.float()
        same = backbone(x)
    assert all(torch.equal(mixed[name], same[name]) for name in same)


@pytest.mark.parametrize("part", ["neck", "stage"])
def test_a_layer_left_on_the_meta_device_is_named_before_the_forward(part):
    """A backbone built on meta and given a state dict without some keys (``assign=True, strict=False``: the FPN's
    extra levels), or one layer moved to meta, returned maps of uninitialised memory, different on every call: only
    the neck's first tensor was looked at."""
    if part == "neck":
        spec = ["out_features=[c3,c4,c5]", "fpn={out_channels: 32}"]
        trained = featx.build("resnet18", overrides=["device=cpu", *spec]).eval()
        backbone = featx.build(
            "resnet18", overrides=["device=meta", *spec[:1], "fpn={out_channels: 32, extra_blocks: p6p7}"]
        )
        missing = backbone.load_state_dict(trained.state_dict(), strict=False, assign=True).missing_keys
        assert missing == [f"neck.extra_blocks.{level}.{kind}" for level in ("p6", "p7") for kind in ("weight", "bias")]
        named = "neck.extra_blocks.p6.weight"
    else:
        backbone = featx.build("resnet18", overrides=["device=cpu", "norm=eval"])
        backbone.stages.c5[0][1].conv2.to("meta")
        named = "stages.c5.layer4.1.conv2.weight"
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.eval()(torch.randn(1, 3, 64, 64))
    assert str(caught.value) == (
        f"featx backbone 'resnet18': {named} is on the meta device (it holds no values) and the input on cpu: torch "
        "would compute with uninitialised memory; give it values (load_state_dict(..., assign=True) with every key, "
        "or bb.to_empty(device=...) then load them)"
    )


@pytest.mark.parametrize(
    ("model", "convert", "message"),
    [
        (
            "resnet18",
            lambda backbone: backbone.stages.c5.half(),
            "stage 'c5' computes with float32 inputs on cpu and layer4.0.conv1.weight in float16 on cpu, which its "
            "layers cannot mix (expected scalar type Float but found Half)",
        ),
        (  # the first stages kept in half precision to save memory: a half input then fails in c4
            "resnet18",
            lambda backbone: (backbone.stages.c2.half(), backbone.stages.c3.half()),
            None,
        ),
        (
            "resnet18_fpn",
            lambda backbone: backbone.neck.layer_blocks.half(),
            "the neck computes with float32 inputs on cpu and layer_blocks.0.0.weight in float16 on cpu, which its "
            "layers cannot mix (Input type (float) and bias type (c10::Half) should be the same)",
        ),
    ],
    ids=["one-stage", "first-stages", "part-of-the-neck"],
)
def test_a_stage_or_neck_left_in_another_dtype_is_named(model, convert, message):
    """Part of a backbone converted by hand failed with torch's raw RuntimeError (expected scalar type ..., Input type
    ... should be the same)."""
    backbone = featx.build(model, overrides=["device=cpu", "fpn.out_channels=32"] if "fpn" in model else ["device=cpu"])
    convert(backbone)
    x = torch.randn(1, 3, 64, 64)
    if message is None:  # the input in the first stages' dtype, as the first refusal advises
        x = x.half()
        message = (
            "stage 'c4' computes with float16 inputs on cpu and layer3.0.conv1.weight in float32 on cpu, which its "
            "layers cannot mix (expected scalar type Half but found Float)"
        )
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.eval()(x)
    assert str(caught.value) == (
        f"featx backbone 'resnet18': {message}; convert or move the whole backbone together (bb.to(...))"
    )


class _CastingNeck(torch.nn.Module):
    """A neck of the user's that casts (or would move) the maps it is given itself."""

    input_names = ["c5"]
    feature_info = [featx.FeatureInfo("top", 4, 32)]

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Conv2d(512, 4, 1).double()

    def forward(self, features):
        return {"top": self.project(features["c5"].double())}


def test_a_neck_of_yours_may_cast_its_inputs_but_not_sit_on_the_meta_device():
    """The device/dtype check refused a user's neck that casts its inputs itself (it worked before the check)."""
    backbone = featx.build("resnet18", overrides=["device=cpu", "out_features=[c5]"]).eval()
    x = torch.randn(1, 3, 64, 64)
    c5 = backbone(x)["c5"]
    backbone.neck = _CastingNeck()
    torch.testing.assert_close(backbone(x)["top"], backbone.neck.project(c5.double()), rtol=0, atol=0)
    backbone.neck = _CastingNeck().to("meta")
    with pytest.raises(featx.ArgumentError, match=r"^featx backbone 'resnet18': neck.project.weight is on the meta "):
        backbone(x)


def _rgbd(backbone: featx.Backbone) -> torch.nn.Conv2d:
    """Replace ResNet's first convolution with one taking 4 channels (RGB-D), as a user adapts a backbone."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 64, 7, 2, 3, bias=False)
    backbone.stages["c2"].conv1 = conv
    return conv


def test_in_channels_is_set_after_replacing_the_first_layer():
    """After replacing the first conv with a 4-channel one, a 4-channel input was refused ("expects (N, 3, H, W)")
    with nothing saying that the count is bb.in_channels, fixed at build, and a 3-channel input failed in the conv
    and was reported as an input-size problem. The refusals now name bb.in_channels; setting it lets the input in."""
    backbone = featx.build(resnet18_spec(norm="eval")).eval()
    conv = _rgbd(backbone)
    with pytest.raises(featx.InputShapeError) as caught:
        backbone(torch.randn(2, 4, 64, 64))
    assert str(caught.value) == (
        "featx backbone 'resnet18' expects a floating-point batch of shape (N, 3, H, W), got (2, 4, 64, 64) "
        "torch.float32; the channel count is bb.in_channels (set it after replacing the first layer)"
    )
    with pytest.raises(featx.InputShapeError) as caught:
        backbone(torch.randn(2, 3, 64, 64))
    assert str(caught.value) == (
        "featx backbone 'resnet18': stage 'c2' takes another number of channels than bb.in_channels = 3 "
        "(Given groups=1, weight of size [64, 4, 7, 7], expected input[2, 3, 64, 64] to have 4 channels, but got 3 "
        "channels instead); after replacing the first layer, set bb.in_channels to the channels it takes"
    )
    backbone.in_channels = 4
    x = torch.randn(2, 4, 64, 64)
    reference = torchvision.models.resnet18().eval()
    reference.conv1 = conv
    for stage in backbone.stages.values():  # torchvision's resnet18 holding the backbone's layers
        assert not reference.load_state_dict(stage.state_dict(), strict=False).unexpected_keys
    with torch.no_grad():
        features = backbone(x)
        expected = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
    torch.testing.assert_close(features["c2"], expected, rtol=0, atol=0)
    with pytest.raises(featx.InputShapeError, match=r"shape \(N, 4, H, W\), got \(2, 3, 64, 64\)"):
        backbone(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("value", [0, -1, 4097, 3.0, True, "4", None, np.float32(4)])
def test_a_bad_in_channels_is_refused_on_assignment(value):
    backbone = featx.build(resnet18_spec(device="meta"))
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.in_channels = value
    assert str(caught.value) == f"Backbone.in_channels must be an integer in 1..4096, got {value!r}"
    assert backbone.in_channels == 3
    backbone.in_channels = np.int64(4)  # numpy's integers are integers
    assert backbone.in_channels == 4 and type(backbone.in_channels) is int


def test_a_layer_inside_refusing_its_channels_is_not_blamed_on_the_input_size():
    """A layer replaced inside a stage that takes another width than the layer before it gives was reported as an
    input-size problem ("the model may take only some input sizes")."""
    backbone = featx.build(resnet18_spec(norm="eval")).eval()
    backbone.stages["c3"].layer2[0].conv1 = torch.nn.Conv2d(32, 128, 3, 2, 1, bias=False)
    with pytest.raises(featx.InputShapeError) as caught:
        backbone(torch.randn(2, 3, 64, 64))
    assert str(caught.value) == (
        "featx backbone 'resnet18': stage 'c3' has a layer that takes another number of channels than the layer "
        "before it gives (Given groups=1, weight of size [128, 32, 3, 3], expected input[2, 64, 16, 16] to have 32 "
        "channels, but got 64 channels instead); a layer replaced by hand must take the channels its input has"
    )


def test_a_layer_inside_giving_another_width_is_not_blamed_on_the_input_size():
    """A replaced layer giving 64 channels where the block's residual sum adds 128 failed as "the model may take only
    some input sizes", at 64x64, a size resnet18 takes; at a size it may not take, the size is still named."""
    backbone = featx.build(resnet18_spec(norm="eval")).eval()
    backbone.stages["c3"].layer2[1].conv2 = torch.nn.Conv2d(128, 64, 3, 1, 1, bias=False)
    backbone.stages["c3"].layer2[1].bn2 = torch.nn.BatchNorm2d(64)
    with pytest.raises(featx.InputShapeError) as caught:
        backbone(torch.randn(2, 3, 64, 64))
    assert str(caught.value) == (
        "featx backbone 'resnet18': stage 'c3' has layers whose channels do not match (The size of tensor a (64) "
        "must match the size of tensor b (128) at non-singleton dimension 1); a layer replaced by hand must give the "
        "channels the layers after it take"
    )
    with pytest.raises(featx.InputShapeError, match=r"failed on the 2x3x72x72 input .* may take only some input"):
        backbone(torch.randn(2, 3, 72, 72))


@pytest.mark.parametrize("changed", ["copy", "original"])
def test_a_shallow_copy_has_its_own_neck(changed):
    """copy.copy(bb) shared torch's _modules table: dropping the copy's neck dropped bb's too, while bb's feature_info
    still named p2..p5 with 256 channels, so bb returned the raw c2..c5 maps under the FPN's names."""
    backbone = featx.build("resnet18_fpn", overrides=["device=cpu"]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = backbone(x)
        variant = copy.copy(backbone)
        assert variant.stages is backbone.stages and variant.neck is backbone.neck  # the modules themselves shared
        for (name, a), (other, b) in zip(expected.items(), variant(x).items(), strict=True):
            assert name == other
            torch.testing.assert_close(b, a, rtol=0, atol=0)
        dropped, kept = (variant, backbone) if changed == "copy" else (backbone, variant)
        dropped.neck = None
        assert kept.neck is not None and [(f.name, f.channels) for f in kept.feature_info] == [
            ("p2", 256),
            ("p3", 256),
            ("p4", 256),
            ("p5", 256),
        ]
        for (name, a), (other, b) in zip(expected.items(), kept(x).items(), strict=True):
            assert name == other
            torch.testing.assert_close(b, a, rtol=0, atol=0)
        assert [(f.name, f.channels) for f in dropped.feature_info] == [
            ("c2", 64),
            ("c3", 128),
            ("c4", 256),
            ("c5", 512),
        ]
        assert {k: v.shape[1] for k, v in dropped(x).items()} == {"c2": 64, "c3": 128, "c4": 256, "c5": 512}


def test_frozen_stage_names_are_the_stages_freeze_froze_whatever_requires_grad_did_since():
    """The docstring said the listed stages' parameters have requires_grad=False; after bb.requires_grad_(True) they
    train, still listed and still kept in eval mode."""
    backbone = featx.build("resnet18", overrides=["device=cpu", "norm=train", "frozen_stages=2"])
    backbone.requires_grad_(True)
    backbone.train()
    assert backbone.frozen_stage_names == ("c2", "c3")
    assert all(p.requires_grad for p in backbone.stages["c2"].parameters())
    assert not backbone.stages["c2"].training and backbone.stages["c4"].training
    doc = " ".join(featx.Backbone.frozen_stage_names.__doc__.split())
    assert "their parameters have ``requires_grad=False``" not in doc
    assert "may since have changed their parameters" in doc
