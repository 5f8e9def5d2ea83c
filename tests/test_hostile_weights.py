"""Hostile weights and checkpoints: files that are not what they claim, tensors that do not fit, names that are
neither an enum member nor a file, saves that collide. Each is a featx error naming the file or key (pickled code
never runs, and no message advises ``weights_only=False``), nothing the user wrote changes, and two processes
saving to one path leave exactly the winner's file."""

from __future__ import annotations

import json
import mmap
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import timm
import torch
import torchvision
from helpers import folder_state, resnet18_spec
from safetensors.torch import save_file

import featx
from featx.construct.tensor_records import UnknownLayout, record_mismatch
from featx.construct.weights import UnreadableWeightsError, torch_load_file
from featx.errors import ArgumentError, SpecError, WeightsError
from featx.files import write_atomically

SPEC = resnet18_spec(frozen_stages=1)


def _state(seed: int = 0) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


class _RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled_code(path: Path, protocol: int = 2) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": _RunsCode(path.parent / "ran")}, handle, protocol=protocol)


def _zip_not_torch(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _safetensors_cut(path: Path) -> None:
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pth_cut(path: Path) -> None:
    torch.save(_state(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _with(change: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    return lambda path: torch.save(change(_state()), path)


def _sparse(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {**state, "fc.weight": state["fc.weight"], "conv1.weight": state["conv1.weight"].to_sparse()}


# (id, file name, how to write it, error type, pattern after "backbone.weights: ")
BAD_FILES = [
    ("empty-pth", "w.pth", lambda p: p.write_bytes(b""), WeightsError, r"cannot read .*w\.pth"),
    ("garbage-pth", "w.pth", lambda p: p.write_bytes(os.urandom(4096)), WeightsError, r"cannot read .*w\.pth"),
    (
        "text-pth",
        "w.pth",
        lambda p: p.write_text("conv1.weight: 1\n"),
        WeightsError,
        r"neither a zip archive nor a pickle",
    ),
    ("zip-not-torch", "w.pth", _zip_not_torch, WeightsError, r"cannot read .*w\.pth"),
    (  # an interrupted copy: called "neither a zip archive nor a pickle", which it starts as
        "cut-pth",
        "w.pth",
        _pth_cut,
        WeightsError,
        r"cannot read \S*w\.pth: a zip archive cut short \(it starts as one, and its end, the listing of its records, "
        r"is missing: a copy or download that stopped midway\?\)$",
    ),
    ("pickled-code", "w.pth", _pickled_code, WeightsError, r"holds more than tensors and is refused.*system"),
    ("pickled-code-v5", "w.pth", lambda p: _pickled_code(p, 5), WeightsError, r"cannot read .*not a torch checkpoint"),
    (
        "pickled-list",
        "w.pth",
        lambda p: torch.save([1, 2], p),
        WeightsError,
        r"dict .*: it holds a value of type list$",
    ),
    (
        "one-tensor",
        "w.pth",
        lambda p: torch.save(torch.zeros(3), p),
        WeightsError,
        r"dict .*: it holds a value of type Tensor$",
    ),
    (  # the key the file holds is named (never a value)
        "int-keys",
        "w.pth",
        _with(lambda s: {**s, 3: torch.zeros(1)}),
        WeightsError,
        r"does not hold a state dict \(name → tensor\): its key 3 \(of type int\) is not a name$",
    ),
    (  # a nested entry named by its path, and no advice to save the dict featx already took alone
        "number-values-nested",
        "w.pth",
        _with(lambda s: {"state_dict": {**s, "epoch": 5}}),
        WeightsError,
        r"does not hold a state dict \(name → tensor\): its entry \['state_dict'\]\['epoch'\] holds a value of type "
        r"int, not a tensor$",
    ),
    (
        "number-values",
        "w.pth",
        _with(lambda s: {**s, "epoch": 5}),
        WeightsError,
        r"does not hold a state dict \(name → tensor\): its entry 'epoch' holds a value of type int, not a tensor$",
    ),
    ("empty-dict", "w.pth", lambda p: torch.save({}, p), WeightsError, r"missing keys: conv1.weight"),
    (
        "other-model",
        "w.pth",
        lambda p: torch.save(torchvision.models.resnet34().state_dict(), p),
        WeightsError,
        r"unexpected keys: layer1.2",
    ),
    (
        "missing-key",
        "w.pth",
        _with(lambda s: {k: v for k, v in s.items() if k != "layer2.0.conv1.weight"}),
        WeightsError,
        r"missing keys: layer2.0.conv1.weight \(128, 64, 3, 3\)",
    ),
    (
        "extra-key",
        "w.pth",
        _with(lambda s: {**s, "layer9.weight": torch.zeros(1)}),
        WeightsError,
        r"unexpected keys: layer9.weight",
    ),
    (
        "transposed",
        "w.pth",
        _with(lambda s: {**s, "conv1.weight": s["conv1.weight"].transpose(0, 1)}),
        WeightsError,
        r"shape mismatches: conv1.weight checkpoint \(3, 64, 7, 7\) vs model \(64, 3, 7, 7\)",
    ),
    (
        "int64-values",
        "w.pth",
        _with(lambda s: {k: v.long() for k, v in s.items()}),
        WeightsError,
        r"value kinds differ: conv1.weight checkpoint torch.int64 \(integer\) vs model torch.float32",
    ),
    (  # the whole entry was cut at 80 characters: "... vs model torch.f..."
        "int64-values-of-a-long-key",
        "w.pth",
        _with(lambda s: {**s, "layer2.0.downsample.1.running_mean": s["layer2.0.downsample.1.running_mean"].long()}),
        WeightsError,
        r"value kinds differ: layer2\.0\.downsample\.1\.running_mean checkpoint torch\.int64 \(integer\) vs model "
        r"torch\.float32$",
    ),
    (
        "bool-values",
        "w.pth",
        _with(lambda s: {**s, "conv1.weight": s["conv1.weight"] > 0}),
        WeightsError,
        r"value kinds differ: conv1.weight checkpoint torch.bool",
    ),
    (
        "complex-values",
        "w.pth",
        _with(lambda s: {**s, "bn1.weight": s["bn1.weight"].to(torch.complex64)}),
        WeightsError,
        r"value kinds differ: bn1.weight checkpoint torch.complex64",
    ),
    (
        "float-counter",
        "w.pth",
        _with(lambda s: {**s, "bn1.running_mean": s["bn1.running_mean"].int()}),
        WeightsError,
        r"value kinds differ: bn1.running_mean",
    ),
    ("sparse", "w.pth", _with(_sparse), WeightsError, r"conv1.weight checkpoint torch.float32 \(torch.sparse_coo"),
    (
        "meta-tensors",
        "w.pth",
        _with(lambda s: {k: v.to("meta") for k, v in s.items()}),
        WeightsError,
        r"meta \(no values\)",
    ),
    ("empty-safetensors", "w.safetensors", lambda p: p.write_bytes(b""), WeightsError, r"cannot read .*w\.safetensors"),
    ("garbage-safetensors", "w.safetensors", lambda p: p.write_bytes(b"\xff" * 64), WeightsError, r"cannot read"),
    ("cut-safetensors", "w.safetensors", _safetensors_cut, WeightsError, r"cannot read .*w\.safetensors"),
    (
        "int-safetensors",
        "w.safetensors",
        lambda p: save_file({k: v.long() for k, v in _state().items()}, str(p)),
        WeightsError,
        r"value kinds differ",
    ),
    (
        "header-bomb",
        "w.safetensors",
        lambda p: p.write_bytes((1 << 62).to_bytes(8, "little") + b"{}"),
        WeightsError,
        r"cannot read",
    ),
    (  # a float64 file's value beyond float32: the cast made it inf, and every output of the backbone inf
        "float64-beyond-float32",
        "w.pth",
        _with(lambda s: {**s, "conv1.weight": s["conv1.weight"].double().index_fill(0, torch.tensor([0]), 1e300)}),
        WeightsError,
        r"values beyond the model's dtype \(the cast would make them inf\): conv1\.weight checkpoint torch\.float64 vs "
        r"model torch\.float32$",
    ),
    (  # d["model"] = d: following the nesting keys must end
        "holds-itself",
        "w.pth",
        lambda p: torch.save((lambda d: d.update(model=d, x=torch.zeros(1)) or d)({}), p),
        WeightsError,
        r"does not hold a state dict \(name → tensor\): its entry \['model'\](\['model'\])* holds a value of type "
        r"dict, not a tensor$",
    ),
    ("folder", "w.pth", lambda p: p.mkdir(), WeightsError, r"w\.pth is a folder, not a checkpoint file"),
    ("dangling-link", "w.pth", lambda p: p.symlink_to(p.parent / "gone.pth"), WeightsError, r"not found"),
]


@pytest.mark.parametrize(
    ("name", "write", "error_type", "pattern"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_weights_files_that_do_not_fit_are_named_and_left_alone(tmp_path, name, write, error_type, pattern):
    path = tmp_path / name
    write(path)
    before = folder_state(tmp_path)
    with pytest.raises(error_type) as error:
        featx.build({**SPEC, "weights": str(path)})
    message = str(error.value)
    assert message.startswith("backbone.weights: "), message
    assert re.search(pattern, message), message
    assert "weights_only=False" not in message and "Traceback" not in message
    assert folder_state(tmp_path) == before  # nothing ran (no 'ran' marker), nothing changed


@pytest.mark.parametrize(
    ("change", "dtype"),
    [
        (lambda s: {k: v.half() if v.is_floating_point() else v for k, v in s.items()}, torch.float16),
        (lambda s: {k: v.double() if v.is_floating_point() else v for k, v in s.items()}, torch.float64),
        (lambda s: {"state_dict": s}, None),
        (lambda s: {"model": s}, None),
        (lambda s: {"model": {"state_dict": s}, "epoch": 3}, None),  # two deep: one pass over the keys missed it
        (lambda s: {k: v for k, v in s.items() if not k.endswith("num_batches_tracked")}, None),
    ],
    ids=["float16", "float64", "nested-state_dict", "nested-model", "nested-model-state_dict", "no-batch-counters"],
)
def test_weights_in_other_float_dtypes_or_nestings_load_exactly(tmp_path, change, dtype):
    state = _state(3)
    torch.save(change(state), tmp_path / "w.pth")
    backbone = featx.build({**SPEC, "weights": str(tmp_path / "w.pth")})
    expected = state["layer2.0.conv1.weight"] if dtype is None else state["layer2.0.conv1.weight"].to(dtype).float()
    assert torch.equal(backbone.stages.c3.layer2[0].conv1.weight, expected)


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_an_enum_name_wins_over_a_file_of_that_name(tmp_path, torch_home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(_state(7), tmp_path / "DEFAULT")  # a file named like the enum member, in the working directory
    with pytest.raises(WeightsError, match=r"resnet18 ResNet18_Weights.IMAGENET1K_V1 is not in the torch hub cache"):
        featx.build({**SPEC, "weights": "DEFAULT"})
    torch_home.mkdir(parents=True)
    torch.save(_state(8), torch_home / "resnet18-f37072fd.pth")  # the file name torchvision's enum expects
    with pytest.raises(WeightsError, match=rf"the torch hub cache file {re.escape(str(torch_home))}/resnet18-f37072fd"):
        featx.build({**SPEC, "weights": "DEFAULT"})  # read from the cache (and refused: not the published file)
    from_file = featx.build({**SPEC, "weights": "./DEFAULT"})
    assert torch.equal(from_file.stages.c2.conv1.weight, _state(7)["conv1.weight"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
        (lambda p: os.mkfifo(p), "is not a regular file (a device, fifo or socket)"),
        (lambda p: p.symlink_to(p.parent / "gone.pth"), "not found"),
    ],
    ids=["folder", "fifo", "dangling-link"],
)
def test_something_at_the_hub_cache_name_that_is_no_file_is_named(torch_home, make, message):
    """A folder, fifo or dangling link at the enum's file name was reported as "not in the torch hub cache ... place
    the file at <that name>" (online, a download would have gone onto it)."""
    torch_home.mkdir(parents=True)
    cached = torch_home / "resnet18-f37072fd.pth"
    make(cached)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": "DEFAULT"})
    assert str(caught.value).startswith("backbone.weights: ")
    assert message in str(caught.value)
    # the file reads, or cannot be read, whole: no download stopped midway
    assert str(caught.value).endswith("(the hub cache's copy of ResNet18_Weights.IMAGENET1K_V1)")


def _hub_blob(cache: Path, repo: str, filename: str) -> Path:
    """A Hugging Face hub cache entry laid out as huggingface_hub writes it (refs/main → snapshots/<revision>/
    ``filename``, a link to blobs/<etag>); the blob's path (nothing there yet)."""
    revision = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "blobs").mkdir()
    (folder / "snapshots" / revision / filename).symlink_to(Path("../../blobs/5e1a9d0c"))
    return folder / "blobs" / "5e1a9d0c"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache, offline."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    return tmp_path / "hf"


TIMM_SPEC = {"model": "timm:resnet18", "device": "cpu", "stages": {"c2": {"modules": ["conv1", "bn1", "act1"]}}}


def test_a_broken_file_in_the_hugging_face_hub_cache_names_the_blob_to_delete(hub_cache):
    """The Hugging Face hub cache keeps a file as snapshots/<revision>/model.safetensors, a link to blobs/<etag>:
    the error said to delete the snapshot's file, after which hf_hub_download links the same damaged blob again."""
    blob = _hub_blob(hub_cache, "timm/resnet18.a1_in1k", "model.safetensors")
    save_file(timm.create_model("resnet18").state_dict(), str(blob))
    blob.write_bytes(blob.read_bytes()[:5000])  # a damaged copy
    snapshot = hub_cache / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40) / "model.safetensors"
    with pytest.raises(WeightsError) as caught:
        featx.build({**TIMM_SPEC, "weights": "DEFAULT"})
    assert str(caught.value).startswith(f"backbone.weights: cannot read {snapshot}: ")
    assert str(caught.value).endswith(
        f"(the hub cache's copy of timm:resnet18.a1_in1k, perhaps a download that stopped midway: delete {blob} (the "
        "file it links to) and build again to download it afresh)"
    )


@pytest.mark.parametrize(
    "content",
    [lambda s: {"state_dict": s, "ema": dict(s)}, lambda s: {"ema": s}, lambda s: torch.nn.Linear(1, 1)],
    ids=["two-networks", "under-ema", "pickled-module"],
)
def test_a_whole_hub_cache_file_of_other_content_is_not_called_a_broken_download(hub_cache, content):
    """Every refusal of a hub cache file ended "perhaps a download that stopped midway: delete it", also for a
    complete file holding two networks, one under a key featx does not follow, or a pickled module."""
    state = timm.create_model("resnet18").state_dict()
    blob = _hub_blob(hub_cache, "timm/resnet18.a1_in1k", "pytorch_model.bin")
    torch.save(content({key: value.clone() for key, value in state.items()}), blob)
    with pytest.raises(WeightsError) as caught:
        featx.build({**TIMM_SPEC, "weights": "DEFAULT"})
    assert "stopped midway" not in str(caught.value)
    assert str(caught.value).endswith("(the hub cache's copy of timm:resnet18.a1_in1k)")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 300 + ".pth", "File name too long"),
        ("a\x00b.pth", "cannot read 'a\\x00b.pth': no file name holds a NUL"),
    ],
    ids=["too-long", "nul"],
)
def test_a_weights_name_no_file_can_have_is_a_weights_error(tmp_path, monkeypatch, name, message):
    """A name longer than the file system takes raised OSError from the lookup of a published name it might mean,
    and one holding NUL a ValueError from the stat."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": name})
    assert str(caught.value).startswith("backbone.weights: cannot read ")
    assert message in str(caught.value)


def test_a_torch_checkpoint_named_safetensors_gets_the_hint(tmp_path):
    """The reverse (a safetensors file named .pth) said what it looks like; this said "header too large" alone."""
    path = tmp_path / "w.safetensors"
    torch.save(_state(0), path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value).startswith(f"backbone.weights: cannot read {path}: ")
    assert str(caught.value).endswith("; it looks like a torch checkpoint: name it .pth")


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_a_state_dict_with_a_wrapper_prefix_says_to_strip_it(tmp_path, prefix):
    """DataParallel's and Lightning's keys (``module.conv1.weight``) listed 100 unexpected and 100 missing keys
    without saying the one prefix was all that differed."""
    path = tmp_path / "w.pth"
    torch.save({prefix + key: value for key, value in _state(0).items()}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value).endswith(
        f"(the file's keys are the model's with '{prefix}' before them, as DataParallel and other wrappers save "
        f"them: save the state dict without it, {{key.removeprefix('{prefix}'): value for key, value in "
        "state.items()})"
    )
    # a file whose extra keys have other prefixes too gets no such advice
    torch.save({**{prefix + key: value for key, value in _state(0).items()}, "other.x": torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert "removeprefix" not in str(caught.value)


def test_a_backbones_own_state_dict_as_weights_says_how_to_load_it(tmp_path):
    """A file of torch.save(bb.state_dict()) (featx's keys: stages.c2.conv1.weight) given as weights was refused with
    a plain key mismatch, without saying how such a file loads."""
    built = featx.build(SPEC).eval()
    path = tmp_path / "bb.pth"
    torch.save(built.state_dict(), path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value).endswith(
        "(the file's keys are a featx Backbone's own, as bb.state_dict() names them: load it with "
        "bb.load_state_dict(torch.load(path)) into a backbone built from the same spec, or save the backbone with "
        "featx.save(bb, path) and load it with featx.load(path))"
    )
    loaded = featx.build(SPEC).eval()  # what the hint says works
    loaded.load_state_dict(torch.load(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["c4"], built(x)["c4"], rtol=0, atol=0)
    # a torchvision state dict with other extra keys gets no such advice
    torch.save({**_state(0), "stages.c2.x": torch.zeros(1), "other.x": torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert "bb.state_dict()" not in str(caught.value)


def _wrapped_state(built: torch.nn.Module, wrapper: str, folder: Path) -> Dict[str, torch.Tensor]:
    """``built``'s state dict as its wrapper names it: DistributedDataParallel (world size 1 on gloo), a compiled
    backbone (``torch.compile`` wraps it at once; it compiles at its first call, never made here), or both."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if wrapper == "compile":
        return torch.compile(built).state_dict()
    dist.init_process_group("gloo", init_method=f"file://{folder / 'group'}", rank=0, world_size=1)
    try:
        inner = torch.compile(built) if wrapper == "ddp+compile" else built
        return DistributedDataParallel(inner).state_dict()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("wrapper", "prefix", "saved_by"),
    [
        ("ddp", "module.", "DistributedDataParallel (or DataParallel)"),
        ("compile", "_orig_mod.", "torch.compile"),
        ("ddp+compile", "module._orig_mod.", "torch.compile in DistributedDataParallel (or DataParallel)"),
    ],
)
def test_a_wrapped_backbones_state_dict_as_weights_says_how_to_load_it(tmp_path, wrapper, prefix, saved_by):
    """torch.save(ddp.state_dict()) of a DDP-wrapped backbone (keys module.stages.c2...) or a compiled backbone's
    (_orig_mod.stages.c2...) given as weights got a bare key mismatch: the hints knew a wrapper's prefix before a
    torchvision state dict, and a featx Backbone's keys, not the two together."""
    built = featx.build(SPEC).eval()
    state = _wrapped_state(built, wrapper, tmp_path)
    assert sorted(state) == sorted(prefix + key for key in built.state_dict())  # the wrapper's real key names
    path = tmp_path / "bb.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value).endswith(
        f"(the file's keys are a featx Backbone's own with {prefix!r} before them, as the state_dict() of a backbone "
        f"wrapped by {saved_by} names them: load it with bb.load_state_dict({{key.removeprefix({prefix!r}): value "
        "for key, value in torch.load(path).items()}) into a backbone built from the same spec, or save the backbone "
        "with featx.save(bb, path) and load it with featx.load(path))"
    )
    loaded = featx.build(SPEC).eval()  # what the hint says works
    loaded.load_state_dict({key.removeprefix(prefix): value for key, value in torch.load(path).items()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["c4"], built(x)["c4"], rtol=0, atol=0)
    # a wrapper's prefix before keys that are not all a backbone's gets no such advice
    torch.save({**state, prefix + "other.x": torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert "featx Backbone" not in str(caught.value)


def test_an_enum_member_named_with_its_enum_is_the_enum(tmp_path, torch_home, monkeypatch):
    """``ResNet18_Weights.IMAGENET1K_V1`` (what torchvision's ``get_weight`` takes) reads the cached file, even
    beside a file of that name in the working directory."""
    monkeypatch.chdir(tmp_path)
    torch.save(_state(7), tmp_path / "ResNet18_Weights.IMAGENET1K_V1")
    torch_home.mkdir(parents=True)
    torch.save(_state(8), torch_home / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsError, match=rf"the torch hub cache file {re.escape(str(torch_home))}/resnet18-f37072fd"):
        featx.build({**SPEC, "weights": "ResNet18_Weights.IMAGENET1K_V1"})  # the cached file's hash is checked


@pytest.mark.parametrize(
    ("path", "error_type", "pattern"),
    [
        (None, ArgumentError, r"^load\(\): path must be a file system path .*got None"),
        (5, ArgumentError, r"^load\(\): path must be a file system path .*got 5"),
        ("/dev/zero", WeightsError, r"^load\(\): path: /dev/zero is not a regular file"),
        ("fifo", WeightsError, r"^load\(\): path: \S*fifo is not a regular file \(a device, fifo or socket\)"),
        ("missing.pt", WeightsError, r"^load\(\): path: cannot read \S*missing\.pt: not found$"),
    ],
    ids=["none", "int", "dev-zero", "fifo", "missing"],
)
def test_load_of_what_is_not_a_checkpoint_file_never_blocks_or_reads_it(tmp_path, path, error_type, pattern):
    os.mkfifo(tmp_path / "fifo")  # reading it would block forever
    before = folder_state(tmp_path)
    with pytest.raises(error_type, match=pattern):
        featx.load(tmp_path / path if path in ("fifo", "missing.pt") else path)
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize(
    ("weights", "device", "error_type", "pattern"),
    [
        ("IMAGENET9K_V9", "cpu", SpecError, r"^backbone.weights: 'IMAGENET9K_V9' is not a weights name of resnet18"),
        ("IMAGENET9K_V9", "meta", SpecError, r"^backbone.weights: 'IMAGENET9K_V9' is not a weights name"),
        ("imagenet1k_v1", "cpu", SpecError, r"did you mean IMAGENET1K_V1"),
        (
            "default",
            "cpu",
            SpecError,
            r"is not a weights name of resnet18; did you mean DEFAULT\? \(valid: null, DEFAULT",
        ),
        ("5", "meta", SpecError, r"'5' is not a weights name of resnet18"),
        ("IMAGENET1K_V1", "cpu", WeightsError, r"not in the torch hub cache .*Place the file at .*resnet18-f37072fd"),
        ("missing/w.pth", "cpu", WeightsError, r"^backbone.weights: cannot read missing/w.pth: not found$"),
        ("~/featx-missing.pth", "cpu", WeightsError, r"cannot read /.*featx-missing.pth: not found"),
        ("ResNet50_Weights.IMAGENET1K_V1", "meta", SpecError, r"names a member of ResNet50_Weights, but resnet18's"),
        ("ResNet18_Weights.IMAGENET9K", "meta", SpecError, r"'IMAGENET9K' is not a weights name of resnet18"),
        ("ResNet18_Weights.IMAGENET1K_V1", "cpu", WeightsError, r"not in the torch hub cache .*resnet18-f37072fd"),
        ("https://example.com/w.pth", "cpu", SpecError, r"^backbone.weights: 'https://example.com/w.pth' is a URL"),
        ("/dev/zero", "cpu", WeightsError, r"^backbone.weights: /dev/zero is not a regular file"),
        ("/", "cpu", WeightsError, r"^backbone.weights: / is a folder, not a checkpoint file"),
        (  # a suffix makes it a file; the lower-case member it means is named
            "ResNet18_Weights.imagenet1k_v1",
            "cpu",
            WeightsError,
            r"^backbone.weights: cannot read ResNet18_Weights\.imagenet1k_v1: not found; for resnet18's published "
            r"weights IMAGENET1K_V1 write weights=IMAGENET1K_V1$",
        ),
    ],
)
def test_weights_names_that_resolve_to_nothing_are_named(torch_home, weights, device, error_type, pattern):
    with pytest.raises(error_type, match=pattern):
        featx.build({**SPEC, "weights": weights, "device": device})


@pytest.mark.parametrize("prefix", ["", "timm:", "timm/", "hf-hub:timm/"])
def test_timms_own_model_dot_tag_weights_name_is_named_in_the_not_found_error(torch_home, prefix):
    """timm names weights model.tag (what published_weights_id gives), and the Hugging Face hub timm/model.tag
    (create_model's hf-hub:timm/model.tag): read as a file and refused as "not found", with no word of the tag."""
    spec = featx.propose("timm:resnet18")
    with pytest.raises(WeightsError) as caught:
        featx.build(spec, overrides=[f"weights={prefix}resnet18.a1_in1k"])
    assert str(caught.value) == (
        f"backbone.weights: cannot read {prefix}resnet18.a1_in1k: not found; for timm:resnet18's published weights "
        "a1_in1k write weights=a1_in1k"
    )


def _saved(tmp_path: Path, seed: int = 0, name: str = "bb.pt") -> Path:
    return featx.save(featx.build({**SPEC, "seed": seed}), tmp_path / name)


@pytest.mark.parametrize(
    ("target", "kwargs", "pattern"),
    [
        (lambda d: d / "mine.txt", {}, r"^save\(\): .*mine.txt exists; pass overwrite=True to replace it"),
        (
            lambda d: d / "mine.txt" / "bb.pt",
            {},
            r"^save\(\): cannot create the folder .*mine.txt: a file is in the way",
        ),
        (  # a link to a folder that does not exist: not "a file is in the way"
            lambda d: d / "gone" / "bb.pt",
            {},
            r"^save\(\): cannot create the folder .*gone: it is a symbolic link to .*nowhere, which does not exist$",
        ),
        (lambda d: d / "folder", {}, r"^save\(\): .*folder is a folder; give a file path"),
        (lambda d: d / "folder", {"overwrite": True}, r"^save\(\): .*folder is a folder"),
        (lambda d: d / ("x" * 300 + ".pt"), {}, r"^save\(\): cannot write .*File name too long"),
        (lambda d: d / "fifo", {"overwrite": True}, r"^save\(\): .*fifo is not a regular file \(a device, fifo or"),
        # not "exists; pass overwrite=True", which would only lead to this refusal
        (lambda d: d / "fifo", {}, r"^save\(\): .*fifo is not a regular file \(a device, fifo or"),
        (lambda d: d / "new.pt", {"overwrite": "yes"}, r"^save\(\): overwrite must be True or False, got 'yes'"),
        (lambda d: None, {}, r"^save\(\): path must be a file system path .*got None"),
        (lambda d: "", {}, r"^save\(\): path must be a file system path \(not empty\), got ''$"),
        (lambda d: f"{d}/mine.txt/", {"overwrite": True}, r"^save\(\): path: '.*(/'|\.\.\.) ends in '/', so it"),
        (lambda d: f"{d}/mine.txt/.", {"overwrite": True}, r"^save\(\): path: '.*(\.'|\.\.\.) ends in '\.', so it"),
    ],
    ids=[
        "exists",
        "under-a-file",
        "under-a-dangling-link",
        "a-folder",
        "a-folder-overwrite",
        "name-too-long",
        "fifo",
        "fifo-no-overwrite",
        "overwrite-str",
        "none",
        "empty",
        "trailing-slash",
        "trailing-dot",
    ],
)
def test_save_never_replaces_or_writes_through_what_is_there(tmp_path, target, kwargs, pattern):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "mine.txt").write_text("my notes")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep").write_text("keep")
    before = folder_state(tmp_path)
    with pytest.raises(ArgumentError, match=pattern):
        featx.save(featx.build(SPEC), target(tmp_path), **kwargs)
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda: featx.build({**SPEC, "device": "meta"}),
            r"the backbone's tensors are on the meta device \(built with device: meta, or moved there\) and hold no "
            "weights to save",
        ),
        (  # built on the CPU: "was built on the meta device (device: meta)" was false of it
            lambda: featx.build({**SPEC, "device": "cpu"}).to("meta"),
            r"the backbone's tensors are on the meta device \(built with device: meta, or moved there\)",
        ),
        (lambda: torchvision.models.resnet18(), r"expected a featx Backbone .*got ResNet"),
        (lambda: None, r"expected a featx Backbone .*got NoneType"),
        (lambda: {"conv1.weight": torch.zeros(1)}, r"expected a featx Backbone .*got dict"),
    ],
    ids=["meta", "moved-to-meta", "torchvision-model", "none", "state-dict"],
)
def test_save_of_what_is_not_a_built_backbone_writes_nothing(tmp_path, make, pattern):
    with pytest.raises(ArgumentError, match=rf"^save\(\): {pattern}"):
        featx.save(make(), tmp_path / "bb.pt")
    assert folder_state(tmp_path) == {}


def _rewrite(path: Path, change: Callable[[dict], dict]) -> None:
    content = torch.load(path, weights_only=True)
    torch.save(change(content), path)


@pytest.mark.parametrize(
    ("change", "error_type", "pattern"),
    [
        (lambda c: c["state_dict"], WeightsError, r"has no featx spec: it was not written by featx.save \(the "),
        (lambda c: {**c, "featx": {"versions": {}}}, WeightsError, r"has a featx block without a spec"),
        (lambda c: {**c, "featx": {"spec": "resnet18"}}, WeightsError, r"has a featx block without a spec"),
        (
            lambda c: {**c, "featx": {**c["featx"], "spec": {**c["featx"]["spec"], "device": "${oc.env:HOME}"}}},
            SpecError,
            r"bb.pt: backbone.device: holds an interpolation",
        ),
        (
            lambda c: {**c, "featx": {**c["featx"], "spec": {**c["featx"]["spec"], "model": "resnet5"}}},
            SpecError,
            r"bb.pt: backbone.model: unknown torchvision model 'resnet5'",
        ),
        (
            lambda c: {**c, "featx": {**c["featx"], "spec": {**c["featx"]["spec"], "_target_": "os.system"}}},
            SpecError,
            r"bb.pt: backbone._target_: 'os.system' is refused",
        ),
        (
            lambda c: {**c, "state_dict": {k: v for k, v in c["state_dict"].items() if "layer3" not in k}},
            WeightsError,
            r"bb\.pt does not fit the kept layers — missing keys: stages\.c4.* \(the spec saved in the file builds "
            r"these layers: was the file edited\?\)$",
        ),
        (  # it said the file came from "a different spec (it differs in no structural key)": rebuild it as saved
            lambda c: {
                **c,
                "state_dict": {
                    **c["state_dict"],
                    "stages.c2.conv1.weight": c["state_dict"]["stages.c2.conv1.weight"].int(),
                },
            },
            WeightsError,
            r"^load\(\): path: \S*bb\.pt does not fit the kept layers — value kinds differ: "
            r"stages\.c2\.conv1\.weight checkpoint torch\.int32 \(integer\) vs model torch\.float32",
        ),
    ],
    ids=[
        "plain-state-dict",
        "no-spec",
        "spec-not-mapping",
        "spec-interpolation",
        "spec-bad-model",
        "spec-target",
        "tensors-removed",
        "tensor-made-integer",
    ],
)
def test_load_of_a_tampered_checkpoint_is_named(tmp_path, change, error_type, pattern):
    path = _saved(tmp_path)
    _rewrite(path, change)
    before = folder_state(tmp_path)
    with pytest.raises(error_type) as error:
        featx.load(path)
    assert re.search(pattern, str(error.value)), str(error.value)
    assert os.environ.get("HOME", "/root") not in str(error.value).replace(str(tmp_path), "")
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize(
    ("overrides", "error_type", "pattern"),
    [
        (["weights=null"], ArgumentError, r"^load\(\): overrides may not change weights \(got None\)"),
        (["weights=DEFAULT"], ArgumentError, r"^load\(\): overrides may not change weights \(got 'DEFAULT'\)"),
        (["stages={c2:{modules:[conv1]}}"], WeightsError, r"differs in stages"),
        (["model=resnet34"], WeightsError, r"differs in model"),
        ("frozen_stages=0", SpecError, r"^backbone.overrides: expected a list of strings"),
    ],
)
def test_load_refuses_overrides_that_change_what_the_file_is(tmp_path, overrides, error_type, pattern):
    path = _saved(tmp_path)
    with pytest.raises(error_type, match=pattern):
        featx.load(path, overrides=overrides)


def test_a_safetensors_checkpoint_with_unreadable_featx_metadata_is_named(tmp_path):
    path = tmp_path / "bb.safetensors"
    save_file(_state(), str(path), metadata={"featx": "{not json"})
    with pytest.raises(WeightsError, match=r"bb.safetensors has unreadable featx metadata"):
        featx.load(path)
    save_file(_state(), str(path), metadata={"featx": "[1, 2]"})
    with pytest.raises(WeightsError, match=r"bb.safetensors has unreadable featx metadata \(not a mapping\)"):
        featx.load(path)
    save_file(_state(), str(path), metadata={"featx": "[" * 100_000})  # json raised RecursionError
    with pytest.raises(WeightsError, match=r"bb.safetensors has unreadable featx metadata: nested too deeply$"):
        featx.load(path)
    save_file(_state(), str(path), metadata={"featx": '{"spec": {"seed": ' + "9" * 5000 + "}}"})  # a raw ValueError
    with pytest.raises(WeightsError, match=r"bb.safetensors has unreadable featx metadata: Exceeds the limit \(4300 "):
        featx.load(path)


def test_a_writer_that_fails_midway_leaves_no_file_and_no_temporary(tmp_path):
    def half_then_fail(partial: Path) -> None:
        partial.write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.raises(ArgumentError, match=r"^save\(\): cannot write .*bb.pt: No space left on device"):
        write_atomically(tmp_path / "bb.pt", half_then_fail, overwrite=False, what="save()")
    (tmp_path / "old.pt").write_bytes(b"the user's file")
    with pytest.raises(ArgumentError):
        write_atomically(tmp_path / "old.pt", half_then_fail, overwrite=True, what="save()")
    assert folder_state(tmp_path) == {"old.pt": b"the user's file"}


_RACER = textwrap.dedent(
    """
    import sys, time, featx
    from pathlib import Path
    from featx.errors import ArgumentError
    folder, seed, rounds, overwrite = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    backbone = featx.build({"model": "resnet18", "stages": {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool",
        "layer1"]}, "c3": {"modules": ["layer2"]}}, "device": "cpu", "seed": seed})
    for round_number in range(rounds):
        (folder / f"ready{round_number}-{seed}").touch()
        while not (folder / f"go{round_number}").exists():
            time.sleep(0.0002)
        try:
            featx.save(backbone, folder / f"bb{round_number}.pt", overwrite=overwrite)
            print(round_number, "saved", seed, flush=True)
        except ArgumentError as error:
            print(round_number, "refused", error, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True], ids=["exclusive", "overwrite"])
def test_two_processes_saving_to_one_path_leave_one_whole_file(tmp_path, overwrite):
    """Real processes, released at the same instant in each of three rounds (both built, then waiting for one signal
    file per round, each round a new path): without overwrite exactly one saves and the file holds its weights; with
    overwrite both save and the file is one of them whole. No temporary file is left."""
    import time

    rounds = 3
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path), str(seed), str(rounds), "1" if overwrite else "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for round_number in range(rounds):
        ready = [tmp_path / f"ready{round_number}-{seed}" for seed in (1, 2)]
        deadline = time.time() + 120
        while not all(flag.exists() for flag in ready) and time.time() < deadline:
            assert all(racer.poll() is None for racer in racers), [racer.communicate() for racer in racers]
            time.sleep(0.01)
        (tmp_path / f"go{round_number}").touch()
    results = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err for _, err in results]
    lines = [line.split(" ", 2) for out, _ in results for line in out.splitlines()]
    assert sorted(int(number) for number, _, _ in lines) == sorted([*range(rounds)] * 2)
    for round_number in range(rounds):
        outcomes = [(word, rest) for number, word, rest in lines if int(number) == round_number]
        saved = [int(rest) for word, rest in outcomes if word == "saved"]
        refused = [rest for word, rest in outcomes if word == "refused"]
        if overwrite:
            assert sorted(saved) == [1, 2]
        else:
            assert len(saved) == 1 and len(refused) == 1 and "exists; pass overwrite=True" in refused[0]
        loaded = featx.load(tmp_path / f"bb{round_number}.pt")
        matches = [
            seed for seed in (1, 2) if torch.equal(loaded.stages.c3.layer2[0].conv1.weight, _racer_weights(seed))
        ]
        assert len(matches) == 1 and (overwrite or matches == saved)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def _racer_weights(seed: int) -> torch.Tensor:
    spec = {
        "model": "resnet18",
        "stages": {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "c3": {"modules": ["layer2"]}},
        "device": "cpu",
        "seed": seed,
    }
    return featx.build(spec).stages.c3.layer2[0].conv1.weight


def test_a_checkpoint_with_an_enormous_key_gets_a_short_message(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({**_state(1), "k" * 100_000: torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as error:
        featx.build({**SPEC, "weights": str(path)})
    message = str(error.value)
    assert message.startswith(f"backbone.weights: {path} does not fit the kept layers — unexpected keys: kkk")
    assert len(message) < 400


@pytest.mark.parametrize("saved_by", ["torch", "featx"])
def test_a_weights_file_rewritten_while_it_is_read_is_refused(tmp_path, monkeypatch, saved_by):
    """A .pth file's tensors are memory-mapped and copied one by one as the backbone takes them: rewritten in place
    meanwhile (torch.save to the path a training run keeps saving), the backbone held the first tensors of one
    version and the rest of the other, without a word."""
    from featx.construct import checkpoint, weights

    path = tmp_path / "latest.pt"
    if saved_by == "torch":
        torch.save(_state(0), path)
        torch.save(_state(1), tmp_path / "next.pt")
        build = lambda: featx.build({**SPEC, "weights": str(path)})  # noqa: E731
    else:
        path = _saved(tmp_path, seed=0, name="latest.pt")
        _saved(tmp_path, seed=1, name="next.pt")
        build = lambda: featx.load(path)  # noqa: E731
    owned_copy, copies = weights.owned_copy, []

    def copy_then_rewrite(tensor, dtype):
        copies.append(1)
        if len(copies) == 3:  # the training run saves again, into the same file
            path.write_bytes((tmp_path / "next.pt").read_bytes())
        return owned_copy(tensor, dtype)

    monkeypatch.setattr(checkpoint, "owned_copy", copy_then_rewrite)
    monkeypatch.setattr(weights, "owned_copy", copy_then_rewrite)
    with pytest.raises(WeightsError) as caught:
        build()
    named = "backbone.weights" if saved_by == "torch" else "load(): path"  # featx.load was given no spec key
    assert str(caught.value) == (
        f"{named}: {path} changed while featx read it (is it being written?); build again once it is complete"
    )


def _pickle_of_one_records_of_other(path: Path, pickle_from: Path, records_from: Path) -> None:
    """A zip holding ``pickle_from``'s data.pkl and every other record (the tensors' bytes) from ``records_from``."""
    with (
        zipfile.ZipFile(pickle_from) as claims,
        zipfile.ZipFile(records_from) as held,
        zipfile.ZipFile(path, "w") as forged,
    ):
        claimed = next(name for name in claims.namelist() if name.endswith("/data.pkl"))
        for info in held.infolist():
            forged.writestr(info, claims.read(claimed) if info.filename.endswith("/data.pkl") else held.read(info))


@pytest.mark.parametrize(
    ("key", "shown"),
    [  # a newline and ANSI escapes forged a second, green "build OK" line under the error
        ("x\n\x1b[32mfeatx: build OK\x1b[0m\r", "x\\n\\x1b[32mfeatx: build OK\\x1b[0m\\r"),
        # U+202E (right-to-left override) made a terminal show the rest of the line reversed; bidirectional isolates,
        # zero-width characters and the byte-order mark hide text, and U+2028 breaks the line
        ("a\u202eb\u2066c\u200bd\ufeffe\u2028f", "a\\u202eb\\u2066c\\u200bd\\ufeffe\\u2028f"),
    ],
    ids=["terminal-escapes", "invisible-reordering"],
)
def test_a_key_with_characters_that_change_the_line_is_shown_escaped(tmp_path, key, shown):
    """A checkpoint's key names were printed raw."""
    path = tmp_path / "w.pth"
    torch.save({**_state(0), key: torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as error:
        featx.build({**SPEC, "weights": str(path)})
    assert str(error.value) == f"backbone.weights: {path} does not fit the kept layers — unexpected keys: {shown} (1,)"


def test_a_tensor_record_smaller_than_its_pickle_claims_is_refused(tmp_path):
    """torch.load(mmap=True) slices each tensor where the pickle says without comparing the record's size: a
    damaged pickle claiming 9,408 floats for a record of 4 built a backbone whose conv1 held the bytes of the
    records after it (values up to 1e38, NaNs), without a word."""
    small = {**_state(0), "conv1.weight": torch.zeros(4)}
    torch.save(_state(0), tmp_path / "claims.pth")
    torch.save(small, tmp_path / "holds.pth")
    path = tmp_path / "forged.pth"
    _pickle_of_one_records_of_other(path, tmp_path / "claims.pth", tmp_path / "holds.pth")
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: cannot read {path}: tensor record 'data/0' holds 16 bytes, its pickle claims 37632 "
        "(a damaged or altered file)"
    )
    _pickle_of_one_records_of_other(tmp_path / "whole.pth", tmp_path / "claims.pth", tmp_path / "claims.pth")
    built = featx.build({**SPEC, "weights": str(tmp_path / "whole.pth")})
    assert torch.equal(built.stages["c2"][0].weight, _state(0)["conv1.weight"])


def _counted_walks(monkeypatch) -> List[int]:
    """One item per walk of a checkpoint's pickle (featx's record check, which a remembered pass skips)."""
    from featx.construct import weights

    walks: List[int] = []

    def counted(reader):
        walks.append(1)
        return record_mismatch(reader)

    monkeypatch.setattr(weights, "record_mismatch", counted)
    return walks


def _checked_records(tmp_path: Path, monkeypatch) -> Path:
    """featx's user cache on, in a temporary folder; where it remembers checkpoints that passed the record check."""
    monkeypatch.delenv("FEATX_NO_CACHE", raising=False)
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "featx-cache"))
    return tmp_path / "featx-cache" / "checked-checkpoints"


def _whole_and_forged(folder: Path) -> Tuple[Path, bytes]:
    """A whole resnet18 checkpoint, and the bytes of one of the same size whose pickle claims more bytes for conv1's
    weight than its record holds (bn1's record holds them)."""
    claims, holds = _state(0), _state(0)
    holds["conv1.weight"], holds["bn1.weight"] = torch.zeros(9408 - 64), torch.zeros(64 + 64)
    torch.save(claims, folder / "claim.pth")  # names of one length: the archives' records are named after them
    torch.save(holds, folder / "holds.pth")
    whole, forged = folder / "w.pth", folder / "forged.pth"
    _pickle_of_one_records_of_other(whole, folder / "claim.pth", folder / "claim.pth")
    _pickle_of_one_records_of_other(forged, folder / "claim.pth", folder / "holds.pth")
    assert whole.stat().st_size == forged.stat().st_size
    return whole, forged.read_bytes()


def test_a_checkpoint_that_passed_the_record_check_is_walked_again_only_when_it_changes(tmp_path, monkeypatch):
    """Walking a checkpoint's pickle is a sizeable part of a pretrained build: a file that passed is remembered in
    featx's user cache by its identity and not walked again; the same file forged in place (same size and inode,
    modification time put back) is walked again and refused, every time (a mismatch is never remembered)."""
    records, walks = _checked_records(tmp_path, monkeypatch), _counted_walks(monkeypatch)
    path, forged = _whole_and_forged(tmp_path)
    featx.build({**SPEC, "weights": str(path)})
    [record] = records.iterdir()
    written = record.stat()
    built = featx.build({**SPEC, "weights": str(path)})
    assert len(walks) == 1 and torch.equal(built.stages["c2"][0].weight, _state(0)["conv1.weight"])
    assert (record.stat().st_ino, record.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    status = path.stat()
    with open(path, "r+b") as rewritten:
        rewritten.write(forged)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_ino) == (status.st_size, status.st_ino)
    for walked in (2, 3):
        with pytest.raises(WeightsError, match=r"tensor record 'data/0' holds 37376 bytes, its pickle claims 37632"):
            featx.build({**SPEC, "weights": str(path)})
        assert len(walks) == walked and list(records.iterdir()) == [record]


@pytest.mark.parametrize("version", ["featx", "torch"])
def test_a_record_check_remembered_by_another_featx_or_torch_is_walked_again(tmp_path, monkeypatch, version):
    """Either version may read a pickle differently: a pass one of them recorded counts for that version only."""
    records, walks = _checked_records(tmp_path, monkeypatch), _counted_walks(monkeypatch)
    path, _ = _whole_and_forged(tmp_path)
    featx.build({**SPEC, "weights": str(path)})
    [record] = records.iterdir()
    entry = json.loads(record.read_text())
    entry[version] = "0.0.1"
    record.write_text(json.dumps(entry))
    featx.build({**SPEC, "weights": str(path)})
    assert len(walks) == 2 and json.loads(record.read_text())[version] != "0.0.1"  # walked, and recorded anew


@pytest.mark.parametrize("cache", ["off", "unwritable"])
def test_without_a_writable_user_cache_every_build_walks_the_checkpoint(tmp_path, monkeypatch, cache):
    _checked_records(tmp_path, monkeypatch)
    if cache == "off":
        monkeypatch.setenv("FEATX_NO_CACHE", "1")
    else:  # a regular file where the folder would be made (read-only folders do not stop root)
        (tmp_path / "featx-cache").write_text("not a folder")
    walks = _counted_walks(monkeypatch)
    path, _ = _whole_and_forged(tmp_path)
    for _ in range(2):
        built = featx.build({**SPEC, "weights": str(path)})
    assert len(walks) == 2 and torch.equal(built.stages["c2"][0].weight, _state(0)["conv1.weight"])
    assert sorted(item.name for item in tmp_path.iterdir()) == [
        "claim.pth",
        *(["featx-cache"] if cache == "unwritable" else []),
        "forged.pth",
        "holds.pth",
        "w.pth",
    ]


def test_a_checkpoint_replaced_while_it_was_checked_is_not_remembered(tmp_path, monkeypatch):
    """The verdict is of the file read: a forged file put at the path while the whole one was walked (os.replace)
    is never recorded under it (its status is taken before the file is opened), and the build that read it is
    refused as changed meanwhile."""
    from featx.construct import weights

    records = _checked_records(tmp_path, monkeypatch)
    path, forged = _whole_and_forged(tmp_path)

    def walk_then_replace(reader):
        mismatch = record_mismatch(reader)  # the whole file, opened before the replacement
        (tmp_path / "next.pth").write_bytes(forged)
        os.replace(tmp_path / "next.pth", path)
        return mismatch

    monkeypatch.setattr(weights, "record_mismatch", walk_then_replace)
    with pytest.raises(WeightsError, match=r"changed while featx read it"):
        featx.build({**SPEC, "weights": str(path)})
    assert not records.exists()
    monkeypatch.setattr(weights, "record_mismatch", record_mismatch)
    with pytest.raises(WeightsError, match=r"tensor record 'data/0' holds 37376 bytes, its pickle claims 37632"):
        featx.build({**SPEC, "weights": str(path)})


def _repacked(source: Path, target: Path, compress_type: int = zipfile.ZIP_STORED, *extra) -> Path:
    """``source`` (a zip written by torch.save) rewritten to ``target`` as a zip tool would write it: every record
    with ``compress_type``, then the ``extra`` (name or ZipInfo, bytes) records."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as repacked:
        for info in original.infolist():
            repacked.writestr(info.filename, original.read(info), compress_type=compress_type)
        for name, data in extra:
            repacked.writestr(name, data)
    return target


def test_a_compressed_tensor_record_is_read_decompressed(tmp_path):
    """A .pth repacked by a zip tool that compresses: the record's size is its uncompressed one, so the size check
    passed, and the memory map gave the compressed bytes as the tensor's values."""
    state = {**_state(0), "conv1.weight": torch.full((64, 3, 7, 7), 0.25)}  # compresses well
    torch.save(state, tmp_path / "stored.pth")
    path = _repacked(tmp_path / "stored.pth", tmp_path / "deflated.pth", zipfile.ZIP_DEFLATED)
    built = featx.build({**SPEC, "weights": str(path)})
    assert torch.equal(built.stages["c2"][0].weight, state["conv1.weight"])


def test_compressed_records_that_inflate_far_beyond_the_file_are_refused_before_reading(tmp_path):
    """torch inflates every record of a compressed .pth, the dropped layers' too: a file of 80 KB took 80 MiB (in
    the review, 2 MB took 2 GiB, beside weights that fit, without a word)."""
    torch.save({"fc.bomb": torch.zeros(80 << 20, dtype=torch.uint8)}, tmp_path / "stored.pth")
    path = _repacked(tmp_path / "stored.pth", tmp_path / "bomb.pth", zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: cannot read {path}: its compressed records inflate to {inflated} bytes from a file of "
        f"{path.stat().st_size} (torch.save never compresses them) (a damaged or altered file)"
    )


def test_a_zip_python_cannot_list_is_refused_not_read_by_torch_unchecked(tmp_path):
    """A record with a malformed extra field (which torch's reader ignores) made Python's zipfile fail: featx then
    let torch read the file without the inflation and name checks."""
    torch.save(_state(0), tmp_path / "src.pth")
    junk = zipfile.ZipInfo(zipfile.ZipFile(tmp_path / "src.pth").namelist()[0].split("/")[0] + "/junk")
    junk.extra = b"\x99\x99\xff\x00"
    path = _repacked(tmp_path / "src.pth", tmp_path / "odd.pth", zipfile.ZIP_STORED, (junk, b"x"))
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(path).infolist()
    with pytest.raises(WeightsError, match=rf"^backbone\.weights: cannot read {re.escape(str(path))}: BadZipFile: "):
        featx.build({**SPEC, "weights": str(path)})


def test_records_whose_names_differ_in_case_only_are_refused(tmp_path):
    """torch's reader finds a record whatever the case of its name: with data/A and data/a in one file, a tensor
    was read from the record its pickle does not name."""
    torch.save(_state(0), tmp_path / "src.pth")
    pickled = next(name for name in zipfile.ZipFile(tmp_path / "src.pth").namelist() if name.endswith("/data.pkl"))
    extra = (pickled.replace("data.pkl", "DATA.pkl"), b"not read")
    path = _repacked(tmp_path / "src.pth", tmp_path / "twins.pth", zipfile.ZIP_STORED, extra)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: cannot read {path}: it holds records '{pickled}' and "
        f"'{pickled.replace('data.pkl', 'DATA.pkl')}', whose names differ in case only (a damaged or altered file)"
    )


def test_an_invalid_spec_inside_a_featx_file_is_named_with_that_file(tmp_path):
    """Built as another spec's weights, the file's own spec error was put on the spec being built (its YAML file,
    or no file at all), which holds nothing wrong."""
    path = _saved(tmp_path)
    content = torch.load(path, weights_only=True)
    content["featx"]["spec"]["frozen_stages"] = "lots"
    torch.save(content, path)
    with pytest.raises(SpecError) as caught:
        featx.build("resnet18", overrides=["device=cpu", f"weights={path}"])
    assert str(caught.value).startswith(f"{path}: backbone.frozen_stages: ")


def test_a_key_pickled_as_a_byte_string_is_checked_by_torch(tmp_path):
    """The check read a SHORT_BINSTRING key as latin-1, torch as UTF-8: the check measured one record, torch mapped
    another, smaller one, and the tensor held the bytes after it."""
    torch.save({"w": torch.ones(16)}, tmp_path / "src.pth")
    path = tmp_path / "forged.pth"
    with zipfile.ZipFile(tmp_path / "src.pth") as source, zipfile.ZipFile(path, "w") as forged:
        for info in source.infolist():
            name, data = info.filename, source.read(info)
            if name.endswith("/data.pkl"):
                forged.writestr(name, data.replace(b"X\x01\x00\x00\x000", b"U\x02\xc3\xa9"))  # key '0' -> 'é'
            elif name.endswith("/data/0"):
                prefix = name[: -len("0")]
                forged.writestr(prefix + "é", torch.ones(4).numpy().tobytes())  # what torch maps: 16 bytes
                forged.writestr(prefix + "Ã©", torch.full((16,), 7.0).numpy().tobytes())  # what latin-1 names
            else:
                forged.writestr(name, data)
    with pytest.raises(
        WeightsError, match=r"^backbone\.weights: cannot read .*forged\.pth: RuntimeError: .*record size"
    ):
        torch_load_file(path)


class _OpensAFile:
    """Unpickling this would call open(marker, "w"), creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["first", "nested after a tensor"])
def test_the_record_check_runs_nothing_a_pickle_names(tmp_path, where):
    """The check reads the pickle before torch's weights-only loader sees it: an unpickler there that imported and
    called a global would run code from the file before torch refused it."""
    marker = tmp_path / "payload-ran"
    content = {"payload": _OpensAFile(marker), "w": torch.ones(2)}
    if where != "first":
        content = {"w": torch.ones(2), "nested": [torch.zeros(1), {"x": _OpensAFile(marker)}]}
    path = tmp_path / "w.pth"
    torch.save(content, path)
    assert record_mismatch(torch._C.PyTorchFileReader(str(path))) is None
    with pytest.raises(WeightsError, match=r"holds more than tensors and is refused .*GLOBAL io\.open$"):
        torch_load_file(path)
    assert not marker.exists()


def _with_pickle(source: Path, path: Path, change: Callable[[bytes], bytes]) -> None:
    """``source`` (a torch.save zip) written to ``path`` with its data.pkl changed by ``change``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as changed:
        for info in original.infolist():
            data = original.read(info)
            changed.writestr(info.filename, change(data) if info.filename.endswith("/data.pkl") else data)


def test_a_huge_memo_index_costs_the_record_check_no_memory(tmp_path):
    """C's unpickler grows its memo to twice the largest index it is given: a 600-byte file whose pickle memoises
    at index 2**28 made a faster check allocate and zero 4 GiB (torch's own loader keeps a dict). Here 2**23: 128
    MiB for such an unpickler."""
    import tracemalloc

    torch.save({"w": torch.ones(2)}, tmp_path / "src.pth")
    path = tmp_path / "memo.pth"
    memoised = b"}r" + (2**23).to_bytes(4, "little")  # EMPTY_DICT, LONG_BINPUT 2**23 (torch.save wrote BINPUT 0)
    _with_pickle(tmp_path / "src.pth", path, lambda data: data.replace(b"}q\x00", memoised))
    with zipfile.ZipFile(path) as archive:
        assert memoised in archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))
    tracemalloc.start()
    try:
        try:
            record_mismatch(torch._C.PyTorchFileReader(str(path)))
        except UnknownLayout:
            pass  # its BINGET 0 names a memo never set: read without memory mapping
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


def test_an_archive_name_python_cannot_decode_is_a_weights_error(tmp_path):
    """An entry flagged UTF-8 whose name is not: Python's zipfile raises UnicodeDecodeError, which escaped the
    record check as a raw traceback."""
    torch.save({"w": torch.ones(4)}, tmp_path / "src.pth")
    path = tmp_path / "names.pth"
    with zipfile.ZipFile(tmp_path / "src.pth") as original, zipfile.ZipFile(path, "w") as changed:
        for info in original.infolist():
            changed.writestr(info.filename, original.read(info))
        changed.writestr(info.filename.split("/")[0] + "/extra\xff", b"")  # zipfile sets the UTF-8 flag
    raw = path.read_bytes()
    path.write_bytes(raw.replace("/extra\xff".encode(), b"/extra\xc3\x28"))  # no longer UTF-8, same length
    with pytest.raises(WeightsError, match=r"^backbone\.weights: cannot read .*names\.pth: UnicodeDecodeError: "):
        torch_load_file(path)


@pytest.mark.parametrize("order_record", ["byteorder", "BYTEORDER"])
def test_a_big_endian_file_is_read_as_torch_reads_it_without_memory_mapping(tmp_path, order_record):
    """torch byteswaps a big-endian file's tensors in place: memory-mapped under a caller's MAP_SHARED default, it
    would swap the user's file itself on disk (and two keys on one record, names differing in case only, were
    swapped twice: such files are refused now). Read whole, each key gets its own swapped copy and the file stays
    as it was. torch finds the byte order record whatever its case, so the check does too."""
    torch.save({"w0": torch.zeros(4), "w1": torch.zeros(4)}, tmp_path / "src.pth")
    path = tmp_path / "big.pth"
    values = {"0": [1.0, 2.0, 3.0, 4.0], "1": [5.0, 6.0, 7.0, 8.0]}
    with zipfile.ZipFile(tmp_path / "src.pth") as original, zipfile.ZipFile(path, "w") as changed:
        for info in original.infolist():
            name, data = info.filename, original.read(info)
            prefix, _, record = name.rpartition("/data/")
            if name.endswith("/byteorder"):
                name, data = name.replace("/byteorder", f"/{order_record}"), b"big"
            elif record in values:
                data = torch.tensor(values[record]).numpy().astype(">f4").tobytes()
            changed.writestr(name, data)
    before = path.read_bytes()
    expected = torch.load(path, weights_only=True)  # torch's reading path: a copy of the record per key
    assert sorted(t.tolist() for t in expected.values()) == sorted(values.values())
    with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
        loaded = torch_load_file(path)
    assert {key: tensor.tolist() for key, tensor in loaded.items()} == {k: t.tolist() for k, t in expected.items()}
    assert path.read_bytes() == before


def test_the_record_check_reads_what_torch_save_writes_for_every_dtype(tmp_path):
    """The check of the records' sizes reads every storage torch.save writes (legacy storage classes and untyped
    storages for the newer dtypes): a pickle it cannot read turns memory mapping off, so every such file would be
    read whole (VGG-16's classifier with it)."""
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16]
    dtypes += [torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128, torch.float8_e4m3fn]
    dtypes += [torch.uint16, torch.uint32]
    torch.save({f"t{index}": torch.ones(3, dtype=dtype) for index, dtype in enumerate(dtypes)}, tmp_path / "d.pth")
    torch.save(
        {"shared": (tensor := torch.arange(6.0)), "view": tensor[2:], "empty": torch.ones(0)}, tmp_path / "v.pth"
    )
    for name in ("d.pth", "v.pth"):
        assert record_mismatch(torch._C.PyTorchFileReader(str(tmp_path / name))) is None


def test_a_file_holding_two_state_dicts_is_refused_naming_them(tmp_path):
    """timm's training checkpoints hold state_dict and state_dict_ema; featx took state_dict without a word, where
    timm's own loader takes the EMA weights."""
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": _state(0), "state_dict_ema": _state(1)}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: {path} holds 2 state dicts (state_dict, state_dict_ema) and featx cannot tell which you "
        "mean; save the one you want alone: torch.save(checkpoint['state_dict_ema'], path)"
    )
    torch.save({"epoch": 3, "state_dict": _state(0)}, path)  # one: taken, as before
    assert featx.build({**SPEC, "weights": str(path)}).stages["c2"][0].weight.shape == (64, 3, 7, 7)


@pytest.mark.parametrize(
    ("content", "names", "suggested"),
    [
        (lambda a, b: {**a, "state_dict": b}, "the top level, state_dict", "['state_dict']"),
        (
            lambda a, b: {"state_dict": {"model": a, "model_ema": b}},
            "state_dict.model, state_dict.model_ema",
            "['state_dict']['model_ema']",
        ),
        (
            lambda a, b: {"state_dict": {"model": a, "ema": {"module": b}}},
            "state_dict.model, state_dict.ema.module",
            "['state_dict']['ema']['module']",
        ),
        (
            lambda a, b: {"state_dict": a, "ema": {"model": {"module": b}}},
            "state_dict, ema.model.module",
            "['ema']['model']['module']",
        ),
        # beyond the six levels searched, in a list, under a number: "at any depth" was not true
        (
            lambda a, b: {"state_dict": a, "ema": {"a": {"b": {"c": {"d": {"e": {"f": {"g": b}}}}}}}},
            "state_dict, ema.a.b.c.d.e.f.g",
            "['ema']['a']['b']['c']['d']['e']['f']['g']",
        ),
        (lambda a, b: {"state_dict": a, "ema": [b]}, "state_dict, ema.0", "['ema'][0]"),
        (lambda a, b: {"state_dict": a, 3: b}, "state_dict, 3", "[3]"),
    ],
    ids=[
        "tensors-beside-state_dict",
        "model-and-ema-below-state_dict",
        "ema-wrapper-below-state_dict",
        "ema-two-levels-down",
        "seven-levels-down",
        "in-a-list",
        "under-a-number",
    ],
)
def test_a_second_state_dict_below_the_top_level_is_refused_naming_both(tmp_path, content, names, suggested):
    """The check for a second state dict looked at the top level only: featx then followed state_dict/model and took
    one of two networks without a word (the nested state dict over tensors beside it, a model over its EMA)."""
    path = tmp_path / "checkpoint.pth"
    torch.save(content(_state(0), _state(1)), path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: {path} holds 2 state dicts ({names}) and featx cannot tell which you mean; save the one "
        f"you want alone: torch.save(checkpoint{suggested}, path)"
    )


def test_a_small_file_of_shared_references_is_searched_in_its_size_not_its_expansion(tmp_path):
    """Pickle keeps shared references: a dict held under 100 of its own keys is 2 KB on disk, and the search for a
    second state dict (6 levels of 100 keys) would have visited it 10^12 times."""
    tangle: dict = {}
    for index in range(100):
        tangle[str(index)] = tangle
    torch.save(tangle, tmp_path / "alone.pth")
    assert (tmp_path / "alone.pth").stat().st_size < 64 * 1024
    path = tmp_path / "tangle.pth"
    torch.save({"state_dict": _state(0), "extra": tangle}, path)
    code = (
        "import sys, torch, featx\n"
        "built = featx.build('resnet18', overrides=['device=cpu', f'weights={sys.argv[1]}'])\n"
        "print(float(built.stages['c2'][0].weight.sum()))\n"
    )
    # in a process of its own, which a hang would not outlive (the expanded search took hours)
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) == pytest.approx(float(_state(0)["conv1.weight"].sum()))


#: a build of resnet18 with the weights file argv[1] in a process of its own: prints its WeightsError
_BUILD_CODE = (
    "import sys, featx\n"
    "try:\n"
    "    featx.build('resnet18', overrides=['device=cpu', f'weights={sys.argv[1]}'])\n"
    "except featx.WeightsError as error:\n"
    "    print(error)\n"
)


@pytest.mark.slow
def test_a_deeply_nested_file_is_searched_in_its_size_not_its_depth_squared(tmp_path):
    """200,000 lists each inside the one before are 400 KB on disk; the search for state dicts spelt out the key path
    of every container it visited, in time growing with the square of the depth (a hostile review: 47 s for 100,000
    levels, minutes for this file)."""
    depth = 200_000
    source, path = tmp_path / "empty.pth", tmp_path / "deep.pth"
    torch.save([], source)
    _with_pickle(source, path, lambda _: b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
    # in a process of its own, which a hang would not outlive
    done = subprocess.run([sys.executable, "-c", _BUILD_CODE, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        f"backbone.weights: {path} does not hold a state dict (name → tensor): it holds a value of type list"
    )


@pytest.mark.parametrize(
    "content",
    [
        lambda s: {"state_dict": {}, "model": s},
        lambda s: {"state_dict": {"step": 3}, "model": s},
        lambda s: {"model": {"config": {"depth": 18}, "state_dict": s}, "state_dict": {"lr": 0.1}},
    ],
    ids=["empty-state_dict", "state_dict-of-numbers", "model-state_dict"],
)
def test_the_one_network_under_the_nesting_keys_loads_whatever_else_they_hold(tmp_path, content):
    """featx followed the first of state_dict/model holding any mapping: an empty or scalar ``state_dict`` entry beside
    the network under ``model`` was taken for the state dict (missing keys: every layer), or the file refused
    though it holds one network."""
    path = tmp_path / "w.pth"
    torch.save(content(_state(3)), path)
    built = featx.build({**SPEC, "weights": str(path)})
    assert torch.equal(built.stages["c2"][0].weight, _state(3)["conv1.weight"])


def test_a_lightning_checkpoint_with_its_callbacks_scores_loads_its_model(tmp_path):
    """Lightning's ModelCheckpoint keeps best_k_models, file paths (with dots) to score tensors: taken for a second
    network, the checkpoint was refused as ambiguous."""
    path = tmp_path / "last.ckpt.pth"
    scores = {
        "/runs/ckpts/epoch=2-step=9.ckpt": torch.tensor(0.41),
        "/runs/ckpts/epoch=5-step=18.ckpt": torch.tensor(0.37),
    }
    torch.save(
        {
            "epoch": 6,
            "state_dict": _state(0),
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_loss'}": {"best_k_models": scores, "best_model_score": 0.37}
            },
        },
        path,
    )
    built = featx.build({**SPEC, "weights": str(path)})
    assert torch.equal(built.stages["c2"][0].weight, _state(0)["conv1.weight"])


def test_a_state_dict_under_a_key_featx_does_not_follow_is_pointed_to(tmp_path):
    path = tmp_path / "net.pth"
    torch.save({"net": _state(0), "epoch": 3}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: {path} does not hold a state dict (name → tensor): its entry 'net' holds a value of type "
        "OrderedDict, not a tensor; it holds one at ['net']: "
        "torch.save(checkpoint['net'], path) saves it alone"
    )


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_a_training_checkpoint_with_an_optimizer_state_loads_its_model(tmp_path, key):
    """An optimizer's state holds tensors per parameter (keyed by numbers), pytorch/examples' ImageNet script saves
    its best accuracy as a tensor beside state_dict, and an RNG state is a tensor too: none is a second network (the
    first check of nested state dicts refused this layout)."""
    model = torchvision.models.resnet18()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pth"
    content = {"epoch": 3, "arch": "resnet18", key: model.state_dict(), "best_acc1": torch.tensor(71.2)}
    content.update(
        optimizer=optimizer.state_dict(), rng_state=torch.get_rng_state(), rng={"cpu": torch.get_rng_state()}
    )
    torch.save(content, path)
    built = featx.build({**SPEC, "weights": str(path)})
    assert torch.equal(built.stages["c2"][0].weight, model.conv1.weight)


def test_paths_take_a_home_folder_as_spec_files_and_weights_do(tmp_path, monkeypatch):
    """featx.build('~/spec.yaml') and weights: ~/w.pth expanded ~; featx.save and featx.load took it literally."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    backbone = featx.build(resnet18_spec())
    assert featx.save(backbone, "~/bb.pt") == tmp_path / "bb.pt"
    assert not (tmp_path / "~").exists()
    loaded = featx.load("~/bb.pt")
    pairs = zip(backbone.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: featx.build("~featx-no-such-user/spec.yaml"), r"^backbone: '~featx-no-such-user/spec\.yaml' starts"),
        (
            lambda: featx.build(resnet18_spec(weights="~featx-no-such-user/w.pth")),
            r"^backbone\.weights: '~featx-no-such-user/w\.pth' starts with '~featx-no-such-user', a user without a ",
        ),
        (
            lambda: featx.save(featx.build(resnet18_spec()), "~featx-no-such-user/bb.pt"),
            r"^save\(\): path: '~featx-no-such-user/bb\.pt' starts with",
        ),
        (lambda: featx.load("~featx-no-such-user/bb.pt"), r"^load\(\): path: '~featx-no-such-user/bb\.pt' starts"),
    ],
)
def test_a_home_folder_of_no_user_is_named(call, pattern):
    """Path.expanduser raised a raw RuntimeError ("Could not determine home directory")."""
    with pytest.raises((ArgumentError, SpecError), match=pattern):
        call()


def test_a_file_named_like_a_home_folder_is_read_as_written_where_it_exists(tmp_path, monkeypatch):
    """`~x.pt` (no user x.pt) in the current folder was refused as "a user without a known home folder" once ~ was
    expanded, though a shell, and featx before, read it as written; a new one is refused with the way to name it."""
    monkeypatch.chdir(tmp_path)
    backbone = featx.build(resnet18_spec())
    with pytest.raises(ArgumentError) as refused:
        featx.save(backbone, "~featx-no-such-user.pt")
    assert str(refused.value) == (
        "save(): path: '~featx-no-such-user.pt' starts with '~featx-no-such-user.pt', a user without a known home "
        "folder (for a file or folder of that name in the current folder, write './~featx-no-such-user.pt')"
    )
    assert list(tmp_path.iterdir()) == []
    featx.save(backbone, "./~featx-no-such-user.pt")
    loaded = featx.load("~featx-no-such-user.pt")
    pairs = zip(backbone.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    rebuilt = featx.build(resnet18_spec(weights="~featx-no-such-user.pt"))  # a weights file named so, as written
    assert torch.equal(rebuilt.state_dict()["stages.c2.conv1.weight"], backbone.state_dict()["stages.c2.conv1.weight"])
    (tmp_path / "~featx-no-such-user").mkdir()  # a folder named so: a new file in it is written there
    featx.save(backbone, "~featx-no-such-user/bb.pt")
    assert (tmp_path / "~featx-no-such-user" / "bb.pt").is_file()


def test_a_safetensors_name_safetensors_cannot_open_is_refused_before_writing(tmp_path):
    """featx.save wrote a .safetensors file under a non-UTF-8 name that featx.load could then not open."""
    path = Path(os.fsdecode(bytes(tmp_path) + b"/bb\xff.safetensors"))
    with pytest.raises(ArgumentError, match=r"^save\(\): path: '.*/bb\\xff\.safetensors' is not valid UTF-8, and "):
        featx.save(featx.build(resnet18_spec()), path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "model, pattern",
    [
        ("resnet18x", r"^backbone\.model: unknown torchvision model 'resnet18x'; did you mean resnet18"),  # ValueError
        (
            "timm:resnt18",
            r"^backbone\.model: unknown timm model 'resnt18'; did you mean timm:resnet18",
        ),  # blamed weights
        # not refused until its COCO weights were looked up (and, online, downloaded and read)
        (
            "fasterrcnn_resnet50_fpn",
            r"^backbone\.model: 'fasterrcnn_resnet50_fpn' is a torchvision detection model, not one",
        ),
    ],
)
def test_the_model_is_checked_before_its_weights_are_looked_up(model, pattern):
    spec = {"model": model, "stages": {"a": {"modules": ["conv1"]}}, "weights": "DEFAULT", "device": "cpu"}
    with pytest.raises(SpecError, match=pattern):
        featx.build(spec)


def test_a_weights_name_for_a_registered_builder_without_weights_is_a_spec_error(tmp_path):
    """torchvision's get_model_weights raised a raw ValueError ("The method is missing the 'weights' argument")."""
    code = textwrap.dedent(
        """
        import featx
        from torch import nn
        from torchvision.models._api import register_model

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
                self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)

            def forward(self, x):
                return self.b(self.a(x))

        def featx_test_no_weights(**kwargs):
            return Net()

        featx_test_no_weights.__module__ = "torchvision.models.featx_test_no_weights"
        register_model()(featx_test_no_weights)
        stages = {"s1": {"modules": ["a"]}, "s2": {"modules": ["b"]}}
        try:
            featx.build({"model": "featx_test_no_weights", "weights": "DEFAULT", "device": "cpu", "stages": stages})
        except featx.SpecError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.stdout.strip() == (
        "backbone.weights: 'DEFAULT': torchvision publishes no weights for featx_test_no_weights (its builder takes "
        "no weights enum); give null (random init) or a .pth/.pt/.safetensors path"
    ), done.stderr[-3000:]


@pytest.mark.parametrize("name", ["w.pth", "w.safetensors"])
def test_a_weights_file_without_read_permission_is_a_weights_error(tmp_path, name):
    """A file featx may not read raised a raw PermissionError: a .pth from the look at its first bytes, a
    .safetensors from the second look the hint for a misnamed torch file took after the reader's refusal."""
    path = tmp_path / name
    if name.endswith(".pth"):
        torch.save({"weight": torch.zeros(1)}, path, _use_new_zipfile_serialization=False)  # no zip: its head is read
    else:
        save_file({"weight": torch.zeros(1)}, str(path))
    path.chmod(0)
    prefix: List[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv reads any file")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", _BUILD_CODE, str(path)], capture_output=True, text=True, timeout=120
        )
    finally:
        path.chmod(0o644)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"backbone.weights: cannot read {path}: "), done.stdout
    if name.endswith(".pth"):  # (safetensors' reader says "No such file or directory" of such a file)
        assert done.stdout.rstrip().endswith("Permission denied"), done.stdout


def test_a_torchscript_program_as_weights_is_named_as_one_without_a_warning(tmp_path):
    """A TorchScript file (what featx-export writes) given as weights or to featx.load leaked torch's UserWarning
    ("'torch.load' received a zip file that looks like a TorchScript archive") and the reason was cut mid-word."""
    import warnings

    path = tmp_path / "exported.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 4, 1)), str(path))
    reason = (
        f"cannot read {path}: a TorchScript program (torch.jit.save writes one, featx-export too), not a state dict "
        "or a featx.save file: load it with torch.jit.load, or give the state dict or featx.save file it was made from"
    )
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        with pytest.raises(UnreadableWeightsError) as caught:
            featx.build({**SPEC, "weights": str(path)})
        assert str(caught.value) == f"backbone.weights: {reason}"
        with pytest.raises(UnreadableWeightsError) as caught:
            featx.load(path)
        assert str(caught.value) == f"load(): path: {reason}"
    assert [str(warning.message) for warning in caught_warnings] == []


def test_a_training_checkpoint_with_its_arguments_says_how_to_take_its_state_dict(tmp_path):
    """timm's CheckpointSaver stores the training run's arguments (an argparse.Namespace) beside the state dict: the
    refusal named the global and gave no way out."""
    import argparse

    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "state_dict": _state(0), "args": argparse.Namespace(model="resnet18", lr=0.1)}, path)
    with pytest.raises(WeightsError) as caught:
        featx.build({**SPEC, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.weights: {path} holds more than tensors and is refused (loaded with weights_only=True; nothing in "
        "it ran): Unsupported global: GLOBAL argparse.Namespace; a training checkpoint's arguments: save its state "
        "dict alone, still loaded without running anything (with torch.serialization.safe_globals([argparse."
        "Namespace]): torch.save(torch.load(path, weights_only=True)['state_dict'], 'weights.pth')) and give that file"
    )
    with torch.serialization.safe_globals([argparse.Namespace]):  # the advice, followed: the state dict loads
        torch.save(torch.load(path, weights_only=True)["state_dict"], tmp_path / "weights.pth")
    backbone = featx.build({**SPEC, "weights": str(tmp_path / "weights.pth")})
    assert torch.equal(backbone.stages.c2.conv1.weight, _state(0)["conv1.weight"])


@pytest.mark.parametrize("name", ["a\nweights: accepted.pth", "b\x1b[31m.pth", "c\u2028.pth"])
def test_a_weights_file_name_with_a_line_break_or_escape_stays_on_one_escaped_line(tmp_path, name):
    (tmp_path / name).write_bytes(b"not a checkpoint")
    for path in (tmp_path / name, tmp_path / f"missing {name}"):
        with pytest.raises(featx.WeightsError) as caught:
            featx.build({**resnet18_spec(), "weights": str(path), "device": "cpu"})
        message = str(caught.value)
        assert message.splitlines() == [message] and "\x1b" not in message, message
        assert repr(path.name)[1:-1] in message
