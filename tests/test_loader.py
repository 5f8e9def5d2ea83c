"""Loading specs from names, files, mappings, DictConfigs and dataclasses, with Hydra-grammar overrides."""

from __future__ import annotations

import os

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import featx
from featx.spec.config_files import config_dir
from featx.spec.load import INSTANTIATE_TARGET, SCHEMA_DEFAULTS


def test_every_source_kind_resolves_to_the_same_spec(tmp_path):
    packaged = config_dir() / "backbone" / "resnet50_fpn.yaml"
    copy = tmp_path / "mine.yaml"
    copy.write_text(packaged.read_text())
    by_name = featx.load_spec("resnet50_fpn")
    by_path = featx.load_spec(str(copy))
    by_pathlike = featx.load_spec(copy)
    by_mapping = featx.load_spec(yaml.safe_load(packaged.read_text()))
    by_dictconfig = featx.load_spec(OmegaConf.load(packaged))
    by_dataclass = featx.load_spec(by_name)
    assert by_name == by_path == by_pathlike == by_mapping == by_dictconfig == by_dataclass
    assert by_name.fpn == featx.FpnSpec(out_channels=256, extra_blocks=None)


def test_overrides_use_hydra_grammar_relative_to_the_backbone_node():
    spec = featx.load_spec(
        "resnet50_fpn", overrides=["fpn.out_channels=128", "frozen_stages=1", "out_features=[c3,c4,c5]"]
    )
    assert spec.fpn.out_channels == 128 and spec.frozen_stages == 1 and spec.out_features == ["c3", "c4", "c5"]


def test_override_of_a_null_fpn_adds_a_neck_with_defaults():
    spec = featx.load_spec("resnet50", overrides=["fpn.out_channels=64"])
    assert spec.fpn == featx.FpnSpec(out_channels=64, extra_blocks=None)


def test_an_override_adding_a_key_the_schema_lacks_is_rejected():
    with pytest.raises(featx.SpecError, match=r"backbone\.extra: unknown key 'extra'"):
        featx.load_spec("resnet50", overrides=["+extra=1"])


#: ``+key=value`` overrides of resnet18, whose file sets reinit: [], seed: 0 and weights, out_features, fpn: null
ADD_OVERRIDES = [
    "+reinit=[c5]",  # a list on a set key: the app takes it
    "+input_size=[224,224]",
    "+out_features=[c3,c4]",  # a list on a null key
    "+weights=DEFAULT",  # a scalar on a null key
    "+fpn={out_channels:128}",  # a mapping on a null key
    "+fpn.out_channels=64",  # a key under a null node
    "+seed=3",  # a scalar on a set key: the app refuses it
    "+reinit=c5",
]


def _composed_by_the_app(override: str) -> object:
    """``cfg.backbone`` as the featx app composes ``backbone=resnet18 +backbone.<override>``, or the app's error."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        try:
            return compose(config_name="config", overrides=["backbone=resnet18", "+backbone." + override[1:]]).backbone
        except ConfigCompositionException as error:
            return error


@pytest.mark.parametrize("override", ADD_OVERRIDES)
def test_an_add_override_is_taken_where_the_featx_app_takes_it_with_the_same_result(override):
    """build refused ``+reinit=[c5]`` ("adds a key that is already set; drop the '+'") while the featx app, reading
    its command line with Hydra's rule, takes ``+`` with a list or mapping value on a key already set."""
    composed = _composed_by_the_app(override)
    if isinstance(composed, ConfigCompositionException):
        assert "An item is already at" in str(composed)
        with pytest.raises(featx.SpecError) as caught:
            featx.load_spec("resnet18", overrides=[override])
        key = override[1:].split("=")[0]
        assert str(caught.value) == (
            f"backbone.{key}: {override!r} adds a key that is already set; drop the '+' (or write '++' to set it "
            "either way)"
        )
    else:
        assert featx.load_spec("resnet18", overrides=[override]) == featx.load_spec(composed)


def test_an_add_override_of_a_mapping_on_a_set_mapping_replaces_it_as_a_set_override_does():
    """The app merges ``+backbone.stages={...}`` into the file's stages (as it merges ``backbone.stages={...}``);
    build's overrides replace a mapping, with or without the '+' (docs/python.md)."""
    override = "stages={c2:{modules:[conv1,bn1,relu,maxpool,layer1]}}"
    added = featx.load_spec("resnet18", overrides=["+" + override])
    assert added == featx.load_spec("resnet18", overrides=[override]) and list(added.stages) == ["c2"]


def test_a_sweep_override_is_rejected():
    with pytest.raises(featx.SpecError, match=r"backbone\.frozen_stages: 'frozen_stages=1,2' is a sweep"):
        featx.load_spec("resnet50", overrides=["frozen_stages=1,2"])


def test_an_override_with_an_interpolation_is_refused():
    with pytest.raises(featx.SpecError, match=r"^backbone\.model: holds an interpolation \(\$\{\.\.\.\}\)"):
        featx.load_spec("resnet50", overrides=["model=${missing}"])


def test_a_malformed_override_is_a_spec_error():
    with pytest.raises(featx.SpecError, match=r"backbone\.overrides: "):
        featx.load_spec("resnet50", overrides=["stages.c2.modules=[conv1"])


def test_unknown_packaged_name_suggests_close_names():
    with pytest.raises(featx.SpecError, match=r"unknown backbone 'resnet5'; did you mean resnet50"):
        featx.load_spec("resnet5")


@pytest.mark.parametrize("name", ["MY.YAML", "My.Yml", "mine.yAml"])
def test_a_spec_file_suffix_is_read_in_any_letter_case(tmp_path, monkeypatch, name):
    """``featx.build("MY.YAML")`` was looked up as a packaged name ("unknown backbone 'MY.YAML'") and
    ``./MY.YAML`` refused as no .yaml file: the suffix was compared case-sensitively."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text((config_dir() / "backbone" / "resnet18.yaml").read_text())
    expected = featx.load_spec("resnet18")
    assert featx.load_spec(name) == featx.load_spec(f"./{name}") == featx.load_spec(tmp_path / name) == expected


def test_a_file_without_a_spec_suffix_is_refused_naming_the_suffixes(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("{}")
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(path)
    assert str(caught.value) == f"backbone: a spec file is a .yaml or .yml file (in any letter case), got {path}"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(featx.SpecError, match="spec file not found: .*nope.yaml"):
        featx.load_spec(tmp_path / "nope.yaml")


def test_a_fifo_or_a_link_to_a_device_is_named_as_no_regular_file(tmp_path):
    """A FIFO (or a link to /dev/zero) in a config root was reported as "spec file not found" (and is never opened:
    reading a FIFO waits for a writer)."""
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name in ("fifo.yaml", "zero.yaml"):
        with pytest.raises(featx.SpecError) as caught:
            featx.load_spec(tmp_path / name)
        assert str(caught.value) == (
            f"backbone: {tmp_path / name} is not a regular file (a device, fifo or socket), not a spec file"
        )


def test_yaml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet18\nstages: {c2: [\n")
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(bad)
    assert caught.value.origin == str(bad)
    assert str(caught.value).startswith(f"{bad}: backbone: not valid YAML")


def test_non_mapping_file_is_a_spec_error(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- resnet18\n- resnet34\n")
    with pytest.raises(featx.SpecError, match="must hold a mapping of keys, found list"):
        featx.load_spec(listing)


def test_errors_in_a_file_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model: resnet18\nstages: {c2: {modules: [conv1]}}\nfrozen_stage: 1\n")
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(path)
    assert str(caught.value).startswith(f"{path}: backbone.frozen_stage: unknown key")


def test_a_target_smuggled_into_a_file_is_refused_and_never_called(tmp_path):
    marker = tmp_path / "called"
    path = tmp_path / "evil.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "_target_": "pathlib.Path.touch",
                "self": str(marker),
                "model": "resnet18",
                "stages": {"a": {"modules": ["conv1"]}},
            }
        )
    )
    with pytest.raises(featx.SpecError, match=r"backbone\._target_: 'pathlib.Path.touch' is refused"):
        featx.build(path)
    assert not marker.exists()


def test_conf_files_defaults_and_target_are_accepted_but_others_refused(tmp_path):
    data = {"model": "resnet18", "stages": {"a": {"modules": ["conv1"]}}}
    assert featx.load_spec({**data, "defaults": SCHEMA_DEFAULTS, "_target_": INSTANTIATE_TARGET}).model == "resnet18"
    with pytest.raises(featx.SpecError, match=r"backbone\.defaults: .* may only be"):
        featx.load_spec({**data, "defaults": ["/featx/backbone_schema@_here_", "other", "_self_"]})


def test_unsupported_source_type():
    with pytest.raises(featx.SpecError, match="cannot build from int"):
        featx.load_spec(42)


def test_to_dict_round_trips():
    spec = featx.load_spec("resnet50_fpn")
    assert featx.load_spec(spec.to_dict()) == spec
