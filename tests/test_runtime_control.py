"""Training-time control: freeze/unfreeze, per-stage learning rates, re-initialisation."""

from __future__ import annotations

import copy
import gc
import itertools
import multiprocessing
import pickle
import threading
import weakref

import pytest
import torch
from helpers import resnet18_spec
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

import featx
from featx.construct import builder
from featx.nn.reinit import reinit_


def _trainable_stages(backbone):
    return [name for name, stage in backbone.stages.items() if any(p.requires_grad for p in stage.parameters())]


def test_progressive_unfreezing():
    backbone = featx.build(resnet18_spec(frozen_stages=3, norm="train")).train()
    assert _trainable_stages(backbone) == [] and backbone.frozen_stage_names == ("c2", "c3", "c4")
    backbone.unfreeze("c4")
    assert _trainable_stages(backbone) == ["c4"] and backbone.frozen_stage_names == ("c2", "c3")
    assert all(m.training for m in backbone.stages["c4"].modules())
    assert not any(m.training for m in backbone.stages["c3"].modules())
    backbone.unfreeze()
    assert _trainable_stages(backbone) == ["c2", "c3", "c4"] and backbone.frozen_stage_names == ()
    backbone.freeze("c2")
    assert _trainable_stages(backbone) == ["c3", "c4"]
    assert not any(m.training for m in backbone.stages["c2"].modules())
    backbone.freeze()
    assert _trainable_stages(backbone) == [] and backbone.frozen_stage_names == ("c2", "c3", "c4")


def test_freezing_while_in_eval_mode_survives_train():
    backbone = featx.build(resnet18_spec(norm="train")).eval()
    backbone.freeze("c3")
    backbone.train()
    assert not any(m.training for m in backbone.stages["c3"].modules())
    assert all(m.training for m in backbone.stages["c4"].modules())


def test_unfreeze_follows_the_norm_policy():
    frozen = featx.build(resnet18_spec(frozen_stages=3, norm="frozen")).unfreeze().train()
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert not any(isinstance(m, _BatchNorm) for m in frozen.modules())  # nothing left that could train
    evaluated = featx.build(resnet18_spec(frozen_stages=3, norm="eval")).unfreeze().train()
    norms = [m for m in evaluated.modules() if isinstance(m, _BatchNorm)]
    assert all(m.weight.requires_grad and not m.training for m in norms)
    trained = featx.build(resnet18_spec(frozen_stages=3, norm="train")).unfreeze().train()
    assert all(m.weight.requires_grad and m.training for m in trained.modules() if isinstance(m, _BatchNorm))


def test_unknown_stage_names_are_an_argument_error():
    backbone = featx.build(resnet18_spec())
    with pytest.raises(featx.ArgumentError) as caught:
        backbone.freeze("c5")
    assert str(caught.value) == "freeze(): unknown stage 'c5' (stages: c2, c3, c4)"
    with pytest.raises(featx.ArgumentError, match=r"unfreeze\(\): unknown stage 'c22'; did you mean c2\?"):
        backbone.unfreeze("c22")
    with pytest.raises(featx.ArgumentError, match=r"reinit\(\): name at least one stage"):
        backbone.reinit()


def test_param_groups_decay_towards_shallow_stages_and_skip_frozen():
    backbone = featx.build(resnet18_spec(frozen_stages=1, fpn={"out_channels": 16}))
    groups = backbone.param_groups(0.1, decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [("c3", 0.05), ("c4", 0.1), ("neck", 0.1)]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in backbone.parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(groups, lr=1.0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.1, 0.1]
    unfrozen = featx.build(resnet18_spec()).param_groups(1.0, decay=0.5)
    assert [(g["name"], g["lr"]) for g in unfrozen] == [("c2", 0.25), ("c3", 0.5), ("c4", 1.0)]


def test_no_stage_may_take_the_necks_name():
    """param_groups() names the neck's group "neck": a stage of that name would make two groups of one name."""
    stages = {"c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "neck": {"modules": ["layer2"]}}
    with pytest.raises(
        featx.SpecError,
        match=r"^backbone\.stages\.neck: 'neck' is the name of the neck's parameter group \(param_groups\(\)\) and of "
        r"its modules \(backbone\.neck\); give the stage another name$",
    ):
        featx.build(resnet18_spec(stages=stages, fpn={"out_channels": 16}))


@pytest.mark.parametrize("name", ["training", "keys", "forward", "_modules"])
def test_no_stage_may_take_a_name_of_the_stages_container(name):
    """backbone.stages is an nn.ModuleDict: torch raised a raw KeyError for a stage named like one of its attributes."""
    stages = {name: {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]}, "c3": {"modules": ["layer2"]}}
    pattern = rf"^backbone\.stages\.{name}: '{name}' is a name of nn\.ModuleDict's own \(backbone\.stages holds the "
    with pytest.raises(featx.SpecError, match=pattern + r"stages\); give the stage another name$"):
        featx.build(resnet18_spec(stages=stages))


def test_param_groups_reject_bad_rates():
    with pytest.raises(featx.ArgumentError, match=r"^param_groups\(\): lr must be a positive finite number, got 0\.0$"):
        featx.build(resnet18_spec()).param_groups(0.0)


def test_reinit_resets_convs_and_norms_of_the_named_stages_only():
    torch.manual_seed(0)
    backbone = featx.build(resnet18_spec(norm="train"))
    untouched = {k: v.clone() for k, v in backbone.stages["c3"].state_dict().items()}
    backbone.reinit("c4")
    convs = [m for m in backbone.stages["c4"].modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([conv.weight.flatten() for conv in convs])
    assert abs(weights.std().item() - 0.01) < 0.001 and abs(weights.mean().item()) < 0.001
    norms = [m for m in backbone.stages["c4"].modules() if isinstance(m, _BatchNorm)]
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(
            norm.bias, torch.zeros_like(norm.bias)
        )
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    assert all(torch.equal(v, backbone.stages["c3"].state_dict()[k]) for k, v in untouched.items())


def _fill_statistics(module):
    """Running statistics like trained ones (a fresh build's are the reset values themselves)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, _BatchNorm):
                layer.running_mean.fill_(0.3)
                layer.running_var.fill_(2.0)


def _assert_reset(stage):
    norms = [m for m in stage.modules() if isinstance(m, _BatchNorm)]
    assert norms
    for norm in norms:
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean)), norm
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var)), norm
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)), norm


@pytest.mark.parametrize(("norm", "frozen_stages"), [("eval", 0), ("train", 3)])
def test_reinit_resets_the_statistics_of_layers_kept_in_eval(norm, frozen_stages):
    """A BatchNorm layer featx keeps in eval (norm: eval, a frozen stage) has a no-op reset_running_stats (for
    update_bn); reinit went through it and kept the pretrained statistics, which such a layer never updates."""
    backbone = featx.build(resnet18_spec(norm=norm, frozen_stages=frozen_stages))
    _fill_statistics(backbone)
    backbone.reinit("c4")
    _assert_reset(backbone.stages["c4"])
    assert torch.all(backbone.stages["c3"][0][0].bn1.running_var == 2.0)  # the other stages keep theirs


def test_reinit_resets_the_statistics_of_timms_batchnorm_kept_under_norm_frozen():
    """timm's BatchNormAct2d stays a BatchNorm under norm: frozen (the packaged timm backbones' policy)."""
    timm = pytest.importorskip("timm")
    backbone = featx.build("timm_efficientnet_b0", overrides=["device=cpu", "out_features=[c2]"])
    _fill_statistics(backbone)
    backbone.reinit("c2")
    assert any(isinstance(m, timm.layers.BatchNormAct2d) for m in backbone.stages["c2"].modules())
    _assert_reset(backbone.stages["c2"])


def test_reinit_resets_the_attention_projections_of_a_vit_stage():
    """nn.MultiheadAttention holds its query/key/value projection as plain tensors (in_proj_weight, in_proj_bias),
    not as an nn.Linear: reinit resets them like any linear."""
    backbone = featx.build("vit_b_16", overrides=["device=cpu"])
    attentions = [m for m in backbone.stages["blocks4"].modules() if isinstance(m, nn.MultiheadAttention)]
    with torch.no_grad():
        for attention in attentions:  # values like trained ones, so that a reset shows
            attention.in_proj_weight.fill_(0.5)
            attention.in_proj_bias.fill_(0.5)
    backbone.reinit("blocks4")
    weights = torch.cat([attention.in_proj_weight.flatten() for attention in attentions])
    assert len(attentions) == 3 and abs(weights.std().item() - 0.01) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(torch.equal(a.in_proj_bias, torch.zeros_like(a.in_proj_bias)) for a in attentions)


def test_reinit_draws_the_expert_kernels_of_timms_condconv():
    """timm's CondConv2d (efficientnet_cc_*) is a plain nn.Module holding one kernel per expert: reinit left it as it
    was while the plain convs beside it were drawn from N(0, 0.01)."""
    timm = pytest.importorskip("timm")
    backbone = featx.build(featx.propose("timm:efficientnet_cc_b0_4e"), overrides=["device=cpu"])
    last = list(backbone.stages)[-1]
    layers = [m for m in backbone.stages[last].modules() if isinstance(m, timm.layers.CondConv2d)]
    before = [layer.weight.clone() for layer in layers]
    backbone.reinit(last)
    weights = torch.cat([layer.weight.flatten() for layer in layers])
    assert layers and not any(torch.equal(a, layer.weight) for a, layer in zip(before, layers, strict=True))
    assert abs(weights.std().item() - 0.01) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(layer.bias is None or not layer.bias.any() for layer in layers)


def test_reinit_restores_the_init_of_timms_norm_layers():
    """ConvNeXt-V2's GlobalResponseNorm (x + weight * N(x) + bias) starts at zero (timm's init); it kept its values."""
    timm = pytest.importorskip("timm")
    from timm.layers.grn import GlobalResponseNorm

    backbone = featx.build(featx.propose("timm:convnextv2_atto"), overrides=["device=cpu"])
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.fill_(0.5)
    backbone.reinit(*backbone.stages)
    grns = [m for m in backbone.modules() if isinstance(m, GlobalResponseNorm)]
    fresh = GlobalResponseNorm(grns[0].weight.numel())  # timm's init of the layer
    assert grns and all(torch.equal(g.weight, torch.zeros_like(g.weight)) for g in grns)
    assert torch.equal(fresh.weight, torch.zeros_like(fresh.weight)) and torch.equal(fresh.bias, grns[0].bias)
    norms = [m for m in backbone.modules() if isinstance(m, timm.layers.LayerNorm2d)]
    assert norms and all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in norms)


def test_reinit_resets_instance_norms():
    layer = nn.Sequential(nn.InstanceNorm2d(4, affine=True))
    with torch.no_grad():
        layer[0].weight.fill_(0.5)
    reinit_(layer)
    assert torch.equal(layer[0].weight, torch.ones(4))


def test_reinit_in_the_spec_applies_after_loading_weights(tmp_path):
    import torchvision

    classifier = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(classifier.state_dict(), path)
    backbone = featx.build(resnet18_spec(weights=str(path), reinit=["c4"], norm="frozen"))
    assert torch.equal(backbone.stages["c3"].layer2[0].conv1.weight, classifier.layer2[0].conv1.weight)
    reinitialised = backbone.stages["c4"].layer3[0].conv1.weight
    assert not torch.equal(reinitialised, classifier.layer3[0].conv1.weight)
    assert abs(reinitialised.std().item() - 0.01) < 0.002
    frozen_norm = backbone.stages["c4"].layer3[0].bn1
    assert isinstance(frozen_norm, FrozenBatchNorm2d) and torch.equal(frozen_norm.running_var, torch.ones(256))


def test_reinit_of_an_unknown_or_dropped_stage_is_a_spec_error():
    with pytest.raises(featx.SpecError, match=r"backbone\.reinit\[0\]: 'c5' is not a kept stage"):
        featx.load_spec(resnet18_spec(reinit=["c5"]))
    with pytest.raises(featx.SpecError, match=r"backbone\.reinit\[0\]: 'c4' is not a kept stage"):
        featx.load_spec(resnet18_spec(reinit=["c4"], out_features=["c3"]))


def test_requires_grad_alone_changes_parameters_not_modes():
    """As in PyTorch, requires_grad_ fixes parameters and leaves train()/eval() alone: update_bn, EMA teachers and
    target networks recompute BatchNorm statistics of a network whose parameters are all fixed. freeze() is what
    also keeps a stage in eval mode."""
    backbone = featx.build(resnet18_spec(frozen_stages=1, norm="train"))
    backbone.requires_grad_(False).train()
    assert backbone.frozen_stage_names == ("c2",)
    assert [stage.training for stage in backbone.stages.values()] == [False, True, True]
    torch.optim.swa_utils.update_bn([torch.randn(2, 3, 64, 64)], backbone)
    fresh = featx.build(resnet18_spec(frozen_stages=1, norm="train"))
    assert not torch.equal(backbone.stages["c3"][0][0].bn1.running_mean, fresh.stages["c3"][0][0].bn1.running_mean)
    assert torch.equal(backbone.stages["c2"][1].running_mean, fresh.stages["c2"][1].running_mean)  # frozen: fixed


@pytest.mark.parametrize(("norm", "frozen_stages"), [("train", 2), ("eval", 0), ("sync", 1)])
def test_update_bn_keeps_the_statistics_of_layers_kept_in_eval(norm, frozen_stages):
    """update_bn resets every BatchNorm's statistics, then calls train() to recompute them: a layer featx keeps in
    eval (a frozen stage's, every one with norm: eval) was never recomputed and stayed at mean 0, variance 1. The
    check above compared with a fresh build, whose statistics are those very values."""
    backbone = featx.build(resnet18_spec(frozen_stages=frozen_stages, norm=norm))
    with torch.no_grad():
        for layer in backbone.modules():
            if isinstance(layer, _BatchNorm):
                layer.running_mean.fill_(0.3)
                layer.running_var.fill_(2.0)
    torch.optim.swa_utils.update_bn([torch.randn(4, 3, 64, 64) for _ in range(2)], backbone)
    for name, stage in backbone.stages.items():
        kept = name in backbone.frozen_stage_names or norm == "eval"
        for layer in stage.modules():
            if isinstance(layer, _BatchNorm):
                assert torch.all(layer.running_mean == 0.3) == kept, (name, layer)
                assert torch.all(layer.running_var == 2.0) == kept, (name, layer)
    backbone.unfreeze()  # a stage unfrozen follows update_bn again (norm: train, sync)
    torch.optim.swa_utils.update_bn([torch.randn(4, 3, 64, 64)], backbone)
    assert torch.all(backbone.stages["c2"][1].running_mean == 0.3) == (norm == "eval")


def test_update_bn_keeps_the_statistics_of_frozen_layers_converted_to_syncbatchnorm():
    """convert_sync_batchnorm replaces every BatchNorm layer by a new one: the protection against update_bn's reset
    was on the old layers, and the frozen stages' statistics were reset to 0 / 1 for good. train() (which every
    training loop calls, and update_bn too, after its reset) puts it on the new ones."""
    backbone = featx.build(resnet18_spec(frozen_stages=2, norm="train"))
    _fill_statistics(backbone)
    backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone).train()
    torch.optim.swa_utils.update_bn([torch.randn(4, 3, 64, 64) for _ in range(2)], backbone)
    assert isinstance(backbone.stages["c2"][1], nn.SyncBatchNorm)
    assert torch.all(backbone.stages["c2"][1].running_var == 2.0)  # frozen: kept
    assert torch.all(backbone.stages["c3"][0][0].bn1.running_var == 2.0)
    assert not torch.all(backbone.stages["c4"][0][0].bn1.running_var == 2.0)  # trainable: recomputed


@pytest.mark.parametrize("norm", ["train", "sync"])
def test_syncbatchnorm_off_the_gpu_in_a_process_group_names_what_made_it(tmp_path, norm):
    """SyncBatchNorm layers a user added with convert_sync_batchnorm to a norm: train backbone, training on the CPU in
    a process group, were refused as "backbone.norm: sync: ...; use norm: train, eval or frozen off the GPU": a spec
    value never set, and advice to use the norm already in use. Only norm: sync names the spec's key."""
    import torch.distributed as dist

    backbone = featx.build(resnet18_spec(frozen_stages=1, norm=norm))
    if norm == "train":
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    backbone.train()
    x = torch.randn(2, 3, 32, 32)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        with pytest.raises(featx.FeatxError) as caught:
            backbone(x)
    finally:
        dist.destroy_process_group()
    if norm == "sync":
        assert type(caught.value) is featx.SpecError
        assert str(caught.value) == (
            "backbone.norm: sync: stage 'c3' synchronises its BatchNorm statistics across processes, which torch does "
            "on CUDA devices only, and the input is on cpu; use norm: train, eval or frozen off the GPU"
        )
        return
    assert type(caught.value) is featx.DeviceError
    assert str(caught.value) == (
        "featx backbone 'resnet18': stage 'c3' has SyncBatchNorm layers the spec did not make (its norm is train; "
        "nn.SyncBatchNorm.convert_sync_batchnorm makes them), which synchronise their "
        "statistics across processes on CUDA devices only, and the input is on cpu; convert only a backbone that "
        "trains on the GPU, or run these layers in eval mode"
    )
    backbone.stages["c3"].eval()  # what the message says works: the frozen c2 is in eval mode already
    backbone.stages["c4"].eval()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'again'}", rank=0, world_size=1)
    try:
        outputs = backbone(x)
    finally:
        dist.destroy_process_group()
    assert [tuple(output.shape) for output in outputs.values()] == [(2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]


def test_a_resumed_optimizer_gets_its_groups_back_in_the_order_it_saved_them(tmp_path):
    """Unfreezing adds the stage's group at the end of the optimizer; a resume built the groups in stage order, and
    torch matches saved groups by position: learning rates and AdamW's moments went to other stages (a shape error
    at the first step, or a silently wrong run with SGD). names= rebuilds them in the saved order."""
    x = torch.randn(2, 3, 64, 64)

    def step(backbone, optimizer):
        optimizer.zero_grad()
        sum(o.mean() for o in backbone(x).values()).backward()
        optimizer.step()

    first = featx.build(resnet18_spec(frozen_stages=2, norm="eval")).train()
    opt = torch.optim.AdamW(first.param_groups(0.1, decay=0.5))
    step(first, opt)
    first.unfreeze("c3")
    opt.add_param_group(next(g for g in first.param_groups(0.1, decay=0.5) if g["name"] == "c3"))
    step(first, opt)
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    saved = torch.load(tmp_path / "optimizer.pt")
    assert [g["name"] for g in saved["param_groups"]] == ["c4", "c3"]  # torch keeps each group's name
    second = featx.build(resnet18_spec(frozen_stages=2, norm="eval")).train()
    second.load_state_dict(first.state_dict())
    second.unfreeze("c3")
    assert [g["name"] for g in second.param_groups(0.1, decay=0.5)] == ["c3", "c4"]  # stage order
    resumed = torch.optim.AdamW(second.param_groups(0.1, 0.5, names=[g["name"] for g in saved["param_groups"]]))
    resumed.load_state_dict(saved)
    assert [(g["name"], g["lr"]) for g in resumed.param_groups] == [("c4", 0.1), ("c3", 0.05)]
    step(first, opt)
    step(second, resumed)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_param_groups_names_may_be_any_iterable_of_names():
    backbone = featx.build(resnet18_spec(frozen_stages=1))
    assert [g["name"] for g in backbone.param_groups(0.1, names=(n for n in ["c4", "c3"]))] == ["c4", "c3"]


@pytest.mark.parametrize(
    "names, message",
    [
        (["c9"], r"no group 'c9': the groups are those with trainable parameters \(c3, c4\)"),
        (["c2"], r"no group 'c2'.*unfreeze a stage before naming it"),
        (["c3", "c3"], r"names lists a group twice: \['c3', 'c3'\]"),
        ("c3", r"names must be a list of group names such as \['c3', 'c4'\]"),
        (5, r"names must be a list of group names such as \['c3', 'c4'\]"),  # was a raw TypeError
        ({"c3": 1}, r"names must be a list of group names such as \['c3', 'c4'\]"),  # its keys were taken
        (b"c3", r"names must be a list of group names such as \['c3', 'c4'\]"),
        ({"c3", "c4"}, r"names must be a list .* in the order the groups are wanted .*got set"),  # order per process
        (itertools.repeat("c3"), r"names lists a group twice: \['c3', 'c3', 'c3'\]$"),  # list() filled the memory
    ],
)
def test_param_groups_names_are_checked(names, message):
    backbone = featx.build(resnet18_spec(frozen_stages=1))
    with pytest.raises(featx.ArgumentError, match=rf"^param_groups\(\): {message}"):
        backbone.param_groups(0.1, names=names)


@pytest.mark.parametrize(
    ("lr", "decay", "message"),
    [
        (
            1e300,
            1e300,
            r"lr=1e\+300 with decay=1e\+300 gives stage 'c3' a learning rate of inf; choose a decay nearer 1",
        ),
        (1e-300, 1e-300, r"lr=1e-300 with decay=1e-300 gives stage 'c3' a learning rate of 0\.0"),
        (10**400, 1.0, r"lr must be a positive finite number, got 1000"),  # was a raw OverflowError
        (1.0, 10**400, r"decay must be a positive finite number, got 1000"),
    ],
)
def test_param_groups_learning_rates_stay_finite_and_positive(lr, decay, message):
    backbone = featx.build(resnet18_spec(frozen_stages=1))
    with pytest.raises(featx.ArgumentError, match=rf"^param_groups\(\): {message}"):
        backbone.param_groups(lr, decay)


def test_param_groups_take_numpy_numbers():
    np = pytest.importorskip("numpy")
    backbone = featx.build(resnet18_spec(frozen_stages=1))
    groups = backbone.param_groups(np.float32(0.5), decay=np.float64(0.5))
    assert [(group["name"], group["lr"]) for group in groups] == [("c3", 0.25), ("c4", 0.5)]
    neck = featx.build(resnet18_spec(fpn={"out_channels": 8})).param_groups(np.float32(0.5))[-1]
    assert neck["name"] == "neck" and type(neck["lr"]) is float and neck["lr"] == 0.5


def test_freeze_and_unfreeze_change_the_modes_of_the_named_stages_only():
    """freeze()/unfreeze() ended in train(self.training), which put back in training mode every module the user had
    put in eval by hand (another stage's BatchNorm, the neck): their statistics then moved on the next forward."""
    backbone = featx.build(resnet18_spec(norm="train", fpn={"out_channels": 16})).train()
    kept_by_hand = backbone.stages["c4"][0][0].bn1.eval()
    backbone.neck.eval()
    statistics = kept_by_hand.running_mean.clone()
    backbone.freeze("c3")
    assert not any(m.training for m in backbone.stages["c3"].modules())
    assert not kept_by_hand.training and not backbone.neck.training
    assert all(m.training for m in backbone.stages["c2"].modules())
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(kept_by_hand.running_mean, statistics)
    backbone.unfreeze("c3")
    assert all(m.training for m in backbone.stages["c3"].modules())  # the backbone trains: so does c3 again
    assert not kept_by_hand.training and not backbone.neck.training
    evaluated = featx.build(resnet18_spec(norm="eval", frozen_stages=1)).train().unfreeze("c2")
    assert all(m.training != isinstance(m, _BatchNorm) for m in evaluated.stages["c2"].modules())  # norm: eval
    assert not featx.build(resnet18_spec(frozen_stages=1)).eval().unfreeze("c2").stages["c2"].training


def test_freeze_drops_the_gradients_so_an_optimizer_moves_nothing_frozen():
    """freeze() during training left each parameter's zeroed .grad: with zero_grad(set_to_none=False), SGD's
    momentum and weight decay kept moving the "frozen" stages."""
    backbone = featx.build(resnet18_spec(norm="train")).train()
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)

    def step():
        optimizer.zero_grad(set_to_none=False)
        sum(t.mean() for t in backbone(torch.randn(2, 3, 64, 64)).values()).backward()
        optimizer.step()

    step()
    backbone.freeze("c2", "c3")
    before = {name: p.detach().clone() for name, p in backbone.named_parameters() if not p.requires_grad}
    assert before and all(backbone.get_parameter(name).grad is None for name in before)
    step()
    step()
    assert all(torch.equal(backbone.get_parameter(name), value) for name, value in before.items())


@pytest.mark.parametrize(("norm", "frozen_stages"), [("eval", 0), ("train", 1)])
def test_reset_parameters_of_a_layer_kept_in_eval_resets_its_statistics_as_torchs_does(norm, frozen_stages):
    """A layer kept in eval has a no-op reset_running_stats (for update_bn); torch's reset_parameters calls it, so a
    model re-initialised with reset_parameters() kept its old statistics beside a reset affine."""
    backbone = featx.build(resnet18_spec(norm=norm, frozen_stages=frozen_stages))
    _fill_statistics(backbone)
    layer = backbone.stages["c2"][1]
    with torch.no_grad():
        layer.weight.fill_(0.5)
    layer.reset_parameters()
    plain = nn.BatchNorm2d(layer.num_features)
    plain.running_mean.fill_(0.3)
    plain.reset_parameters()
    assert all(torch.equal(value, plain.state_dict()[key]) for key, value in layer.state_dict().items())
    for copied in (copy.deepcopy(backbone), pickle.loads(pickle.dumps(backbone))):  # its own layer, not the original's
        copied_layer = copied.stages["c2"][1]
        with torch.no_grad():
            copied_layer.running_var.fill_(2.0)
        copied_layer.reset_parameters()
        assert torch.all(copied_layer.running_var == 1.0)
    layer.running_var.fill_(2.0)
    torch.optim.swa_utils.update_bn([torch.randn(2, 3, 64, 64)], backbone)  # update_bn's reset still keeps them
    assert torch.all(layer.running_var == 2.0)


def test_a_dropped_backbone_frees_its_norm_layers_without_the_cycle_collector():
    """The reset_parameters featx gives a layer kept in eval referred to the layer itself: after `del bb` the layers
    and their tensors (GPU memory too) lived on until the cycle collector ran."""
    backbone = featx.build(resnet18_spec(norm="eval"))
    layers = [weakref.ref(m) for m in backbone.modules() if isinstance(m, _BatchNorm)]
    enabled = gc.isenabled()
    gc.disable()
    try:
        del backbone
        assert layers and all(layer() is None for layer in layers)
    finally:
        if enabled:
            gc.enable()


def test_reinit_resets_a_layer_pickled_by_an_earlier_featx():
    """A layer with featx's no-op reset_running_stats but without its reset_parameters (a whole backbone pickled by
    an earlier featx) kept its statistics through reinit."""
    backbone = featx.build(resnet18_spec(norm="eval"))
    _fill_statistics(backbone)
    layer = backbone.stages["c2"][1]
    del layer.reset_parameters  # as the earlier featx left it: only reset_running_stats replaced
    backbone.reinit("c2")
    assert torch.all(layer.running_var == 1.0) and torch.all(layer.running_mean == 0.0)


def test_editing_bb_spec_builds_a_variant_and_leaves_the_backbone_as_built(tmp_path):
    """bb.spec was the backbone's own mutable object, read by train() and featx.save: ``variant = bb.spec;
    variant.norm = "train"`` (to build a variant) made a backbone built with norm: eval update its BatchNorm
    statistics in training mode, and save wrote norm: train for it."""
    backbone = featx.build(resnet18_spec(norm="eval", frozen_stages=0))
    variant = backbone.spec
    variant.norm = "train"
    assert backbone.spec.norm == "eval" and featx.build(variant).spec.norm == "train"
    statistics = {name: buffer.clone() for name, buffer in backbone.named_buffers() if "running" in name}
    backbone.train()(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(buffer, statistics[name]) for name, buffer in backbone.named_buffers() if "running" in name)
    featx.save(backbone, tmp_path / "bb.pt")
    assert featx.load(tmp_path / "bb.pt").spec.norm == "eval"
    with pytest.raises(featx.ArgumentError, match=r"^Backbone\.spec describes how the backbone was built and cannot"):
        backbone.spec = variant


def test_a_backbone_made_by_hand_keeps_the_spec_it_was_given(tmp_path):
    """The caller's spec object, changed after the backbone was made, changed the backbone's norm policy."""
    built = featx.build(resnet18_spec(norm="eval", frozen_stages=0))
    spec = built.spec
    by_hand = featx.Backbone(dict(built.stages), built.stage_info, spec)
    spec.norm = "train"
    statistics = {name: buffer.clone() for name, buffer in by_hand.named_buffers() if "running" in name}
    by_hand.train()(torch.randn(2, 3, 64, 64))
    assert by_hand.spec.norm == "eval"
    assert all(torch.equal(buffer, statistics[name]) for name, buffer in by_hand.named_buffers() if "running" in name)


def test_a_backbone_pickled_with_its_spec_as_an_attribute_unpickles():
    """Before bb.spec became a copy the spec was the attribute ``spec``: such a pickle (torch.save of the module)
    loads with its spec."""
    backbone = featx.build(resnet18_spec())
    state = dict(backbone.__dict__)
    state["spec"] = state.pop("_spec")
    old = featx.Backbone.__new__(featx.Backbone)
    old.__setstate__(state)
    assert old.spec == backbone.spec and "spec" not in old.__dict__
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(old.eval()(x).values(), backbone.eval()(x).values(), strict=True))
    assert pickle.loads(pickle.dumps(backbone)).spec == backbone.spec


def _build_in_child(connection) -> None:
    """In a forked child: build, and send back the default dtype first seen and the build's class."""
    dtype = torch.get_default_dtype()
    backbone = featx.build("mobilenet_v3_small", overrides=["device=meta"])
    connection.send((str(dtype), type(backbone).__name__))


def test_a_child_forked_while_another_thread_builds_builds_and_keeps_the_callers_torch_state():
    """A child forked while another thread held the build lock waited forever for it (that thread is not in the
    child), and kept the build's temporary default dtype (float32 for a float64 caller)."""
    caller = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    held, release = threading.Event(), threading.Event()

    def hold_the_build_lock() -> None:  # as a build in another thread does while it draws in float32
        with builder._seeded_construction(), builder._default_dtype(torch.float32):
            held.set()
            release.wait()

    thread = threading.Thread(target=hold_the_build_lock)
    thread.start()
    context = multiprocessing.get_context("fork")
    try:
        held.wait()
        receiving, sending = context.Pipe(duplex=False)
        child = context.Process(target=_build_in_child, args=(sending,))
        child.start()
        child.join(timeout=120)
        hung = child.is_alive()
        if hung:
            child.kill()
            child.join()
    finally:
        release.set()
        thread.join()
        torch.set_default_dtype(caller)
    assert not hung and child.exitcode == 0
    assert receiving.recv() == ("torch.float64", "Backbone")
