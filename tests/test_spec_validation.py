"""Every validation rule: one featx.SpecError, with the key path (and the valid choices where fixed) named."""

from __future__ import annotations

import pytest
from helpers import resnet18_spec

import featx
from featx.errors import first_line
from featx.spec.schema import BackboneSpec, StageSpec
from featx.spec.validate import validate_spec

VGG = {
    "model": "vgg16",
    "source": "features",
    "stages": {"c1": {"slice": [0, 4]}, "c2": {"slice": [4, 9]}, "c3": {"slice": [9, 16]}},
    "device": "cpu",
}


def _vgg(**changes):
    return {**VGG, **changes}


@pytest.mark.parametrize(
    ("spec", "key", "fragment"),
    [
        # unknown keys and wrong types (caught by the schema)
        (resnet18_spec(frozen_stage=1), "backbone.frozen_stage", "did you mean frozen_stages?"),
        (resnet18_spec(stages={"c2": {"slize": [0, 4]}}), "backbone.stages.c2.slize", "did you mean slice?"),
        (resnet18_spec(fpn={"out_chanels": 8}), "backbone.fpn.out_chanels", "did you mean out_channels?"),
        (resnet18_spec(frozen_stages="two"), "backbone.frozen_stages", "could not be converted to Integer"),
        (resnet18_spec(fpn=256), "backbone.fpn", "expected null or a mapping"),
        ({"stages": VGG["stages"]}, "backbone.model", "missing value"),
        # stages
        (_vgg(stages={}), "backbone.stages", "no stages"),
        (_vgg(stages={"c1": {"slice": [0, 4], "modules": ["features"]}}), "backbone.stages.c1", "exactly one of"),
        (_vgg(stages={"c1": {}}), "backbone.stages.c1", "exactly one of 'slice' or 'modules'"),
        (_vgg(stages={"c1": {"slice": [4, 4]}}), "backbone.stages.c1.slice", "[4, 4] is empty"),
        (_vgg(stages={"c1": {"slice": [0, 4, 8]}}), "backbone.stages.c1.slice", "expected [start, end]"),
        (_vgg(stages={"c1": {"slice": [-1, 4]}}), "backbone.stages.c1.slice", "negative"),
        (_vgg(stages={"c1": {"slice": [2, 4]}}), "backbone.stages.c1.slice", "children 0..1 would never run"),
        (
            _vgg(stages={"c1": {"slice": [0, 4]}, "c2": {"slice": [3, 9]}}),
            "backbone.stages.c2.slice",
            "overlaps stage 'c1'",
        ),
        (
            _vgg(stages={"c1": {"slice": [0, 4]}, "c2": {"slice": [5, 9]}}),
            "backbone.stages.c2.slice",
            "4..4 would never run",
        ),
        (resnet18_spec(stages={"c2": {"modules": []}}), "backbone.stages.c2.modules", "empty list"),
        (
            resnet18_spec(stages={"c2": {"modules": ["layer1..0"]}}),
            "backbone.stages.c2.modules[0]",
            "not a module path",
        ),
        (resnet18_spec(stages={"2c": {"modules": ["conv1"]}}), "backbone.stages.2c", "identifier"),
        # outputs and freezing
        (resnet18_spec(out_features=["c5"]), "backbone.out_features[0]", "unknown stage 'c5'"),
        (resnet18_spec(out_features=["c4", "c2"]), "backbone.out_features", "in stage order"),
        (resnet18_spec(out_features=["c3", "c3"]), "backbone.out_features", "distinct stages"),
        (resnet18_spec(out_features=[]), "backbone.out_features", "use null"),
        (resnet18_spec(frozen_stages=-1), "backbone.frozen_stages", "valid: 0..3"),
        (resnet18_spec(frozen_stages=4), "backbone.frozen_stages", "valid: 0..3"),
        (
            resnet18_spec(frozen_stages=3, out_features=["c3"]),
            "backbone.frozen_stages",
            "valid: 0..2 (kept stages: c2, c3)",
        ),
        # fixed choices
        (resnet18_spec(norm="batch"), "backbone.norm", "valid: frozen, eval, train, sync"),
        (resnet18_spec(layout="nwhc"), "backbone.layout", "valid: nchw, nhwc"),
        (resnet18_spec(device="gpu"), "backbone.device", "valid: auto, cpu, cuda, cuda:N, mps, meta"),
        (resnet18_spec(fpn={"extra_blocks": "pool"}), "backbone.fpn.extra_blocks", "valid: null, maxpool, p6p7"),
        (resnet18_spec(fpn={"out_channels": 0}), "backbone.fpn.out_channels", "in 1..4096, got 0"),
        # data, not code
        (resnet18_spec(_target_="os.system"), "backbone._target_", "is refused"),
        (resnet18_spec(defaults=5), "backbone.defaults", "may only be"),
        # interpolations that do not resolve
        (resnet18_spec(model="${nope}"), "backbone.model", "holds an interpolation"),
    ],
)
def test_invalid_spec_raises_spec_error_naming_the_key(spec, key, fragment):
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(spec)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert fragment in str(caught.value)


def test_spec_error_is_a_value_error_and_a_featx_error():
    assert issubclass(featx.SpecError, ValueError) and issubclass(featx.SpecError, featx.FeatxError)
    assert issubclass(featx.WeightsError, featx.FeatxError)


def test_validate_spec_accepts_the_python_dataclasses():
    spec = BackboneSpec(model="resnet18", stages={"c2": StageSpec(modules=["conv1", "layer1"])}, device="cpu")
    validate_spec(spec)
    assert featx.load_spec(spec) == spec


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps", "meta"])
def test_device_strings_that_are_valid_anywhere_pass_validation(device):
    assert featx.load_spec(resnet18_spec(device=device)).device == device


@pytest.mark.parametrize(
    ("error", "line"),
    [(AssertionError(), ""), (ValueError("\n  first  \nsecond"), "first"), (RuntimeError("one"), "one")],
)
def test_a_library_error_is_quoted_by_its_first_line_even_when_empty(error, line):
    """A bare ``assert`` in a model's code raises an AssertionError without a message; featx's errors quote it."""
    assert first_line(error) == line


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"norm": ["eval"]}, "backbone.norm: expected one of frozen, eval, train, sync, got a list"),
        ({"layout": {"a": 1}}, "backbone.layout: expected one of nchw, nhwc, got a mapping"),
        ({"output_names": ["x"]}, "backbone.output_names: expected one of featx, torchvision, got a list"),
        ({"device": ["cpu"]}, "backbone.device: expected one of auto, cpu, cuda, cuda:N, mps, meta, got a list"),
        ({"seed": [1]}, "backbone.seed: expected a number, got a list"),
        ({"model": {"name": "resnet18"}}, "backbone.model: expected a string, got a mapping"),
        (
            {"fpn": {"out_channels": 8, "extra_blocks": ["p6p7"]}},
            "backbone.fpn.extra_blocks: expected one of null, maxpool, p6p7, got a list",
        ),
        # OmegaConf turned these into the strings 'False' and '0': "'False' is not a weights name of resnet18"
        ({"weights": False}, "backbone.weights: expected a string, got false (null for random init)"),
        ({"norm": True}, "backbone.norm: expected one of frozen, eval, train, sync, got true"),
        (
            {"weights": 0},
            "backbone.weights: expected a weights name or a file path, got the number 0; quote a file named so "
            "(weights: '0')",
        ),
    ],
)
def test_a_list_or_mapping_for_a_single_value_names_the_key_and_its_choices(changes, message):
    """OmegaConf's "Cannot convert 'ListConfig' to string: '['eval']'" named neither what the key takes nor its
    choices, where a scalar of the wrong value got both."""
    with pytest.raises(featx.SpecError) as caught:
        featx.build(resnet18_spec(device="meta", **changes) if "device" not in changes else resnet18_spec(**changes))
    assert str(caught.value) == message


def test_numpy_scalars_and_a_torch_device_are_taken_as_their_values():
    """Values a Python caller computes (np.int64 from a config array, torch.device): OmegaConf's "Value 'int64' is
    not a supported primitive type" refused them."""
    import numpy as np
    import torch

    given = resnet18_spec(seed=np.int64(3), frozen_stages=np.int64(1), channels_last=np.bool_(False))
    given.update(device=torch.device("cpu"), input_size=[np.int64(64), np.int32(64)])
    backbone = featx.build(given)
    plain = featx.build(resnet18_spec(seed=3, frozen_stages=1, device="cpu", input_size=[64, 64]))
    assert backbone.spec == plain.spec and type(backbone.spec.seed) is int
    pairs = zip(backbone.state_dict().values(), plain.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    spec = plain.spec
    spec.seed = np.int64(3)  # a BackboneSpec edited with one
    assert featx.build(spec).spec == plain.spec
