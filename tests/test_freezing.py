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


def test_a_graph_made_from_a_backbone_keeps_its_eval_modes():
    """create_feature_extractor ends with nn.Module's train() on the graph, which shares the backbone's layers: it
    put frozen stages and norm: eval layers in training mode, so the first graph forward changed the frozen
    stage's BatchNorm statistics, without a train() call of the user's. They stay in eval mode now, through the
    graph's creation, its own train(), and a training step through it."""
    backbone = featx.build(resnet18_spec(frozen_stages=1, norm="eval")).eval()
    graph = create_feature_extractor(backbone, return_nodes={"stages.c4": "c4"})
    assert not any(m.training for m in backbone.modules())
    backbone.train()
    graph = create_feature_extractor(backbone, return_nodes={"stages.c4": "c4"})  # made in training mode
    graph.train()
    assert not any(m.training for m in backbone.stages["c2"].modules())
    assert not any(m.training for m in backbone.modules() if isinstance(m, _BatchNorm))
    assert backbone.stages["c3"].layer2[0].conv1.training  # the trainable stage's other layers follow train()
    before = _norm_state(backbone)
    graph(torch.randn(2, 3, 64, 64))["c4"].sum().backward()
    assert all(torch.equal(before[k], v) for k, v in _norm_state(backbone).items())


def test_a_frozen_stage_stays_in_eval_mode_whoever_calls_train():
    """A parent module's train() (a detector holding the backbone), the stage's own, or torch's class method
    reached through nn.Sequential: frozen layers stay in eval mode, so a frozen stage's stochastic depth stays off
    (EfficientNet-B0 as packaged, c2 frozen: its output changed on every forward once a graph was made)."""
    backbone = featx.build("efficientnet_b0", overrides=["device=cpu", "frozen_stages=1"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = backbone.eval()(x)["c2"]
    nn.Sequential(backbone).train()
    backbone.stages["c2"].train()
    create_feature_extractor(backbone, return_nodes={"stages.c3": "c3"})
    assert backbone.stages["c3"].training and not any(m.training for m in backbone.stages["c2"].modules())
    with torch.no_grad():
        assert all(torch.equal(backbone(x)["c2"], expected) for _ in range(3))
    backbone.unfreeze("c2")  # unfrozen, it follows train() again (StochasticDepth on: its output varies)
    assert backbone.stages["c2"].training
    assert any(type(m).__name__ == "StochasticDepth" and m.training for m in backbone.stages["c2"].modules())
    backbone.freeze("c2")
    assert not any(m.training for m in backbone.stages["c2"].modules())
    with pytest.raises(ValueError, match="^training mode is expected to be boolean$"):  # torch's refusal, kept
        backbone.stages["c2"].train("no")


def test_kept_eval_modes_survive_deepcopy_and_pickle():
    """A copy's frozen layers are pinned to eval mode themselves (not through the original's layers)."""
    import pickle

    backbone = featx.build(resnet18_spec(frozen_stages=1, norm="eval"))
    for copied in (copy.deepcopy(backbone), pickle.loads(pickle.dumps(backbone))):
        for layer in copied.modules():
            layer.training = True  # by hand, where train() is not asked
        nn.Sequential(copied).train()
        assert not any(m.training for m in copied.stages["c2"].modules())
        assert not any(m.training for m in copied.modules() if isinstance(m, _BatchNorm))
        assert copied.stages["c3"].layer2[0].conv1.training


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
