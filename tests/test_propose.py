"""featx.propose / featx-propose / featx-list: a spec for every torchvision classifier (hierarchical models and plain
ViTs), written by probing."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
import yaml

import featx
from featx.cli import catalog
from featx.cli import propose as propose_cli
from featx.construct.propose import analyse
from featx.spec.config_files import backbone_names

ALL_MODELS = sorted(torchvision.models.list_models(module=torchvision.models))
#: the design's hand-written reference extractors; every other packaged file is propose's output
REFERENCE_FILES = {"vgg16", "resnet34"}


@pytest.mark.parametrize("model", ALL_MODELS)
def test_propose_builds_every_model_with_increasing_strides_or_token_stages(model):
    spec = featx.propose(model)
    if model.startswith("vit_"):
        backbone = featx.build(spec, overrides=["device=meta"])
        patch = int(re.search(r"_(\d+)$", model).group(1))  # torchvision names ViTs by their patch size
        assert list(spec["stages"]) == ["embed", "blocks1", "blocks2", "blocks3", "blocks4"]
        assert [(info.name, info.stride) for info in backbone.feature_info] == [("blocks4", patch)]
        assert featx.load_spec(model) == featx.load_spec(spec)
        return
    backbone = featx.build(spec, overrides=["device=meta"])
    strides = [info.stride for info in backbone.feature_info]
    assert strides == sorted(set(strides)) and strides[0] == 4 and len(strides) >= 3
    assert list(spec["stages"]) == [f"c{stride.bit_length() - 1}" for stride in strides]
    if model in backbone_names() and model not in REFERENCE_FILES:  # the packaged file is this proposal, reviewed
        assert featx.load_spec(model) == featx.load_spec(spec)


def test_propose_cuts_at_the_last_module_of_each_stride():
    assert featx.propose("resnet50")["stages"] == {
        "c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]},
        "c3": {"modules": ["layer2"]},
        "c4": {"modules": ["layer3"]},
        "c5": {"modules": ["layer4"]},
    }
    with_stride_2 = featx.propose("resnet50", min_stride=2)["stages"]
    assert with_stride_2["c1"] == {"modules": ["conv1", "bn1", "relu"]}
    assert with_stride_2["c2"] == {"modules": ["maxpool", "layer1"]}
    vgg = featx.propose("vgg11")
    assert vgg["source"] == "features" and vgg["stages"]["c2"] == {"slice": [0, 10]}


def test_propose_opens_containers_and_skips_side_branches():
    regnet = analyse("regnet_y_400mf")  # constructor cannot run on meta; trunk_output spans strides 4..32
    assert [stage.paths for stage in regnet.stages] == [
        ("stem", "trunk_output.block1"),
        ("trunk_output.block2",),
        ("trunk_output.block3",),
        ("trunk_output.block4",),
    ]
    inception = analyse("inception_v3")
    assert inception.left_out == ("AuxLogits",) and "AuxLogits" not in str(inception.spec.stages)
    assert inception.head == ("avgpool", "dropout", "fc")
    swin = analyse("swin_t")
    assert swin.spec.layout == "nhwc" and swin.stages[-1].paths == ("features.6", "features.7", "norm")
    maxvit = analyse("maxvit_t")  # takes 224x224 only
    assert maxvit.spec.input_size == [224, 224]
    assert [stage.paths for stage in maxvit.stages][1:] == [("blocks.1",), ("blocks.2",), ("blocks.3",)]


class _OneSizeWithAnUnusedLayer(torch.nn.Module):
    """A model of one input size (its forward refuses others, as torchvision's ViT does) holding a layer its forward
    never calls, registered between the stages."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU())
        self.unused = torch.nn.Conv2d(16, 16, 3, 1, 1)
        self.b = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU())
        self.c = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[-2:] == (224, 224), "224x224 only")
        return self.fc(self.pool(self.c(self.b(self.a(x)))).flatten(1))


def test_propose_leaves_out_a_layer_a_one_size_models_forward_never_calls(tmp_path, monkeypatch):
    """The forward failed at the probe sizes, so propose took every module for called and put the unused layer in
    c1: then refused the model as a spec featx.build refuses ("never runs 'unused'"). The modules the forward calls
    at the model's own size (224) decide now; the stages equal the model's own layers."""
    from torchvision.models._api import BUILTIN_MODELS

    from featx.models.registry import classification_models

    def featx_test_one_size(*, weights=None, **kwargs):
        return _OneSizeWithAnUnusedLayer(**kwargs)

    monkeypatch.setattr(featx_test_one_size, "__module__", "torchvision.models.featx_test_one_size")
    monkeypatch.setitem(BUILTIN_MODELS, "featx_test_one_size", featx_test_one_size)  # as register_model does
    classification_models.cache_clear()
    try:
        spec = featx.propose("featx_test_one_size", min_stride=2)
        assert spec["stages"] == {"c1": {"modules": ["a"]}, "c2": {"modules": ["b"]}, "c3": {"modules": ["c"]}}
        model = _OneSizeWithAnUnusedLayer().eval()
        torch.save(model.state_dict(), tmp_path / "weights.pth")
        bb = featx.build({**spec, "weights": str(tmp_path / "weights.pth"), "device": "cpu"}).eval()
        x = torch.rand(1, 3, 64, 64)  # the stages take any size: the one-size check is the model's head's
        with torch.no_grad():
            features = bb(x)
            a = model.a(x)
            expected = {"c1": a, "c2": model.b(a), "c3": model.c(model.b(a))}
        assert list(features) == ["c1", "c2", "c3"]
        for name, value in expected.items():
            torch.testing.assert_close(features[name], value, rtol=0, atol=0)
    finally:
        monkeypatch.undo()
        classification_models.cache_clear()


class _HeadRegisteredFirst(torch.nn.Module):
    """Registers its pooling and classifier before its stages, and runs them last."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.global_pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(64, 10)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.MaxPool2d(2))
        self.layer1, self.layer2 = torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.Conv2d(32, 64, 3, 2, 1)

    def forward(self, x):
        return self.fc(self.global_pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


class _HeadConvRegisteredLate(torch.nn.Module):
    """timm's LowFormer: a head convolution registered after the pooling, run before it (not a feature stage)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.MaxPool2d(2))
        self.layer1, self.layer2 = torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.Conv2d(32, 64, 3, 2, 1)
        self.global_pool = torch.nn.AdaptiveAvgPool2d(1)
        self.in_conv, self.fc = torch.nn.Conv2d(64, 256, 1), torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(self.global_pool(self.in_conv(self.layer2(self.layer1(self.stem(x))))).flatten(1))


def test_propose_follows_the_forward_where_registration_order_differs():
    """A module skipped after the chain began that runs after a later module marks that module as head (timm's
    LowFormer gave its 1,536-wide head convolution as part of c5); a head registered before the stages does not cut
    the chain (a first version of that rule refused such a model)."""
    import timm

    def featx_test_head_first(pretrained=False, **kwargs):
        return _HeadRegisteredFirst(**kwargs)

    def featx_test_head_conv_late(pretrained=False, **kwargs):
        return _HeadConvRegisteredLate(**kwargs)

    timm.models.register_model(featx_test_head_first)
    timm.models.register_model(featx_test_head_conv_late)
    first = analyse("timm:featx_test_head_first")
    assert [(stage.name, stage.paths, stage.channels) for stage in first.stages] == [
        ("c2", ("stem",), 16),
        ("c3", ("layer1",), 32),
        ("c4", ("layer2",), 64),
    ]
    late = analyse("timm:featx_test_head_conv_late")
    assert [stage.paths for stage in late.stages] == [("stem",), ("layer1",), ("layer2",)]
    assert (late.left_out, late.head) == ((), ("global_pool", "in_conv", "fc"))


class _SevenPixelPatches(torch.nn.Module):
    """Takes any input size; its 7x7 patches (timm's sequencer2d_s's stem) make strides 7, 14 and 28, no powers
    of two: at its crop size alone 224 / 7 = 32 rows read as stride 8."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 7, 7)
        self.layer1, self.layer2 = torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.Conv2d(32, 64, 3, 2, 1)
        self.global_pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.global_pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


class _SkipAcrossStages(torch.nn.Module):
    """A shortcut ``down`` from layer1's map added to layer2's: the chain of maps leaves it out, and a build refuses
    stages that skip a module the forward runs."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.MaxPool2d(2))
        self.layer1, self.layer2 = torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.Conv2d(32, 64, 3, 2, 1)
        self.down, self.layer3 = torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.Conv2d(64, 128, 3, 2, 1)
        self.global_pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(128, 10)

    def forward(self, x):
        a = self.layer1(self.stem(x))
        return self.fc(self.global_pool(self.layer3(self.layer2(a) + self.down(a))).flatten(1))


def test_propose_measures_a_model_that_takes_any_size_at_the_probe_sizes(capsys):
    """A model that takes any size whose chain broke at the probe sizes (a stride of 7) was probed at its crop size
    alone: 224 / 7 = 32 rows read as stride 8, with ``input_size: [224, 224]`` added, and featx.build refused the
    spec featx-propose printed (exit 0); featx-list said "no proposal"."""
    import timm

    def featx_test_seven_pixel_patches(pretrained=False, **kwargs):
        return _SevenPixelPatches(**kwargs)

    timm.models.register_model(featx_test_seven_pixel_patches)
    message = (
        "propose(): 'timm:featx_test_seven_pixel_patches' gives fewer than two stages: the maps of stem grow by 13 "
        "rows for 96 more input rows (224x288 and 320x416): a stride of about 7, not a power of two; a backbone "
        "needs at least two strides >= 4, or a token model's patch embedding, token parameters and blocks (featx "
        "recognises plain ViTs)"
    )
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("timm:featx_test_seven_pixel_patches")
    assert str(error.value) == message
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(["timm:featx_test_seven_pixel_patches"])
    assert exit_info.value.code == 1
    assert capsys.readouterr() == ("", f"featx-propose: error: {message}\n")
    catalog.main(["--timm", "timm:featx_test_seven_pixel_patches"])
    assert f"no proposal: {message}" in capsys.readouterr().out


def test_propose_refuses_a_spec_its_build_would_refuse():
    """featx-propose printed a spec that featx.build then refused; it now says why and prints none."""
    import timm

    def featx_test_skip_across_stages(pretrained=False, **kwargs):
        return _SkipAcrossStages(**kwargs)

    timm.models.register_model(featx_test_skip_across_stages)
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("timm:featx_test_skip_across_stages")
    assert str(error.value) == (
        "propose(): the spec found for 'timm:featx_test_skip_across_stages' (c2, c3, c4, c5) is one featx.build "
        "refuses: backbone.stages.c5: the model's forward runs 'down' after 'layer2', but no stage lists it: the "
        "stages would skip it. List every module the forward runs, in its order (a stage may end after any of them)"
    )


def test_propose_refuses_timm_sequencer_whose_strides_are_no_powers_of_two():
    """timm's sequencer2d_s takes any size; its strides are 7 and 14: featx-propose wrote strides 8 and 16 and an
    ``input_size`` of 224x224, a spec featx.build refused."""
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("timm:sequencer2d_s")
    assert str(error.value).startswith(
        "propose(): 'timm:sequencer2d_s' gives fewer than two stages: the maps of stem grow by 13 rows for 96 more "
        "input rows (224x288 and 320x416): a stride of about 7, not a power of two; "
    )


def test_a_single_stride_that_is_no_power_of_two_is_named_as_measured():
    """timm's ConvMixer has one map, of stride 7: the refusal said "stride 8 only", the power of two its maps at the
    crop size alone read as."""
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("timm:convmixer_768_32")
    assert str(error.value).startswith(
        "propose(): 'timm:convmixer_768_32' gives fewer than two stages: the maps of stem grow by 13 rows for 96 more "
        "input rows (224x288 and 320x416): a stride of about 7, not a power of two; a backbone needs "
    )


def test_propose_with_fpn_and_frozen_stages():
    spec = featx.propose("mobilenet_v3_small", fpn=64, frozen_stages=2)
    backbone = featx.build(spec, overrides=["device=cpu"]).eval()
    assert [(i.name, i.channels) for i in backbone.feature_info] == [("p2", 64), ("p3", 64), ("p4", 64), ("p5", 64)]
    assert backbone.frozen_stage_names == ("c2", "c3")
    with torch.inference_mode():
        outputs = backbone(torch.randn(1, 3, 97, 131))
    assert [tuple(v.shape) for v in outputs.values()] == [
        (1, 64, 25, 33),
        (1, 64, 13, 17),
        (1, 64, 7, 9),
        (1, 64, 4, 5),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_name": "resnt50"}, r"propose\(\): unknown torchvision model 'resnt50'; did you mean resnet50"),
        ({"model_name": "resnet50", "min_stride": 3}, r"min_stride must be a power of two in 1\.\.64, got 3"),
        ({"model_name": "resnet50", "min_stride": 128}, r"min_stride must be a power of two in 1\.\.64, got 128"),
        ({"model_name": "resnet50", "min_stride": "4"}, r"^propose\(\): min_stride must be an integer, got '4'"),
        ({"model_name": "resnet50", "frozen_stages": True}, r"frozen_stages must be an integer, got True"),
        (
            {"model_name": None},
            r"^propose\(\): model_name must be a model name \(str: a torchvision classifier or timm:NAME\), got None",
        ),
        ({"model_name": "resnet50", "fpn": 0}, r"fpn must be a channel count in 1\.\.4096 or None, got 0"),
        ({"model_name": "resnet50", "fpn": 10**9}, r"fpn must be a channel count in 1\.\.4096 or None"),
        ({"model_name": "resnet50", "fpn": 2.5}, r"fpn must be an integer, got 2\.5"),
        ({"model_name": "resnet50", "frozen_stages": 5}, r"frozen_stages must be in 0\.\.4, got 5"),
    ],
)
def test_propose_rejects_bad_arguments(kwargs, message):
    with pytest.raises(featx.ArgumentError, match=message):
        featx.propose(**kwargs)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [  # they named propose()'s parameters (fpn, frozen_stages, min_stride) and fpn's None
        (["resnet18", "--fpn", "-1"], "--fpn must be a channel count in 1..4096, got -1"),
        (["resnet18", "--frozen-stages", "99"], "--frozen-stages must be in 0..4, got 99"),
        (["resnet18", "--min-stride", "3"], "--min-stride must be a power of two in 1..64, got 3"),
        (["vit_b_16", "--frozen-stages", "6"], "--frozen-stages must be in 0..5, got 6"),
    ],
)
def test_featx_propose_cli_names_its_options_in_errors(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(arguments)
    assert exit_info.value.code == 1
    assert capsys.readouterr() == ("", f"featx-propose: error: {message}\n")


FORCE_WITHOUT_FILE = (
    "--force replaces an existing -o/--output file, but the YAML goes to standard output (no -o FILE): give -o FILE, "
    "or leave --force out"
)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [  # --force without a file was ignored; an option given again silently replaced the first value
        (["resnet18", "--force"], FORCE_WITHOUT_FILE),
        (["resnet18", "-o", "-", "--force"], FORCE_WITHOUT_FILE),
        (["resnet18", "--fpn", "8", "--fpn", "16"], "--fpn is given twice; give each option once"),
        (["resnet18", "--min-stride=8", "--min-stride", "8"], "--min-stride is given twice; give each option once"),
        (
            ["resnet18", "--frozen-stages", "0", "--frozen-st", "1"],
            "--frozen-stages is given twice; give each option once",
        ),
        (["resnet18", "-o", "a.yaml", "--output", "b.yaml"], "-o/--output is given twice; give each option once"),
        (["resnet18", "-o", "a.yaml", "--force", "--force"], "--force is given twice; give each option once"),
    ],
)
def test_featx_propose_cli_refuses_options_it_would_ignore(arguments, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(arguments)
    assert exit_info.value.code == 2
    assert capsys.readouterr() == ("", f"featx-propose: error: {message}\n")
    assert list(tmp_path.iterdir()) == []


def test_propose_explains_why_a_model_gives_fewer_than_two_stages():
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("resnet50", min_stride=64)
    assert str(error.value) == (
        "propose(): 'resnet50' gives fewer than two stages: its feature maps (conv1, bn1, relu, maxpool, layer1, "
        "layer2, layer3, layer4) have stride 2, 4, 8, 16, 32 only, and what follows (avgpool, fc) works on other "
        "shapes; a backbone needs at least two strides >= 64, or a token model's patch embedding, token parameters "
        "and blocks (featx recognises plain ViTs)"
    )


def test_propose_refuses_a_min_stride_above_a_token_models_patch_stride(capsys):
    """A ViT's maps all have the patch stride: a higher min_stride was ignored (stages at stride 16 came back)."""
    message = (
        "propose(): 'vit_b_16' gives no stage at stride >= 64: a token model's maps all have the patch stride 16; "
        "pass a min_stride (--min-stride) of at most 16"
    )
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("vit_b_16", min_stride=64)
    assert str(error.value) == message
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(["vit_b_16", "--min-stride", "32"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"featx-propose: error: {message.replace('>= 64', '>= 32')}\n"
    assert {info.stride for info in analyse("vit_b_16", min_stride=16).stages} == {16}
    # with a pyramid ViT-H/14's maps are laid out at stride 16: min_stride 16 was refused as above its patch of 14
    assert featx.propose("vit_h_14", fpn=256, min_stride=16)["tokens"]["stride"] == 16
    with pytest.raises(featx.ArgumentError, match=r"maps all have the patch stride 14; pass a min_stride .* most 14$"):
        featx.propose("vit_h_14", min_stride=16)


def test_min_stride_leaves_a_token_models_simple_pyramid_as_it_is(capsys):
    """--help called --min-stride "the shallowest stage's stride": on a CNN a higher one drops the shallower levels,
    but a ViT's simple pyramid kept p2 and p3 (strides 4, 8) with --min-stride 16, which nothing said."""
    spec = featx.propose("vit_b_16", fpn=64, min_stride=16)
    assert spec == featx.propose("vit_b_16", fpn=64)
    backbone = featx.build(spec, overrides=["device=meta"])
    assert [(info.name, info.stride) for info in backbone.feature_info] == [
        ("p2", 4),
        ("p3", 8),
        ("p4", 16),
        ("p5", 32),
    ]
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(["--help"])
    assert exit_info.value.code == 0
    assert " ".join(capsys.readouterr().out.split()).endswith(
        "--min-stride MIN_STRIDE the shallowest stage's stride (default 4). A token model's (plain ViT's) stages all "
        "have its patch stride (with --fpn the power of two at or above it): a higher value is refused, and --fpn's "
        "simple pyramid has p2..p5 (strides 4..32) whatever the value --frozen-stages FROZEN_STAGES how many stages to "
        "freeze (default 1)"
    )


def test_a_proposal_says_why_its_stages_end_before_the_models_last_features(capsys):
    """timm's mobilevitv2_050 ends its stages at stride 16: stages.4 returns one map, of a stride that is no power of
    two. The header said "what follows is no chain of single feature maps featx can slice into stages: other shapes,
    or several maps fused", which is neither (featx found the reason, and --min-stride 32 said it)."""
    why = (
        "the maps of stages.4 grow by 2 rows for 96 more input rows (224x288 and 320x416): a stride of about 48, not a "
        "power of two"
    )
    assert analyse("timm:mobilevitv2_050").chain_end == why
    propose_cli.main(["timm:mobilevitv2_050"])
    header = " ".join(line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("# "))
    assert (
        "The stages end before the model's own last features: c4 has 192 channels, the model's num_features is 256 "
        f"(what follows cannot be cut into stages: {why})." in header
    )


def test_propose_says_plainly_when_no_module_gives_a_feature_map():
    """timm's MLP-Mixer turns the image into tokens in its stem: no map at all was "feature maps (none) have stride -
    only"."""
    with pytest.raises(featx.ArgumentError) as error:
        featx.propose("timm:mixer_s16_224")
    assert str(error.value) == (
        "propose(): 'timm:mixer_s16_224' gives fewer than two stages: no module of it (stem, blocks, norm, head_drop, "
        "head) returns a feature map (N x C x H x W) of the image; a backbone needs at least two strides >= 4, or a "
        "token model's patch embedding, token parameters and blocks (featx recognises plain ViTs)"
    )


def test_featx_propose_cli_prints_a_commented_spec_that_builds(capsys, tmp_path):
    propose_cli.main(["googlenet", "--fpn", "128"])
    text = capsys.readouterr().out
    assert text.startswith("# googlenet as c2, c3, c4, c5: strides 4, 8, 16, 32; channels 192, 480, 832, 1024;")
    assert "Not part of the backbone: aux1, aux2, avgpool, dropout, fc" in text
    assert re.search(
        r"^  c5: \{modules: \[maxpool4, inception5a, inception5b\]\} +# stride 32, 1024 channels$", text, re.M
    )
    assert "torchvision publishes GoogLeNet_Weights.IMAGENET1K_V1" in text
    path = tmp_path / "googlenet_fpn.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["fpn"] == {"out_channels": 128, "extra_blocks": None, "style": "fpn"}
    assert featx.load_spec(path) == featx.load_spec(featx.propose("googlenet", fpn=128))


def test_featx_propose_cli_writes_files_but_never_over_yours(tmp_path, capsys):
    path = tmp_path / "configs" / "backbone" / "mine.yaml"
    propose_cli.main(["resnet18", "-o", str(path)])
    assert featx.build(path, overrides=["device=meta"]).spec.model == "resnet18"
    path.write_text("# my edits\n")
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(["resnet18", "-o", str(path)])
    assert exit_info.value.code == 1
    assert (
        f"featx-propose: error: --output: {path} exists; pass --force to replace it (nothing" in capsys.readouterr().err
    )
    assert path.read_text() == "# my edits\n"
    propose_cli.main(["resnet34", "-o", str(path), "--force"])
    assert featx.load_spec(path).model == "resnet34" and not list(path.parent.glob("*.partial"))


@pytest.mark.parametrize(
    ("name", "shown"),
    [  # a byte that is not UTF-8 made the file unreadable; YAML's line breaks split the comment (a second seed:)
        ("caf\udce9.yaml", "'caf\\xe9.yaml'"),
        ("a\u2028seed: 3\u2029b\x85c\r.yaml", "'a\\u2028seed: 3\\u2029b\\x85c\\r.yaml'"),
        ("non\uffffchar.yaml", "'non\\uffffchar.yaml'"),  # a character YAML takes in no file
    ],
)
def test_featx_propose_cli_writes_a_file_that_loads_whatever_its_name(name, shown, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    propose_cli.main(["resnet18", "-o", name])
    assert featx.build(tmp_path / name, overrides=["device=meta"]).spec.model == "resnet18"
    header = (tmp_path / name).read_text("utf-8").splitlines()[1]
    assert header.startswith(f"# Written by `featx-propose resnet18 -o {shown}` (torchvision ")


def test_featx_propose_cli_shows_output_paths_escaped(tmp_path, capsys):
    """An ESC or newline in --output reached the terminal as it was (it could clear the screen or forge a line)."""
    path = tmp_path / "x\x1b[2J\nfeatx-propose: wrote y.yaml"
    shown = f"{tmp_path}/x\\x1b[2J\\nfeatx-propose: wrote y.yaml"
    propose_cli.main(["resnet18", "-o", str(path)])
    assert capsys.readouterr().err == f"featx-propose: wrote {shown}\n"
    with pytest.raises(SystemExit):
        propose_cli.main(["resnet18", "-o", str(path)])
    assert capsys.readouterr().err == (
        f"featx-propose: error: --output: {shown} exists; pass --force to replace it (nothing was written)\n"
    )


def test_featx_propose_cli_reports_errors_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        propose_cli.main(["resnet50", "--min-stride", "64"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("featx-propose: error: propose(): 'resnet50' gives fewer than two")


def test_featx_list_shows_the_table_and_flags_shadowed_user_files(tmp_path, capsys):
    user = tmp_path / "my_configs"
    (user / "backbone").mkdir(parents=True)
    (user / "backbone" / "resnet18.yaml").write_text(
        (featx.spec.config_files.config_dir() / "backbone" / "resnet18.yaml").read_text()
    )
    propose_cli.main(["squeezenet1_1", "-o", str(user / "backbone" / "tiny.yaml")])
    catalog.main(["resnet18", "tiny", "resnet50_fpn", "maxvit_t", "--config-dir", str(user)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "model", "stages", "strides", "channels", "params", "notes"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["resnet18"].split()[1:6] == ["resnet18", "c2..c5", "4,8,16,32", "64,128,256,512", "11.2M"]
    assert f"ignored duplicate: {user / 'backbone' / 'resnet18.yaml'}" in rows["resnet18"]
    assert rows["tiny"].split()[1:5] == ["squeezenet1_1", "c2..c4", "4,8,16", "128,256,512"]
    assert f"from {user / 'backbone' / 'tiny.yaml'}" in rows["tiny"]
    assert "fpn 256" in rows["resnet50_fpn"] and "input 224x224 only" in rows["maxvit_t"]


def test_featx_list_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["--config-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    assert f"--config-dir {tmp_path}: no backbone/ folder in it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["nothing*"])
    assert exit_info.value.code == 1


@pytest.mark.parametrize(
    "arguments, code, message",
    [  # a pattern that matches nothing beside one that does shortened the listing silently; an override was a pattern
        (["resnet1*", "resnt18"], 1, "featx-list: error: no backbone matches resnt18; did you mean resnet18 or "),
        (["resnet18", "nothing*"], 1, "featx-list: error: no backbone matches nothing*\n"),
        (
            ["backbone.fpn.out_channels=128", "resnet18"],
            2,
            "featx-list: error: backbone.fpn.out_channels=128: featx-list takes name patterns, not overrides; ",
        ),
        (["--timm", "resnet18", "timm:no_such_model*"], 1, "featx-list: error: no timm model matches timm:no_such_"),
    ],
)
def test_featx_list_names_each_pattern_that_matches_nothing(arguments, code, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(arguments)
    captured = capsys.readouterr()
    assert exit_info.value.code == code and captured.out == ""
    assert captured.err.startswith(message), captured.err
