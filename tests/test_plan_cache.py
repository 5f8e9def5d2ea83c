"""The plan cache: the packaged plans equal fresh plans, entries are used (hit), made (miss), ignored and rewritten
(stale, corrupt, malformed, naming modules the model lacks), skipped where the folder cannot be written or the
cache is off; only the planning keys pick an entry. The suite runs with the cache off (conftest.py); these tests turn
it on in a temporary folder."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
import torchvision
from helpers import resnet18_spec, run_not_installed
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork

import featx
from featx.cli import catalog
from featx.construct import plan_cache
from featx.construct.meta_model import MetaModel
from featx.construct.model_structure import structure_fingerprint
from featx.construct.plan import plan_backbone
from featx.construct.plan_cache import (
    PACKAGED_PLANS,
    PLAN_KEYS,
    PLANNING_MODULES,
    entry_data,
    entry_key,
    plan_inputs,
    plan_versions,
)
from featx.construct.plan_data import plan_from_data
from featx.models import timm_models
from featx.spec.config_files import backbone_names
from featx.spec.load import load_spec
from featx.spec.schema import BackboneSpec

C2_C3 = {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "c3": {"modules": ["layer2"]}}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The cache on, in a fresh folder; the folder its entries go to."""
    monkeypatch.delenv("FEATX_NO_CACHE")
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "plans"


def _entries(folder: Path) -> List[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _sealed(entry: Dict[str, Any]) -> Dict[str, Any]:
    """``entry`` with the checksum of its fields recomputed (written out here: a SHA-256 of the other five fields
    as sorted-key JSON), as someone rewriting the entry on purpose would."""
    fields = {key: entry.get(key) for key in ("format", "inputs", "versions", "structure", "plan")}
    return {**entry, "checksum": hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()}


def _edit(path: Path, change, seal: bool = True) -> None:
    """Apply ``change`` to the entry at ``path`` (and, with ``seal``, recompute its checksum)."""
    entry = json.loads(path.read_text())
    change(entry)
    path.write_text(json.dumps(_sealed(entry) if seal else entry))


def _covers(backbone) -> List[str]:
    return [info.covers for info in backbone.stage_info]


def _marked(entry: Dict[str, Any]) -> None:
    """A change that leaves the entry valid but shows when it is used: the first stage's ``covers`` text."""
    entry["plan"]["stages"][0]["covers"] = "from the cache"


# --- the packaged plans ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_plans_equal_fresh_plans_for_every_packaged_spec():
    """Every packaged spec has its entry in featx/plans/ (none other is there), and it holds exactly what the planner
    makes now; rerun scripts/make_plans.py when this fails after a version or spec change. The timm specs' entries
    are for the timm release they were made with: where another release is installed (timm is not pinned), they
    cannot match, and are only required to be there."""
    stored = {path.name: json.loads(path.read_text()) for path in _entries(PACKAGED_PLANS)}
    made_with = {entry["versions"]["timm"] for entry in stored.values() if "timm" in entry["versions"]}
    assert len(made_with) <= 1, made_with
    expected = set()
    for name in backbone_names():
        spec = load_spec(name)
        versions = plan_versions(spec.model)
        assert versions is not None
        if "timm" in versions and versions["timm"] not in made_with:
            matching = {file for file, entry in stored.items() if entry["inputs"] == plan_inputs(spec)}
            assert matching, f"{name}: no packaged plan (run python scripts/make_plans.py)"
            expected |= matching
            continue
        model = MetaModel.create(spec.model).model
        structure = structure_fingerprint(model)
        fresh = plan_backbone(spec, model)
        entry = entry_data(spec, fresh, versions, structure)
        file_name = f"{entry_key(entry['inputs'], entry['versions'])}.json"
        assert file_name in stored, f"{name}: no packaged plan (run python scripts/make_plans.py)"
        assert stored[file_name] == entry, name
        assert plan_from_data(stored[file_name]["plan"], spec) == fresh, name
        expected.add(file_name)
    assert sorted(stored) == sorted(expected)


def test_a_packaged_spec_builds_from_its_packaged_plan(cache):
    backbone = featx.build("resnet50_fpn", overrides=["device=meta", "weights=null", "frozen_stages=2"])
    assert _entries(cache) == []  # planned by no one: the packaged entry was used
    assert [(i.name, i.channels, i.stride) for i in backbone.feature_info] == [
        ("p2", 256, 4),
        ("p3", 256, 8),
        ("p4", 256, 16),
        ("p5", 256, 32),
    ]


def test_a_checkout_that_is_not_installed_uses_and_makes_entries(tmp_path):
    """Keyed by featx's own version file, not its distribution's metadata: a checkout run without installing it
    (a lent GPU machine) builds packaged specs from their packaged plans and caches the plans it makes."""
    code = (
        "import featx\n"
        "from featx.construct.plan_cache import plan_versions\n"
        "print(plan_versions('resnet18')['featx'])\n"
        "featx.build('resnet50_fpn', overrides=['device=meta'])\n"
        "import os; print(sorted(os.listdir(sys.argv[1])) if os.path.isdir(sys.argv[1]) else [])\n"
        "featx.build(eval(sys.argv[2]), overrides=['device=meta'])\n"
        "print(len(os.listdir(sys.argv[1])))\n"
    )
    plans = tmp_path / "cache" / "plans"
    env = {key: value for key, value in os.environ.items() if key != "FEATX_NO_CACHE"}
    env["FEATX_CACHE_DIR"] = str(tmp_path / "cache")
    done = run_not_installed(tmp_path, code, str(plans), repr(resnet18_spec(stages=C2_C3)), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [featx.__version__, "[]", "1"]


# --- hit, miss, stale, corrupt --------------------------------------------------------------------------------------


def test_a_miss_writes_an_entry_and_a_hit_uses_it(cache):
    first = featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    assert _covers(first) == ["conv1, bn1, relu, maxpool, layer1", "layer2"]
    _edit(path, _marked)
    second = featx.build(resnet18_spec(stages=C2_C3))
    assert _covers(second) == ["from the cache", "layer2"]
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(first(x).values(), second(x).values(), strict=True))


def test_a_cached_plan_keeps_the_stages_a_later_stage_changes_in_place(cache):
    """A stage ending before ResNet's ReLU(inplace=True), which starts the next stage: a build from the cache must
    return that stage's own map as a fresh plan does (the plan records the stage)."""
    stages = {"stem": {"modules": ["conv1", "bn1"]}, "c2": {"modules": ["relu", "maxpool", "layer1"]}}
    first = featx.build(resnet18_spec(stages=stages, norm="eval")).eval()
    (path,) = _entries(cache)
    assert json.loads(path.read_text())["plan"]["changed_later"] == ["stem"]
    _edit(path, _marked)
    second = featx.build(resnet18_spec(stages=stages, norm="eval")).eval()
    assert _covers(second)[0] == "from the cache"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = second.stages["stem"](x)
        assert second(x)["stem"].min() < 0 and torch.equal(second(x)["stem"], expected)
        assert torch.equal(first(x)["stem"], expected)


def test_only_the_planning_keys_pick_the_entry(cache):
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    _edit(path, _marked)
    runtime_changes = resnet18_spec(
        stages=C2_C3, norm="eval", frozen_stages=1, seed=7, device="meta", fpn={"out_channels": 8}, reinit=["c3"]
    )
    assert _covers(featx.build(runtime_changes))[0] == "from the cache"
    assert _entries(cache) == [path]
    other = featx.build(resnet18_spec(stages=C2_C3, out_features=["c2"]))  # a planning key: another entry
    assert _covers(other)[0] != "from the cache" and len(_entries(cache)) == 2


def test_the_neck_is_checked_against_a_cached_plan(cache):
    stem_c2 = {"stem": {"modules": ["conv1", "bn1", "relu", "maxpool"]}, "c2": {"modules": ["layer1"]}}
    featx.build(resnet18_spec(stages=stem_c2, device="meta"))
    assert len(_entries(cache)) == 1
    with pytest.raises(featx.SpecError, match=r"backbone\.fpn: FPN levels need strictly increasing strides"):
        featx.build(resnet18_spec(stages=stem_c2, device="meta", fpn={"out_channels": 8}))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda e: e["versions"].update(torch="0.0.1"), id="other-torch"),
        pytest.param(lambda e: e["versions"].update(featx="0.0.0"), id="other-featx"),
        pytest.param(lambda e: e.update(format=0), id="other-format"),
        pytest.param(lambda e: e["inputs"]["stages"].pop(), id="other-inputs"),
        pytest.param(lambda e: e["inputs"]["stages"].reverse(), id="stages-in-another-order"),
        pytest.param(lambda e: e["plan"].update(fixed_input_size=[16_385, 64]), id="size-past-the-limit"),
        pytest.param(lambda e: e["plan"]["stages"][0].update(channels="64"), id="channels-a-string"),
        pytest.param(lambda e: e["plan"]["stages"][0].update(stride=True), id="stride-a-boolean"),
        pytest.param(lambda e: e["plan"]["stages"][0].update(paths=[]), id="no-paths"),
        pytest.param(lambda e: e["plan"]["stages"][0].update(extra=1), id="unknown-field"),
        pytest.param(lambda e: e["plan"]["stages"].pop(), id="a-stage-missing"),
        pytest.param(lambda e: e["plan"].update(in_channels=0), id="zero-channels"),
        pytest.param(lambda e: e["plan"].update(fixed_input_size=[224]), id="bad-size"),
        pytest.param(lambda e: e["plan"].update(tokens={"patch": 16}), id="tokens-on-a-cnn"),
        pytest.param(lambda e: e["plan"]["stages"][1].update(paths=["layer9"]), id="a-module-the-model-lacks"),
        pytest.param(lambda e: e["plan"].update(changed_later=["c9"]), id="changed-later-names-no-stage"),
        pytest.param(lambda e: e["plan"].update(changed_later=["c2", "c2"]), id="changed-later-twice"),
        pytest.param(lambda e: e["plan"].update(changed_later=[["c2"]]), id="changed-later-not-names"),
        pytest.param(lambda e: e["plan"].pop("changed_later"), id="changed-later-missing"),
        # sizes past the limits (the threat model's promise): an FPN would allocate for 2**40 input channels
        pytest.param(lambda e: e["plan"]["stages"][0].update(channels=2**40), id="channels-past-the-limit"),
        pytest.param(lambda e: e["plan"]["stages"][0].update(stride=2**60), id="stride-past-the-limit"),
        pytest.param(lambda e: e["plan"].update(parameters=2**50), id="parameters-past-the-limit"),
    ],
)
def test_a_stale_or_malformed_entry_is_ignored_and_rewritten(cache, change):
    fresh = featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    written = json.loads(path.read_text())
    _edit(path, lambda entry: (_marked(entry), change(entry)))
    rebuilt = featx.build(resnet18_spec(stages=C2_C3))
    assert _covers(rebuilt) == _covers(fresh)
    assert [(i.name, i.channels, i.stride) for i in rebuilt.feature_info] == [("c2", 64, 4), ("c3", 128, 8)]
    assert json.loads(path.read_text()) == written


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b'{"format": 1', b"[1, 2]", b"\xff\xfe\x00", b"[" * 100_000], ids=repr
)
def test_a_corrupt_entry_is_ignored_and_rewritten(cache, content):
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    written = path.read_text()
    path.write_bytes(content)
    backbone = featx.build(resnet18_spec(stages=C2_C3))
    assert backbone.feature_info[-1].channels == 128
    assert path.read_text() == written


def test_an_entry_that_is_no_regular_file_or_too_large_is_never_read(cache):
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    written = path.read_text()
    path.unlink()
    path.symlink_to("/dev/zero")  # read whole, it would never end
    assert featx.build(resnet18_spec(stages=C2_C3)).feature_info[-1].channels == 128
    assert path.is_symlink()  # featx replaces only files (never a link): the link is left, the build uncached
    path.unlink()
    entry = json.loads(written)
    entry["padding"] = " " * (5 * 2**20)  # valid JSON, over the bound
    path.write_text(json.dumps(entry))
    assert featx.build(resnet18_spec(stages=C2_C3)).feature_info[-1].channels == 128
    assert path.read_text() == written


def test_an_entry_that_is_a_fifo_is_never_opened(cache):
    """Opening a fifo waits for a writer forever: the build runs in a process that must end by itself."""
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    path.unlink()
    os.mkfifo(path)
    code = f"import featx; print(featx.build({resnet18_spec(stages=C2_C3)!r}).feature_info[-1].channels)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.split() == ["128"], result.stderr
    assert stat.S_ISFIFO(path.stat().st_mode)  # featx replaces only files: the fifo is left, the build uncached


# --- where the cache lives, and when there is none ------------------------------------------------------------------


def test_the_cache_can_be_turned_off(cache, monkeypatch):
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    _edit(path, _marked)
    monkeypatch.setenv("FEATX_NO_CACHE", "1")
    assert _covers(featx.build(resnet18_spec(stages=C2_C3)))[0] != "from the cache"
    path.unlink()
    featx.build(resnet18_spec(stages=C2_C3))
    assert _entries(cache) == []
    monkeypatch.setenv("FEATX_NO_CACHE", "0")
    featx.build(resnet18_spec(stages=C2_C3))
    assert len(_entries(cache)) == 1


@pytest.mark.parametrize(("value", "cached"), [("false", True), ("No", True), ("off", True), ("TRUE", False)])
def test_the_cache_variables_take_the_usual_spellings_of_yes_and_no(cache, monkeypatch, value, cached):
    """FEATX_NO_CACHE=false turned the cache off (anything but empty or 0 did), the opposite of what it says."""
    monkeypatch.setenv("FEATX_NO_CACHE", value)
    featx.build(resnet18_spec(stages=C2_C3))
    assert len(_entries(cache)) == (1 if cached else 0)


@pytest.mark.parametrize("variable", ["FEATX_NO_CACHE", "FEATX_OFFLINE"])
def test_a_value_of_a_featx_variable_that_says_neither_yes_nor_no_is_refused(cache, tmp_path, monkeypatch, variable):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # empty: FEATX_OFFLINE is read, nothing else
    monkeypatch.setenv(variable, "maybe")
    weights = {"weights": "DEFAULT", "device": "cpu"} if variable == "FEATX_OFFLINE" else {}
    with pytest.raises(featx.ArgumentError) as caught:
        featx.build(resnet18_spec(stages=C2_C3, **weights))
    assert str(caught.value) == (
        f"{variable}='maybe': set it to 1 (or true, yes, on) or to 0 (or false, no, off, or empty)"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FEATX_NO_CACHE", "maybe", "FEATX_NO_CACHE='maybe': set it to 1 (or true, yes, on)"),
        ("FEATX_CACHE_DIR", "rel", "FEATX_CACHE_DIR='rel': featx's cache folder must be an absolute path"),
    ],
)
def test_featx_list_says_a_bad_cache_variable_once(cache, monkeypatch, capsys, variable, value, message):
    """The variable's error filled the notes column of every row (117 of them) instead of one line on stderr."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        catalog.main([])
    out, err = capsys.readouterr()
    assert (exit_info.value.code, out) == (1, "")
    assert err.startswith(f"featx-list: error: {message}") and err.count("\n") == 1, err


def test_without_featx_cache_dir_the_cache_is_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_NO_CACHE")
    monkeypatch.delenv("FEATX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    featx.build(resnet18_spec(stages=C2_C3))
    assert len(_entries(tmp_path / "xdg" / "featx" / "plans")) == 1


def test_a_cache_folder_that_cannot_be_made_leaves_builds_uncached(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.delenv("FEATX_NO_CACHE")
    monkeypatch.setenv("FEATX_CACHE_DIR", str(blocker / "cache"))
    for _ in range(2):
        assert featx.build(resnet18_spec(stages=C2_C3)).feature_info[-1].channels == 128
    assert blocker.read_text() == "not a folder" and list(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_read_but_not_written(cache):
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    _edit(path, _marked)
    cache.chmod(0o500)
    try:
        assert _covers(featx.build(resnet18_spec(stages=C2_C3)))[0] == "from the cache"
        assert featx.build(resnet18_spec(stages=C2_C3, out_features=["c2"])).feature_info[0].name == "c2"
        assert _entries(cache) == [path]
    finally:
        cache.chmod(0o700)


def test_a_relative_featx_cache_dir_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_NO_CACHE")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATX_CACHE_DIR", "relative/cache")
    with pytest.raises(featx.ArgumentError, match=r"FEATX_CACHE_DIR='relative/cache': featx's cache folder must be an"):
        featx.build(resnet18_spec(stages=C2_C3))
    with pytest.raises(featx.ArgumentError, match=r"^FEATX_CACHE_DIR='relative/cache': "):  # a packaged plan
        featx.build("resnet18", overrides=["device=meta"])
    assert list(tmp_path.iterdir()) == []


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_NO_CACHE")
    monkeypatch.delenv("FEATX_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    featx.build(resnet18_spec(stages=C2_C3))
    assert not (tmp_path / "relative").exists()
    assert len(_entries(tmp_path / "home" / ".cache" / "featx" / "plans")) == 1


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_a_user_without_a_home_folder_builds_uncached(tmp_path):
    """A container user without HOME or a passwd entry (docker run --user 1234): no user cache, no failure."""
    spec = resnet18_spec(stages=C2_C3, device="meta")  # not a packaged spec: the user cache is looked for
    code = f"import featx; print(featx.build({spec!r}).feature_info[-1].channels)"
    command = ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", sys.executable, "-c", code]
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(featx.__file__).parents[1])}
    result = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["128"], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_timm_model_registered_by_user_code_is_never_cached(cache):
    """Its code may change under the same versions: a plan of it is never kept. (It is a timm model whatever
    featx listed of timm's registry before.)"""
    timm = pytest.importorskip("timm")

    class Net(torch.nn.Module):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.stem, self.body = torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Conv2d(8, 8, 3, 2, 1)
            self.head = torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.body(self.stem(x)).mean((2, 3)))

    def featx_test_user_net(pretrained=False, **kwargs):
        return Net(**kwargs)

    timm_models.timm_models()  # featx has listed timm's names before the user's code registers one
    timm.models.register_model(featx_test_user_net)
    spec = {"model": "timm:featx_test_user_net", "stages": {"s1": {"modules": ["stem"]}, "s2": {"modules": ["body"]}}}
    assert featx.build(spec, overrides=["device=meta"]).feature_info[-1].stride == 4
    assert _entries(cache) == []
    featx.build("timm_resnet50d", overrides=["device=meta", "out_features=[c2]"])  # timm's own: cached
    assert len(_entries(cache)) == 1


def _in_a_fresh_process(code: str, cache_dir: Path, **variables: str) -> List[str]:
    """The lines ``code`` prints in a new interpreter with the plan cache on in ``cache_dir`` (timm's registry and
    ``sys.modules`` of this process stay untouched)."""
    env = {key: value for key, value in os.environ.items() if key != "FEATX_NO_CACHE"}
    env.update(FEATX_CACHE_DIR=str(cache_dir), **variables)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


#: the channels featx reports for a spec, then those its forward gives (on meta, at 64x64)
_CHANNELS = """
import torch, featx
backbone = featx.build({spec!r}, overrides=["device=meta"])
print([info.channels for info in backbone.feature_info])
print([tuple(map.shape)[1] for map in backbone(torch.empty(1, 3, 64, 64, device="meta")).values()])
"""


def test_a_user_model_registered_under_a_timm_name_never_gets_timms_plan(tmp_path):
    """timm's register_model replaces a name with a warning: the packaged plan of timm's convnext_tiny (96..768
    channels) must not describe the user's narrower one, nor a plan in the user cache."""
    pytest.importorskip("timm")
    register = """
import functools, warnings, timm
from timm.models.convnext import ConvNeXt
warnings.simplefilter("ignore")
@timm.models.register_model
def convnext_tiny(pretrained=False, **kwargs):  # timm's create_model passes its configuration: not used here
    return ConvNeXt(depths=(1, 1, 1, 1), dims=(32, 64, 128, 256))
"""
    lines = _in_a_fresh_process(register + _CHANNELS.format(spec="timm_convnext_tiny"), tmp_path)
    assert lines == ["[32, 64, 128, 256]", "[32, 64, 128, 256]"]
    assert not (tmp_path / "plans").exists()


def test_a_user_model_wrapping_a_timm_builder_is_not_timms_own(tmp_path):
    """functools.wraps copies timm's module and name onto the user's function, which then replaces timm's resnet18:
    still the user's code, so the plan of timm's resnet18 cached a moment before is not used for it."""
    pytest.importorskip("timm")
    spec = {"model": "timm:resnet18", "stages": {"c2": {"modules": ["conv1", "bn1", "act1", "maxpool", "layer1"]},
            "c3": {"modules": ["layer2"]}}}  # fmt: skip
    register = """
import functools, warnings, timm
from timm.models import resnet
from featx.models.registry import defined_by_library
warnings.simplefilter("ignore")
@timm.models.register_model
@functools.wraps(resnet.resnet18)
def slim_resnet18(pretrained=False, **kwargs):
    return resnet._create_resnet("resnet18", pretrained, block=resnet.BasicBlock, layers=(1, 1, 1, 1),
                                 channels=(32, 64, 128, 256), **kwargs)
print(defined_by_library("timm:resnet18"))
"""
    code = _CHANNELS.format(spec=spec) + register + _CHANNELS.format(spec=spec)
    lines = _in_a_fresh_process(code, tmp_path)
    assert lines == ["[64, 128]", "[64, 128]", "False", "[32, 64]", "[32, 64]"]
    assert len(_entries(tmp_path / "plans")) == 1  # timm's own resnet18, cached before the user's replaced it


def test_torchvisions_builders_are_its_own_code():
    from featx.models.registry import defined_by_library

    assert all(defined_by_library(name) for name in torchvision.models.list_models(module=torchvision.models))


def test_a_timm_other_than_the_installed_release_is_never_cached(tmp_path):
    """A timm checkout on the path (or an editable install) keeps a version while its code changes: no key can
    tell its plans apart, so it plans every time."""
    timm = pytest.importorskip("timm")
    shadow = tmp_path / "shadow" / "timm"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"__version__ = {timm.__version__!r}\n")
    code = "from featx.construct.plan_cache import plan_versions; v = plan_versions('timm:resnet18'); "
    code += "print(v if v is None else v['timm'])"
    assert _in_a_fresh_process(code, tmp_path) == [timm.__version__.split("+")[0]]
    assert _in_a_fresh_process(code, tmp_path, PYTHONPATH=str(shadow.parent)) == ["None"]


@pytest.mark.parametrize(
    ("installed", "keyed"),
    [("2.14.1+cu130", "2.14.1"), ("2.14.1+cpu", "2.14.1"), ("2.6.0+rocm6.2.4", "2.6.0"), ("2.14.1", "2.14.1"),
     ("0.30.0a0+4f1a2b3", "0.30.0a0+4f1a2b3"), ("2.15.0a0+git9e8d7c6", "2.15.0a0+git9e8d7c6")],
)  # fmt: skip
def test_a_build_variant_label_is_dropped_from_a_version_and_a_source_builds_commit_is_kept(
    monkeypatch, installed, keyed
):
    monkeypatch.setattr(torchvision, "__version__", installed)
    plan_cache._library_versions.cache_clear()
    try:
        versions = plan_versions("resnet18")
    finally:
        plan_cache._library_versions.cache_clear()
    assert versions is not None and versions["torchvision"] == keyed


def test_an_entry_edited_without_its_checksum_is_ignored_and_rewritten(cache):
    """A hand edit that keeps the form (c3 made of layer2 and layer3, its channels left at 128) would build another
    network under the same feature_info: the checksum refuses it."""
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    written = json.loads(path.read_text())
    _edit(path, lambda entry: entry["plan"]["stages"][1].update(paths=["layer2", "layer3"]), seal=False)
    backbone = featx.build(resnet18_spec(stages=C2_C3))
    assert [tuple(map.shape) for map in backbone(torch.randn(1, 3, 64, 64)).values()] == [
        (1, 64, 16, 16),
        (1, 128, 8, 8),
    ]
    assert json.loads(path.read_text()) == written


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_owned_by_another_user_is_ignored(cache):
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    _edit(path, _marked)
    os.chown(path, 54321, 54321)
    assert _covers(featx.build(resnet18_spec(stages=C2_C3)))[0] != "from the cache"


def _reported_and_produced(name: str) -> Tuple[List[int], List[int]]:
    """The channels featx reports for packaged spec ``name`` (on meta) and those its forward gives."""
    backbone = featx.build(name, overrides=["device=meta"])
    produced = [tuple(map.shape)[1] for map in backbone(torch.empty(1, 3, 64, 64, device="meta")).values()]
    return [info.channels for info in backbone.feature_info], produced


def test_a_library_class_patched_at_run_time_is_planned_afresh(cache, monkeypatch):
    """Same versions, same builder, other network: the packaged plan of resnet50 (256..2048) must not describe it."""
    monkeypatch.setattr(torchvision.models.resnet.Bottleneck, "expansion", 2)
    assert _reported_and_produced("resnet50") == ([128, 256, 512, 1024], [128, 256, 512, 1024])


def test_the_structure_fingerprint_changes_with_a_replaced_forward_or_width_and_only_then(monkeypatch):
    def fingerprint() -> str:
        return structure_fingerprint(MetaModel.create("resnet18").model)

    original = fingerprint()
    assert re.fullmatch("[0-9a-f]{64}", original) and fingerprint() == original
    block = torchvision.models.resnet.BasicBlock
    torchvisions_forward = block.forward

    def users_forward(self, x):  # the user's code (the plan may no longer describe it), same module and name
        return torchvisions_forward(self, x)

    monkeypatch.setattr(block, "forward", users_forward)
    assert fingerprint() != original
    monkeypatch.undo()
    monkeypatch.setattr(block, "expansion", 2)
    assert fingerprint() != original
    monkeypatch.undo()
    assert fingerprint() == original


class _FullyNamedRelu(torch.nn.Module):
    """A forward that reaches relu through three modules (``torch.nn.functional.relu``)."""

    def forward(self, x):
        return torch.nn.functional.relu(x)


_POOL = torch.nn.functional.max_pool2d


@pytest.mark.parametrize(
    "model, module, name, replacement",
    [
        ("resnet18", torch.nn.functional, "max_pool2d", lambda input, kernel_size, *args, **kwargs: _POOL(input, 1)),
        ("resnet18", torch.nn.functional, "max_pool2d", functools.wraps(_POOL)(lambda *args, **kwargs: None)),
        ("resnet18", torch.nn.functional, "max_pool2d", functools.partial(_POOL, stride=1)),
        ("resnet18", torch, "flatten", torch.ravel),  # a builtin for another, where ResNet's _forward_impl reads it
        ("resnet18", torch, "max_pool2d", torch.max_pool1d),  # what F.max_pool2d's own code calls
        ("fully named", torch.nn.functional, "relu", lambda input, inplace=False: input),
    ],
    ids=["lambda", "wrapper", "partial", "builtin", "called by the function", "module of a module"],
)
def test_a_function_a_forward_reaches_through_a_module_changes_the_fingerprint_when_replaced(
    monkeypatch, model, module, name, replacement
):
    def fingerprint() -> str:
        return structure_fingerprint(_FullyNamedRelu() if model == "fully named" else MetaModel.create(model).model)

    original = fingerprint()
    monkeypatch.setattr(module, name, replacement)
    assert fingerprint() != original
    monkeypatch.undo()
    assert fingerprint() == original


def test_a_patched_helper_of_a_models_forward_is_planned_afresh(cache, monkeypatch):
    """ResNet.forward calls _forward_impl: only forward's code location was in the fingerprint, so a plan cached for
    torchvision's _forward_impl was used for a patched one that computes on layer1's output before layer2 (a spec
    the same build without the cache refuses)."""
    spec = resnet18_spec(stages=C2_C3, device="meta")
    featx.build(spec)  # planned and cached with torchvision's code
    assert len(_entries(cache)) == 1
    resnet = torchvision.models.resnet.ResNet

    def _forward_impl(self, x):  # the user's: layer1's output doubled (not a module) before layer2
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x) * 2)
        return self.fc(torch.flatten(self.avgpool(self.layer4(self.layer3(x))), 1))

    monkeypatch.setattr(resnet, "_forward_impl", _forward_impl)
    with pytest.raises(featx.SpecError, match=r"the model's own forward computes on the output of 'layer1'"):
        featx.build(spec)


def _strides_reported_and_produced(spec: Any, size: int = 256) -> Tuple[List[int], List[int]]:
    """The strides featx reports for ``spec`` (built on meta) and those of the maps its forward gives."""
    backbone = featx.build(spec, overrides=["device=meta"])
    produced = [size // map.shape[-1] for map in backbone(torch.empty(1, 3, size, size, device="meta")).values()]
    return [info.stride for info in backbone.feature_info], produced


def test_a_replaced_module_level_helper_of_a_forward_is_planned_afresh(cache, monkeypatch):
    """Swin's PatchMerging.forward calls the module's function _patch_merging_pad: replacing that function kept every
    method's code location, and swin_t reported the packaged plan's strides 4..32 for maps at strides 4..256."""
    from torchvision.models import swin_transformer

    def merge_four_by_four(x):  # the user's patch merging: 4x4 neighbourhoods, so a stride of 4 per merge
        height, width = x.shape[-3:-1]
        x = torch.nn.functional.pad(x, (0, 0, 0, (-width) % 4, 0, (-height) % 4))
        return torch.cat([x[..., i::4, j::4, :] for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))], -1)

    assert _strides_reported_and_produced("swin_t") == ([4, 8, 16, 32], [4, 8, 16, 32])
    monkeypatch.setattr(swin_transformer, "_patch_merging_pad", merge_four_by_four)
    assert _strides_reported_and_produced("swin_t") == ([4, 16, 64, 256], [4, 16, 64, 256])


#: the user's experiment with ResNet's stem in a process of its own: torch.nn.functional.max_pool2d pooling at
#: stride 1 whatever stride it is given, patched where MaxPool2d.forward finds it (``F.max_pool2d``, an attribute of
#: a module, not a name of the forward's own module)
_STRIDE_ONE_POOL = """
import torch.nn.functional as F
pool = F.max_pool2d
F.max_pool2d = lambda input, kernel_size, stride=None, *args, **kwargs: pool(input, kernel_size, 1, *args, **kwargs)
"""

#: the strides of the maps torchvision's own resnet18 gives after layer1..layer4 (at 64x64), then those featx reports
#: for each of ``specs``
_TORCHVISIONS_AND_REPORTED_STRIDES = """
import torch, torchvision, featx
from torchvision.models._utils import IntermediateLayerGetter
layers = IntermediateLayerGetter(torchvision.models.resnet18(), dict(layer1="1", layer2="2", layer3="3", layer4="4"))
print([64 // map.shape[-1] for map in layers(torch.zeros(1, 3, 64, 64)).values()])
for spec in {specs!r}:
    print([info.stride for info in featx.build(spec, overrides=["device=meta"]).feature_info])
"""


def _torchvisions_strides(layers: Tuple[str, ...], size: int = 64) -> List[int]:
    """The strides of the maps torchvision's own resnet18 gives after ``layers`` in this process."""
    getter = IntermediateLayerGetter(torchvision.models.resnet18(), {layer: layer for layer in layers})
    return [size // map.shape[-1] for map in getter(torch.zeros(1, 3, size, size)).values()]


def test_a_function_a_forward_reaches_through_a_module_attribute_is_part_of_the_structure(cache):
    """MaxPool2d.forward calls F.max_pool2d, a function it reaches through a module, which the fingerprint did not
    follow: the plan a process with a stride-1 max_pool2d cached was used by later, unpatched builds (p1..p3 at
    strides 2, 4, 8 reported for maps at 4, 8, 16), and the packaged plan of resnet18_fpn (4..32) by the patched
    process. Each now reports the strides of the maps torchvision's own resnet18 gives in it."""
    spec = resnet18_spec(fpn={"out_channels": 32, "extra_blocks": None})
    code = _STRIDE_ONE_POOL + _TORCHVISIONS_AND_REPORTED_STRIDES.format(specs=(spec, "resnet18_fpn"))
    lines = _in_a_fresh_process(code, cache.parent)
    assert lines == ["[2, 4, 8, 16]", "[2, 4, 8]", "[2, 4, 8, 16]"]  # torchvision's, then featx's
    assert len(_entries(cache)) == 2  # the patched process planned both: the packaged plan is not its network's
    expected = _torchvisions_strides(("layer1", "layer2", "layer3"))
    assert expected == [4, 8, 16]
    backbone = featx.build(spec)  # unpatched, with the cache the patched process wrote
    assert [info.stride for info in backbone.feature_info] == expected
    assert [64 // map.shape[-1] for map in backbone(torch.zeros(1, 3, 64, 64)).values()] == expected


def _pooled_after(pool: bool) -> Any:
    """A BasicBlock forward of the user's that halves the map after torchvision's when ``pool``: the functions it
    returns share one code location and differ in what their closure holds."""
    torchvisions_forward = torchvision.models.resnet.BasicBlock.forward

    def forward(self, x):
        x = torchvisions_forward(self, x)
        return torch.nn.functional.max_pool2d(x, 2) if pool else x

    return forward


def _uncached(spec: Any, monkeypatch) -> Tuple[List[int], List[int]]:
    with monkeypatch.context() as uncached:
        uncached.setenv("FEATX_NO_CACHE", "1")
        return _strides_reported_and_produced(spec)


def test_a_forward_closing_over_another_value_is_planned_afresh(cache, monkeypatch):
    """The entry made with a forward that pools after each block was used for the same forward without the pool
    (strides 16 and 128 reported for maps at 4 and 8)."""
    spec = resnet18_spec(stages=C2_C3)
    block = torchvision.models.resnet.BasicBlock
    pooled, plain = _pooled_after(True), _pooled_after(False)  # both around torchvision's forward
    monkeypatch.setattr(block, "forward", pooled)
    assert _strides_reported_and_produced(spec) == _uncached(spec, monkeypatch)
    monkeypatch.setattr(block, "forward", plain)
    assert _strides_reported_and_produced(spec) == ([4, 8], [4, 8])


def test_a_forward_hook_on_every_module_leaves_the_cache_unused(cache, monkeypatch):
    """A hook torch runs after every module's forward (register_module_forward_hook) changes what the stages compute
    while no class changes: the entry made without it was used (strides 4 and 8 reported for maps at 16 and 128)."""
    spec = resnet18_spec(stages=C2_C3)
    assert _strides_reported_and_produced(spec) == ([4, 8], [4, 8])
    (entry,) = _entries(cache)

    def pool_after_blocks(module, inputs, output):
        if isinstance(module, torchvision.models.resnet.BasicBlock):
            return torch.nn.functional.max_pool2d(output, 2)
        return None

    handle = torch.nn.modules.module.register_module_forward_hook(pool_after_blocks)
    try:
        with_hook = _strides_reported_and_produced(spec)
        assert with_hook[1] == [16, 128] and with_hook == _uncached(spec, monkeypatch)
    finally:
        handle.remove()
    assert _entries(cache) == [entry]  # nothing written while the hook was there
    assert _strides_reported_and_produced(spec) == ([4, 8], [4, 8])


def test_a_user_builder_under_torchvisions_own_decorator_is_not_torchvisions(cache, monkeypatch):
    """torchvision's handle_legacy_interface wraps the user's function: the wrapper's code is torchvision's, the
    function it wraps is not."""
    from torchvision.models import _api, resnet
    from torchvision.models._utils import handle_legacy_interface

    from featx.models.registry import defined_by_library

    @handle_legacy_interface(weights=("pretrained", resnet.ResNet50_Weights.IMAGENET1K_V1))
    def resnet50(*, weights=None, progress=True, **kwargs):  # a ResNet-34 body under resnet50's name
        return resnet._resnet(resnet.BasicBlock, [3, 4, 6, 3], weights, progress, **kwargs)

    monkeypatch.setitem(_api.BUILTIN_MODELS, "resnet50", resnet50)
    assert not defined_by_library("resnet50")
    assert _reported_and_produced("resnet50") == ([64, 128, 256, 512], [64, 128, 256, 512])
    assert _entries(cache) == []


def test_without_user_ids_entries_are_still_read(cache, monkeypatch):
    """Windows has no os.geteuid: the ownership check is skipped there, never a raw AttributeError."""
    featx.build(resnet18_spec(stages=C2_C3))
    (path,) = _entries(cache)
    _edit(path, _marked)
    monkeypatch.delattr(os, "geteuid")
    assert _covers(featx.build(resnet18_spec(stages=C2_C3)))[0] == "from the cache"


@pytest.mark.parametrize("bits", [stat.S_IWGRP, stat.S_IWOTH], ids=["group", "others"])
def test_an_entry_other_users_can_write_is_ignored_and_rewritten_for_the_user_alone(cache, bits):
    previous = os.umask(0o002)  # a common umask: featx's own entries must still be the user's alone
    try:
        featx.build(resnet18_spec(stages=C2_C3))
    finally:
        os.umask(previous)
    (path,) = _entries(cache)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    _edit(path, _marked)
    path.chmod(0o644 | bits)
    assert _covers(featx.build(resnet18_spec(stages=C2_C3)))[0] != "from the cache"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_timm_imported_from_a_zip_archive_is_never_cached(monkeypatch, tmp_path):
    """Its origin is no file (a regression caught in review raised NotADirectoryError here)."""
    timm = pytest.importorskip("timm")
    fake = type(sys)("timm")
    fake.__file__ = str(tmp_path / "timm.zip" / "timm" / "__init__.py")
    fake.__version__ = importlib.metadata.version("timm")
    (tmp_path / "timm.zip").write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "timm", fake)
    assert plan_versions("timm:resnet18") is None
    monkeypatch.setitem(sys.modules, "timm", timm)
    assert plan_versions("timm:resnet18") is not None


@pytest.mark.parametrize(
    ("direct_url", "keyed"),
    [
        ({"url": "https://github.com/huggingface/pytorch-image-models", "vcs_info": {"vcs": "git",
          "commit_id": "0123abc4567def"}}, "VERSION 0123abc4567def"),
        ({"url": "file:///home/me/timm", "dir_info": {"editable": False}}, None),
        ({"url": "file:///home/me/timm.tar.gz", "archive_info": {}}, None),
        ("not json", None),
    ],
    ids=["git", "folder", "archive", "damaged"],
)  # fmt: skip
def test_a_timm_installed_from_a_repository_is_keyed_by_its_commit(monkeypatch, tmp_path, direct_url, keyed):
    """pip install git+... keeps one version for every commit of a branch (PEP 610 records the commit)."""
    pytest.importorskip("timm")
    installed = importlib.metadata.distribution("timm")
    text = direct_url if isinstance(direct_url, str) else json.dumps(direct_url)
    original_read = type(installed).read_text

    def read_text(self, name):
        return text if name == "direct_url.json" else original_read(self, name)

    monkeypatch.setattr(type(installed), "read_text", read_text)
    version = installed.version.split("+")[0]
    assert plan_cache._timm_version() == (keyed.replace("VERSION", version) if keyed else None)


def test_the_order_of_the_stages_is_part_of_the_key(cache):
    """Two specs differing only in the order of stages past the returned one: one is refused (a slice must follow
    the stage before it), whatever the cache holds for the other."""
    stages = {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "c3": {"slice": [5, 6]},
              "c4": {"modules": ["layer3"]}}  # fmt: skip

    def spec(order: List[str]) -> Dict[str, Any]:
        return resnet18_spec(stages={name: stages[name] for name in order}, out_features=["c2"], device="meta")

    refusal = r"backbone\.stages\.c3\.slice: starts at 5 but stage 'c4' ends on child 6"
    with pytest.raises(featx.SpecError, match=refusal):
        featx.build(spec(["c2", "c4", "c3"]))
    featx.build(spec(["c2", "c3", "c4"]))
    with pytest.raises(featx.SpecError, match=refusal):
        featx.build(spec(["c2", "c4", "c3"]))


def test_an_edit_of_the_planning_code_makes_every_entry_stale(tmp_path, monkeypatch):
    """An editable install keeps its version while its planner changes: the planner's code is part of the key."""
    planner = tmp_path / "planner.py"
    planner.write_text("A = 1\n")
    monkeypatch.setattr(plan_cache, "PLANNING_MODULES", (*PLANNING_MODULES, str(planner)))
    plan_cache._library_versions.cache_clear()
    before = plan_versions("resnet18")
    planner.write_text("A = 2\n")
    plan_cache._library_versions.cache_clear()
    after = plan_versions("resnet18")
    plan_cache._library_versions.cache_clear()
    assert before is not None and after is not None and before["featx planner"] != after["featx planner"]
    assert {key: value for key, value in before.items() if key != "featx planner"} == {
        key: value for key, value in after.items() if key != "featx planner"
    }


def test_the_planning_modules_are_every_featx_module_planning_runs():
    """Every featx module imported by the planner and the meta construction is hashed into the key, except those
    that only name keys, raise errors or write files, and the cache's own (where an entry is, its form, which
    builders may be cached and which models an entry fits)."""
    code = (
        "import sys, featx.construct.plan, featx.construct.plan_cache, featx.models.meta_construction; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('featx.'))))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    exempt = {"featx.errors", "featx.files", "featx.construct", "featx.models", "featx.nn", "featx.spec"}
    exempt |= {
        "featx.cache_folder",
        "featx.construct.plan_cache",
        "featx.construct.plan_data",
        "featx.models.library_code",
    }
    exempt |= {"featx.construct.model_structure", "featx.version"}  # the version is in the key itself
    planning = {m for m in imported if m not in exempt and not m.startswith("featx.spec.")}
    assert planning == {"featx." + module.removesuffix(".py").replace("/", ".") for module in PLANNING_MODULES}


# --- featx-list from plans ------------------------------------------------------------------------------------------


def test_featx_list_gives_the_same_table_from_cached_plans(cache, monkeypatch, capsys):
    names = ["resnet18", "resnet50_fpn", "maxvit_t", "vit_b_16_fpn", "swin_t", "mobilenet_v3_large_fpn"]
    catalog.main(names)
    cached = capsys.readouterr().out
    monkeypatch.setenv("FEATX_NO_CACHE", "1")
    catalog.main(names)
    assert capsys.readouterr().out == cached
    rows = {line.split()[0]: line.split() for line in cached.splitlines()[1:]}
    trunk = torchvision.models.resnet50()
    fpn = FeaturePyramidNetwork([256, 512, 1024, 2048], 256)
    count = sum(p.numel() for p in trunk.parameters()) - trunk.fc.weight.numel() - trunk.fc.bias.numel()
    count += sum(p.numel() for p in fpn.parameters())
    assert rows["resnet50_fpn"][1:6] == ["resnet50", "c2..c5", "4,8,16,32", "256,256,256,256", f"{count / 1e6:.1f}M"]


def test_featx_list_names_an_unknown_timm_model_in_a_user_file(cache, tmp_path, capsys):
    """The cache asks whether timm defines the model itself before planning would name it: never a raw KeyError."""
    pytest.importorskip("timm")
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "bad.yaml").write_text("model: timm:no_such_model\nstages:\n  c2: {modules: [stem]}\n")
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["bad", "--config-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "error: backbone.model: unknown timm model 'no_such_model'" in capsys.readouterr().out


def test_featx_list_refuses_a_weights_name_build_refuses(cache, tmp_path, capsys):
    """A user file naming weights its model does not publish got a normal row; featx.build refuses it."""
    (tmp_path / "backbone").mkdir()
    text = (
        (Path(__file__).resolve().parents[1] / "conf" / "backbone" / "resnet18.yaml")
        .read_text()
        .replace("\nweights: null", "\nweights: IMAGENET1K_V9")
    )
    assert "weights: IMAGENET1K_V9" in text
    (tmp_path / "backbone" / "my_r18.yaml").write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["my_r18", "--config-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "error: backbone.weights: 'IMAGENET1K_V9' is not a weights name of resnet18" in capsys.readouterr().out


def test_featx_list_refuses_a_stage_name_build_refuses(cache, tmp_path, capsys):
    """A user file with a stage named like an nn.ModuleDict attribute got a normal row; featx.build refuses it."""
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "keys.yaml").write_text(
        "model: resnet18\nstages:\n  c2: {modules: [conv1, bn1, relu, maxpool, layer1]}\n  keys: {modules: [layer2]}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["keys", "--config-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "backbone.stages.keys: 'keys' is a name of nn.ModuleDict's own" in capsys.readouterr().out


def test_featx_list_checks_a_user_cache_entry_a_patched_process_wrote(cache, tmp_path, monkeypatch, capsys):
    """A process that patched torchvision (every layer at stride 1) built a backbone file of the user's: its entry,
    under the same keys and versions, gave featx-list strides 4,4,4 in a later, unpatched process."""
    (tmp_path / "backbone").mkdir()
    text = (Path(__file__).resolve().parents[1] / "conf" / "backbone" / "resnet18.yaml").read_text()
    (tmp_path / "backbone" / "r18x.yaml").write_text(text.replace("out_features: null", "out_features: [c2, c3, c4]"))
    original = torchvision.models.resnet.ResNet._make_layer

    def without_strides(self, block, planes, blocks, stride=1, dilate=False):
        return original(self, block, planes, blocks, 1, dilate)

    monkeypatch.setattr(torchvision.models.resnet.ResNet, "_make_layer", without_strides)
    patched = featx.build(str(tmp_path / "backbone" / "r18x.yaml"), overrides=["device=meta"])
    assert [info.stride for info in patched.feature_info] == [4, 4, 4]
    assert len(_entries(cache)) == 1  # the patched process's plan, under the file's keys
    monkeypatch.undo()  # a process of its own, where nothing is patched
    monkeypatch.delenv("FEATX_NO_CACHE", raising=False)
    monkeypatch.setenv("FEATX_CACHE_DIR", str(cache.parent))
    catalog.main(["r18x", "--config-dir", str(tmp_path)])
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:5] == ["r18x", "resnet18", "c2..c4", "4,8,16", "64,128,256"]


# --- planning reads nothing but the planning keys -------------------------------------------------------------------


class _RecordingSpec:
    """A spec that records which of its keys are read."""

    def __init__(self, spec: BackboneSpec) -> None:
        self._spec, self.read = spec, set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._spec, name)


@pytest.mark.parametrize(
    "name", ["resnet50", "maxvit_t", "vit_b_16", "swin_t", "googlenet", "vgg16", "timm_swin_tiny", "densenet121"]
)
def test_planning_reads_only_the_planning_keys(name):
    """What the cache keys an entry by is everything planning depends on: any other spec key may differ."""
    spec = _RecordingSpec(load_spec(name))
    plan_backbone(spec, MetaModel.create(spec._spec.model).model)  # type: ignore[arg-type]
    read = spec.read - {"returned_stages"} | ({"stages", "out_features"} if "returned_stages" in spec.read else set())
    assert read and read <= set(PLAN_KEYS), read - set(PLAN_KEYS)
