"""featx.save / featx.load: checkpoints that rebuild themselves; safetensors files as weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, resnet18_spec
from safetensors.torch import save_file

import featx


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


def test_saved_checkpoint_holds_plain_data_readable_with_weights_only(tmp_path):
    path = featx.save(_trained(), tmp_path / "bb.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["featx"]["spec"]["model"] == "resnet18"
    assert set(payload["featx"]["versions"]) == {"featx", "torch", "torchvision"}


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
    assert "was saved by featx.save from a different spec (it differs in fpn)" in str(caught.value)
    assert "shape mismatches: neck.inner_blocks.0.0.weight checkpoint (16, 64, 1, 1) vs model (32, 64, 1, 1)" in str(
        caught.value
    )
    assert f"featx.load('{path}')" in str(caught.value)


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


def test_load_overrides_apply(tmp_path):
    path = featx.save(_trained(), tmp_path / "bb.pt")
    assert featx.load(path, overrides=["device=cpu", "frozen_stages=3"]).frozen_stage_names == ("c2", "c3", "c4")


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
