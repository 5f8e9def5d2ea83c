"""Weights: local files, torchvision enums through the hub cache, strict reporting, refusing pickled code."""

from __future__ import annotations

import os
import re
import threading
from typing import Dict

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, resnet18_spec
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

import featx
from featx.construct.checkpoint import read_checkpoint
from featx.construct.meta_model import MetaModel
from featx.construct.plan import plan_backbone
from featx.models.meta_construction import _on_registration
from featx.models.weights_enums import OFFLINE_VARIABLE, cached_weights_path

C2_C3 = {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "c3": {"modules": ["layer2"]}}


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return randomize_norm_statistics(torchvision.models.resnet18()).eval()


def _build(weights, **changes):
    return featx.build(resnet18_spec(weights=str(weights), stages=C2_C3, norm="eval", **changes)).eval()


def _assert_matches(backbone, classifier):
    getter = IntermediateLayerGetter(classifier, {"layer1": "c2", "layer2": "c3"}).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        actual, expected = backbone(x), getter(x)
    for name in ("c2", "c3"):
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("nesting", [None, "state_dict", "model"])
def test_local_checkpoint_plain_or_nested(tmp_path, classifier, nesting):
    state = classifier.state_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save(state if nesting is None else {nesting: state, "epoch": 3}, path)
    _assert_matches(_build(path), classifier)


@pytest.fixture()
def hashed_model(tmp_path, monkeypatch, classifier):
    """A torchvision model registered (as torchvision's register_model registers one) with a weights enum of its
    own, whose file name ends in the first hex digits of its file's SHA-256 as the hub's names do; its file
    (resnet18's weights) is in the hub cache of a temporary TORCH_HOME; the model's name, and the cached file."""
    import hashlib
    from functools import partial
    from typing import Optional

    from torchvision.models import Weights, WeightsEnum
    from torchvision.models._api import BUILTIN_MODELS
    from torchvision.transforms._presets import ImageClassification

    from featx.models.registry import classification_models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    served = tmp_path / "served.pth"
    torch.save(classifier.state_dict(), served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]

    class HashedWeights(WeightsEnum):
        IMAGENET1K_V1 = Weights(
            url=f"https://example.invalid/featx_test_hashed-{digest}.pth",
            transforms=partial(ImageClassification, crop_size=224),
            meta={},
        )
        DEFAULT = IMAGENET1K_V1

    def featx_test_hashed(*, weights=None, **kwargs):
        return torchvision.models.resnet18(**kwargs)

    featx_test_hashed.__annotations__ = {"weights": Optional[HashedWeights]}
    monkeypatch.setattr(featx_test_hashed, "__module__", "torchvision.models.featx_test_hashed")
    # what torchvision's register_model does, undone when the test ends
    monkeypatch.setitem(BUILTIN_MODELS, "featx_test_hashed", featx_test_hashed)
    classification_models.cache_clear()  # featx's list of torchvision's models, taken again with it (and without)
    cached = cached_weights_path(HashedWeights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    served.rename(cached)
    yield "featx_test_hashed", cached
    classification_models.cache_clear()


def _record_cache(tmp_path, monkeypatch):
    """featx's user cache on, in a temporary folder; where it records verified hub cache files."""
    monkeypatch.delenv("FEATX_NO_CACHE", raising=False)
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "featx-cache"))
    return tmp_path / "featx-cache" / "verified-weights"


def test_enum_weights_load_from_the_hub_cache(tmp_path, monkeypatch, hashed_model, classifier):
    model, cached = hashed_model
    for name in ("IMAGENET1K_V1", "DEFAULT"):
        _assert_matches(_build(name, model=model), classifier)


def test_a_hub_cache_file_that_is_not_the_published_file_is_refused(tmp_path, monkeypatch, classifier):
    """A file at an enum's cache name (where featx's offline message says to place it) was never checked against
    the SHA-256 its name begins: another network's weights were used under the official name without a word."""
    records = _record_cache(tmp_path, monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(classifier.state_dict(), cached)  # another resnet18's weights, under the published file's name
    import hashlib

    found = hashlib.sha256(cached.read_bytes()).hexdigest()[:8]
    with pytest.raises(featx.WeightsError) as caught:
        _build("DEFAULT")
    assert str(caught.value) == (
        f"backbone.weights: the torch hub cache file {cached} is not the published file of resnet18 "
        f"ResNet18_Weights.IMAGENET1K_V1: its name says its SHA-256 starts with f37072fd, and it starts with {found} "
        "(another file placed or copied under its name, or a damaged one). Delete it and build online to download "
        "it, or place the file published at https://download.pytorch.org/models/resnet18-f37072fd.pth there"
    )
    assert not records.exists()  # nothing recorded as verified


def test_a_verified_hub_cache_file_is_hashed_again_only_when_it_changes(tmp_path, monkeypatch, hashed_model):
    """Hashing a 500 MB file takes a second: a file that matched is recorded in featx's user cache by its path, size,
    modification and status change times and inode; a later build takes the record as it is (a hash would write it
    anew), and a file whose time changed is hashed again."""
    records = _record_cache(tmp_path, monkeypatch)
    model, cached = hashed_model
    _build("DEFAULT", model=model)
    [record] = records.iterdir()
    written = record.stat()
    _build("DEFAULT", model=model)  # unchanged: the record stands for the file, left as it was
    assert (record.stat().st_ino, record.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    content = cached.read_bytes()
    status = cached.stat()
    with open(cached, "r+b") as rewritten:  # other bytes of the same size, in place: the same inode
        rewritten.write(bytes(len(content)))
    os.utime(cached, ns=(status.st_atime_ns, status.st_mtime_ns + 1))  # now it changed: hashed again, refused
    with pytest.raises(featx.WeightsError, match=r"is not the published file of featx_test_hashed .*: its name says"):
        _build("DEFAULT", model=model)
    cached.write_bytes(content)  # the published content back: accepted, recorded again
    _build("DEFAULT", model=model)
    assert record.exists() and record.stat().st_ino != written.st_ino


@pytest.mark.parametrize("older_record", [False, True])
def test_a_hub_cache_file_rewritten_in_place_with_its_time_put_back_is_hashed_again(
    tmp_path, monkeypatch, hashed_model, classifier, older_record
):
    """The record of a verified file keyed on its path, size, modification time and inode: another network's weights
    of the same size written into it (the same inode) with its modification time put back (os.utime, as cp -p,
    rsync -t and touch -r do) were used under the published file's name without a hash. Its status change time,
    which no one can put back, now tells; a record of that older form (without it) is no record of the file."""
    import hashlib
    import json

    records = _record_cache(tmp_path, monkeypatch)
    model, cached = hashed_model
    _build("DEFAULT", model=model)
    [record] = records.iterdir()  # accepted, and recorded
    if older_record:  # as featx wrote it before: the same fields but the status change time
        entry = json.loads(record.read_text())
        del entry["identity"]["ctime_ns"]
        record.write_text(json.dumps(entry, sort_keys=True) + "\n")
    status = cached.stat()
    other = tmp_path / "other" / "served.pth"  # the name the fixture saved under: it is in the archive's records
    other.parent.mkdir()
    state = classifier.state_dict()  # with its _metadata, as the fixture saved it
    for name, tensor in state.items():
        state[name] = tensor + 1  # another network's weights
    torch.save(state, other)
    content = other.read_bytes()
    assert len(content) == status.st_size and content != cached.read_bytes()
    with open(cached, "r+b") as rewritten:
        rewritten.write(content)
    os.utime(cached, ns=(status.st_atime_ns, status.st_mtime_ns))
    now = cached.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino, now.st_dev) == (
        status.st_size, status.st_mtime_ns, status.st_ino, status.st_dev
    )  # fmt: skip
    expected, found = cached.stem.rsplit("-", 1)[1], hashlib.sha256(content).hexdigest()[:8]
    with pytest.raises(featx.WeightsError) as caught:
        _build("DEFAULT", model=model)
    assert str(caught.value) == (
        f"backbone.weights: the torch hub cache file {cached} is not the published file of featx_test_hashed "
        f"HashedWeights.IMAGENET1K_V1: its name says its SHA-256 starts with {expected}, and it starts with {found} "
        "(another file placed or copied under its name, or a damaged one). Delete it and build online to download "
        f"it, or place the file published at https://example.invalid/{cached.name} there"
    )


def test_without_the_user_cache_a_hub_cache_file_is_hashed_at_every_use(tmp_path, monkeypatch, hashed_model):
    model, cached = hashed_model
    _build("DEFAULT", model=model)
    status = cached.stat()
    with open(cached, "r+b") as rewritten:
        rewritten.write(bytes(status.st_size))
    os.utime(cached, ns=(status.st_atime_ns, status.st_mtime_ns))  # as it was, but FEATX_NO_CACHE: no record
    with pytest.raises(featx.WeightsError, match=r"is not the published file of featx_test_hashed"):
        _build("DEFAULT", model=model)


def test_a_record_of_another_file_is_never_trusted(tmp_path, monkeypatch, hashed_model):
    """A record is keyed by the file's inode too: a file of another inode (a copy moved over it, keeping size and
    modification time) is hashed again."""
    records = _record_cache(tmp_path, monkeypatch)
    model, cached = hashed_model
    _build("DEFAULT", model=model)
    status = cached.stat()
    other = cached.with_name("other")
    other.write_bytes(bytes(status.st_size))
    os.utime(other, ns=(status.st_atime_ns, status.st_mtime_ns))
    other.replace(cached)
    with pytest.raises(featx.WeightsError, match=r"is not the published file of featx_test_hashed"):
        _build("DEFAULT", model=model)
    assert len(list(records.iterdir())) == 1


def test_a_torch_home_too_long_for_the_file_system_is_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / ("a" * 300)))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    with pytest.raises(
        featx.WeightsError,
        match=r"^backbone\.weights: the torch hub cache file /.{76}\.\.\. of resnet18 ResNet18_Weights\.IMAGENET1K_V1 "
        r"cannot be looked up \(File name too long\); set TORCH_HOME to a folder you can read$",
    ):
        _build("DEFAULT")


def test_enum_weights_missing_offline_name_the_exact_path_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(featx.WeightsError) as caught:
        _build("DEFAULT")
    message = str(caught.value)
    assert f"Place the file at {expected}" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


@pytest.mark.parametrize("matches", [True, False])
def test_a_download_is_checked_against_the_hash_in_its_file_name(tmp_path, monkeypatch, matches):
    """torch.hub's file names carry the first hex digits of the file's SHA-256, which torchvision checks when it
    downloads; featx cached and used whatever the server sent (torchvision then loads that cached file too). The
    download is from a file:// URL, through torch.hub's own downloader."""
    import hashlib

    from featx.models.weights_enums import download_to_cache, named_hash_prefix

    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    served = tmp_path / "served.pth"
    torch.save({"w": torch.arange(4.0)}, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]
    cached = tmp_path / "hub" / "checkpoints" / f"resnet18-{digest if matches else 'f37072fd'}.pth"
    if matches:
        assert download_to_cache(served.as_uri(), cached, "resnet18 weights", named_hash_prefix(cached)) == cached
        assert cached.read_bytes() == served.read_bytes()
        return
    with pytest.raises(featx.WeightsError) as caught:
        download_to_cache(served.as_uri(), cached, "resnet18 weights", named_hash_prefix(cached))
    assert str(caught.value).startswith(
        f"backbone.weights: the download of resnet18 weights from {served.as_uri()} is not the published file "
        '(invalid hash value (expected "f37072fd", got "'
    )
    assert list(cached.parent.iterdir()) == []  # nothing cached


def test_unknown_enum_name_lists_the_valid_ones():
    with pytest.raises(featx.SpecError) as caught:
        _build("IMAGENET2K_V1")
    assert str(caught.value) == (
        "backbone.weights: 'IMAGENET2K_V1' is not a weights name of resnet18; did you mean IMAGENET1K_V1? "
        "(valid: null, DEFAULT, IMAGENET1K_V1; or a path to a checkpoint file: ./NAME for one in the working "
        "directory)"
    )


def test_checkpoints_without_batch_counters_load(tmp_path, classifier):
    """Older torchvision files (and FrozenBatchNorm2d models) have no num_batches_tracked entries."""
    state = {k: v for k, v in classifier.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "legacy.pth"
    torch.save(state, path)
    _assert_matches(_build(path), classifier)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(featx.WeightsError, match=r"^backbone\.weights: cannot read .*absent\.pth: not found$"):
        _build(tmp_path / "absent.pth")


def test_dropped_layers_need_not_be_in_the_checkpoint(tmp_path, classifier):
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith(("layer3", "layer4", "fc"))}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    _assert_matches(_build(path), classifier)


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path, classifier):
    state = dict(classifier.state_dict())
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(featx.WeightsError) as caught:
        _build(path)
    message = str(caught.value)
    assert "unexpected keys: extra.weight (2,)" in message
    assert "missing keys: layer1.0.conv1.weight (64, 64, 3, 3)" in message
    assert "shape mismatches: conv1.weight checkpoint (64, 3, 3, 3) vs model (64, 3, 7, 7)" in message


class _Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_never_runs(tmp_path, classifier):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "malicious.pth"
    torch.save({"state_dict": classifier.state_dict(), "payload": _Payload(marker)}, path)
    with pytest.raises(
        featx.WeightsError, match="holds more than tensors and is refused .*: Unsupported global: GLOBAL io.open$"
    ):
        _build(path)
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(featx.WeightsError, match="cannot read .*notes.pth"):
        _build(path)


def test_a_checkpoint_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(featx.WeightsError, match="does not hold a state dict"):
        _build(path)


def test_a_build_from_a_checkpoint_materialises_every_kept_tensor(tmp_path):
    """Kept layers are allocated straight from the checkpoint; nothing is left on the meta device."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16()
    features_only = {k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "vgg16_features.pth"
    torch.save(features_only, path)
    backbone = featx.build("vgg16", overrides=[f"weights='{path}'", "device=cpu"])
    assert all(t.device.type == "cpu" for t in backbone.state_dict().values())
    # like a torchvision model, a fresh backbone is in training mode (frozen stages c1..c3 aside)
    assert backbone.training and backbone.stages["c5"].training and not backbone.stages["c3"].training
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(backbone.eval()(x)["c5"], vgg.features[:29](x), rtol=0, atol=0)


def test_builds_leave_the_global_rng_as_it_was(tmp_path, classifier):
    """From a checkpoint or with random init (drawn from a generator seeded by the spec's seed)."""
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    backbone = _build(path)
    assert torch.equal(torch.get_rng_state(), before)
    assert not any(t.is_meta for t in backbone.state_dict().values())
    _assert_matches(backbone, classifier)
    before = torch.get_rng_state()
    featx.build(resnet18_spec(stages=C2_C3, fpn={"out_channels": 32}, reinit=["c3"]))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_build_leaves_the_gpu_generators_as_they_were():
    """torch.manual_seed(spec.seed) inside the build also reseeded every CUDA generator (queued until CUDA starts,
    on a machine without one), which the CPU-only fork did not restore: every build reset the user's GPU stream.
    Seen here through torch's queue of CUDA seed calls; tests/test_cuda.py checks the generator itself."""
    from torch.cuda import _lazy_seed_tracker

    torch.manual_seed(123)
    queued = _lazy_seed_tracker.get_calls()
    featx.build(resnet18_spec(fpn={"out_channels": 8}))
    assert _lazy_seed_tracker.get_calls() == queued


def test_a_build_under_another_default_device_is_the_same_cpu_network():
    """torch.set_default_device / `with torch.device(...)` of the caller: the kept layers were made on that device
    (meta: a raw NotImplementedError; cuda: drawn from another generator)."""
    expected = featx.build(resnet18_spec(fpn={"out_channels": 8})).state_dict()
    with torch.device("meta"):
        built = featx.build(resnet18_spec(fpn={"out_channels": 8})).state_dict()
    assert all(torch.equal(expected[name], tensor) for name, tensor in built.items())


@pytest.mark.parametrize("default_device", ["meta", "cuda"])
def test_a_build_from_a_checkpoint_under_another_default_device_is_the_same_cpu_network(
    tmp_path, classifier, default_device
):
    """The tensors assigned from a file, the batch counters it lacks (torch's BatchNorm loader makes them), and the
    FPN: each on the CPU with the file's values, whatever the caller's default device. The counters were made on
    it: meta, or cuda, where a machine without a GPU fails to make any tensor."""
    path = tmp_path / "no-counters.pth"
    torch.save({k: v for k, v in classifier.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    expected = _build(path, fpn={"out_channels": 8}).state_dict()
    with torch.device(default_device):
        built = _build(path, fpn={"out_channels": 8}).state_dict()
    assert list(built) == list(expected)
    assert all(tensor.device.type == "cpu" and torch.equal(expected[name], tensor) for name, tensor in built.items())
    _assert_matches(_build(path), classifier)


def test_a_model_whose_constructor_computes_builds_under_a_meta_default_device():
    """RegNet derives its widths with torch ops, so featx constructs it on the CPU: that fallback ran on the caller's
    default device (meta: a raw NotImplementedError)."""
    expected = featx.build("regnet_x_400mf", overrides=["device=cpu", "out_features=[c2]"]).state_dict()
    with torch.device("meta"):
        built = featx.build("regnet_x_400mf", overrides=["device=cpu", "out_features=[c2]"]).state_dict()
        proposal = featx.propose("regnet_x_400mf")
    assert all(torch.equal(expected[name], tensor) for name, tensor in built.items())
    assert "c2" in proposal["stages"]


def _built_in_two_threads() -> Dict[int, featx.Backbone]:
    """resnet18 of seeds 1 and 2, built at once in two threads."""
    built: Dict[int, featx.Backbone] = {}
    threads = [
        threading.Thread(target=lambda s=seed: built.update({s: featx.build(resnet18_spec(seed=s))})) for seed in (1, 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return built


def test_seeded_builds_in_two_threads_equal_builds_alone():
    """torch has one CPU generator per process: two threads seeding it and drawing from it at once got each other's
    numbers (other weights than the same spec built alone) and left it reseeded."""
    alone = {seed: featx.build(resnet18_spec(seed=seed)).state_dict() for seed in (1, 2)}
    torch.manual_seed(7)
    before = torch.get_rng_state()
    for _ in range(3):
        built = _built_in_two_threads()
        for seed, backbone in built.items():
            assert all(torch.equal(alone[seed][name], tensor) for name, tensor in backbone.state_dict().items())
        assert sorted(built) == [1, 2]
    assert torch.equal(torch.get_rng_state(), before)


def test_seeded_builds_in_two_threads_under_another_default_dtype_keep_it_and_their_weights():
    """The float32 draw set torch's default dtype (process-wide) outside the build lock: two threads building under
    float64 left it float32, and one got other weights (by up to 0.66) than the same spec built alone."""
    alone = {seed: featx.build(resnet18_spec(seed=seed)).state_dict() for seed in (1, 2)}
    torch.set_default_dtype(torch.float64)
    try:
        for _ in range(3):
            built = _built_in_two_threads()
            assert torch.get_default_dtype() == torch.float64
            for seed, backbone in built.items():
                for name, tensor in backbone.state_dict().items():
                    assert torch.equal(alone[seed][name].to(tensor.dtype), tensor), (seed, name)
            assert sorted(built) == [1, 2]
    finally:
        torch.set_default_dtype(torch.float32)


def test_a_float64_checkpoint_loads_unrounded_under_a_float64_default(tmp_path):
    """Building in float32 for the seeded draw rounded a float64 file's values (a 1e-12 change vanished)."""
    torch.set_default_dtype(torch.float64)
    try:
        backbone = featx.build(resnet18_spec())
        with torch.no_grad():
            backbone.stages["c2"].conv1.weight.add_(1e-12)
        featx.save(backbone, tmp_path / "bb.pt")
        loaded = featx.load(tmp_path / "bb.pt")
    finally:
        torch.set_default_dtype(torch.float32)
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_modules_other_threads_construct_during_a_build_keep_their_tensors():
    """featx moves the tensors a model registers to meta with torch's registration hooks, which are global: modules
    another thread constructed meanwhile got meta parameters."""
    with _on_registration(lambda index, tensor: True):
        result: list = []
        thread = threading.Thread(target=lambda: result.append(nn.Linear(4, 4)))
        thread.start()
        thread.join()
        own = nn.Linear(4, 4)
    assert not result[0].weight.is_meta and not result[0].bias.is_meta
    assert own.weight.is_meta  # the building thread's own registrations still move


def test_a_model_whose_constructor_builds_a_backbone_builds():
    """The outer build's registration hooks moved the inner build's tensors to meta (a raw NotImplementedError):
    only the innermost construction's hooks act."""
    import timm

    class Wrapping(nn.Module):
        def __init__(self, **kwargs) -> None:
            super().__init__()
            self.inner = featx.build(resnet18_spec(out_features=["c2"]))
            self.stem, self.head = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)

        def forward(self, x):
            return self.head(self.stem(x))

    def featx_test_wrapping_net(pretrained=False, **kwargs):
        return Wrapping(**kwargs)

    timm.models.register_model(featx_test_wrapping_net)
    spec = {
        "model": "timm:featx_test_wrapping_net",
        "stages": {"s1": {"modules": ["stem"]}, "s2": {"modules": ["head"]}},
    }
    backbone = featx.build({**spec, "device": "cpu"})
    assert [info.stride for info in backbone.feature_info] == [2, 4]
    assert not any(tensor.is_meta for tensor in backbone.state_dict().values())


def test_a_half_precision_checkpoint_gives_float32_layers(tmp_path, classifier):
    path = tmp_path / "resnet18_fp16.pth"
    torch.save(
        {key: value.half() if value.is_floating_point() else value for key, value in classifier.state_dict().items()},
        path,
    )
    backbone = _build(path)
    assert {t.dtype for t in backbone.parameters()} == {torch.float32}
    expected = classifier.layer2[0].conv1.weight.half().float()
    torch.testing.assert_close(backbone.stages["c3"].layer2[0].conv1.weight, expected, rtol=0, atol=0)


def test_assigned_layers_hold_copies_of_the_kept_tensors_and_dropped_layers_stay_on_meta(tmp_path, classifier):
    """A kept parameter holds the file's values in its own memory (not the file's memory-mapped pages, which a
    rewrite of the file would change); dropped layers are never read and stay on meta."""
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    meta = MetaModel.create("resnet18")
    plan = plan_backbone(featx.load_spec(resnet18_spec(stages=C2_C3)), meta.model)
    checkpoint = read_checkpoint(path)
    model = meta.materialise(plan.kept_paths, checkpoint)
    weight = model.layer2[0].conv1.weight
    assert isinstance(weight, torch.nn.Parameter) and weight.requires_grad
    assert weight.data_ptr() != checkpoint.state["layer2.0.conv1.weight"].data_ptr()
    assert torch.equal(weight, classifier.layer2[0].conv1.weight)
    assert model.layer1[0].bn1.num_batches_tracked.device.type == "cpu"
    assert model.fc.weight.is_meta and model.layer4[0].conv1.weight.is_meta


def _legacy_densenet_key(key: str) -> str:
    """How torchvision's published DenseNet files name a layer's tensors (its _DenseLayer once held 'norm.1')."""
    return re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key)


def test_densenet_weights_as_torchvision_publishes_them_load(tmp_path):
    """The published DenseNet files name their layers 'denselayer1.norm.1.weight' (torchvision's builder renames
    them when it loads them): featx refused the genuine file as foreign ('unexpected keys')."""
    torch.manual_seed(0)
    reference = randomize_norm_statistics(torchvision.models.densenet121()).eval()
    legacy = {_legacy_densenet_key(key): tensor for key, tensor in reference.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save(legacy, tmp_path / "densenet121-a639ec97.pth")  # a copy of a published file, named as torch names it
    weights = tmp_path / "densenet121-a639ec97.pth"
    backbone = featx.build("densenet121", overrides=[f"weights={weights}", "device=cpu", "norm=eval"]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["c5"], reference.features(x), rtol=0, atol=0)  # c5 ends on norm5


def test_vit_mlp_keys_of_the_legacy_layout_are_renamed_as_torchvisions_loader_renames_them():
    """torchvision's MLPBlock loads 'mlp.linear_1'/'mlp.linear_2' (files saved before it became an MLP) as
    'mlp.0'/'mlp.3'; featx reads the tensors itself and renames the same keys. The oracle is torchvision's own
    load_state_dict on the meta device."""
    from featx.models.legacy_keys import current_keys

    with torch.device("meta"):
        vit = torchvision.models.vit_b_32()
    current = vit.state_dict()
    legacy = {
        re.sub(r"\.mlp\.([03])\.", lambda m: f".mlp.linear_{int(m.group(1)) // 3 + 1}.", k): v
        for k, v in current.items()
    }
    assert "encoder.layers.encoder_layer_0.mlp.linear_1.weight" in legacy
    metadata = current._metadata  # the versions torch records per module; the legacy files are version 1
    legacy_state = type(current)(legacy)  # an OrderedDict carrying torch's per-module versions
    legacy_state._metadata = {key: {**value, "version": 1} for key, value in metadata.items()}
    vit.load_state_dict(legacy_state, assign=True)  # torchvision's own renaming: strict, so every key was placed
    assert sorted(current_keys("vit_b_32", legacy)) == sorted(vit.state_dict())
    assert current_keys("timm:vit_base_patch32_224", legacy) == legacy  # timm's own names are never touched


def test_a_file_named_like_a_weights_enum_is_a_file(tmp_path, monkeypatch, classifier):
    """'ResNet18_Weights.pth' (a checkpoint named after the enum it came from) was taken for an enum member name."""
    monkeypatch.chdir(tmp_path)
    torch.save(classifier.state_dict(), tmp_path / "ResNet18_Weights.pth")
    _assert_matches(_build("ResNet18_Weights.pth"), classifier)
    with pytest.raises(featx.SpecError, match="names a member of VGG16_Weights, but resnet18's weights are"):
        _build("VGG16_Weights.IMAGENET1K_V1")


def test_a_broken_file_in_the_hub_cache_says_to_delete_it(tmp_path, monkeypatch, classifier):
    """A download that stopped midway leaves a file featx (and torchvision) read as the weights: the error said
    'not a torch checkpoint' without saying that deleting it gets the weights afresh (the file is now refused by
    the hash its name carries, before it is read)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    cached = cached_weights_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    torch.save(classifier.state_dict(), cached)
    cached.write_bytes(cached.read_bytes()[:5000])  # the first 5,000 bytes of it
    with pytest.raises(featx.WeightsError) as caught:
        _build("DEFAULT")
    assert str(caught.value).startswith(f"backbone.weights: the torch hub cache file {cached} is not the published ")
    assert "or a damaged one). Delete it and build online to download it" in str(caught.value)


@pytest.mark.parametrize("offline", ["1", "0"])
def test_a_folder_at_a_timm_url_weights_cache_name_is_refused_never_downloaded_over(tmp_path, monkeypatch, offline):
    """timm's weights published by URL only were looked up with is_file(): a folder at the cache name was taken for
    no file ("Place the file at <that folder>" offline; online, torch's download moved the file into the folder)."""
    from featx.models.timm_weights import timm_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, offline)  # online: nothing can be reached, and nothing is tried
    folder = tmp_path / "hub" / "checkpoints" / "gcvit_xxtiny_224_nvidia-d1d86009.pth"
    folder.mkdir(parents=True)
    assert timm_weights_file("gcvit_xxtiny", "DEFAULT") == folder  # the reader then names it a folder
    with pytest.raises(featx.WeightsError, match=rf"^backbone\.weights: {re.escape(str(folder))} is a folder, not a "):
        read_checkpoint(folder)
    assert list(folder.iterdir()) == []


def test_timm_url_weights_are_downloaded_without_a_hash_check_as_timm_downloads_them(tmp_path, monkeypatch):
    """torch.hub's hash check was applied to every URL: timm's I-JEPA weights, 'IN1K-vit.h.14-300e.pth.tar', were
    checked against '300e' and every download refused as "not the published file" (timm's loader checks no hash).
    The download is from a file:// URL, through torch.hub's own downloader."""
    import dataclasses

    from featx.models import timm_weights
    from featx.models.timm_models import pretrained_config

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    served = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    torch.save({"w": torch.arange(4.0)}, served)
    published = pretrained_config("vit_huge_patch14_gap_224", "in1k_ijepa")
    assert published.url.endswith("/IN1K-vit.h.14-300e.pth.tar") and published.hf_hub_id is None
    config = dataclasses.replace(published, url=served.as_uri())  # the same file, served from this machine
    monkeypatch.setattr(timm_weights, "pretrained_config", lambda name, tag: config)
    cached = timm_weights.timm_weights_file("vit_huge_patch14_gap_224", "in1k_ijepa")
    assert cached == tmp_path / "torch-home" / "hub" / "checkpoints" / "IN1K-vit.h.14-300e.pth.tar"
    assert cached.read_bytes() == served.read_bytes()


@pytest.mark.parametrize("torch_home", ["th", ""])
def test_the_offline_message_names_an_absolute_path_for_a_relative_torch_home(tmp_path, monkeypatch, torch_home):
    """With a relative or empty TORCH_HOME the message said "Place the file at th/hub/checkpoints/..." (relative to
    whichever folder the user reads it in), where the docs promise the exact path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", torch_home)
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    expected = tmp_path / torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(featx.WeightsError, match=rf"\. Place the file at {re.escape(str(expected))} \(get it from"):
        _build("DEFAULT")
