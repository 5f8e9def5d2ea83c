"""The fast path of ``load_spec`` (plain data typed without OmegaConf, simple overrides applied to plain data) gives
exactly what the OmegaConf path gives: the same spec, field by field and type by type, or the same error. The
reference is the OmegaConf code itself (``_typed_spec``, ``apply_overrides``, or ``load_spec`` with the fast path
switched off), and the expected results of the values OmegaConf converts or refuses are written out here."""

from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any, Dict, List, Optional, Sequence

import pytest
from helpers import resnet18_spec
from omegaconf import OmegaConf
from test_hostile_spec import DATA_CASES, OVERRIDE_CASES
from test_hostile_spec import _spec as hostile_spec

import featx.spec.load as load_module
from featx.errors import SpecError
from featx.spec.config_files import backbone_names, config_dir
from featx.spec.load import _NESTED, _strip_hydra_keys, _typed_spec, load_spec
from featx.spec.overrides import apply_overrides, apply_plain_overrides
from featx.spec.schema import BackboneSpec, FpnSpec, StageSpec, TokenSpec
from featx.spec.typed import typed
from featx.spec.yaml_file import read_spec_file


def _shape(value: Any) -> Any:
    """``value`` with the exact type of every node and the order of every mapping: what equality must also hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), tuple((f.name, _shape(getattr(value, f.name))) for f in dataclasses.fields(value)))
    if isinstance(value, dict):
        return (type(value), tuple((key, _shape(item)) for key, item in value.items()))
    if isinstance(value, list):
        return (type(value), tuple(_shape(item) for item in value))
    if isinstance(value, float) and math.isnan(value):
        return (float, "nan")
    return (type(value), value)


def _assert_same_spec(fast: BackboneSpec, slow: BackboneSpec) -> None:
    assert fast == slow
    assert _shape(fast) == _shape(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    assert fast.to_dict() == slow.to_dict()


def _omegaconf_spec(fields: Dict[str, Any]) -> BackboneSpec:
    """The typed merge as load_spec did it before the fast path."""
    return _typed_spec(OmegaConf.create(fields))


def _omegaconf_literal(data: Dict[str, Any], overrides: Sequence[str]) -> Any:
    return OmegaConf.to_container(apply_overrides(data, overrides), resolve=False)


def _outcome(source: Any, overrides: Optional[Sequence[str]]) -> Any:
    try:
        return ("spec", _shape(load_spec(source, overrides)))
    except Exception as error:  # noqa: BLE001 - the exact outcome, whatever it is, is what is compared
        return ("error", type(error), str(error))


def _omegaconf_outcome(monkeypatch: pytest.MonkeyPatch, source: Any, overrides: Optional[Sequence[str]]) -> Any:
    """``load_spec`` with the fast path switched off: the OmegaConf path, line for line as before."""
    with monkeypatch.context() as patch:
        patch.setattr(load_module, "typed", lambda *args, **kwargs: None)
        patch.setattr(load_module, "apply_plain_overrides", lambda *args, **kwargs: None)
        return _outcome(source, overrides)


# --- every packaged spec: typed without OmegaConf, and equal to OmegaConf's result -------------------------------


@pytest.mark.parametrize("name", backbone_names())
def test_every_packaged_spec_is_typed_without_omegaconf_as_omegaconf_types_it(name):
    data = read_spec_file(config_dir() / "backbone" / f"{name}.yaml")
    fields = _strip_hydra_keys(data)
    fast = typed(BackboneSpec, fields, nested=_NESTED)
    assert fast is not None, "a packaged spec takes the fast path"
    _assert_same_spec(fast, _omegaconf_spec(fields))
    _assert_same_spec(load_spec(name), _omegaconf_spec(fields))


def test_the_packaged_specs_cover_tokens_slices_and_both_necks():
    specs = [load_spec(name) for name in backbone_names()]
    assert any(isinstance(spec.tokens, TokenSpec) for spec in specs)
    assert any(isinstance(spec.fpn, FpnSpec) for spec in specs)
    assert any(spec.fpn is None for spec in specs)
    assert any(stage.slice is not None for spec in specs for stage in spec.stages.values())


# --- hand-written data that has exactly the schema's types: the fast path, equal to OmegaConf ------------------

VIT = {
    "model": "vit_b_16",
    "tokens": {"embed": "conv_proj", "prefix": ["class_token"], "position": "encoder.pos_embedding"},
    "stages": {"b3": {"slice": [0, 4]}, "b6": {"slice": [4, 7]}},
}
TYPED_CASES = {
    "minimal": {"model": "resnet18", "stages": {"c2": {"modules": ["layer1"]}}},
    "every-field": resnet18_spec(
        weights="/path/x.pth",
        seed=7,
        source="features",
        out_features=["c3", "c4"],
        output_names="torchvision",
        frozen_stages=2,
        reinit=["c4"],
        norm="eval",
        fpn={"out_channels": 128, "extra_blocks": "p6p7", "style": "simple"},
        layout="nhwc",
        input_size=[224, 320],
        device="meta",
        channels_last=True,
    ),
    "nulls": resnet18_spec(weights=None, source=None, tokens=None, out_features=None, fpn=None, input_size=None),
    "empty-lists": resnet18_spec(reinit=[], out_features=[], input_size=[]),
    "fpn-empty": resnet18_spec(fpn={}),
    "fpn-partial": resnet18_spec(fpn={"extra_blocks": None}),
    "tokens": VIT,
    "tokens-every-field": {
        **VIT,
        "tokens": {
            "embed": "e",
            "prefix": [],
            "position": None,
            "position_covers_prefix": False,
            "stride": 14,
        },
    },
    "tokens-stride-null": {**VIT, "tokens": {"embed": "e", "stride": None}},
    "stage-empty": resnet18_spec(stages={"c2": {}}),
    "stage-both-null": resnet18_spec(stages={"c2": {"slice": None, "modules": None}}),
    "stage-both": resnet18_spec(stages={"c2": {"slice": [0, 4], "modules": ["layer1"]}}),
    "stages-empty": resnet18_spec(stages={}),
    "stage-names-odd": resnet18_spec(stages={"a.b": {"slice": [0, 1]}, "": {"slice": [1, 2]}, "1": {"slice": [2, 3]}}),
    "stage-order": resnet18_spec(stages={"z": {"slice": [0, 1]}, "a": {"slice": [1, 2]}, "m": {"slice": [2, 3]}}),
    "values-out-of-range": resnet18_spec(seed=-1, frozen_stages=99, fpn={"out_channels": 0}, input_size=[-1]),
    "big-int": resnet18_spec(seed=2**80),
    "strings-unchecked": resnet18_spec(model="", norm="bn", device="gpu", layout="x", weights=""),
}


@pytest.mark.parametrize("data", TYPED_CASES.values(), ids=TYPED_CASES.keys())
def test_data_of_the_schema_types_takes_the_fast_path_and_equals_omegaconf(data, monkeypatch):
    fast = typed(BackboneSpec, data, nested=_NESTED)
    assert fast is not None
    _assert_same_spec(fast, _omegaconf_spec(data))
    assert _outcome(data, None) == _omegaconf_outcome(monkeypatch, data, None)


def test_the_fast_spec_shares_no_list_or_mapping_with_the_data():
    data = resnet18_spec(reinit=["c2"], input_size=[64, 64], fpn={"out_channels": 8})
    spec = load_spec(data)
    assert spec.stages["c2"].modules is not data["stages"]["c2"]["modules"]
    assert spec.reinit is not data["reinit"] and spec.input_size is not data["input_size"]
    spec.stages["c2"].modules.append("layer2")
    assert data == resnet18_spec(reinit=["c2"], input_size=[64, 64], fpn={"out_channels": 8})


def test_the_typed_nested_nodes_are_dataclasses_as_omegaconf_makes_them():
    spec = load_spec(resnet18_spec(fpn={"out_channels": 8}))
    assert type(spec.fpn) is FpnSpec and type(spec.stages["c2"]) is StageSpec
    assert typed(FpnSpec, {"out_channels": 128}) == FpnSpec(out_channels=128)


# --- values OmegaConf converts or refuses: the fast path declines, and the result or error is today's ----------

# (id, changes to the ResNet-18 spec, today's outcome: a dict of fields of the spec, or the SpecError message)
#: what featx adds to OmegaConf's line for its integer keys
_SEED = "; it takes an integer in 0..9223372036854775807, the seed of the random init (not true or false)"
_FROZEN = "; it takes how many stages to freeze, counted from the first (0 for none): a number, not stage names"
FALLBACK_CASES: List[Any] = [
    ("seed-string", {"seed": "3"}, {"seed": 3}),
    (
        "seed-float",
        {"seed": 1.5},
        f"backbone.seed: Value '1.5' of type 'float' could not be converted to Integer{_SEED}",
    ),
    (
        "seed-whole-float",
        {"seed": 2.0},
        f"backbone.seed: Value '2.0' of type 'float' could not be converted to Integer{_SEED}",
    ),
    (
        "frozen-bool",
        {"frozen_stages": True},
        f"backbone.frozen_stages: Value 'True' of type 'bool' could not be converted to Integer{_FROZEN}",
    ),
    ("channels-last-int", {"channels_last": 1}, "backbone.channels_last: must be true or false, got 1"),
    ("channels-last-string", {"channels_last": "true"}, {"channels_last": True}),
    (
        "unknown-key",
        {"pretrained": True},
        "backbone.pretrained: unknown key 'pretrained' (valid keys: model, weights, seed, source, tokens, stages, "
        "out_features, output_names, frozen_stages, reinit, norm, fpn, layout, input_size, device, channels_last)",
    ),
    ("model-list", {"model": ["resnet18"]}, "backbone.model: expected a string, got a list"),
    ("weights-list", {"weights": ["x"]}, "backbone.weights: expected a string, got a list"),
    ("model-missing-marker", {"model": "???"}, "backbone.model: missing value (a spec must set it)"),
    ("device-missing-marker", {"device": "???"}, "backbone.device: missing value (a spec must set it)"),
    (
        "fpn-string",
        {"fpn": "big"},
        "backbone.fpn: expected null or a mapping {out_channels, extra_blocks, style}, got 'big'",
    ),
    ("fpn-channels-string", {"fpn": {"out_channels": "128"}}, {"fpn": FpnSpec(out_channels=128)}),
    (
        "stage-extra-key",
        {"stages": {"c2": {"modules": ["layer1"], "stride": 4}}},
        "backbone.stages.c2.stride: unknown key 'stride' (valid keys: slice, modules)",
    ),
    (
        "input-size-float",
        {"input_size": [224.0, 224]},
        "backbone.input_size[0]: Value '224.0' of type 'float' could not be converted to Integer",
    ),
    (
        "slice-bool",
        {"stages": {"c2": {"slice": [0, True]}}},
        "backbone.stages.c2.slice[1]: Value 'True' of type 'bool' could not be converted to Integer",
    ),
    ("tokens-no-embed", {"tokens": {}}, "backbone.tokens.embed: missing value (a spec must set it)"),
    ("reinit-null", {"reinit": None}, "backbone.reinit: null is not allowed; it takes a list"),
    ("modules-tuple", {"stages": {"c2": {"modules": ("conv1",)}}}, {"stages": {"c2": StageSpec(modules=["conv1"])}}),
    ("device-int", {"device": 0}, "backbone.device: unknown device '0' (valid: auto, cpu, cuda, cuda:N, mps, meta)"),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in FALLBACK_CASES], ids=[c[0] for c in FALLBACK_CASES])
def test_values_omegaconf_converts_or_refuses_take_the_omegaconf_path(changes, expected, monkeypatch):
    data = resnet18_spec(**changes)
    assert typed(BackboneSpec, data, nested=_NESTED) is None
    assert _outcome(data, None) == _omegaconf_outcome(monkeypatch, data, None)
    if isinstance(expected, str):
        with pytest.raises(SpecError) as error:
            load_spec(data)
        assert str(error.value) == expected
    else:
        spec = load_spec(data)
        for key, value in expected.items():
            assert getattr(spec, key) == value and type(getattr(spec, key)) is type(value)


class _Text(str):
    pass


DECLINED: Dict[str, Any] = {
    "not-a-dict": [("model", "resnet18")],
    "mapping-proxy": MappingProxyType(resnet18_spec()),
    "int-key": {**resnet18_spec(), 1: "x"},
    "stage-int-key": resnet18_spec(stages={1: {"modules": ["layer1"]}}),
    "stage-mapping-proxy": resnet18_spec(stages={"c2": MappingProxyType({"modules": ["layer1"]})}),
    "stages-proxy": resnet18_spec(stages=MappingProxyType({"c2": {"modules": ["layer1"]}})),
    "str-subclass": resnet18_spec(model=_Text("resnet18")),
    "tuple-list": resnet18_spec(out_features=("c2",)),
    "model-missing": {"stages": {"c2": {"modules": ["layer1"]}}},
    "stages-missing": {"model": "resnet18"},
    "stages-list": resnet18_spec(stages=[{"modules": ["layer1"]}]),
    "stage-null": resnet18_spec(stages={"c2": None}),
    "modules-null-item": resnet18_spec(stages={"c2": {"modules": [None]}}),
    "modules-marker-item": resnet18_spec(stages={"c2": {"modules": ["???"]}}),
    "fpn-list": resnet18_spec(fpn=[256]),
    "fpn-unknown-key": resnet18_spec(fpn={"channels": 256}),
    "fpn-style-null": resnet18_spec(fpn={"style": None}),
    "tokens-stride-bool": {**VIT, "tokens": {"embed": "e", "stride": True}},
    "tokens-covers-int": {**VIT, "tokens": {"embed": "e", "position_covers_prefix": 0}},
    "tokens-string": {**VIT, "tokens": "conv_proj"},
    "hydra-keys-left": {**resnet18_spec(), "_target_": "featx.spec.hydra_store.instantiate_backbone"},
}


@pytest.mark.parametrize("data", DECLINED.values(), ids=DECLINED.keys())
def test_the_typed_conversion_declines_anything_not_exactly_of_the_schema_types(data):
    assert typed(BackboneSpec, data, nested=_NESTED) is None


def test_an_any_field_without_a_named_schema_is_declined():
    assert typed(BackboneSpec, resnet18_spec(fpn={"out_channels": 8})) is None
    assert typed(BackboneSpec, resnet18_spec()) is not None


# --- every hostile case and every bad override: the same outcome as the OmegaConf path --------------------------


@pytest.mark.parametrize(("data", "overrides"), [c[1:3] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_hostile_data_has_the_outcome_of_the_omegaconf_path(data, overrides, monkeypatch):
    assert _outcome(data, overrides) == _omegaconf_outcome(monkeypatch, data, overrides)


@pytest.mark.parametrize("overrides", [c[1] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_overrides_have_the_outcome_of_the_omegaconf_path(overrides, monkeypatch):
    data = hostile_spec()
    assert _outcome(data, overrides) == _omegaconf_outcome(monkeypatch, data, overrides)


# --- overrides: the simple ones are applied to plain data, equal to OmegaConf's update --------------------------

FPN = resnet18_spec(fpn={"out_channels": 256, "extra_blocks": None})
SIMPLE_OVERRIDES = {
    "none": [],
    "device": ["device=cpu"],
    "two": ["device=cpu", "fpn.out_channels=128"],
    "quoted-path": ["weights='/path/x.pth'"],
    "unquoted-path": ["weights=/path/x.pth"],
    "null": ["fpn.extra_blocks=null"],
    "new-key": ["seed=3"],
    "new-nested-key": ["fpn.style=simple"],
    "unknown-key": ["pretrained=true"],
    "unknown-nested-key": ["fpn.channels=1"],
    "replace-mapping": ["fpn=null"],
    "replace-stage": ["stages.c2=3"],
    "float": ["seed=1.5"],
    "nan": ["seed=nan"],
    "bool": ["channels_last=true"],
    "string-of-int": ["seed='3'"],
    "cast": ["seed=int(3.0)"],
    "missing-marker": ["device=???"],
    "set-twice": ["device=cpu", "device=meta"],
    "deep": ["stages.c2.modules=null"],
}


NO_FPN = resnet18_spec(fpn=None, tokens=None, seed=1)
ON_NULL_PARENTS = {
    "fpn-field": ["fpn.out_channels=128"],
    "fpn-two-fields": ["fpn.out_channels=128", "fpn.extra_blocks=maxpool"],
    "tokens-field": ["tokens.embed=conv1"],
    "fpn-unknown-field": ["fpn.channels=128"],
    "fpn-then-null": ["fpn.out_channels=128", "fpn=null"],
}


@pytest.mark.parametrize(
    ("data", "overrides"),
    [(FPN, overrides) for overrides in SIMPLE_OVERRIDES.values()]
    + [(NO_FPN, overrides) for overrides in ON_NULL_PARENTS.values()],
    ids=list(SIMPLE_OVERRIDES) + [f"null-parent-{name}" for name in ON_NULL_PARENTS],
)
def test_simple_overrides_are_applied_as_omegaconf_applies_them(data, overrides, monkeypatch):
    before = _shape(data)
    plain = apply_plain_overrides(data, overrides)
    assert plain is not None
    assert _shape(plain) == _shape(_omegaconf_literal(data, overrides))
    assert _shape(data) == before, "the data is not changed"
    assert _outcome(data, overrides) == _omegaconf_outcome(monkeypatch, data, overrides)


OTHER_OVERRIDES = {
    "add": ["+seed=1"],
    "force-add": ["++seed=1"],
    "delete": ["~fpn"],
    "delete-with-value": ["~fpn.out_channels=256"],
    "list": ["input_size=[224,224]"],
    "mapping": ["stages={c2:{modules:[conv1]}}"],
    "empty-list": ["reinit=[]"],
    "sweep": ["seed=1,2"],
    "range-sweep": ["seed=range(0,3)"],
    "package": ["backbone@foo=1"],
    "parent-missing": ["tokens.embed=conv1"],
    "parent-missing-unknown": ["neck.out_channels=1"],
    "parent-scalar": ["device.index=1"],
    "parent-list": ["reinit.x=1"],
    "interpolation": ["device=${oc.env:HOME}"],
    "interpolation-then-set": ["device=${x}", "device=cpu"],
    "quoted-interpolation": ["weights='${x}'"],
    "key-underscore": ["_target_=os.system"],
    "one-of-two": ["device=cpu", "+seed=1"],
}


@pytest.mark.parametrize("overrides", OTHER_OVERRIDES.values(), ids=OTHER_OVERRIDES.keys())
def test_other_overrides_take_the_omegaconf_path_with_its_outcome(overrides, monkeypatch):
    assert apply_plain_overrides(FPN, overrides) is None
    assert _outcome(FPN, overrides) == _omegaconf_outcome(monkeypatch, FPN, overrides)


def test_overrides_on_data_that_is_not_plain_take_the_omegaconf_path():
    assert apply_plain_overrides({**FPN, "reinit": ("c2",)}, ["device=cpu"]) is None
    assert apply_plain_overrides({**FPN, 1: "x"}, []) is None


def test_a_yaml_alias_changed_by_an_override_changes_in_one_place_only():
    shared = {"out_channels": 8}
    data = resnet18_spec(fpn=shared, other=shared)
    plain = apply_plain_overrides(data, ["fpn.out_channels=16"])
    assert plain == _omegaconf_literal(data, ["fpn.out_channels=16"])
    assert plain is not None and plain["other"] == {"out_channels": 8} and shared == {"out_channels": 8}


def test_malformed_overrides_raise_as_on_the_omegaconf_path():
    for overrides in (["seed"], ["seed=[1,"], "seed=1", [1]):
        with pytest.raises(SpecError) as fast:
            apply_plain_overrides(FPN, overrides)
        with pytest.raises(SpecError) as slow:
            apply_overrides(FPN, overrides)
        assert str(fast.value) == str(slow.value)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_fpn", "vit_b_16_fpn", "vgg16"])
def test_packaged_specs_with_common_overrides_take_the_fast_path(name, monkeypatch):
    overrides = ["device=cpu", "weights='/path/x.pth'", "frozen_stages=1", "fpn.out_channels=128"]
    data = read_spec_file(config_dir() / "backbone" / f"{name}.yaml")
    literal = apply_plain_overrides(data, overrides)
    assert literal is not None and typed(BackboneSpec, _strip_hydra_keys(literal), nested=_NESTED) is not None
    assert _outcome(name, overrides) == _omegaconf_outcome(monkeypatch, name, overrides)


def test_errors_from_a_file_name_the_file_on_both_paths(tmp_path, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("model: resnet18\nstages: {c2: {modules: [layer1]}}\nnorm: batch\n")
    outcome = _outcome(path, ["device=cpu"])
    assert outcome == _omegaconf_outcome(monkeypatch, path, ["device=cpu"])
    assert outcome[0] == "error" and outcome[2].startswith(str(path))
