"""Hostile specs: every bad key, type, value, file and override a careless or malicious user can write is answered
with the featx error type and a message naming the key (or the file) — never a raw traceback, never a silent
fallback, never the content of a file that is not a spec. Memory bombs run in a subprocess under RLIMIT_AS."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict, List

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, resnet18_spec, save_state_dict
from omegaconf import OmegaConf

import featx
from featx.errors import ArgumentError, SpecError
from featx.spec.limits import quoted
from featx.spec.schema import BackboneSpec, StageSpec


def _spec(**changes: Any) -> Dict[str, Any]:
    return resnet18_spec(**{"device": "meta", **changes})


def _stages(**stages: Any) -> Dict[str, Any]:
    return _spec(stages=stages)


def _nested(depth: int) -> Any:
    value: Any = "c2"
    for _ in range(depth):
        value = [value]
    return value


# (id, spec data, overrides, the key the message must start with, a pattern of the rest)
DATA_CASES = [
    ("model-missing", {"stages": {"c2": {"modules": ["layer1"]}}}, [], "backbone.model", r"missing value"),
    ("model-empty", _spec(model=""), [], "backbone.model", r"empty; name a torchvision"),
    ("model-int", _spec(model=5), [], "backbone.model", r"unknown torchvision model '5'"),
    ("model-list", _spec(model=["resnet18"]), [], "backbone.model", r"."),
    ("model-dict", _spec(model={"a": 1}), [], "backbone.model", r"."),
    ("model-typo", _spec(model="resnet5"), [], "backbone.model", r"unknown torchvision model 'resnet5'.*resnet50"),
    (
        "model-detection",
        _spec(model="fasterrcnn_resnet50_fpn"),
        [],
        "backbone.model",
        r"^backbone.model: 'fasterrcnn_resnet50_fpn' is a torchvision detection model, not one of the classifiers "
        r"featx slices \(torchvision.models.list_models\(module=torchvision.models\)\): "
        r"a detector's backbone is a classifier's \(docs/detection.md\)$",
    ),
    (
        "model-quantized",
        _spec(model="quantized_resnet18"),
        [],
        "backbone.model",
        r"^backbone.model: 'quantized_resnet18' is a torchvision quantized model, .*: "
        r"its float classifier is 'resnet18'$",
    ),
    (
        "model-video",
        _spec(model="swin3d_t"),
        [],
        "backbone.model",
        r"^backbone.model: 'swin3d_t' is a torchvision video model, not",
    ),
    ("model-path-like", _spec(model="../../resnet18"), [], "backbone.model", r"unknown torchvision model"),
    ("model-null", _spec(model=None), [], "backbone.model", r"."),
    (
        "output-names-unknown",
        _spec(output_names="tv"),
        [],
        "backbone.output_names",
        r"unknown value 'tv'.*\(valid: featx, torchvision\)",
    ),
    (  # the bare OmegaConf line gave no range, nor that it is a count and not names (reinit takes names)
        "frozen-stages-a-name",
        _spec(frozen_stages="c2"),
        [],
        "backbone.frozen_stages",
        r"could not be converted to Integer; it takes how many stages to freeze, counted from the first \(0 for "
        r"none\): a number, not stage names$",
    ),
    ("stages-missing", {"model": "resnet18"}, [], "backbone.stages", r"missing value"),
    ("stages-null", _spec(stages=None), [], "backbone.stages", r"."),
    ("stages-empty", _spec(stages={}), [], "backbone.stages", r"no stages"),
    ("stages-list", _spec(stages=[{"modules": ["layer1"]}]), [], "backbone.stages", r"."),
    ("stages-string", _spec(stages="layer1"), [], "backbone.stages", r"."),
    ("stage-null", _stages(c2=None), [], "backbone.stages.c2", r"."),
    ("stage-list", _stages(c2=["layer1"]), [], "backbone.stages.c2", r"."),
    ("stage-empty", _stages(c2={}), [], "backbone.stages.c2", r"give exactly one of 'slice' or 'modules'"),
    (
        "stage-both",
        _stages(c2={"slice": [0, 4], "modules": ["layer1"]}),
        [],
        "backbone.stages.c2",
        r"exactly one of 'slice' or 'modules'",
    ),
    ("stage-unknown-key", _stages(c2={"modules": ["layer1"], "stride": 4}), [], "backbone.stages.c2", r"unknown key"),
    ("stage-typo-key", _stages(c2={"module": ["layer1"]}), [], "backbone.stages.c2", r"unknown key 'module'.*modules"),
    ("slice-one", _stages(c2={"slice": [4]}), [], "backbone.stages.c2.slice", r"expected \[start, end\]"),
    ("slice-three", _stages(c2={"slice": [0, 4, 5]}), [], "backbone.stages.c2.slice", r"expected \[start, end\]"),
    ("slice-strings", _stages(c2={"slice": ["conv1", "layer1"]}), [], "backbone.stages.c2.slice", r"."),
    ("slice-negative", _stages(c2={"slice": [-1, 4]}), [], "backbone.stages.c2.slice", r"negative"),
    ("slice-empty-range", _stages(c2={"slice": [4, 4]}), [], "backbone.stages.c2.slice", r"is empty"),
    ("slice-reversed", _stages(c2={"slice": [5, 2]}), [], "backbone.stages.c2.slice", r"is empty"),
    ("slice-float", _stages(c2={"slice": [0.5, 4]}), [], "backbone.stages.c2.slice", r"."),
    (
        "slice-overlap",
        _stages(c2={"slice": [0, 5]}, c3={"slice": [4, 6]}),
        [],
        "backbone.stages.c3.slice",
        r"overlaps stage 'c2'",
    ),
    ("modules-empty", _stages(c2={"modules": []}), [], "backbone.stages.c2.modules", r"empty list"),
    ("modules-string", _stages(c2={"modules": "layer1"}), [], "backbone.stages.c2.modules", r"."),
    ("modules-int", _stages(c2={"modules": [1]}), [], "backbone.stages.c2.modules", r"."),
    (
        "modules-duplicate",
        _stages(c2={"modules": ["layer1", "layer1"]}),
        [],
        "backbone.stages.c2.modules",
        r"layer1",
    ),
    (
        "modules-in-two-stages",
        _stages(c2={"modules": ["conv1", "layer1"]}, c3={"modules": ["layer1"]}),
        [],
        "backbone.stages.c3.modules",
        r"layer1",
    ),
    ("stage-name-long", _stages(**{"c" * 300: {"modules": ["layer1"]}}), [], "backbone.stages.ccc", r"."),
    ("stage-name-dotted", _stages(**{"c.2": {"modules": ["layer1"]}}), [], "backbone.stages", r"."),
    ("stage-name-empty", _stages(**{"": {"modules": ["layer1"]}}), [], "backbone.stages", r"."),
    (
        "stages-too-many",
        _spec(stages={f"s{i}": {"modules": ["layer1"]} for i in range(65)}),
        [],
        "backbone.stages",
        r"65 stages; a spec may have at most 64",
    ),
    ("frozen-negative", _spec(frozen_stages=-1), [], "backbone.frozen_stages", r"."),
    ("frozen-too-many", _spec(frozen_stages=4), [], "backbone.frozen_stages", r"4 is out of range; valid: 0..3"),
    ("frozen-string", _spec(frozen_stages="all"), [], "backbone.frozen_stages", r"."),
    ("frozen-float", _spec(frozen_stages=1.5), [], "backbone.frozen_stages", r"."),
    ("frozen-list", _spec(frozen_stages=[1]), [], "backbone.frozen_stages", r"."),
    (
        "norm-unknown",
        _spec(norm="batch"),
        [],
        "backbone.norm",
        r"unknown value 'batch' \(valid: frozen, eval, train, sync\)",
    ),
    ("norm-int", _spec(norm=1), [], "backbone.norm", r"."),
    ("norm-null", _spec(norm=None), [], "backbone.norm", r"."),
    ("layout-unknown", _spec(layout="hwc"), [], "backbone.layout", r"nchw"),
    ("device-unknown", _spec(device="gpu"), [], "backbone.device", r"auto"),
    ("device-cuda-huge", _spec(device="cuda:99999"), [], "backbone.device", r"."),
    ("device-cuda-negative", _spec(device="cuda:-1"), [], "backbone.device", r"."),
    ("device-int", _spec(device=0), [], "backbone.device", r"."),
    ("device-injection", _spec(device="cpu; rm -rf /"), [], "backbone.device", r"."),
    ("channels-last-string", _spec(channels_last="sometimes"), [], "backbone.channels_last", r"."),
    ("input-size-one", _spec(input_size=[224]), [], "backbone.input_size", r"."),
    ("input-size-zero", _spec(input_size=[0, 224]), [], "backbone.input_size", r"."),
    ("input-size-negative", _spec(input_size=[-224, 224]), [], "backbone.input_size", r"."),
    ("input-size-huge", _spec(input_size=[100000, 100000]), [], "backbone.input_size", r"16384"),
    ("input-size-string", _spec(input_size="224x224"), [], "backbone.input_size", r"."),
    ("fpn-list", _spec(fpn=[256]), [], "backbone.fpn", r"."),
    ("fpn-int", _spec(fpn=256), [], "backbone.fpn", r"."),
    ("fpn-unknown-key", _spec(fpn={"channels": 256}), [], "backbone.fpn", r"unknown key 'channels'"),
    ("fpn-zero", _spec(fpn={"out_channels": 0}), [], "backbone.fpn.out_channels", r"."),
    ("fpn-negative", _spec(fpn={"out_channels": -8}), [], "backbone.fpn.out_channels", r"."),
    ("fpn-huge", _spec(fpn={"out_channels": 10**9}), [], "backbone.fpn.out_channels", r"in 1\.\.4096, got 1000000000"),
    ("fpn-past-memory", _spec(device="cpu", fpn={"out_channels": 65536}), [], "backbone.fpn.out_channels", r"4096"),
    ("fpn-string", _spec(fpn={"out_channels": "wide"}), [], "backbone.fpn.out_channels", r"."),
    ("fpn-extra-unknown", _spec(fpn={"extra_blocks": "p9"}), [], "backbone.fpn.extra_blocks", r"maxpool"),
    ("out-features-empty", _spec(out_features=[]), [], "backbone.out_features", r"empty list"),
    ("out-features-unknown", _spec(out_features=["c9"]), [], "backbone.out_features", r"c9"),
    ("out-features-duplicate", _spec(out_features=["c3", "c3"]), [], "backbone.out_features", r"c3"),
    ("out-features-string", _spec(out_features="c3"), [], "backbone.out_features", r"."),
    ("reinit-unknown", _spec(reinit=["c9"]), [], "backbone.reinit", r"c9"),
    ("reinit-string", _spec(reinit="c2"), [], "backbone.reinit", r"."),
    ("seed-negative", _spec(seed=-1), [], "backbone.seed", r"0\.\.9223372036854775807"),
    ("seed-huge", _spec(seed=2**64), [], "backbone.seed", r"."),
    ("seed-string", _spec(seed="lucky"), [], "backbone.seed", r"."),
    ("seed-float", _spec(seed=0.5), [], "backbone.seed", r"."),
    ("seed-bool", _spec(seed=True), [], "backbone.seed", r"; it takes an integer in 0\.\.9223372036854775807, "),
    ("weights-list", _spec(weights=["DEFAULT"]), [], "backbone.weights", r"."),
    ("source-int", _spec(source=3), [], "backbone.source", r"."),
    ("source-empty", _spec(source=""), [], "backbone.source", r"^backbone\.source: empty; name the container"),
    (
        "reinit-twice",
        _spec(reinit=["c3", "c3"]),
        [],
        "backbone.reinit",
        r"^backbone\.reinit\[1\]: 'c3' is listed twice$",
    ),
    ("unknown-key", _spec(pretrained=True), [], "backbone", r"unknown key 'pretrained'"),
    ("typo-key", _spec(frozen_stage=1), [], "backbone", r"unknown key 'frozen_stage'.*frozen_stages"),
    ("target-foreign", _spec(_target_="os.system"), [], "backbone", r"os\.system"),
    ("defaults-foreign", _spec(defaults=["/etc/passwd"]), [], "backbone", r"defaults"),
    ("interpolation-env", _spec(device="${oc.env:HOME}"), [], "backbone.device", r"interpolation"),
    ("interpolation-node", _spec(norm="${device}"), [], "backbone.norm", r"interpolation"),
    ("interpolation-in-list", _stages(c2={"modules": ["${oc.env:USER}"]}), [], "backbone.stages", r"interpolation"),
    ("interpolation-in-key", _stages(**{"${oc.env:HOME}": {"modules": ["layer1"]}}), [], "backbone", r"interpolation"),
    ("deeply-nested", _spec(reinit=_nested(70)), [], "backbone", r"nested more than 64 levels"),
]

OVERRIDE_CASES = [
    ("override-not-a-list", "frozen_stages=1", "backbone.overrides", r"list of strings"),
    ("override-not-strings", [1, 2], "backbone.overrides", r"list of strings"),
    ("override-none-item", [None], "backbone.overrides", r"list of strings"),
    ("override-too-many", ["frozen_stages=1"] * 257, "backbone.overrides", r": 257 overrides; at most 256 are taken$"),
    (  # it said "at most 256 overrides of at most 4096 characters each", whichever bound the call passed
        "override-too-long",
        ["seed=1", "model=" + "x" * 5000],
        "backbone.overrides",
        r": override 1 has 5006 characters; at most 4096 are taken \('model=x+\.\.\.\)$",
    ),
    ("override-grammar", ["frozen_stages=[1,"], "backbone.overrides", r"."),
    ("override-no-equals", ["frozen_stages"], "backbone.overrides", r"."),
    ("override-nested-deep", ["input_size=" + "[" * 1500 + "]" * 1500], "backbone.overrides", r"nested too deeply"),
    (  # deep enough for OmegaConf's recursion, not for the parser's: a raw RecursionError
        "override-nested-deep-value",
        ["reinit=" + "[" * 150 + "]" * 150],
        "backbone.reinit",
        r"^backbone\.reinit: 'reinit=\[\[.*\.\.\. is nested too deeply$",
    ),
    ("override-sweep", ["frozen_stages=1,2"], "backbone.frozen_stages", r"is a sweep"),
    ("override-range-sweep", ["frozen_stages=range(0,3)"], "backbone.frozen_stages", r"is a sweep"),
    ("override-package", ["backbone@foo=1"], "backbone.backbone", r"no package"),
    ("override-delete-missing", ["~fpn"], "backbone.fpn", r"deletes a key that is not set"),
    ("override-add-existing", ["+model=resnet50"], "backbone.model", r"drop the '\+'"),
    (  # an override copied from the app's command line: the message gave no clue the prefix was the problem
        "override-app-prefix",
        ["backbone.seed=3"],
        "backbone.backbone",
        r"^backbone\.backbone: unknown key 'backbone' \(valid keys: model, .*\); overrides here are relative to the "
        r"backbone: write seed=3$",
    ),
    (
        "override-app-prefix-add",
        ["device=meta", "+backbone.stages.c2.modules=[conv1]"],
        "backbone.backbone",
        r"unknown key 'backbone' \(valid keys: .*\); overrides here are relative to the backbone: write "
        r"\+stages\.c2\.modules=\[conv1\]$",
    ),
    (
        "override-app-prefix-delete",
        ["~backbone.fpn"],
        "backbone.backbone.fpn",
        r"^backbone\.backbone\.fpn: '~backbone\.fpn' deletes a key that is not set; overrides here are relative to "
        r"the backbone: write ~fpn$",
    ),
    (  # no hint where the rest names no key of a spec
        "override-backbone-unknown-rest",
        ["backbone.sed=3"],
        "backbone.backbone",
        r"^backbone\.backbone: unknown key 'backbone' \(valid keys: [a-z_, ]*\)$",
    ),
    ("override-unknown-key", ["frozen_stage=1"], "backbone", r"unknown key 'frozen_stage'.*frozen_stages"),
    ("override-wrong-type", ["frozen_stages=many"], "backbone.frozen_stages", r"."),
    ("override-interpolation", ["device=${oc.env:HOME}"], "backbone.device", r"interpolation"),
    ("override-resolver-decode", ["device=${oc.decode:'cpu'}"], "backbone.device", r"interpolation"),
    ("override-seed-negative", ["seed=-5"], "backbone.seed", r"."),
    ("override-stage-modules-unknown-key", ["stages.c2.slices=[0,4]"], "backbone.stages.c2", r"unknown key"),
    ("override-delete-model", ["~model"], "backbone.model", r"missing"),
    ("override-delete-stages", ["~stages"], "backbone.stages", r"missing"),
]


def _assert_spec_error(error: pytest.ExceptionInfo, key: str, pattern: str) -> None:
    message = str(error.value)
    assert error.type is SpecError, f"{error.type.__name__}: {message}"
    assert message.startswith(key), message
    assert "Traceback" not in message and len(message) < 2000, message
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    ("data", "overrides", "key", "pattern"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES]
)
def test_bad_spec_data_is_a_spec_error_naming_the_key(data, overrides, key, pattern):
    with pytest.raises(featx.FeatxError) as error:
        featx.build(data, overrides=overrides)
    _assert_spec_error(error, key, pattern)


@pytest.mark.parametrize(
    ("overrides", "key", "pattern"), [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES]
)
def test_bad_overrides_are_a_spec_error_naming_the_key(overrides, key, pattern):
    with pytest.raises(featx.FeatxError) as error:
        featx.load_spec(_spec(), overrides=overrides)
    _assert_spec_error(error, key, pattern)


def test_a_delete_with_a_value_deletes_only_while_the_key_holds_that_value():
    """Hydra's ``~key=value`` deletes only when the key holds ``value`` (the app refuses it otherwise); build's
    overrides deleted the key whatever it held: ``~weights=IMAGENET1K_V2`` of a spec with DEFAULT weights gave a
    randomly initialised network, ``~frozen_stages=3`` of one frozen stage an unfrozen one."""
    spec = _spec(weights="DEFAULT", frozen_stages=1)
    with pytest.raises(SpecError) as error:
        featx.load_spec(spec, overrides=["~weights=IMAGENET1K_V2"])
    assert str(error.value) == (
        "backbone.weights: '~weights=IMAGENET1K_V2' deletes the key only while its value is 'IMAGENET1K_V2'; "
        "it is 'DEFAULT'"
    )
    with pytest.raises(SpecError, match=r"^backbone\.frozen_stages: .* while its value is 3; it is 1$"):
        featx.load_spec(spec, overrides=["~frozen_stages=3"])
    with pytest.raises(SpecError, match=r"^backbone\.stages: .* while its value is \{'c2': .*; it is \{'c2': "):
        featx.load_spec(spec, overrides=["~stages={c2:{modules:[conv1]}}"])
    assert featx.load_spec(spec, overrides=["~weights=DEFAULT"]).weights is None
    assert featx.load_spec(spec, overrides=["~frozen_stages=1"]).frozen_stages == 0
    assert featx.load_spec(spec, overrides=["~weights"]).weights is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("out_features=[[c2]]", "backbone.out_features[0]: expected a name, got a list"),
        ("out_features=[c2,{a:1}]", "backbone.out_features[1]: expected a name, got a mapping"),
        ("reinit=[[c2]]", "backbone.reinit[0]: expected a name, got a list"),
        ("stages.c2.modules=[[conv1]]", "backbone.stages.c2.modules[0]: expected a name, got a list"),
        ("stages.c2.slice=[[0],4]", "backbone.stages.c2.slice[0]: expected a number, got a list"),
        ("input_size=[[64],64]", "backbone.input_size[0]: expected a number, got a list"),
        ("out_features={a:1}", "backbone.out_features: expected a list (or null), got a mapping"),
        ("input_size={h:64}", "backbone.input_size: expected a list (or null), got a mapping"),
        # "(or null)" for keys that refuse null too
        ("reinit=''", "backbone.reinit: expected a list, got ''"),
        ("reinit={a:1}", "backbone.reinit: expected a list, got a mapping"),
        ("tokens={embed:conv_proj,prefix:[[x]]}", "backbone.tokens.prefix[0]: expected a name, got a list"),
    ],
)
def test_a_list_holding_lists_or_mappings_is_a_spec_error_naming_the_item(tmp_path, override, message):
    """OmegaConf's merge keeps a nested list or mapping as one item of a List[str] (the checks then failed with raw
    TypeErrors and AttributeErrors) and refuses a mapping for a list naming neither the key nor the form."""
    key, _, value = override.partition("=")
    parts = key.split(".")
    data = _stages(c2={"slice": [0, 4]}) if parts[-1] == "slice" else _spec()
    data_with_value = OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist([override]))
    )
    file = tmp_path / "spec.yaml"
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(data_with_value)))
    for source, overrides in [(data, [override]), (data_with_value, []), (str(file), [])]:
        with pytest.raises(SpecError) as error:
            featx.build(source, overrides=overrides)
        assert str(error.value) in (message, f"{file}: {message}"), (source, str(error.value))
    packaged, packaged_override = (
        ("vgg16", override.replace("c2.", "c1.")) if parts[-1] == "slice" else ("resnet18", override)
    )
    with pytest.raises(SpecError) as error:  # an override's error is not blamed on the packaged file
        featx.build(packaged, overrides=[packaged_override])
    assert str(error.value) == (message.replace("c2.", "c1.") if parts[-1] == "slice" else message)


@pytest.mark.parametrize("key", ["weights", "norm", "device", "frozen_stages", "seed", "layout", "channels_last"])
def test_omegaconfs_missing_marker_is_a_missing_value_not_the_default(tmp_path, key):
    """``???`` merged into the schema would silently take the key's default (``weights: ???`` a random init)."""
    expected = f"backbone.{key}: missing value (a spec must set it)"
    file = tmp_path / "spec.yaml"
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec(**{key: "???"}))))
    routes = [
        (_spec(**{key: "???"}), []),
        (OmegaConf.create(_spec(**{key: "???"})), []),
        (_spec(), [f"{key}=???"]),
        (str(file), []),
    ]
    for source, overrides in routes:
        with pytest.raises(SpecError) as error:
            featx.build(source, overrides=overrides)
        assert str(error.value).endswith(expected), (source, str(error.value))


def test_an_error_in_a_value_an_override_set_is_not_blamed_on_the_spec_file(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec())))
    with pytest.raises(SpecError) as error:
        featx.load_spec(str(file), overrides=["device=cpu:1"])
    assert str(error.value).startswith("backbone.device: unknown device 'cpu:1'"), str(error.value)
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec(frozen_stages=9))))
    with pytest.raises(SpecError) as error:  # the file's own value: the file is named, with the overrides applied
        featx.load_spec(str(file), overrides=["seed=3"])
    assert str(error.value).startswith(
        f"{file} with overrides ['seed=3']: backbone.frozen_stages: 9 is out of range"
    ), str(error.value)
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec())))
    with pytest.raises(SpecError) as error:  # the override set a key inside the stage the error names
        featx.load_spec(str(file), overrides=["stages.c2.slice=[0,1]"])
    assert str(error.value) == "backbone.stages.c2: give exactly one of 'slice' or 'modules'"
    file.write_text(OmegaConf.to_yaml(OmegaConf.create({**_spec(), "bogus": 1})))
    with pytest.raises(SpecError) as error:  # an error elsewhere stays the file's
        featx.load_spec(str(file), overrides=["stages.c2.modules=[conv1]"])
    assert str(error.value).startswith(
        f"{file} with overrides ['stages.c2.modules=[conv1]']: backbone.bogus: unknown key"
    ), str(error.value)
    with pytest.raises(SpecError) as error:  # an override of one key breaks another's check: not the file's alone
        featx.build("vit_h_14_fpn", overrides=["device=meta", "tokens.stride=null"])
    assert re.match(
        r"^/.*/vit_h_14_fpn\.yaml with overrides \['device=meta', 'tokens\.stride=null'\]: backbone\.fpn: stage ",
        str(error.value),
    ), str(error.value)
    with pytest.raises(SpecError) as error:  # the overrides are quoted and shortened: one line, never a dump
        featx.build("vit_h_14_fpn", overrides=["device=meta", "tokens.stride=null", *["seed=0"] * 200])
    head = str(error.value).split(": backbone.fpn: ")[0]
    assert "\n" not in str(error.value) and head.endswith("'seed=0', 'seed=0',...") and len(head) < 200, head


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (StageSpec(slice="02"), "backbone.stages.c1.slice: expected a list (or null), got '02'"),  # was [0, 2]
        (StageSpec(slice={0: 1, 2: 3}), "backbone.stages.c1.slice: expected a list (or null), got a mapping"),
        (StageSpec(modules="features.0"), "backbone.stages.c1.modules: expected a list (or null), got 'features.0'"),
        (
            StageSpec(slice=[0, 2], modules=["features.5"]),
            "backbone.stages.c1: give exactly one of 'slice' or 'modules'",
        ),
        (StageSpec(), "backbone.stages.c1: give exactly one of 'slice' or 'modules'"),
    ],
)
def test_a_spec_object_is_checked_as_its_data_would_be(stage, message):
    """StageSpec.to_dict ran list() on what it was given ("02" built as [0, 2]) and kept slice over modules."""
    spec = BackboneSpec(model="vgg11", source="features", stages={"c1": stage}, device="meta")
    with pytest.raises(SpecError) as error:
        featx.build(spec)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("value", [2, -1, 2**70, "yes", "on", 1.0, None])
def test_a_flag_takes_true_or_false_only(value):
    """OmegaConf's merge took 2, -1, 2**70 and "yes" for true (featx's apps refuse them; featx.build did not)."""
    for source, overrides in [(_spec(channels_last=value), []), (_spec(), [f"channels_last={value!r}"])]:
        if isinstance(value, str) and overrides:
            overrides = [f"channels_last={value}"]
        with pytest.raises(SpecError) as error:
            featx.build(source, overrides=overrides)
        null = value is None and not overrides  # the override channels_last=None gives the string 'None'
        expected = "null is not allowed; it takes true or false" if null else "must be true or false, got "
        assert str(error.value).startswith(f"backbone.channels_last: {expected}"), str(error.value)
    for accepted, expected in [(True, True), ("false", False), ("True", True)]:
        assert featx.load_spec(_spec(channels_last=accepted)).channels_last is expected


def test_the_models_checks_name_the_spec_file_for_its_own_values(tmp_path):
    """SpecError.origin is the spec file an error's value came from: the checks that need the model (unknown model,
    module paths, execution order) ran after loading and named no file."""
    file = tmp_path / "mine.yaml"
    cases = [
        ({"model": "resnet5"}, "backbone.model: unknown torchvision model 'resnet5'"),
        ({"stages": {"c2": {"modules": ["conv1", "layer9"]}}}, "backbone.stages.c2.modules[1]: 'layer9' not found"),
        ({"stages": {"c3": {"modules": ["layer2"]}}}, "backbone.stages.c3: the model's forward runs 'conv1' first"),
    ]
    for changes, message in cases:
        file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec(**changes))))
        with pytest.raises(SpecError) as error:
            featx.build(str(file))
        assert error.value.origin == str(file) and str(error.value).startswith(f"{file}: {message}")
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec())))
    with pytest.raises(SpecError) as error:  # the override's value: no file
        featx.build(str(file), overrides=["stages.c2.modules=[conv1,layer9]"])
    assert error.value.origin is None and str(error.value).startswith(cases[1][1])


def test_a_missing_marker_inside_a_list_names_its_item():
    with pytest.raises(SpecError, match=r"^backbone\.stages\.c3\.modules\[1\]: missing value"):
        featx.build(
            _stages(c2={"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, c3={"modules": ["layer2", "???"]})
        )


def test_replacing_stages_by_override_replaces_them():
    """``stages={...}`` sets the mapping (no merge into the file's four stages); the one stage is conv1 alone."""
    spec = featx.load_spec("resnet18", overrides=["device=cpu", "frozen_stages=0", "stages={c2:{modules:[conv1]}}"])
    assert spec.to_dict()["stages"] == {"c2": {"modules": ["conv1"]}}
    backbone = featx.build(spec).eval()
    reference = torchvision.models.resnet18().eval()
    reference.conv1.load_state_dict(backbone.stages.c2.conv1.state_dict())
    image = torch.randn(1, 3, 32, 32)
    assert list(backbone(image)) == ["c2"]
    torch.testing.assert_close(backbone(image)["c2"], reference.conv1(image))


STEM = ["conv1", "bn1", "relu", "maxpool"]
_SKIPS = "the model's forward runs {found!r} {where}, but no stage lists it: the stages would skip it"
_ORDER = "{path!r} is listed {where}, but the model's forward runs {found!r} there"
# (id, model, stages as name -> modules, the stage named, the message's start): specs that would build plausible
# but wrong features if their stages were only checked to chain (same channels before and after what is skipped)
STAGE_ORDER_CASES = [
    (
        "skip-layer1",
        "resnet18",
        {"c2": STEM, "c3": ["layer2"]},
        "c3",
        _SKIPS.format(found="layer1", where="after 'maxpool'"),
    ),
    (
        "skip-bn1-relu",
        "resnet18",
        {"c2": ["conv1", "maxpool", "layer1"]},
        "c2",
        _SKIPS.format(found="bn1", where="after 'conv1'"),
    ),
    (
        "swap-relu-bn1",
        "resnet18",
        {"c2": ["conv1", "relu", "bn1", "maxpool", "layer1"]},
        "c2",
        _ORDER.format(path="relu", where="after 'conv1'", found="bn1"),
    ),
    (
        "swap-stages",
        "resnet18",
        {"c2": [*STEM, "layer2"], "c3": ["layer1"]},
        "c2",
        _ORDER.format(path="layer2", where="after 'maxpool'", found="layer1"),
    ),
    ("skip-stem", "resnet18", {"c2": ["layer1"]}, "c2", _SKIPS.format(found="conv1", where="first")),
    (
        "skip-a-block",
        "resnet18",
        {"c2": [*STEM, "layer1.0"], "c3": ["layer2"]},
        "c3",
        _SKIPS.format(found="layer1.1", where="after 'layer1.0'"),
    ),
    (
        "skip-a-stage-inside",
        "resnet18",
        {"c2": [*STEM, "layer1", "layer3", "layer2"]},
        "c2",
        _ORDER.format(path="layer3", where="after 'layer1'", found="layer2"),
    ),
    (
        "vgg-skip-relu",
        "vgg11",
        {"c1": ["features.0", "features.2"]},
        "c1",
        _SKIPS.format(found="features.1", where="after 'features.0'"),
    ),
    (
        "mobilenet-skip-block",
        "mobilenet_v3_small",
        {"c2": ["features.0", "features.2"]},
        "c2",
        _SKIPS.format(found="features.1", where="after 'features.0'"),
    ),
    (
        "densenet-skip-norm0",
        "densenet121",
        {"c2": ["features.conv0", "features.relu0", "features.pool0"]},
        "c2",
        _SKIPS.format(found="features.norm0", where="after 'features.conv0'"),
    ),
    (
        "convnext-swap",
        "convnext_tiny",
        {"c2": ["features.1", "features.0"]},
        "c2",
        _ORDER.format(path="features.1", where="first", found="features.0"),
    ),
    (
        "efficientnet-skip",
        "efficientnet_b0",
        {"c2": ["features.0", "features.1", "features.3"]},
        "c2",
        _SKIPS.format(found="features.2", where="after 'features.1'"),
    ),
    (
        "googlenet-skip-conv2",
        "googlenet",
        {"c2": ["conv1", "maxpool1", "conv3"]},
        "c2",
        _SKIPS.format(found="conv2", where="after 'maxpool1'"),
    ),
    (
        "regnet-skip-stem",
        "regnet_x_400mf",
        {"c2": ["trunk_output.block1"]},
        "c2",
        _SKIPS.format(found="stem", where="first"),
    ),
    (
        "swin-skip-stage",
        "swin_t",
        {"c2": ["features.0", "features.1", "features.3"]},
        "c2",
        _SKIPS.format(found="features.2", where="after 'features.1'"),
    ),
    (
        "shufflenet-skip-maxpool",
        "shufflenet_v2_x1_0",
        {"c2": ["conv1", "stage2"]},
        "c2",
        _SKIPS.format(found="maxpool", where="after 'conv1'"),
    ),
]


@pytest.mark.parametrize(
    ("model", "stages", "stage", "message"), [c[1:] for c in STAGE_ORDER_CASES], ids=[c[0] for c in STAGE_ORDER_CASES]
)
def test_stages_that_skip_or_reorder_what_the_forward_runs_are_refused(model, stages, stage, message):
    spec = {"model": model, "device": "meta", "stages": {name: {"modules": paths} for name, paths in stages.items()}}
    with pytest.raises(SpecError) as error:
        featx.build(spec)
    assert str(error.value).startswith(f"backbone.stages.{stage}: {message}"), str(error.value)


def test_a_stage_may_end_inside_a_container_and_equals_torchvisions_modules(tmp_path):
    reference = randomize_norm_statistics(torchvision.models.resnet18()).eval()
    weights = save_state_dict(reference, tmp_path / "resnet18.pth")
    spec = _spec(device="cpu", norm="eval", weights=str(weights), stages={"c2": {"modules": [*STEM, "layer1.0"]}})
    backbone = featx.build(spec).eval()
    image = torch.randn(1, 3, 32, 32)
    expected = reference.layer1[0](reference.maxpool(reference.relu(reference.bn1(reference.conv1(image)))))
    assert torch.equal(backbone(image)["c2"], expected)


def test_a_side_branch_the_chain_never_uses_may_be_left_out():
    """Inception v3's AuxLogits runs (in training) beside the chain; its packaged spec leaves it out and builds."""
    backbone = featx.build("inception_v3", overrides=["device=meta"])
    assert "AuxLogits" not in {path.split(".")[0] for path, _ in backbone.named_modules()}


def _parameters(backbone: featx.Backbone) -> Dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in backbone.state_dict().items()}


def test_random_init_is_one_network_per_seed_whatever_the_global_rng():
    """``weights: null`` is seeded by the spec: the global seed (as another process or rank would have it) changes
    nothing, another ``seed`` changes every random layer, and the caller's RNG stream is left where it was."""
    spec = resnet18_spec(device="cpu", fpn={"out_channels": 32})
    torch.manual_seed(1)
    first = _parameters(featx.build(spec))
    torch.manual_seed(2)
    state = torch.random.get_rng_state()
    second = _parameters(featx.build(spec))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)
    other = _parameters(featx.build({**spec, "seed": 1}))
    random_layers = [
        key for key in first if key.endswith("conv1.weight") or key.startswith("neck.") and "weight" in key
    ]
    assert random_layers and not any(torch.equal(first[key], other[key]) for key in random_layers)


def test_random_init_is_one_network_per_seed_whatever_the_default_dtype():
    """Under ``torch.set_default_dtype(torch.float64)`` the same seed drew other numbers (a different network, by up
    to 0.28); now the draws are float32's, and the parameters take the default dtype as torch's modules do."""
    spec = resnet18_spec(device="cpu", fpn={"out_channels": 32})
    first = _parameters(featx.build(spec))
    torch.set_default_dtype(torch.float64)
    try:
        doubled = _parameters(featx.build(spec))
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    assert first.keys() == doubled.keys()
    for key, value in first.items():
        expected_dtype = torch.float64 if value.is_floating_point() else value.dtype
        assert doubled[key].dtype == expected_dtype, key
        assert torch.equal(doubled[key], value.to(expected_dtype)), key


SECRET = "root:$6$SECRETHASH:19000:0:99999:7:::"

# (id, file name, bytes, pattern after the file name)
FILE_CASES = [
    ("empty", "a.yaml", b"", r"empty|mapping"),
    (
        "interpolation",
        "a.yaml",
        b"model: resnet18\nweights: ${model}\nstages: {c2: {modules: [conv1]}}\n",
        r"a\.yaml: backbone\.weights: holds an interpolation",
    ),
    ("only-comment", "a.yaml", b"# nothing\n", r"empty|mapping"),
    ("null-document", "a.yaml", b"null\n", r"mapping"),
    ("top-level-list", "a.yaml", b"- model: resnet18\n", r"mapping"),
    ("top-level-scalar", "a.yaml", b"resnet18\n", r"mapping"),
    ("yaml-syntax", "a.yaml", b"model: [resnet18\n", r"YAML"),
    ("tab-indent", "a.yaml", b"model: resnet18\nstages:\n\tc2: 1\n", r"YAML"),
    ("duplicate-key", "a.yaml", b"model: resnet18\nmodel: resnet50\n", r"model.*twice|duplicate"),
    (  # YAML 1.1 read 017 as octal 15 (and 1:30 as 90) in a file, where seed=017 is 17 as an override
        "octal-int",
        "a.yaml",
        b"model: resnet18\nseed: 017\nstages: {c2: {modules: [conv1]}}\n",
        r"a\.yaml: backbone: not a spec value: the number 017, which YAML reads as octal \(a leading 0\) or base 60 "
        r"\(a:b\) and an override as decimal; write it without the leading 0 or the colon \(or quote it to give a "
        r"string\) at line 2, column 7$",
    ),
    ("base-60-int", "a.yaml", b"model: resnet18\nseed: 1:30\n", r"backbone: not a spec value: the number 1:30, "),
    (
        "duplicate-key-beside-a-merge",
        "a.yaml",
        b"model: resnet18\nstages:\n  c2: &b {modules: [conv1]}\n  c3: {<<: *b, modules: [a], modules: [b]}\n",
        r"key 'modules' is given twice at line 4",
    ),
    ("merge-of-a-scalar", "a.yaml", b"model: resnet18\nstages: {<<: 5}\n", r"not valid YAML"),
    # values the safe loader makes but a spec cannot hold: OmegaConf's message named neither the file nor the line,
    # and a mapping or list as a key was a raw TypeError
    (
        "date",
        "a.yaml",
        b"model: resnet18\nweights: 2001-12-14\n",
        r"a\.yaml: backbone: not a spec value: a date or time \(a spec holds strings, numbers, true/false, null, lists "
        r"and mappings; quote it to give a string\) at line 2, column 10$",
    ),
    ("set", "a.yaml", b"model: resnet18\nout_features: !!set {a}\n", r"a\.yaml: backbone: not a spec value: a set "),
    (
        "bytes",
        "a.yaml",
        b"model: resnet18\nweights: !!binary aGVsbG8=\n",
        r"a\.yaml: backbone: not a spec value: bytes",
    ),
    (
        "omap",
        "a.yaml",
        b"model: resnet18\nstages: !!omap [c2: 1]\n",
        r"a\.yaml: backbone: not a spec value: an ordered",
    ),
    ("null-key", "a.yaml", b"model: resnet18\nstages: {null: 1}\n", r"a\.yaml: backbone: not a spec value: an empty "),
    (
        "list-key",
        "a.yaml",
        b"model: resnet18\n? [1]\n: 2\n",
        r"a\.yaml: backbone: not a spec value: a list as a key \(a key is a name or a number\) at",
    ),
    (
        "mapping-key",
        "a.yaml",
        b"model: resnet18\n? {a: 1}\n: 2\n",
        r"a\.yaml: backbone: not a spec value: a mapping as a ",
    ),
    ("utf16", "a.yaml", "model: resnet18\n".encode("utf-16"), r"UTF-8"),
    ("latin1", "a.yaml", "model: r\xe9snet\n".encode("latin-1"), r"UTF-8"),
    ("binary", "a.yaml", bytes(range(256)) * 4, r"UTF-8|YAML"),
    ("nul-bytes", "a.yaml", b"model: resnet18\x00\n", r"."),
    ("multi-document", "a.yaml", b"model: resnet18\n---\nmodel: resnet50\n", r"YAML|document"),
    ("python-tag", "a.yaml", b"model: !!python/object/apply:os.system ['echo hi']\n", r"YAML"),
    ("custom-tag", "a.yaml", b"model: !evil resnet18\n", r"YAML"),
    ("secret-invalid-yaml", "a.yaml", f"{SECRET}\n  - [\n".encode(), r"YAML"),
    ("secret-valid-yaml", "a.yaml", f"{SECRET}: 1\n".encode(), r"unknown key"),
    (
        "too-big",
        "a.yaml",
        b"model: resnet18\n" + b"# padding\n" * 120_000,
        r"too large for a spec file \(at most 1048576\)",
    ),
    ("wide-flow-list", "a.yaml", b"model: resnet18\nreinit: [" + b"a," * 300_000 + b"a]\n", r"values"),
    ("deep-flow", "a.yaml", b"model: " + b"[" * 5000 + b"]" * 5000 + b"\n", r"nested|YAML"),
    ("txt-suffix", "a.txt", b"model: resnet18\n", r"\.yaml"),
    ("no-suffix", "spec", b"model: resnet18\n", r"\.yaml"),
    ("json-suffix", "a.json", b'{"model": "resnet18"}', r"\.yaml"),
]


def test_yaml_merge_keys_read_as_omegaconf_and_hydra_read_them(tmp_path):
    """``<<: *anchor`` is YAML's merge key: the mapping's own keys win over the merged ones."""
    file = tmp_path / "merged.yaml"
    file.write_text(
        "model: resnet18\ndevice: meta\nstages:\n"
        "  c2: &stage {modules: [conv1, bn1, relu, maxpool, layer1]}\n"
        "  c3: {<<: *stage, modules: [layer2]}\n"
    )
    expected = OmegaConf.to_container(OmegaConf.load(file))
    assert expected["stages"]["c3"] == {"modules": ["layer2"]}
    spec = featx.load_spec(str(file))
    assert {name: {"modules": stage.modules} for name, stage in spec.stages.items()} == expected["stages"]


@pytest.mark.parametrize(("name", "content", "pattern"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_spec_files_are_named_and_never_echoed(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SpecError) as error:
        featx.build(path, overrides=["device=meta"])
    message = str(error.value)
    assert str(path) in message, message
    assert re.search(pattern, message), message
    assert "SECRETHASH" not in message and "echo hi" not in message and len(message) < 1000, message
    assert path.read_bytes() == content  # read, never touched


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        ("/etc/shadow", r"\.yaml"),
        ("/etc/passwd", r"\.yaml"),
        ("/nonexistent/x.yaml", r"no such file|not found|does not exist"),
        ("/dev/zero.yaml", r"."),
        ("~/nonexistent-featx.yml", r"no such file|not found|does not exist"),
    ],
)
def test_system_paths_are_refused_without_reading_them(target, pattern):
    with pytest.raises(SpecError) as error:
        featx.build(target, overrides=["device=meta"])
    assert re.search(pattern, str(error.value)), str(error.value)
    assert "root:" not in str(error.value)


def test_a_folder_a_fifo_and_a_link_to_a_secret_are_refused(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(SpecError, match=r"folder.yaml.*folder|directory"):
        featx.build(tmp_path / "folder.yaml")
    secret = tmp_path / "secret"
    secret.write_text(f"{SECRET}\n")
    (tmp_path / "link.yaml").symlink_to(secret)
    with pytest.raises(SpecError) as error:
        featx.build(tmp_path / "link.yaml")
    assert "SECRETHASH" not in str(error.value)


@pytest.mark.parametrize(
    ("source", "error_type", "pattern"),
    [
        (None, SpecError, r"^backbone: cannot build from NoneType"),
        (42, SpecError, r"^backbone: cannot build from int"),
        (3.5, SpecError, r"^backbone: cannot build from float"),
        (b"resnet18", SpecError, r"^backbone: cannot build from bytes"),
        (["resnet18"], SpecError, r"^backbone: cannot build from list"),
        (object(), SpecError, r"^backbone: cannot build from object"),
        ("", SpecError, r"^backbone: unknown backbone ''"),
        ("resnet5", SpecError, r"^backbone: unknown backbone 'resnet5'.*resnet50"),
        ("RESNET18", SpecError, r"^backbone: unknown backbone 'RESNET18'"),
        ("resnet18 ", SpecError, r"^backbone: unknown backbone 'resnet18 '"),
        ("../conf/backbone/resnet18", SpecError, r"\.yaml"),
    ],
)
def test_build_takes_a_name_path_mapping_or_spec_and_names_anything_else(source, error_type, pattern):
    with pytest.raises(error_type, match=pattern):
        featx.build(source)


def test_a_composed_config_may_not_call_resolvers():
    config = OmegaConf.create({**_spec(), "device": "${oc.env:HOME}"})
    with pytest.raises(SpecError, match=r"^backbone.device: calls an OmegaConf resolver"):
        featx.build(config)
    composed = OmegaConf.create({"r": "oc.env", "bb": {**_spec(), "device": "${${r}:HOME}"}})  # a computed name
    with pytest.raises(SpecError, match=r"^backbone.device: calls an OmegaConf resolver"):
        featx.build(composed.bb)
    referring = OmegaConf.create({**_spec(device="meta"), "norm": "${layout_norm}", "layout_norm": "eval"})
    with pytest.raises(SpecError, match=r"unknown key 'layout_norm'"):
        featx.build(referring)


@pytest.mark.parametrize(
    ("config", "key", "reached"),
    [
        ({"s": "${oc.env:FEATX_TEST_SECRET}", "bb": {"model": "${s}"}}, "model", "s"),  # beside the node
        ({"t": "${oc.env:FEATX_TEST_SECRET}", "s": "x${t}", "bb": {"model": "${s}"}}, "model", "t"),  # a chain
        ({"s": "${oc.env:FEATX_TEST_SECRET}", "bb": {"model": "${..s}"}}, "model", "s"),  # relative
        ({"a": {"s": "${oc.env:FEATX_TEST_SECRET}"}, "bb": {"model": "${a}"}}, "model.s", "a.s"),  # inside a node
        ({"l": ["${oc.env:FEATX_TEST_SECRET}"], "outer": {"bb": {"model": "${l.0}"}}}, "model", "l.0"),  # a list entry
        # through a node that is itself a reference, which a lookup in the unresolved data does not follow
        ({"x": {"b": "${oc.env:FEATX_TEST_SECRET}"}, "a": "${x}", "bb": {"model": "${a.b}"}}, "model", "x.b"),
        (
            {"a": {"x": {"y": "${oc.env:FEATX_TEST_SECRET}"}}, "p": "${a}", "bb": {"model": "${p.x.y}"}},
            "model",
            "a.x.y",
        ),
        ({"k": "s", "s": "${oc.env:FEATX_TEST_SECRET}", "bb": {"model": "${${k}}"}}, "model", "s"),  # computed
        # resolver names a regular expression does not see: built by an interpolation
        ({"r": "oc.env", "s": "${${r}:FEATX_TEST_SECRET}", "bb": {"model": "${s}"}}, "model", "s"),
        ({"r": "env", "s": "${oc.${r}:FEATX_TEST_SECRET}", "bb": {"model": "${s}"}}, "model", "s"),
    ],
)
def test_a_composed_spec_may_not_reach_a_resolver_through_its_references(monkeypatch, config, key, reached):
    """featx resolved a composed node's references to its own config, and a referenced node's resolver ran: the
    environment variable was read and quoted in the error (unknown torchvision model 'topsecret')."""
    monkeypatch.setenv("FEATX_TEST_SECRET", "topsecret")
    composed = OmegaConf.create(config)
    node = composed.outer.bb if "outer" in composed else composed.bb
    node.stages = {"c2": {"modules": ["conv1"]}}
    with pytest.raises(SpecError) as caught:
        featx.build(node, overrides=["device=meta"])
    assert str(caught.value).startswith(
        f"backbone.{key}: refers (directly or through other nodes) to {reached}, which calls an OmegaConf resolver"
    )
    assert "topsecret" not in str(caught.value)


def test_a_composed_spec_beside_objects_and_a_reference_computed_from_a_resolver(monkeypatch):
    """A config holding Python objects elsewhere (allow_objects) still builds; a reference whose key a resolver
    computes is refused naming the resolver's node, not with featx's internal marker in OmegaConf's message."""
    monkeypatch.setenv("FEATX_TEST_SECRET", "x")
    composed = OmegaConf.create(
        {"optim": {"cls": torch.optim.SGD}, "dev": "meta", "bb": {**_spec(), "device": "${dev}"}},
        flags={"allow_objects": True},
    )
    assert featx.build(composed.bb).spec.device == "meta"
    composed = OmegaConf.create(
        {"a": {"x": 1}, "e": "${oc.env:FEATX_TEST_SECRET}", "bb": {**_spec(), "seed": "${a.${e}}"}}
    )
    with pytest.raises(SpecError) as error:
        featx.build(composed.bb)
    assert str(error.value).startswith(
        "backbone.seed: refers (directly or through other nodes) to e, which calls an OmegaConf resolver"
    )


def test_a_composed_spec_reaching_a_resolver_says_how_to_build_it_resolved(monkeypatch, tmp_path):
    """The refusal named only "put the value itself": a user's own config, whose resolvers the user trusts, builds
    resolved; a node saved unresolved and loaded again was OmegaConf's bare "Recursive interpolation detected"."""
    monkeypatch.setenv("FEATX_TEST_DEVICE", "meta")
    cfg = OmegaConf.create({"seed": 3, "dev": "${oc.env:FEATX_TEST_DEVICE}", "bb": {**_spec(), "seed": "${seed}"}})
    cfg.bb.device = "${dev}"
    with pytest.raises(SpecError) as caught:
        featx.build(cfg.bb)
    assert str(caught.value) == (
        "backbone.device: refers (directly or through other nodes) to dev, which calls an OmegaConf resolver "
        "(${name:...}); a backbone spec is data, and featx runs no resolver (they can read the environment). Put the "
        "value itself, or a reference to a node that holds one; or, for a config of your own whose resolvers you "
        "trust, build it resolved: featx.build(OmegaConf.to_container(cfg.backbone, resolve=True))"
    )
    built = featx.build(OmegaConf.to_container(cfg.bb, resolve=True))
    assert (built.spec.device, built.spec.seed) == ("meta", 3)
    cfg.bb.device = "meta"  # its seed still refers to the config's: ${seed}, which is itself in the saved file
    OmegaConf.save(cfg.bb, tmp_path / "bb.yaml")
    with pytest.raises(SpecError) as caught:
        featx.build(OmegaConf.load(tmp_path / "bb.yaml"))
    assert str(caught.value) == (
        "backbone.seed: Recursive interpolation detected; if this is a node saved without resolve=True, it keeps its "
        "references (${...}) to the config it came from: save it resolved, OmegaConf.save(cfg.backbone, path, "
        "resolve=True)"
    )
    OmegaConf.save(cfg.bb, tmp_path / "bb.yaml", resolve=True)
    assert featx.build(OmegaConf.load(tmp_path / "bb.yaml")).spec.seed == 3


def test_a_composed_spec_refers_to_nodes_as_omegaconf_resolves_them_beside_resolvers():
    """Every form OmegaConf resolves (computed, hyphenated keys, spaces, indices) works; an escaped ``\\${`` is text."""
    composed = OmegaConf.create(
        {
            "data": "${oc.env:HOME}",
            "common": {"home": "${oc.env:HOME}", "seed": 3},
            "k": "seed",
            "my-seed": 4,
            "seeds": [5],
            "note": "\\${oc.env:HOME}",
            "bb": _spec(),
        }
    )
    for reference, seed in [("${common.seed}", 3), ("${common.${k}}", 3), ("${my-seed}", 4), ("${ my-seed }", 4)]:
        composed.bb.seed = reference
        assert featx.build(composed.bb, overrides=["device=meta"]).spec.seed == seed, reference
    composed.bb.seed = "${seeds[0]}"
    assert featx.build(composed.bb, overrides=["device=meta"]).spec.seed == 5
    composed.bb.seed = 0
    composed.bb.model = "${note}"  # the text ${oc.env:HOME}, no resolver call: refused as an interpolation in data
    with pytest.raises(SpecError, match=r"^backbone\.model: holds an interpolation"):
        featx.build(composed.bb, overrides=["device=meta"])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "alias",
            'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}" + f",*{chr(97 + i)}" * 9 + "]\n" for i in range(9)
            )
            + "model: resnet18\n",
        ),
        (
            "alias-in-stage",
            "x: &x [layer1,layer1,layer1,layer1,layer1,layer1,layer1,layer1]\n"
            + "".join(
                f"y{i}: &y{i} [*{'x' if i == 0 else f'y{i - 1}'}" + f",*{'x' if i == 0 else f'y{i - 1}'}" * 7 + "]\n"
                for i in range(8)
            )
            + "model: resnet18\n",
        ),
        ("list", "model: resnet18\nreinit: [" + "0," * 400_000 + "0]\n"),
    ],
    ids=lambda value: value if len(value) < 20 else "",
)
def test_memory_bombs_are_refused_within_a_memory_limit(tmp_path, name, content):
    """The spec layer reads these under a 1 GiB address-space limit (it does not import torch): a refusal, fast."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(content)
    program = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from featx.spec.load import load_spec
        from featx.errors import SpecError
        try:
            load_spec({str(path)!r})
        except SpecError as error:
            print("refused:", error)
            assert "torch" not in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"refused: {path}: "), result.stdout


def test_loading_a_spec_leaves_its_file_and_folder_unchanged(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: resnet18\nstages:\n  c2: {modules: [conv1, bn1, relu, maxpool, layer1]}\ndevice: meta\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    featx.build(path)
    with pytest.raises(SpecError):
        featx.build(path, overrides=["norm=nope"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_argument_errors_of_build_name_the_argument():
    with pytest.raises(SpecError, match=r"^backbone.overrides: expected a list of strings"):
        featx.build("resnet18", overrides="device=meta")  # type: ignore[arg-type]
    with pytest.raises((SpecError, ArgumentError)):
        featx.load_spec("resnet18", overrides=[b"device=meta"])  # type: ignore[list-item]


def _vit(**tokens: Any) -> Dict[str, Any]:
    """vit_b_16 with its packaged token spec changed by ``tokens`` (``None`` removes a key)."""
    spec = featx.load_spec("vit_b_16", overrides=["device=meta"]).to_dict()
    spec["tokens"] = {key: value for key, value in {**spec["tokens"], **tokens}.items() if value is not None}
    return spec


# (id, spec data, overrides, the key the message must start with, a pattern of the rest)
TOKEN_CASES = [
    ("tokens-string", _vit() | {"tokens": "conv_proj"}, [], "backbone.tokens", r"expected null or a mapping"),
    ("tokens-unknown-key", _vit(patch=16), [], "backbone.tokens", r"unknown key 'patch'"),
    ("tokens-embed-missing", _vit(embed=None), [], "backbone.tokens.embed", r"missing value"),
    ("tokens-embed-typo", _vit(embed="conv_prj"), [], "backbone.tokens.embed", r"no child 'conv_prj'.*conv_proj"),
    ("tokens-embed-empty-part", _vit(embed="encoder..ln"), [], "backbone.tokens.embed", r"not a module or param"),
    (
        "tokens-embed-not-first",
        _vit(embed="encoder.dropout"),
        [],
        "backbone.tokens.embed",
        r"must be the first module of the first stage \('embed' starts with 'conv_proj'\)",
    ),
    (
        "tokens-prefix-missing-parameter",
        _vit(prefix=["cls_token"]),
        [],
        "backbone.tokens.prefix[0]",
        r"'cls_token' not found: the model root has no parameter 'cls_token'.*class_token",
    ),
    (
        "tokens-prefix-a-module",
        _vit(prefix=["encoder"]),
        [],
        "backbone.tokens.prefix[0]",
        r"the model root has no parameter 'encoder'",
    ),
    (
        "tokens-prefix-wrong-shape",
        _vit(prefix=["conv_proj.weight"]),
        [],
        "backbone.tokens.prefix[0]",
        r"has shape \(768, 3, 16, 16\); token parameters are 1 x tokens x channels",
    ),
    ("tokens-prefix-twice", _vit(prefix=["class_token", "class_token"]), [], "backbone.tokens.prefix[1]", r"twice"),
    (
        "tokens-position-missing-parameter",
        _vit(position="encoder.pos_embed"),
        [],
        "backbone.tokens.position",
        r"'encoder' has no parameter 'pos_embed'.*pos_embedding",
    ),
    (
        "tokens-prefix-longer-than-the-sequence",
        _vit(prefix=["encoder.pos_embedding"], position="class_token"),
        [],
        "backbone.tokens.position",
        r"'class_token' has 1 entries but the prefix tokens alone are 197",
    ),
    (
        "tokens-position-not-covering-prefix",
        _vit(position_covers_prefix=False),
        [],
        "backbone.tokens.position",
        r"197 patch entries \(after 0 prefix ones\): not the patch grid of 224x224 images at patch stride 16",
    ),
    ("tokens-stride-zero", _vit(stride=0), [], "backbone.tokens.stride", r"must be a patch stride in 1\.\.1024"),
    (
        "tokens-stride-far-below-the-patch",
        _vit(stride=1),
        [],
        "backbone.tokens.stride",
        r"1 resizes the image by 16/1 before the patch-16 embedding; give a stride in 8\.\.32",
    ),
    ("tokens-nhwc", _vit(), ["layout=nhwc"], "backbone.layout", r"'nhwc' with tokens.*use layout: nchw"),
    (
        "tokens-on-a-cnn",
        _spec(tokens={"embed": "conv1"}),
        [],
        "backbone.stages.c2",
        r"gives 'bn1' an input of shape \(1, 64, 112, 112\), the stages give it \(1, 12544, 64\)",
    ),
    (
        "fpn-on-token-stages-of-one-stride",
        _vit(),
        ["out_features=[blocks2,blocks4]", "fpn={style: fpn}"],
        "backbone.fpn",
        r"a token model's stages share one stride: use fpn.style: simple",
    ),
    ("fpn-style-unknown", _vit(), ["fpn={style: vitdet}"], "backbone.fpn.style", r"unknown value 'vitdet'.*simple"),
    (
        "fpn-simple-on-two-stages",
        _vit(),
        ["out_features=[blocks2,blocks4]", "fpn={style: simple}"],
        "backbone.fpn",
        r"^backbone.fpn: style: simple builds every level from one map, but 2 maps are given "
        r"\(blocks2, blocks4\); return only the one it uses \(out_features: \[blocks4\]\)$",
    ),
    (
        "fpn-simple-on-patch-14",
        featx.load_spec("vit_h_14", overrides=["device=meta"]).to_dict(),
        ["fpn={style: simple}"],
        "backbone.fpn",
        r"stage 'blocks4' has stride 14, not a power of two.*tokens\.stride: 16",
    ),
    (
        "tokens-stage-runs-the-classifier",
        _vit()
        | {"stages": {"all": {"modules": ["conv_proj", "encoder.dropout", "encoder.layers", "encoder.ln", "heads"]}}}
        | {"source": None, "out_features": None},
        [],
        "backbone.stages.all",
        r"gives 'heads' an input of shape \(1, 768\), the stages give it \(1, 197, 768\)",
    ),
    (  # the error named the stage and told to list 'encoder' whole, which the position embedding was missing from
        "tokens-position-left-out",
        _vit(position=None),
        [],
        "backbone.stages.embed",
        r"list 'encoder' as a whole; or, if its extra step adds 'encoder\.pos_embedding' \(held by it itself\) as a "
        r"token model's position embedding, declare that as tokens\.position$",
    ),
    (  # the encoder adds the position embedding featx's token embedding already added: features off by up to 0.1
        "tokens-member-holds-the-position-embedding",
        _vit()
        | {"stages": {"embed": {"modules": ["conv_proj"]}, "enc": {"modules": ["encoder"]}}}
        | {"source": None, "out_features": None},
        [],
        "backbone.stages.enc",
        r"^backbone\.stages\.enc: 'encoder' holds 'encoder\.pos_embedding', a token parameter declared under "
        r"tokens, which featx's token embedding applies itself: run as a member, 'encoder' would apply it a second "
        r"time; list the modules inside it instead \(encoder\.dropout, encoder\.layers, encoder\.ln\)$",
    ),
]


@pytest.mark.parametrize(
    ("data", "overrides", "key", "pattern"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES]
)
def test_bad_token_specs_are_a_spec_error_naming_the_key(data, overrides, key, pattern):
    with pytest.raises(featx.FeatxError) as error:
        featx.build(data, overrides=overrides)
    _assert_spec_error(error, key, pattern)


def _ids(cases: List[tuple]) -> List[str]:
    return [case[0] for case in cases]


def test_the_corpus_is_distinct():
    for cases in (DATA_CASES, OVERRIDE_CASES, FILE_CASES, STAGE_ORDER_CASES, TOKEN_CASES):
        assert len(set(_ids(cases))) == len(cases)


def test_enormous_values_are_named_in_short_messages():
    with pytest.raises(SpecError) as error:
        featx.build({"model": "r" * 10**6, "stages": {"c2": {"modules": ["conv1"]}}})
    assert (
        str(error.value).startswith("backbone.model: unknown torchvision model 'rrrr") and len(str(error.value)) < 300
    )
    assert len(str(featx.ArgumentError("x" * 10**5))) <= featx.errors.MAX_MESSAGE_CHARS
    assert len(featx.SpecError("backbone.x", "x" * 10**5).message) <= featx.errors.MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    "data",
    [
        _stages(c2={"modules": ["conv1", "S" * 10**5]}),
        _spec(out_features=["S" * 10**5]),
        _spec(reinit=["S" * 10**5]),
        _stages(c2={"modules": [*STEM, "layer1"]}, c3={"modules": ["layer1." + "S" * 10**5]}),
    ],
    ids=["module-path", "out_features", "reinit", "path-below-a-module"],
)
def test_a_long_name_in_a_spec_is_quoted_cut(data):
    """Module paths and stage names were quoted whole (up to the 4,000-character cap of a message): the threat model
    says values from a spec are cut to 80 characters."""
    with pytest.raises(SpecError) as error:
        featx.build(data)
    assert "S" * 70 in str(error.value) and "S" * 80 not in str(error.value), str(error.value)[:300]
    assert len(str(error.value)) < 600


def test_an_input_size_too_small_for_the_last_stage_is_blamed_on_the_input_size():
    """The stages run at the probe sizes; at 32x32 AlexNet's last stage pools a 1x1 map to nothing. The error named
    stage c5 and hinted that the stages were listed out of order."""
    with pytest.raises(SpecError) as error:
        featx.build("alexnet", overrides=["device=meta", "input_size=[32,32]"])
    assert str(error.value).endswith(
        "backbone.input_size: stage 'c5' (features[12:13]) fails at 32x32, though the stages run at other sizes: "
        "RuntimeError: Given input size: (256x1x1). Calculated output size: (256x0x0). Output size is too small; the "
        "model needs another size (a larger one, or a multiple of its largest stride)"
    )


def _reference_chain(levels: int, leaf: Any, fanout: int = 10) -> Dict[str, Any]:
    """A config whose node ``s<levels>`` refers ``fanout`` times to ``s<levels - 1>``, and so on down to ``leaf``:
    a few hundred characters that OmegaConf unrolls into ``fanout ** levels`` resolutions."""
    config: Dict[str, Any] = {"s0": leaf}
    for level in range(1, levels + 1):
        item = f"${{s{level - 1}}}"
        config[f"s{level}"] = [item] * fanout if isinstance(leaf, list) else item * fanout
    return config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**_reference_chain(5, "x" * 10), "bb": _spec(model="${s5}")}, r"backbone\.model: expands to more than 10000"),
        ({**_reference_chain(5, ""), "bb": _spec(model="${s5}")}, r"backbone\.model: expands to more than 10000"),
        ({**_reference_chain(4, ["x"] * 10), "bb": _spec(reinit="${s4}")}, r"backbone\.reinit: expands to more than"),
        (
            {**_reference_chain(4, ["layer1"] * 10), "bb": _stages(c2={"modules": ["conv1", "${s4}"]})},
            r"backbone\.stages\.c2\.modules\[1\]: expands to more than 10000 values",
        ),
        (
            {"big": "x" * 300_000, "s": "${big}${big}${big}${big}", "bb": _spec(model="${s}")},
            r"backbone\.model: expands to more than 1048576 characters",
        ),
    ],
    ids=["strings", "empty-strings", "lists", "in-a-stage", "characters"],
)
def test_a_chain_of_references_is_refused_before_omegaconf_unrolls_it(config, message):
    """OmegaConf resolves a reference again wherever it is used: a composed node reaching a chain of nodes that each
    refer ten times to the one before took 25 s for five levels (10^5 resolutions) and minutes for six, before any
    size check. The references are measured first, each node once, and the spec refused naming its key."""
    start = time.perf_counter()
    with pytest.raises(SpecError, match="^" + message) as error:
        featx.load_spec(OmegaConf.create(config).bb)
    assert time.perf_counter() - start < 1.0
    assert "reference counted wherever it is used" in str(error.value) and len(str(error.value)) < 400


def test_references_within_the_limits_resolve_as_omegaconf_resolves_them():
    """The measure follows what OmegaConf follows (a reference through a node that is itself one, relative and
    computed keys, list items): a spec of realistic size built from references resolves as before."""
    config = OmegaConf.create(
        {
            **_reference_chain(3, "a", fanout=2),  # s3 unrolls to 8 characters
            "defs": {"stem": ["conv1", "bn1", "relu", "maxpool"], "k": "stem", "alias": "${.stem}", "n": 3},
            "ref": "${defs}",
            "bb": _stages(
                c2={"modules": "${ref.alias}"},
                c3={"modules": "${....defs.${defs.k}}"},
                c4={"modules": ["layer${defs.n}", "${s3}.${s1}"]},
            ),
        }
    )
    data = featx.load_spec(config.bb).to_dict()["stages"]
    assert data == {
        "c2": {"modules": ["conv1", "bn1", "relu", "maxpool"]},
        "c3": {"modules": ["conv1", "bn1", "relu", "maxpool"]},
        "c4": {"modules": ["layer3", "aaaaaaaa.aa"]},
    }
    looping = OmegaConf.create({"a": "${b}", "b": "${a}", "bb": _spec(model="${a}")})
    with pytest.raises(SpecError, match=r"^backbone\.model: .*[Rr]ecursive interpolation"):
        featx.load_spec(looping.bb)  # OmegaConf's own error, as before


@pytest.mark.parametrize(
    "source",
    [BackboneSpec(model="resnet18"), OmegaConf.structured(BackboneSpec(model="resnet18")), {"model": "resnet18"}],
    ids=["spec-object", "structured-config", "mapping"],
)
def test_stages_left_unset_are_a_missing_value(source):
    """A BackboneSpec holds OmegaConf's ``???`` in the stages it was not given: the error said "expected a mapping
    of stage name to {...}, got str" (the marker), where a mapping without stages said that the value is missing."""
    with pytest.raises(SpecError) as error:
        featx.build(source)
    assert str(error.value) == "backbone.stages: missing value (a spec must set it)"


@pytest.mark.parametrize("name", ["training", "keys", "forward", "_modules", "__init__"])
def test_load_spec_refuses_a_stage_name_of_the_stages_container(tmp_path, name):
    """load_spec checks stage names without the model, yet passed ``training`` (and ``keys``, ``forward``), which
    only featx.build refused: the stages live in an nn.ModuleDict, whose own attributes no stage can take."""
    pattern = rf"^backbone\.stages\.{name}: '{name}' is a name of nn\.ModuleDict's own \(backbone\.stages holds the "
    stages = {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, name: {"modules": ["layer2"]}}
    with pytest.raises(SpecError, match=pattern + r"stages\); give the stage another name$"):
        featx.load_spec(_spec(stages=stages))
    file = tmp_path / "mine.yaml"
    file.write_text(OmegaConf.to_yaml(OmegaConf.create(_spec(stages=stages))))
    with pytest.raises(SpecError) as error:  # the file's own stage name: the file is named
        featx.load_spec(file)
    assert error.value.origin == str(file) and error.value.key == f"backbone.stages.{name}"


def test_the_reserved_stage_names_are_every_name_an_nn_module_dict_has():
    """The spec layer names them without importing torch: every attribute of torch's own nn.ModuleDict is among
    them, so load_spec refuses whatever the model's build would."""
    from featx.spec.validate import MODULE_DICT_NAMES

    assert set(dir(torch.nn.ModuleDict())) <= MODULE_DICT_NAMES
    for name in ("c2", "p5", "stem", "layer1", "neck_in"):
        assert name not in MODULE_DICT_NAMES


def test_a_reference_may_go_through_at_most_32_references_in_a_row():
    """The measure follows references as OmegaConf does, one call inside the other (OmegaConf itself failed past
    about 60 with a RecursionError in its message): past 32 in a row the spec is refused naming its key."""
    for length, refused in [(31, False), (32, True), (200, True)]:
        config = {"c0": "resnet18", **{f"c{i}": f"${{c{i - 1}}}" for i in range(1, length + 1)}}
        node = OmegaConf.create({**config, "bb": _spec(model=f"${{c{length}}}")}).bb
        if not refused:
            assert featx.load_spec(node).model == "resnet18"
            continue
        with pytest.raises(SpecError) as error:
            featx.load_spec(node)
        assert str(error.value) == (
            "backbone.model: goes through more than 32 ${...} references in a row; a backbone spec refers to a few "
            "nodes of its config"
        )


@pytest.mark.parametrize("reference", ["${l.x}", "${l[x]}", "${l[True]}", "${l.1e3}"])
def test_a_reference_indexing_a_list_by_a_name_is_a_spec_error_naming_the_key(reference):
    """The size measure before OmegaConf resolves let Python's TypeError of the lookup out (a raw traceback)."""
    config = OmegaConf.create(
        {"l": ["cpu"], "bb": {"model": "resnet18", "device": reference, "stages": {"c2": {"modules": ["conv1"]}}}}
    )
    with pytest.raises(featx.SpecError, match=r"^backbone\.device: .*is not an int"):
        featx.load_spec(config.bb)


#: a value of 5001 digits, more than Python converts to text (4300): any str() or repr() of it raised ValueError
HUGE = 10**5000
HUGE_INTEGER = "an integer of 5001 digits; a spec's integers have at most 100 digits"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_spec(frozen_stages=HUGE), f"backbone.frozen_stages: {HUGE_INTEGER}"),
        (_spec(seed=-HUGE), f"backbone.seed: {HUGE_INTEGER}"),
        (_spec(input_size=[224, HUGE]), f"backbone.input_size[1]: {HUGE_INTEGER}"),
        (_stages(c2={"slice": [0, HUGE]}), f"backbone.stages.c2.slice[1]: {HUGE_INTEGER}"),
        (_spec(fpn={"out_channels": HUGE}), f"backbone.fpn.out_channels: {HUGE_INTEGER}"),
        (_spec(stages={HUGE: {"modules": ["conv1"]}}), f"backbone.stages: a key that is {HUGE_INTEGER}"),
        (_spec(seed=10**100), "backbone.seed: an integer of 101 digits; a spec's integers have at most 100 digits"),
    ],
    ids=["frozen_stages", "seed-negative", "list-item", "slice", "fpn", "stage-key", "101-digits"],
)
def test_an_absurdly_long_integer_is_refused_naming_its_key(data, message):
    """An integer of more than 4,300 digits gave Python's raw ValueError "Exceeds the limit (4300 digits) for integer
    string conversion" where OmegaConf or featx's own messages formatted it."""
    for overrides in ([], ["reinit=[]"]):  # a list value: the overrides are applied through OmegaConf
        with pytest.raises(SpecError) as error:
            featx.build(data, overrides=overrides)
        assert str(error.value) == message
    stages = {name: StageSpec(**stage) for name, stage in data["stages"].items()}
    with pytest.raises(SpecError) as error:
        featx.build(BackboneSpec(**{**data, "stages": stages}))
    assert str(error.value) == message


def test_a_long_integer_from_an_override_is_refused_naming_its_key():
    with pytest.raises(SpecError) as error:
        featx.build(_spec(), overrides=["seed=" + "9" * 4000])
    assert str(error.value) == "backbone.seed: an integer of 4000 digits; a spec's integers have at most 100 digits"
    assert featx.load_spec(_spec(), overrides=["seed=" + "9" * 18]).seed == 10**18 - 1


@pytest.mark.parametrize(
    ("line", "where"),
    [("seed: " + "9" * 5000, "line 2, column 7"), ("input_size: [224, -" + "1" * 101 + "]", "line 2, column 19")],
)
def test_an_absurdly_long_integer_in_a_spec_file_is_refused_at_its_line(tmp_path, line, where):
    """PyYAML's int constructor raised Python's ValueError for more than 4,300 digits."""
    path = tmp_path / "long.yaml"
    path.write_text(f"model: resnet18\n{line}\nstages: {{c2: {{modules: [conv1]}}}}\n")
    digits = sum(character.isdigit() for character in line.rpartition(" ")[2])
    with pytest.raises(SpecError) as error:
        featx.build(path)
    assert str(error.value) == (
        f"{path}: backbone: not a spec value: an integer of {digits} digits; a spec's integers have at most 100 "
        f"digits at {where}"
    )


def test_a_message_never_converts_an_integer_too_long_for_text():
    """``quoted`` ran repr() on the value, which raises ValueError past 4,300 digits."""
    assert quoted(HUGE) == "an integer of 5001 digits"
    assert quoted(-(10**4400) + 1) == "an integer of 4400 digits"
    assert quoted(10**400) == repr(10**400)[:77] + "..."
    assert quoted(True) == "True"
