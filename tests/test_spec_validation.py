"""Every validation rule: one featx.SpecError, with the key path (and the valid choices where fixed) named."""

from __future__ import annotations

import pytest
import yaml
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


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:7", "cuda:12", "mps", "meta"])
def test_device_strings_that_are_valid_anywhere_pass_validation(device):
    assert featx.load_spec(resnet18_spec(device=device)).device == device


@pytest.mark.parametrize("device", ["cuda:01", "cuda:00", "cuda:0000", "cuda:\u0663", "cuda:\uff11", "cuda:1 "])
def test_a_device_index_torch_refuses_is_refused_naming_the_valid_forms(device):
    """``cuda:01`` (a leading zero) and ``cuda:\u0663`` (an Arabic-Indic digit, which ``\\d`` matches) passed the spec's
    check and reached ``torch.device``: a raw RuntimeError "Invalid device string"."""
    message = f"backbone.device: unknown device {device!r} (valid: auto, cpu, cuda, cuda:N, mps, meta)"
    with pytest.raises(featx.SpecError) as caught:
        featx.build(resnet18_spec(device=device))
    assert str(caught.value) == message
    if device.isascii() and device == device.strip():
        with pytest.raises(featx.SpecError) as caught:
            featx.build("resnet18", overrides=[f"device={device}"])
        assert str(caught.value) == message


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


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ([0, -1], "end -1 is negative; slices count children from 0"),
        ([4, -2], "end -2 is negative; slices count children from 0"),
        ([-1, 4], "start -1 is negative; slices count children from 0"),
        ([-2, -1], "start -2 is negative; slices count children from 0"),
        ([4, 2], "[4, 2] is empty; end is exclusive and must be greater than start"),
    ],
)
def test_a_negative_slice_index_is_refused_as_negative(bounds, message):
    """``slice: [0, -1]`` was refused as "[0, -1] is empty", which it is not in Python (``features[0:-1]``): featx
    counts children from 0 and refuses negative indices, the end's as the start's."""
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(_vgg(stages={"c1": {"slice": bounds}}))
    assert str(caught.value) == f"backbone.stages.c1.slice: {message}"
    with pytest.raises(featx.SpecError) as caught:
        featx.build("vgg16", overrides=["device=meta", f"stages.c1.slice=[{bounds[0]},{bounds[1]}]"])
    assert str(caught.value) == f"backbone.stages.c1.slice: {message}"


#: each key of fixed choices that takes no null, and its choices as its unknown-value message lists them
NULL_REFUSED = [
    ("norm", "frozen, eval, train, sync"),
    ("layout", "nchw, nhwc"),
    ("output_names", "featx, torchvision"),
    ("device", "auto, cpu, cuda, cuda:N, mps, meta"),
    ("fpn.style", "fpn, simple"),
]


@pytest.mark.parametrize(("key", "choices"), NULL_REFUSED, ids=[key for key, _ in NULL_REFUSED])
def test_null_for_a_key_of_fixed_choices_names_the_choices(key, choices):
    """``norm=null`` was OmegaConf's "Incompatible value 'None' for field of type 'str'", which named no choice."""
    message = f"backbone.{key}: null is not allowed (valid: {choices})"
    for source in ("resnet50_fpn", resnet18_spec(fpn={"out_channels": 8})):
        with pytest.raises(featx.SpecError) as caught:
            featx.build(source, overrides=["device=meta", f"{key}=null"] if key != "device" else ["device=null"])
        assert str(caught.value) == message
    parent, _, name = key.rpartition(".")
    given = resnet18_spec(fpn={"out_channels": 8, name: None}) if parent else resnet18_spec(**{name: None})
    with pytest.raises(featx.SpecError) as caught:
        featx.build(given)
    assert str(caught.value) == message
    with pytest.raises(featx.SpecError) as caught:
        featx.build(resnet18_spec(**{name: "bad"}) if not parent else resnet18_spec(fpn={name: "bad"}))
    assert str(caught.value).endswith(f" (valid: {choices})")  # the choices the unknown-value message lists


def test_null_is_taken_where_a_key_of_fixed_choices_allows_it():
    assert featx.load_spec("resnet50_fpn", ["fpn.extra_blocks=null"]).fpn.extra_blocks is None
    assert featx.load_spec(resnet18_spec(fpn={"extra_blocks": None})).fpn.extra_blocks is None


#: each key (and list item) that takes no null and has no fixed choices, and what its refusal says it takes
NULL_TAKES = [
    ("model=null", "backbone.model", "a string"),
    (
        "seed=null",
        "backbone.seed",
        "an integer in 0..9223372036854775807, the seed of the random init (not true or false)",
    ),
    (
        "frozen_stages=null",
        "backbone.frozen_stages",
        "how many stages to freeze, counted from the first (0 for none): a number, not stage names",
    ),
    (
        "stages=null",
        "backbone.stages",
        "a mapping of stage name to {slice: [start, end]} or {modules: [path, ...]}",
    ),
    ("reinit=null", "backbone.reinit", "a list"),
    ("channels_last=null", "backbone.channels_last", "true or false"),
    ("fpn={out_channels:null}", "backbone.fpn.out_channels", "an integer"),
    ("fpn.out_channels=null", "backbone.fpn.out_channels", "an integer"),
    ("tokens.embed=null", "backbone.tokens.embed", "a string"),
    ("out_features=[null]", "backbone.out_features[0]", "a name"),
    ("reinit=[c2,null]", "backbone.reinit[1]", "a name"),
    ("input_size=[null,1]", "backbone.input_size[0]", "a number"),
    ("stages.c2.modules=[conv1,null]", "backbone.stages.c2.modules[1]", "a name"),
    ("stages={c2:{slice:[0,null]}}", "backbone.stages.c2.slice[1]", "a number"),
]


@pytest.mark.parametrize(("override", "key", "takes"), NULL_TAKES, ids=[case[0] for case in NULL_TAKES])
def test_null_for_another_key_that_takes_no_null_says_what_it_takes(override, key, takes):
    """``model=null`` was OmegaConf's "Incompatible value 'None' for field of type 'str'", ``reinit=null`` its
    "field 'reinit' is not Optional" and ``out_features=[null]`` its "Invalid type assigned: NoneType is not a
    subclass of str": none said what the key takes."""
    message = f"{key}: null is not allowed; it takes {takes}"
    with pytest.raises(featx.SpecError) as caught:
        featx.build("resnet18", overrides=["device=meta", override])
    assert str(caught.value) == message
    spec = featx.load_spec("resnet18").to_dict()
    dotted, _, text = override.partition("=")
    *parents, name = dotted.split(".")
    node = spec
    for part in parents:
        node[part] = node = dict(node.get(part) or {})
    node[name] = yaml.safe_load(text.replace(":", ": "))
    with pytest.raises(featx.SpecError) as caught:
        featx.build(spec)
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


@pytest.mark.parametrize(
    ("overrides", "key", "listed"),
    [
        (["out_features=[c2,c3]", "~out_features.0"], "out_features.0", "out_features"),
        (["out_features=[c2,c3]", "~out_features.1=c3"], "out_features.1", "out_features"),
        (["input_size=[64,64]", "~input_size.0"], "input_size.0", "input_size"),
        (["~stages.c2.modules.0"], "stages.c2.modules.0", "stages.c2.modules"),
    ],
)
def test_deleting_an_item_of_a_list_is_refused_naming_the_key(overrides, key, listed):
    """OmegaConf's ``del`` on a list raised a raw "TypeError: list indices must be integers or slices, not str" (as
    it does inside Hydra's own apps): an override deletes keys of a mapping, a list is given whole."""
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(resnet18_spec(), overrides)
    assert str(caught.value) == (
        f"backbone.{key}: {overrides[-1]!r} deletes an item of the list {listed}; an override deletes keys of a "
        f"mapping only: give the whole list ({listed}=[...])"
    )


def test_deleting_a_key_of_a_mapping_still_works():
    spec = featx.load_spec(resnet18_spec(fpn={"out_channels": 8}), ["~fpn.out_channels", "~stages.c4"])
    assert spec.fpn is not None and spec.fpn.out_channels == 256 and list(spec.stages) == ["c2", "c3"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("fpn={out_channels:8,out_channels:16}", "'out_channels'"),
        ("fpn={out_channels: 8, out_channels :16}", "'out_channels'"),
        ("stages={c2:{modules:[conv1],modules:[layer1]}}", "'modules'"),
        ("+tags=[{a:1},{b:1,b:2}]", "'b'"),
        ("+tags={true:1,True:2}", "True"),
        ("+tags={1:1,1:2}", "1"),
    ],
)
def test_a_key_given_twice_in_an_overrides_mapping_is_refused(override, key):
    """Hydra's parser kept the last of two values of one key (``fpn={out_channels:8,out_channels:16}`` built 16
    channels), where a spec file refuses it."""
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(resnet18_spec(), [override])
    assert str(caught.value) == (
        f"backbone.overrides: {override}: key {key} is given twice in a mapping; give each key once"
    )


def test_a_mapping_of_distinct_keys_in_an_override_is_taken():
    spec = featx.load_spec(resnet18_spec(), ["fpn={out_channels: 8, extra_blocks: p6p7}", "stages.c2={modules:[a]}"])
    assert spec.fpn is not None and (spec.fpn.out_channels, spec.fpn.extra_blocks) == (8, "p6p7")
    assert spec.stages["c2"].modules == ["a"]


def test_a_spec_file_name_too_long_for_the_system_is_refused_naming_it_cut(tmp_path):
    """``Path.is_dir`` raised a raw "OSError: [Errno 36] File name too long" (with all 300 characters)."""
    path = tmp_path / ("a" * 300 + ".yaml")
    with pytest.raises(featx.SpecError) as caught:
        featx.build(str(path))
    message = str(caught.value)
    assert message.startswith(f"backbone: cannot look up the spec file {str(tmp_path)}/aaa")
    assert message.endswith("...: File name too long") and len(message) < 150


def test_a_spec_file_that_cannot_be_looked_up_says_why(tmp_path):
    """A link to itself was reported as "spec file not found"; the lookup's reason is named (a folder without
    search permission, EACCES, takes the same branch)."""
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(loop)
    assert str(caught.value) == f"backbone: cannot look up the spec file {loop}: Too many levels of symbolic links"
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(tmp_path / "gone" / "x.yaml")
    assert str(caught.value) == f"backbone: spec file not found: {tmp_path}/gone/x.yaml"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "/tmp/x\nbackbone.model: injected.yaml",
            "backbone: spec file not found: /tmp/x\\nbackbone.model: injected.yaml",
        ),
        ("/tmp/x\x1b[2J\x00.yaml", "backbone: spec file not found: /tmp/x\\x1b[2J\\x00.yaml"),
        ("/tmp/\ud800.yaml", "backbone: spec file not found: /tmp/\\ud800.yaml"),
        ("/tmp/caf\udce9.yaml", "backbone: spec file not found: /tmp/caf\\xe9.yaml"),  # a byte that is not UTF-8
        (
            "/tmp/x\u202e.json",
            "backbone: a spec file is a .yaml or .yml file (in any letter case), got /tmp/x\\u202e.json",
        ),
    ],
)
def test_control_characters_in_a_spec_path_are_escaped(path, message):
    """A line break in the path printed a forged second line (``backbone.model: injected.yaml``), an escape sequence
    reached the terminal, and a lone surrogate made ``print(error)`` raise UnicodeEncodeError."""
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(path)
    assert str(caught.value) == message
    str(caught.value).encode("utf-8")


def test_the_origin_of_a_spec_error_is_escaped_and_kept_as_given(tmp_path):
    path = tmp_path / "a\x1b[31m\nb.yaml"
    path.write_text("model: resnet18\nstages: {c2: {modules: [conv1]}}\nfrozen_stages: 9\n")
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(path)
    assert caught.value.origin == str(path)
    assert (
        str(caught.value)
        == f"{tmp_path}/a\\x1b[31m\\nb.yaml: backbone.frozen_stages: 9 is out of range; valid: 0..1 (kept stages: c2)"
    )


def _file(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "word", ["yes", "Yes", "YES", "no", "No", "on", "ON", "off", "Off", "true", "True", "FALSE", "y", "n", "Y"]
)
def test_a_word_of_a_spec_file_has_one_reading(tmp_path, word):
    """YAML 1.1 (PyYAML, OmegaConf.load, Hydra composing a file) reads yes/no/on/off as booleans, Hydra's override
    grammar as strings: a file with ``modules: [conv1, yes]`` built the module path 'True'. featx reads a word as
    both do where they agree, and refuses it where they do not."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from featx.spec.yaml_file import read_spec_file

    path = _file(tmp_path, f"x: {word}\n")
    in_file = OmegaConf.load(path).x
    in_override = OverridesParser.create().parse_overrides([f"x={word}"])[0].value()
    if in_file == in_override and type(in_file) is type(in_override):
        assert read_spec_file(path) == {"x": in_file}
        return
    with pytest.raises(featx.SpecError) as caught:
        read_spec_file(path)
    assert str(caught.value) == (
        f"{path}: backbone: not a spec value: the word {word}, which YAML reads as {str(in_file).lower()} and an "
        f"override as the string {word!r}; write {str(in_file).lower()} (or quote it, {word!r}, for the string) at "
        "line 1, column 4"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: resnet18\nstages:\n  off: {modules: [conv1]}\n",
            "not a spec value: the word off, which YAML reads as false and an override as the string 'off'; write "
            "false (or quote it, 'off', for the string) at line 3, column 3",
        ),
        (
            "model: resnet18\nstages:\n  c2: {modules: [conv1, yes]}\n",
            "not a spec value: the word yes, which YAML reads as true and an override as the string 'yes'; write "
            "true (or quote it, 'yes', for the string) at line 3, column 25",
        ),
        (
            "model: resnet18\nstages:\n  true: {modules: [conv1]}\n",
            "not a spec value: the key true, which YAML reads as a bool and an override as a name (a key is a name "
            "or a number; quote it, 'true', for the name) at line 3, column 3",
        ),
        (
            "model: resnet18\nstages:\n  c2: {modules: [conv1]}\nfpn: {False: 8}\n",
            "not a spec value: the key False, which YAML reads as a bool and an override as a name (a key is a name "
            "or a number; quote it, 'False', for the name) at line 4, column 7",
        ),
    ],
)
def test_a_yaml_boolean_word_or_a_key_that_is_no_name_is_refused(tmp_path, text, message):
    """A stage named ``off`` gave "backbone.stages.False: Key False (bool) is incompatible with (str)"."""
    path = _file(tmp_path, text)
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(path)
    assert str(caught.value) == f"{path}: backbone: {message}"


def test_quoted_words_and_keys_are_strings(tmp_path):
    path = _file(tmp_path, "model: resnet18\ndevice: meta\nstages:\n  'off': {modules: [conv1, 'yes']}\n")
    assert featx.load_spec(path).stages["off"].modules == ["conv1", "yes"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("model: res\x00net18\n", "#x0000 (control characters are not allowed) at line 1, column 11"),
        (
            "model: resnet18\nseed: \u00e9\u00e9\x07\n",
            "#x0007 (control characters are not allowed) at line 2, column 9",
        ),
        ("model: resnet18\r\n\r\nseed: \x1b\n", "#x001b (control characters are not allowed) at line 3, column 7"),
    ],
)
def test_a_control_character_in_a_spec_file_is_named_by_its_code_and_place(tmp_path, text, where):
    """A NUL byte gave "not valid YAML: ReaderError", without the character or where it is."""
    path = _file(tmp_path, text)
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(path)
    assert str(caught.value) == f"{path}: backbone: not valid YAML: unacceptable character {where}"


@pytest.mark.parametrize(
    ("source", "overrides"),
    [
        ("resnet18", ["source=fc"]),
        (resnet18_spec(source="layer1"), []),
        (_vgg(stages={"c1": {"modules": ["features.0"]}}), []),
    ],
)
def test_a_source_without_a_slice_stage_is_refused(source, overrides):
    """``source`` names the container whose children ``slice`` counts; with modules-only stages it was accepted and
    ignored (``source=fc`` on a ResNet, whose fc has no children)."""
    with pytest.raises(featx.SpecError) as caught:
        featx.load_spec(source, overrides=overrides)
    name = "fc" if overrides else "layer1" if source["model"] == "resnet18" else "features"
    assert str(caught.value) == (
        f"backbone.source: {name!r} is the container whose children slice counts, but no stage has a slice "
        "(every stage names its modules); remove source (null), or give stages as slices"
    )
    assert featx.load_spec(_vgg()).source == "features"
