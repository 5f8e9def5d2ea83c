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


def test_enum_weights_load_from_the_hub_cache(tmp_path, monkeypatch, classifier):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    assert cached_weights_path(url) == cached
    cached.parent.mkdir(parents=True)
    torch.save(classifier.state_dict(), cached)
    for name in ("IMAGENET1K_V1", "DEFAULT"):
        _assert_matches(_build(name), classifier)


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

    from featx.models.weights_enums import download_to_cache

    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    served = tmp_path / "served.pth"
    torch.save({"w": torch.arange(4.0)}, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]
    cached = tmp_path / "hub" / "checkpoints" / f"resnet18-{digest if matches else 'f37072fd'}.pth"
    if matches:
        assert download_to_cache(served.as_uri(), cached, "resnet18 weights") == cached
        assert cached.read_bytes() == served.read_bytes()
        return
    with pytest.raises(featx.WeightsError) as caught:
        download_to_cache(served.as_uri(), cached, "resnet18 weights")
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


def test_densenet_weights_as_torchvision_publishes_them_load(tmp_path, monkeypatch):
    """The published DenseNet files name their layers 'denselayer1.norm.1.weight' (torchvision's builder renames
    them when it loads them): featx refused the genuine file as foreign ('unexpected keys')."""
    torch.manual_seed(0)
    reference = randomize_norm_statistics(torchvision.models.densenet121()).eval()
    legacy = {_legacy_densenet_key(key): tensor for key, tensor in reference.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    cached = cached_weights_path(torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    torch.save(legacy, cached)
    backbone = featx.build("densenet121", overrides=["weights=DEFAULT", "device=cpu", "norm=eval"]).eval()
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
    'not a torch checkpoint' without saying that deleting it gets the weights afresh."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    cached = cached_weights_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    torch.save(classifier.state_dict(), cached)
    cached.write_bytes(cached.read_bytes()[:5000])  # the first 5,000 bytes of it
    with pytest.raises(featx.WeightsError) as caught:
        _build("DEFAULT")
    assert str(caught.value).startswith(f"backbone.weights: cannot read {cached}: ")
    assert str(caught.value).endswith(
        "(the hub cache's copy of ResNet18_Weights.IMAGENET1K_V1, perhaps a download that stopped midway: delete it "
        "and build again to download it afresh)"
    )
