"""featx.save / featx.load: checkpoints that rebuild themselves; safetensors files as weights."""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import os
import re
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, resnet18_spec, run_not_installed
from safetensors import safe_open
from safetensors.torch import save_file

import featx

ROOT = Path(__file__).resolve().parents[1]


def _trained(**changes):
    torch.manual_seed(0)
    backbone = featx.build(resnet18_spec(norm="train", fpn={"out_channels": 16}, **changes))
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return backbone.eval()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, suffix):
    backbone = _trained(frozen_stages=1)
    path = featx.save(backbone, tmp_path / f"bb{suffix}")
    loaded = featx.load(path).eval()
    assert loaded.spec.to_dict() == {**backbone.spec.to_dict(), "weights": str(path)}
    assert loaded.frozen_stage_names == ("c2",)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for (name, a), b in zip(backbone(x).items(), loaded(x).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_backbone_saved_in_channels_last_loads_in_the_layout_its_spec_gives(tmp_path):
    """torch.save keeps a channels_last model's strides, and a 1x1 kernel in channels_last still counts as
    contiguous: loaded as they were, those kernels made the rebuilt backbone compute in a mix of layouts (outputs
    off by 1e-5 from the same weights in the default layout)."""
    backbone = _trained()
    path = featx.save(copy.deepcopy(backbone).to(memory_format=torch.channels_last), tmp_path / "cl.pt")
    loaded = featx.load(path).eval()
    for name, tensor in loaded.state_dict().items():
        assert tensor.stride() == torch.empty(tensor.shape).stride(), name
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for (name, a), b in zip(backbone(x).items(), loaded(x).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _silu_stem(backbone):
    backbone.stages.c2.relu = torch.nn.SiLU()


def _projection(backbone):
    backbone.stages.c4.add_module("proj", torch.nn.Conv2d(256, 256, 1))


def _no_neck(backbone):
    backbone.neck = None


def _wider_kernel(backbone):
    backbone.stages.c3.layer2[0].conv1.weight = torch.nn.Parameter(torch.randn(128, 64, 5, 5))


def _doubled_relu(backbone):
    backbone.stages.c2.relu.forward = lambda x: x * 2


@pytest.mark.parametrize(
    ("edit", "difference"),
    [
        (_silu_stem, "stages.c2.relu is SiLU() where the spec builds ReLU(inplace=True)"),
        (
            _projection,
            "stages.c4.proj is Conv2d(256, 256, kernel_size=(1, 1), stride=(1, 1)) where the spec builds nothing",
        ),
        (_no_neck, "neck is nothing where the spec builds FeaturePyramid() (and 14 more)"),
        (
            _wider_kernel,
            "stages.c3.layer2.0.conv1 is Conv2d holding weight(128, 64, 5, 5) where the spec builds Conv2d holding "
            "weight(128, 64, 3, 3)",
        ),
        (
            _doubled_relu,
            "stages.c2.relu is ReLU(inplace=True) with its forward replaced where the spec builds ReLU(inplace=True)",
        ),
    ],
)
def test_save_refuses_a_backbone_its_spec_does_not_build_and_writes_nothing(tmp_path, edit, difference):
    """featx.load rebuilds the spec: a layer swapped, added or reshaped by hand, the neck dropped or a forward
    replaced would load as another network (the SiLU stem silently: its features differed by 3.6) or not at all."""
    backbone = _trained()
    edit(backbone)
    with pytest.raises(featx.ArgumentError) as caught:
        featx.save(backbone, tmp_path / "edited.pt")
    assert str(caught.value) == (
        "save(): the backbone's modules differ from what its spec builds, and featx.load rebuilds the spec: "
        f"{difference}. Change the spec to build this network, or save the state_dict with torch.save; nothing was "
        "written"
    )
    assert list(tmp_path.iterdir()) == []


def test_save_names_a_setting_kept_outside_extra_repr_and_changed_or_deleted_by_hand(tmp_path):
    """FrozenBatchNorm2d's eps (norm: frozen, the default) and Swin's shift_size print in no extra_repr: edited by
    hand, the file loaded the spec's values without a word (resnet18's features off by 0.04). An attribute the spec's
    modules lack (a tag added by hand) is no setting of theirs."""
    backbone = featx.build(resnet18_spec())
    backbone.stages.c2.relu.note = "checked by hand"
    assert featx.load(featx.save(backbone, tmp_path / "tagged.pt")).stages.c2.relu.inplace
    backbone.stages.c2.bn1.eps = 1e-3
    with pytest.raises(featx.ArgumentError) as caught:
        featx.save(backbone, tmp_path / "eps.pt")
    assert (
        "stages.c2.bn1 is FrozenBatchNorm2d with eps=0.001 where the spec builds FrozenBatchNorm2d with eps=1e-05. "
        in str(caught.value)
    )
    backbone = featx.build("swin_t", overrides=["device=cpu", "input_size=[64,64]"])
    attention = backbone.stages.c2.features_1[0].attn
    attention.shift_size = [3, 3]
    with pytest.raises(
        featx.ArgumentError,
        match=r"attn is ShiftedWindowAttention with shift_size=\[3, 3\] where the "
        r"spec builds ShiftedWindowAttention with shift_size=\[0, 0\]\. ",
    ):
        featx.save(backbone, tmp_path / "swin.pt")
    del attention.shift_size
    with pytest.raises(featx.ArgumentError, match=r"with no plain shift_size where the spec builds "):
        featx.save(backbone, tmp_path / "swin.pt")
    assert [path.name for path in tmp_path.iterdir()] == ["tagged.pt"]


@pytest.mark.parametrize("wrap", ["compile", "sync_batchnorm"])
def test_a_compiled_or_sync_batchnorm_backbone_saves_as_the_backbone_it_is(tmp_path, wrap):
    """torch.compile's wrapper prefixed every key (the file did not load); SyncBatchNorm, converted for DDP, is
    the BatchNorm2d the spec builds (same tensors, same computation on one device)."""
    backbone = _trained()
    if wrap == "compile":
        saved = torch.compile(copy.deepcopy(backbone))
    else:
        saved = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(backbone))
    loaded = featx.load(featx.save(saved, tmp_path / "bb.pt")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for (name, a), b in zip(backbone(x).items(), loaded(x).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_save_refuses_a_hand_made_backbone_whose_spec_does_not_build(tmp_path):
    from featx.nn.backbone import Backbone
    from featx.nn.feature_info import StageInfo

    spec = featx.BackboneSpec(model="custom", stages={"a": featx.StageSpec(modules=["a"])})
    backbone = Backbone({"a": torch.nn.Conv2d(3, 4, 3)}, [StageInfo("a", 4, 1, ("a",), "a")], spec)
    with pytest.raises(featx.ArgumentError) as caught:
        featx.save(backbone, tmp_path / "hand.pt")
    assert str(caught.value).startswith(
        "save(): featx.load rebuilds a saved backbone from its spec, and this backbone's spec does not build "
        "(backbone.model: unknown torchvision model 'custom'"
    ), str(caught.value)
    assert str(caught.value).endswith("; nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_saved_checkpoint_holds_plain_data_readable_with_weights_only(tmp_path):
    path = featx.save(_trained(), tmp_path / "bb.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["featx"]["spec"]["model"] == "resnet18"
    assert payload["featx"]["versions"] == {
        "featx": featx.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def test_the_version_is_written_once_and_the_distribution_reads_it():
    """pyproject.toml takes featx's version from featx/version.py (a stale install of another version fails here)."""
    assert importlib.metadata.version("featx") == featx.__version__
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


def test_a_checkout_that_is_not_installed_saves_checkpoints(tmp_path):
    """featx imported from its folder alone, no distribution metadata (as on a lent GPU machine), saves a file."""
    code = (
        "import importlib.metadata as m, featx\n"
        "try:\n    m.version('featx'); print('installed')\nexcept m.PackageNotFoundError:\n    pass\n"
        "spec = {'model': 'resnet18', 'stages': {'c2': {'modules': ['conv1', 'bn1', 'relu', 'maxpool', 'layer1']}}}\n"
        "featx.save(featx.build(spec), sys.argv[1])\n"
    )
    path = tmp_path / "bb.pt"
    done = run_not_installed(tmp_path, code, str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "installed" not in done.stdout
    assert torch.load(path, weights_only=True)["featx"]["versions"]["featx"] == featx.__version__


def test_a_backbone_built_on_meta_and_given_weights_loads_with_its_weights(tmp_path):
    """PyTorch's meta-init idiom: build on meta, then assign real weights. save() recorded device: meta, so load()
    rebuilt on meta and silently skipped every weight in the file (a backbone without values)."""
    backbone = featx.build("resnet18", overrides=["device=meta", "out_features=[c2]"])
    trained = featx.build("resnet18", overrides=["device=cpu", "out_features=[c2]", "seed=5"]).eval()
    backbone.load_state_dict(trained.state_dict(), assign=True)
    path = featx.save(backbone, tmp_path / "assigned.pt")
    loaded = featx.load(path).eval()
    assert loaded.spec.device == "cpu"
    assert {tensor.device.type for tensor in loaded.state_dict().values()} == {"cpu"}
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x)["c2"], trained(x)["c2"])


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "bb.pt"
    path.write_text("mine")
    with pytest.raises(featx.ArgumentError, match="exists; pass overwrite=True"):
        featx.save(_trained(), path)
    assert path.read_text() == "mine"
    featx.save(_trained(), path, overwrite=True)
    assert not list(tmp_path.glob("*.partial"))


def test_a_checkpoint_from_a_different_spec_is_refused_with_the_reason(tmp_path):
    path = featx.save(_trained(), tmp_path / "bb.pt")
    with pytest.raises(featx.WeightsError) as caught:
        featx.build(resnet18_spec(norm="train", fpn={"out_channels": 32}, weights=str(path)))
    # the advice names the key to keep as saved and the way to take the trunk alone
    assert str(caught.value) == (
        f"backbone.fpn: the FPN of {path} was saved with other settings (out_channels 16 there, 32 here); keep them "
        "(fpn: {out_channels: 16, extra_blocks: null, style: fpn}, as featx.load does with no override of fpn), or "
        "give fpn: null to take the file's trunk alone"
    )


@pytest.mark.parametrize(
    "overrides",
    [["fpn.out_channels=32"], ["model=resnet34"], ["out_features=[c2,c3]"], ["fpn.style=simple", "out_features=[c4]"]],
)
def test_a_load_on_the_meta_device_refuses_what_a_load_refuses(tmp_path, overrides):
    """featx.load(path, overrides=[..., "device=meta"]) skipped the checks of the file against the spec: it
    described (feature_info, parameter counts) a backbone of other widths or another model the file cannot give."""
    path = featx.save(_trained(), tmp_path / "bb.pt")
    with pytest.raises(featx.WeightsError) as on_cpu:
        featx.load(path, overrides=[*overrides, "device=cpu"])
    with pytest.raises(featx.WeightsError) as on_meta:
        featx.load(path, overrides=[*overrides, "device=meta"])
    assert str(on_meta.value) == str(on_cpu.value)
    described = featx.load(path, overrides=["device=meta"])  # what the file gives, on meta
    assert [(i.name, i.channels, i.stride) for i in described.feature_info] == [
        (i.name, i.channels, i.stride) for i in featx.load(path).feature_info
    ]
    assert all(tensor.is_meta for tensor in described.state_dict().values())


def test_another_fpn_style_over_a_files_fpn_is_refused_naming_the_style(tmp_path):
    """A simple pyramid over a file's FPN was refused naming out_features ("keep the saved out_features"), after a
    first refusal had asked to return that one stage: each message undid the other. The FPN's settings come first."""
    path = featx.save(_trained(), tmp_path / "bb.pt")
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(path, overrides=["fpn.style=simple", "out_features=[c4]"])
    assert str(caught.value).startswith(
        f"backbone.fpn: the FPN of {path} was saved with other settings (style 'fpn' there, 'simple' here); keep them"
    )


def test_a_featx_save_file_that_does_not_fit_is_not_told_to_be_loaded_as_it_was(tmp_path):
    """A featx.save file whose keys do not fit its own spec (a stage renamed in it) was told to load with
    bb.load_state_dict(torch.load(path)) or featx.save/featx.load: what the user did, and what cannot read it."""
    path = featx.save(_trained(), tmp_path / "bb.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["featx"]["spec"]["stages"]["d4"] = checkpoint["featx"]["spec"]["stages"].pop("c4")
    torch.save(checkpoint, path)
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(path)
    message = str(caught.value)
    assert "does not fit the kept layers" in message and "missing keys: stages.d4." in message
    assert message.endswith("(the spec saved in the file builds these layers: was the file edited?)")
    assert "load_state_dict(" not in message and "featx.save(bb" not in message


def test_a_timm_checkpoint_does_not_load_into_a_timm_model_of_the_same_tensors(tmp_path):
    """timm's resnetblur18 has resnet18's state dict exactly (its blur pool has no weights), but computes another
    function."""
    pytest.importorskip("timm")
    spec = {"model": "timm:resnet18", "stages": {"c2": {"modules": ["conv1", "bn1", "act1", "maxpool", "layer1"]},
            "c3": {"modules": ["layer2"]}}, "device": "cpu"}  # fmt: skip
    path = featx.save(featx.build(spec), tmp_path / "bb.pt")
    with pytest.raises(featx.WeightsError, match=r"different spec \(it differs in model\)"):
        featx.load(path, overrides=["model=timm:resnetblur18"])


def test_a_weights_file_rewritten_after_the_build_leaves_the_backbone_alone(tmp_path):
    """The file is read memory-mapped; what the backbone keeps must be its own copy, not the file's pages."""
    path = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(randomize_norm_statistics(torchvision.models.resnet18()).state_dict(), path)
    saved = featx.save(_trained(), tmp_path / "bb.pt")
    built = featx.build(resnet18_spec(weights=str(path), norm="eval")).eval()
    loaded = featx.load(saved).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = [built(x), loaded(x)]
    torch.save(torchvision.models.resnet18().state_dict(), path)  # a training loop rewriting its checkpoint
    saved.write_bytes(b"x")  # shortened: reading pages past the end of a mapped file would crash the process
    with torch.inference_mode():
        after = [built(x), loaded(x)]
    for old, new in zip(before, after, strict=True):
        assert all(torch.equal(old[name], new[name]) for name in old)


def test_tensors_tied_or_stored_as_parameters_in_a_file_load_as_torchvision_loads_them(tmp_path):
    """torchvision's load_state_dict copies into each layer's own tensors: no two layers tied, no statistic made a
    trainable parameter."""
    state = torchvision.models.resnet18().state_dict()
    state["layer2.1.conv1.weight"] = state["layer2.0.conv2.weight"]  # one storage for two layers
    state["bn1.running_var"] = torch.nn.Parameter(state["bn1.running_var"] + 1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    backbone = featx.build(resnet18_spec(weights=str(path), norm="eval"))
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(path, weights_only=True))
    c3 = backbone.stages["c3"].layer2
    assert c3[1].conv1.weight.data_ptr() != c3[0].conv2.weight.data_ptr()
    assert reference.layer2[1].conv1.weight.data_ptr() != reference.layer2[0].conv2.weight.data_ptr()
    bn1 = backbone.stages["c2"].bn1
    assert not isinstance(bn1.running_var, torch.nn.Parameter) and not isinstance(
        reference.bn1.running_var, torch.nn.Parameter
    )
    assert "running_var" in dict(bn1.named_buffers()) and all(
        "running" not in n for n, _ in backbone.named_parameters()
    )
    assert torch.equal(bn1.running_var, reference.bn1.running_var)


def test_save_refuses_tied_tensors_and_writes_nothing(tmp_path):
    backbone = _trained()
    layer2 = backbone.stages["c3"].layer2
    layer2[1].conv1.weight = layer2[0].conv2.weight
    with pytest.raises(featx.ArgumentError, match=r"save\(\): stages\.c3\.layer2\.0\.conv2\.weight and "):
        featx.save(backbone, tmp_path / "bb.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_safetensors_header_error_does_not_repeat_the_file(tmp_path):
    header = b'{"w": {"dtype": "SECRET hunter2 ' + b"A" * 4000 + b'", "shape": [1], "data_offsets": [0, 4]}}'
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(featx.WeightsError) as caught:
        featx.build(resnet18_spec(weights=str(path)))
    message = str(caught.value)
    assert message.startswith(f"backbone.weights: cannot read {path}: ") and len(message) < 300 + len(str(path))
    assert "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" not in message


@pytest.mark.parametrize("name", ["bbfile", "DEFAULT"])
def test_a_file_without_a_suffix_is_recorded_as_a_file_and_saves_again(tmp_path, monkeypatch, name):
    """A bare word is a weights enum name: load("DEFAULT") recorded weights: DEFAULT (ImageNet's weights, fetched by
    featx.build(bb.spec)), and load("bbfile") a name save() refused as resnet18's."""
    monkeypatch.chdir(tmp_path)
    backbone = _trained()
    featx.save(backbone, name)
    loaded = featx.load(name)
    assert loaded.spec.weights == f"./{name}"
    featx.save(loaded, "again.pt")
    rebuilt = featx.build(loaded.spec)
    assert all(
        torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), rebuilt.state_dict().values(), strict=True)
    )


def test_the_same_spec_accepts_the_checkpoint_through_build(tmp_path):
    backbone = _trained()
    path = featx.save(backbone, tmp_path / "bb.pt")
    rebuilt = featx.build(resnet18_spec(norm="train", fpn={"out_channels": 16}, weights=str(path), frozen_stages=2))
    assert all(
        torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), rebuilt.state_dict().values(), strict=True)
    )
    assert rebuilt.frozen_stage_names == ("c2", "c3")


def test_a_half_precision_save_loads_as_float32_layers_holding_its_values(tmp_path):
    backbone = _trained().half()
    path = featx.save(backbone, tmp_path / "bb.pt")
    loaded = featx.load(path)
    saved = backbone.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert tensor.device.type == "cpu" and not tensor.is_meta, name
        expected = saved[name].float() if saved[name].is_floating_point() else saved[name]
        assert tensor.dtype == expected.dtype and torch.equal(tensor, expected), name
    assert all(p.requires_grad for p in loaded.neck.parameters())


def test_an_fpn_is_not_fed_other_stages_than_it_was_saved_with(tmp_path):
    """AlexNet's c4 and c5 both have 256 channels: an FPN saved on c5 fitted c4 by name and shape, and its level
    (trained at stride 32) silently ran on the stride-16 map."""
    path = featx.save(featx.build("alexnet_fpn", overrides=["out_features=[c5]", "device=cpu"]), tmp_path / "c5.pt")
    message = (
        rf"^backbone\.out_features: the FPN of {re.escape(str(path))} was trained on the maps of c5, and this spec "
        r"feeds it c4; keep the saved out_features: \[c5\] \(as featx\.load does with no override of it\)$"
    )
    with pytest.raises(featx.WeightsError, match=message):
        featx.load(path, overrides=["out_features=[c4]"])
    spec = featx.load(path).spec
    with pytest.raises(featx.WeightsError, match=message):
        featx.build(dataclasses.replace(spec, out_features=["c4"]))
    assert [info.name for info in featx.load(path).feature_info] == ["p5"]


def test_load_overrides_apply(tmp_path):
    path = featx.save(_trained(), tmp_path / "bb.pt")
    assert featx.load(path, overrides=["device=cpu", "frozen_stages=3"]).frozen_stage_names == ("c2", "c3", "c4")


def test_load_returning_fewer_stages_skips_the_saved_stages_it_no_longer_builds(tmp_path):
    torch.manual_seed(0)
    backbone = featx.build(resnet18_spec(norm="eval")).eval()  # c2..c4
    path = featx.save(backbone, tmp_path / "bb.pt")
    shallower = featx.load(path, overrides=["out_features=[c2,c3]"]).eval()
    assert list(shallower.stages) == ["c2", "c3"]
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        full, fewer = backbone(x), shallower(x)
    assert list(fewer) == ["c2", "c3"] and all(torch.equal(full[name], fewer[name]) for name in fewer)
    with pytest.raises(
        featx.WeightsError, match=r"the FPN of .* was trained on the maps of c2, c3, c4, and this spec "
    ):
        featx.load(featx.save(_trained(), tmp_path / "fpn.pt"), overrides=["out_features=[c2,c3]"])  # a narrower neck


@pytest.mark.parametrize("norm", ["eval", "frozen", "sync"])
def test_load_with_another_norm_policy_keeps_the_weights(tmp_path, norm):
    backbone = _trained()
    path = featx.save(backbone, tmp_path / "bb.pt")
    loaded = featx.load(path, overrides=[f"norm={norm}"]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for (name, a), b in zip(backbone(x).items(), loaded(x).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_load_of_a_plain_state_dict_says_it_has_no_spec(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(featx.WeightsError, match="has no featx spec"):
        featx.load(path)


def test_torchvision_state_dict_in_safetensors_format(tmp_path):
    classifier = randomize_norm_statistics(torchvision.models.resnet18()).eval()
    path = tmp_path / "r18.safetensors"
    save_file(classifier.state_dict(), str(path))
    backbone = featx.build(resnet18_spec(weights=str(path), norm="eval")).eval()
    assert torch.equal(backbone.stages["c4"].layer3[1].conv2.weight, classifier.layer3[1].conv2.weight)


def test_corrupt_safetensors_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(featx.WeightsError, match="cannot read .*broken.safetensors"):
        featx.build(resnet18_spec(weights=str(path)))


def test_the_safetensors_suffix_is_read_in_any_case(tmp_path):
    """``b.SAFETENSORS`` was written with torch.save and a real safetensors file of that name was refused."""
    backbone = featx.build(resnet18_spec())
    path = tmp_path / "b.SAFETENSORS"
    featx.save(backbone, path)
    with safe_open(str(path), framework="pt") as handle:  # safetensors' own reader is the judge of the format
        assert set(handle.keys()) == set(backbone.state_dict())
    loaded = featx.load(path)
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in backbone.state_dict().items())


def test_a_safetensors_file_under_another_suffix_is_named_as_one(tmp_path):
    path = tmp_path / "r18.pt"
    save_file(torchvision.models.resnet18().state_dict(), str(path))
    with pytest.raises(featx.WeightsError, match=r"not a torch checkpoint .*it looks like a safetensors file: name it"):
        featx.build(resnet18_spec(weights=str(path)))


def test_a_module_holding_a_backbone_is_refused_and_a_data_parallel_one_saves_its_backbone(tmp_path):
    """save() checked that the spec rebuilds the network only for a Backbone itself: a model holding one (with the
    backbone's .spec copied onto it) was written, and featx.load then refused the file as edited."""
    backbone = _trained()

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.spec, self.head = backbone, backbone.spec, torch.nn.Conv2d(16, 2, 1)

    with pytest.raises(featx.ArgumentError) as caught:
        featx.save(Detector(), tmp_path / "model.pt")
    assert str(caught.value) == "save(): expected a featx Backbone (featx.build(...)), got Detector"
    assert list(tmp_path.iterdir()) == []
    loaded = featx.load(featx.save(torch.nn.DataParallel(backbone), tmp_path / "bb.pt")).eval()
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in backbone.state_dict().items())


def test_a_checkpoint_under_a_name_that_is_not_utf8_loads(tmp_path):
    """torch maps a file by its name, which it takes as UTF-8 only: featx.load of a file featx.save had written
    failed with AttributeError: 'str' object has no attribute 'tell' (torch.load reads it whole)."""
    backbone = _trained()
    path = featx.save(backbone, tmp_path / os.fsdecode(b"caf\xe9.pt"))
    loaded = featx.load(path)
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in backbone.state_dict().items())


def test_a_path_holding_an_interpolation_is_refused_by_save_and_named_by_load(tmp_path):
    """featx.load puts the file's path in the spec it rebuilds, and specs refuse ${...}: a file featx.save wrote as
    run_${seed}.pt could not be loaded, and the error blamed the file's spec."""
    backbone = _trained()
    with pytest.raises(featx.ArgumentError) as caught:
        featx.save(backbone, tmp_path / "run_${seed}.pt")
    assert str(caught.value) == (
        f"save(): path: '{tmp_path}/run_${{seed}}.pt' holds '${{', which featx.load cannot take (the loaded "
        "backbone's spec names its file, and featx refuses interpolations in specs); rename it"
    )
    assert list(tmp_path.iterdir()) == []
    renamed = tmp_path / "run_${seed}.pt"
    featx.save(backbone, tmp_path / "run.pt").rename(renamed)
    with pytest.raises(featx.ArgumentError, match=r"^load\(\): path: '.*/run_\$\{seed\}\.pt' holds '\$\{'"):
        featx.load(renamed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_checkpoint_saved_on_cuda_names_itself_and_how_to_load_it_here(tmp_path):
    """A file saved from a CUDA backbone refused on a CPU machine with the spec's DeviceError alone, naming neither
    the file nor the override that loads it."""
    path = featx.save(_trained(), tmp_path / "bb.pt")
    content = torch.load(path, weights_only=True)
    content["featx"]["spec"]["device"] = "cuda"  # as featx.save writes it on a CUDA machine
    torch.save(content, path)
    with pytest.raises(featx.DeviceError) as caught:
        featx.load(path)
    assert str(caught.value) == (
        f"{path} was saved on cuda: backbone.device: 'cuda' is not available on this machine (no CUDA device); use "
        f"'cpu' or 'auto' (featx.load('{path}', overrides=['device=cpu']))"
    )
    with pytest.raises(featx.DeviceError) as caught:  # the hint keeps the caller's other overrides
        featx.load(path, overrides=["norm=eval"])
    assert str(caught.value).endswith(f"(featx.load('{path}', overrides=['norm=eval', 'device=cpu']))")
    assert featx.load(path, overrides=["device=cpu"]).spec.device == "cpu"
    cpu_file = featx.save(_trained(), tmp_path / "cpu.pt")
    with pytest.raises(featx.DeviceError) as caught:  # the caller's own override: the file is not to blame
        featx.load(cpu_file, overrides=["device=cuda"])
    assert str(caught.value).startswith("backbone.device: 'cuda' is not available on this machine")


def test_a_saved_trunk_takes_an_fpn_and_a_saved_fpn_can_be_left_out(tmp_path):
    """A featx.save file without an FPN gave a spec with one a WeightsError (the FPN's keys missing) that told to
    call featx.load without the FPN; a file's FPN could not be left out either. The trunk's tensors are the file's and
    the FPN is drawn from the seed: the backbone equals one built over a torchvision file of the same trunk."""
    torch.manual_seed(0)
    torchvision_file = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), torchvision_file)
    trunk = featx.save(featx.build(resnet18_spec(weights=str(torchvision_file))), tmp_path / "trunk.pt")
    fpn = {"out_channels": 16}
    over_torchvision = featx.build(resnet18_spec(weights=str(torchvision_file), fpn=fpn)).eval()
    over_trunk = featx.build(resnet18_spec(weights=str(trunk), fpn=fpn)).eval()
    assert list(over_trunk.state_dict()) == list(over_torchvision.state_dict())
    for key, tensor in over_torchvision.state_dict().items():
        torch.testing.assert_close(over_trunk.state_dict()[key], tensor, rtol=0, atol=0, msg=key)

    with_fpn = featx.save(over_torchvision, tmp_path / "with_fpn.pt")
    trunk_alone = featx.load(with_fpn, overrides=["fpn=null"]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = featx.load(trunk).eval()(x)
        for (name, a), b in zip(expected.items(), trunk_alone(x).values(), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert featx.load(with_fpn, overrides=["fpn.extra_blocks=maxpool"]).feature_info[-1].name == "p5"  # no tensors
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(with_fpn, overrides=["fpn.out_channels=32"])
    assert str(caught.value) == (
        f"backbone.fpn: the FPN of {with_fpn} was saved with other settings (out_channels 16 there, 32 here); keep "
        "them (fpn: {out_channels: 16, extra_blocks: null, style: fpn}, as featx.load does with no override of fpn), "
        "or give fpn: null to take the file's trunk alone"
    )


def _trained_after_reinit(tmp_path):
    """A spec over a torchvision file that re-initialises c4, its backbone "trained" (c4 moved off the fresh draw)
    and saved: ``(spec, backbone, saved file)``."""
    torchvision_file = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), torchvision_file)
    spec = resnet18_spec(weights=str(torchvision_file), reinit=["c4"])
    backbone = featx.build(spec)
    with torch.no_grad():
        for parameter in backbone.stages.c4.parameters():
            parameter.add_(1.0)
    return spec, backbone, featx.save(backbone, tmp_path / "ft.pt")


def _same_values(a, b, prefix):
    return all(
        torch.equal(tensor, b.state_dict()[key]) for key, tensor in a.state_dict().items() if key.startswith(prefix)
    )


def test_a_saved_file_as_weights_of_the_spec_it_came_from_does_not_reinit_its_trained_stages_again(tmp_path):
    """featx.save keeps the spec's reinit: naming the file as weights: of that same spec re-initialised c4 after
    loading it, replacing the trained stage by fresh N(0, 0.01) values without a word (featx.load clears reinit)."""
    spec, backbone, path = _trained_after_reinit(tmp_path)
    with pytest.raises(featx.WeightsError) as caught:
        featx.build({**spec, "weights": str(path)})
    assert str(caught.value) == (
        f"backbone.reinit: {path} was saved from a spec that re-initialises c4 too, and holds its values as trained "
        "after that re-initialisation, which re-initialising again would discard; drop c4 from reinit to keep the "
        f"file's values (reinit=[] keeps every stage as the file holds it, as featx.load('{path}') does), or call "
        "bb.reinit('c4') on the built backbone for fresh ones"
    )
    with pytest.raises(featx.WeightsError, match=r"^backbone\.reinit: .* re-initialises c4 too, and holds its "):
        featx.build({**spec, "weights": str(path), "reinit": ["c3", "c4"]})
    kept = featx.build({**spec, "weights": str(path), "reinit": []})
    assert _same_values(backbone, kept, "") and _same_values(backbone, featx.load(path), "")
    # a stage only the new spec re-initialises (a head on purpose) is drawn afresh; the trained one kept
    head = featx.build({**spec, "weights": str(path), "reinit": ["c3"]})
    assert _same_values(backbone, head, "stages.c4.") and _same_values(backbone, head, "stages.c2.")
    assert not torch.equal(head.stages.c3.layer2[0].conv1.weight, backbone.stages.c3.layer2[0].conv1.weight)


_OWN_KEYS = "a featx Backbone's own, as bb.state_dict() names them: load it with bb.load_state_dict(torch.load(path))"
_DDP_KEYS = (
    "a featx Backbone's own with 'module.' before them, as the state_dict() of a backbone wrapped by "
    "DistributedDataParallel (or DataParallel) names them: load it with bb.load_state_dict({key.removeprefix("
    "'module.'): value for key, value in torch.load(path).items()})"
)


@pytest.mark.parametrize(("prefix", "keys"), [("", _OWN_KEYS), ("module.", _DDP_KEYS)])
def test_load_of_a_backbones_own_state_dict_says_how_to_load_it(tmp_path, prefix, keys):
    """featx.load of torch.save(bb.state_dict()) advised "build a spec with weights: FILE instead", which the build
    then refused (weights: takes the model's own keys, not the Backbone's)."""
    backbone = _trained()
    path = tmp_path / "bb_state.pt"
    torch.save({prefix + key: value for key, value in backbone.state_dict().items()}, path)
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(path)
    assert str(caught.value) == (
        f"load(): path: {path} has no featx spec: it was not written by featx.save (the file's keys are {keys} into "
        "a backbone built from the same spec, or save the backbone with featx.save(bb, path) and load it with "
        "featx.load(path))"
    )
    plain = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), plain)
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(plain)
    assert str(caught.value) == (
        f"load(): path: {plain} has no featx spec: it was not written by featx.save; build a spec with weights: "
        f"{plain} instead"
    )


def test_a_backbones_own_state_dict_in_safetensors_is_told_to_be_read_with_safetensors(tmp_path):
    """The advice for a file of bb.state_dict() said torch.load(path), which cannot read a safetensors file."""
    backbone = featx.build(resnet18_spec())
    path = tmp_path / "bb_state.safetensors"
    save_file(backbone.state_dict(), str(path))
    advice = (
        "(the file's keys are a featx Backbone's own, as bb.state_dict() names them: load it with "
        "bb.load_state_dict(safetensors.torch.load_file(path)) into a backbone built from the same spec, or save the "
        "backbone with featx.save(bb, path) and load it with featx.load(path))"
    )
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(path)
    assert str(caught.value) == (f"load(): path: {path} has no featx spec: it was not written by featx.save {advice}")
    with pytest.raises(featx.WeightsError) as caught:
        featx.build(resnet18_spec(weights=str(path)))
    assert str(caught.value).startswith(f"backbone.weights: {path} does not fit the kept layers — unexpected keys: ")
    assert str(caught.value).endswith(f" {advice}")
    wrapped = tmp_path / "ddp_state.safetensors"
    save_file({"module." + key: value for key, value in backbone.state_dict().items()}, str(wrapped))
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(wrapped)
    assert "value for key, value in safetensors.torch.load_file(path).items()})" in str(caught.value)


def test_load_names_its_path_argument_in_errors_about_the_files_content(tmp_path):
    """featx.load was given no spec key, yet a file that read but did not fit was named backbone.weights."""
    path = featx.save(_trained(), tmp_path / "bb.pt")
    content = torch.load(path, weights_only=True)
    del content["state_dict"]["stages.c4.layer3.1.bn2.bias"]
    torch.save(content, path)
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(path)
    assert str(caught.value) == (
        f"load(): path: {path} does not fit the kept layers — missing keys: stages.c4.layer3.1.bn2.bias (256,) (the "
        "spec saved in the file builds these layers: was the file edited?)"
    )
    whole = featx.save(_trained(), tmp_path / "whole.pt")
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(
            whole, overrides=["stages={c2:{modules:[conv1,bn1,relu,maxpool,layer1,layer2]},c3:{modules:[layer3]}}"]
        )
    assert str(caught.value) == (
        f"load(): path: {whole} was saved by featx.save from a different spec (it differs in stages); rebuild that "
        f"backbone with featx.load('{whole}') and no override of stages"
    )


def test_a_checkpoints_oversized_spec_is_not_called_yaml(tmp_path):
    """The size bound's message said "YAML aliases counted where they are used" of a spec a .pt file holds."""
    path = featx.save(_trained(), tmp_path / "bb.pt")
    content = torch.load(path, weights_only=True)
    content["featx"]["spec"]["notes"] = ["x"] * 20_000
    torch.save(content, path)
    message = (
        f"{path}: backbone: expands to 20060 values (shared lists and mappings counted where they are used), more "
        "than the 10000 a spec may hold; a backbone spec is a few dozen values"
    )
    for make in (lambda: featx.load(path), lambda: featx.build(resnet18_spec(weights=str(path)))):
        with pytest.raises(featx.SpecError) as caught:
            make()
        assert str(caught.value) == message
    spec_file = tmp_path / "big.yaml"  # a YAML file's message names its aliases
    spec_file.write_text("model: resnet18\nreinit: [" + ", ".join(["c4"] * 20_000) + "]\n")
    with pytest.raises(featx.SpecError, match=r"\(YAML aliases counted where they are used\), more than the 10000"):
        featx.build(spec_file)
    shared = ["c4"] * 100  # a mapping given in Python: its shared lists are no YAML aliases
    counted = r"^backbone: expands to 10\d{3} values \(shared lists and mappings counted where they are used\)"
    with pytest.raises(featx.SpecError, match=counted):
        featx.build({"model": "resnet18", "notes": [shared] * 100})


def test_a_safetensors_file_under_a_name_that_is_not_utf8_is_named_so(tmp_path):
    """safetensors opens UTF-8 paths only: its refusal quoted the name with U+FFFD in place of the byte."""
    written = featx.save(featx.build(resnet18_spec()), tmp_path / "bb.safetensors")
    path = Path(os.fsdecode(bytes(tmp_path) + b"/bb\xff.safetensors"))
    written.rename(path)
    reason = f"'{tmp_path}/bb\\xff.safetensors' is not valid UTF-8, and safetensors opens UTF-8 paths only; rename it"
    with pytest.raises(featx.WeightsError) as caught:
        featx.load(path)
    assert str(caught.value) == f"load(): path: {reason}"
    with pytest.raises(featx.WeightsError) as caught:
        featx.build(resnet18_spec(weights=str(path)))
    assert str(caught.value) == f"backbone.weights: {reason}"
