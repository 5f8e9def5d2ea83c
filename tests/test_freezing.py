"""Frozen stages stay frozen at every depth, through train() and optimizer steps; norm policies do what they say."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torchvision
from helpers import randomize_norm_statistics, resnet18_spec
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

import featx


def _norm_state(module: nn.Module):
    return {name: tensor.clone() for name, tensor in module.state_dict().items() if "running" in name}


def _train_steps(backbone, steps: int = 3) -> None:
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    backbone.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        outputs = backbone(torch.randn(4, 3, 64, 64, generator=generator))
        loss = sum(output.square().mean() for output in outputs.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("norm", ["train", "eval", "frozen"])
def test_frozen_stages_are_bit_identical_after_training_steps(norm):
    torch.manual_seed(0)
    backbone = featx.build(resnet18_spec(frozen_stages=2, norm=norm))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = {k: v.clone() for k, v in backbone.eval()(x).items()}
    frozen_stats = {name: _norm_state(backbone.stages[name]) for name in ("c2", "c3")}
    _train_steps(backbone)
    with torch.no_grad():
        after = backbone.eval()(x)
    assert torch.equal(before["c2"], after["c2"]) and torch.equal(before["c3"], after["c3"])
    assert not torch.equal(before["c4"], after["c4"])
    for name, stats in frozen_stats.items():
        for key, value in _norm_state(backbone.stages[name]).items():
            assert torch.equal(stats[key], value), f"{name}.{key} changed"


def test_freezing_reaches_every_parameter_at_any_depth():
    backbone = featx.build(resnet18_spec(frozen_stages=2, norm="train"))
    for name in ("c2", "c3"):
        parameters = dict(backbone.stages[name].named_parameters())
        assert parameters and not any(p.requires_grad for p in parameters.values()), name
    nested = backbone.stages["c2"].layer1[0].conv2.weight  # inside a BasicBlock, two levels down
    assert nested.requires_grad is False
    assert all(p.requires_grad for p in backbone.stages["c4"].parameters())


def test_frozen_stages_stay_in_eval_mode_after_train():
    backbone = featx.build(resnet18_spec(frozen_stages=2, norm="train")).train()
    assert all(not m.training for m in backbone.stages["c2"].modules())
    assert all(not m.training for m in backbone.stages["c3"].modules())
    assert all(m.training for m in backbone.stages["c4"].modules())
    backbone.eval()
    assert not any(m.training for m in backbone.modules())


@pytest.mark.parametrize("mode", ["no", 0, None])
def test_train_takes_a_bool_and_names_anything_else(mode):
    """torch's "training mode is expected to be boolean" came from inside nn.Module, through featx's train()."""
    backbone = featx.build(resnet18_spec(frozen_stages=1, norm="train")).eval()
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.train(mode)
    assert str(caught.value) == f"train(): mode must be True or False, got {mode!r}"
    assert isinstance(caught.value, ValueError)  # what torch raises: callers catching it still do
    assert not any(m.training for m in backbone.modules())


def test_a_graph_made_from_a_backbone_keeps_the_eval_modes_once_the_backbone_trains():
    """docs/python.md: a create_feature_extractor graph's train() is nn.Module's and puts the shared layers in
    training mode; the backbone's train() after it puts frozen stages and norm: eval layers back in eval mode."""
    backbone = featx.build(resnet18_spec(frozen_stages=1, norm="eval"))
    graph = create_feature_extractor(backbone, return_nodes={"stages.c4": "c4"})
    graph.train()
    assert all(m.training for m in backbone.stages["c2"].modules() if isinstance(m, _BatchNorm))  # the docs' warning
    backbone.train()
    assert not any(m.training for m in backbone.stages["c2"].modules())
    assert not any(m.training for m in backbone.modules() if isinstance(m, _BatchNorm))
    before = _norm_state(backbone)
    graph(torch.randn(2, 3, 64, 64))["c4"].sum().backward()
    assert all(torch.equal(before[k], v) for k, v in _norm_state(backbone).items())


def test_norm_train_updates_statistics_of_trainable_stages():
    backbone = featx.build(resnet18_spec(frozen_stages=2, norm="train"))
    before = _norm_state(backbone.stages["c4"])
    _train_steps(backbone, steps=1)
    after = _norm_state(backbone.stages["c4"])
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_norm_eval_keeps_statistics_but_trains_the_affine_parameters():
    backbone = featx.build(resnet18_spec(frozen_stages=0, norm="eval")).train()
    layers = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert layers and all(type(m) is nn.BatchNorm2d and not m.training for m in layers)
    assert all(m.weight.requires_grad for m in layers)
    before = _norm_state(backbone)
    weight_before = layers[-1].weight.detach().clone()
    _train_steps(backbone, steps=2)
    assert all(torch.equal(before[k], v) for k, v in _norm_state(backbone).items())
    assert not torch.equal(weight_before, layers[-1].weight)


def test_norm_frozen_replaces_every_batchnorm_with_frozen_batchnorm():
    backbone = featx.build(resnet18_spec(norm="frozen"))
    assert not any(isinstance(m, _BatchNorm) for m in backbone.modules())
    # resnet18 up to layer3: bn1 + 2 per BasicBlock (6 blocks) + 2 downsample norms
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules()) == 1 + 12 + 2


def test_norm_sync_converts_to_sync_batchnorm():
    backbone = featx.build(resnet18_spec(norm="sync"))
    layers = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert layers and all(isinstance(m, nn.SyncBatchNorm) for m in layers)
    plain = featx.build(resnet18_spec(norm="train")).eval()  # same seed: the same weights, plain BatchNorm
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # inference needs no process group, and in eval mode SyncBatchNorm is BatchNorm
        outputs, expected = backbone.eval()(image), plain(image)
    assert all(torch.equal(outputs[name], expected[name]) for name in expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_hand_made_backbone_freezes_norms_in_the_models_own_dtype(dtype):
    """norm: frozen made FrozenBatchNorm2d in torch's default dtype: a float64 model's statistics were rounded to
    float32 (outputs off by 1e-6), a float16 model's forward failed with torch's raw dtype RuntimeError."""
    model = randomize_norm_statistics(torchvision.models.resnet18()).to(dtype).eval()
    stages = {"c2": torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)}
    reference = copy.deepcopy(stages["c2"]).double()  # torchvision's BatchNorm2d in float64
    built = featx.build(resnet18_spec(stages={"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}}))
    spec = dataclasses.replace(built.spec, norm="frozen")
    backbone = featx.Backbone(stages, list(built.stage_info), spec).eval()
    frozen = backbone.stages["c2"][1]
    assert isinstance(frozen, FrozenBatchNorm2d) and frozen.running_var.dtype == dtype
    assert torch.equal(frozen.running_var, reference[1].running_var)
    x = torch.randn(1, 3, 64, 64, dtype=dtype)
    got, want = backbone(x)["c2"], reference(x.double())
    assert got.dtype == dtype
    tolerance = 1e-12 if dtype == torch.float64 else 0.05  # float16's rounding; float32 statistics were 1e-6 off
    torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance)
