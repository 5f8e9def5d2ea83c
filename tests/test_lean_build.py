"""Random-init builds allocate only the kept layers, and initialise them as torchvision does."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

import featx
from featx.models.meta_construction import SkipValueWritesOnMeta

MODELS = [
    "vgg16",
    "resnet50",
    "convnext_tiny",
    "regnet_y_400mf",
    "swin_t",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "densenet121",
    "inception_v3",
    "maxvit_t",
]


def _pairs(backbone: featx.Backbone, reference: torch.nn.Module):
    """(path.tensor name, featx tensor, torchvision tensor) for every parameter and buffer of the kept layers."""
    for stage in backbone.stage_info:
        for path in stage.paths:
            ours = dict(backbone.stages[stage.name].get_submodule(path.replace(".", "_")).state_dict())
            theirs = reference.get_submodule(path).state_dict()
            assert ours.keys() == theirs.keys(), path
            for key in ours:
                yield f"{path}.{key}", ours[key], theirs[key]


@pytest.mark.parametrize("model", MODELS)
def test_random_init_is_torchvisions_own_init_for_the_kept_layers(model):
    backbone = featx.build(model, overrides=["device=cpu", "norm=eval"])  # seed 0
    torch.manual_seed(1)  # the reference draws other values: the comparison is of distributions, not copies
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = torchvision.models.get_model(model, weights=None)
    checked = 0
    for name, ours, theirs in _pairs(backbone, reference):
        assert ours.device.type == "cpu" and ours.shape == theirs.shape and ours.dtype == theirs.dtype, name
        if not theirs.is_floating_point() or theirs.numel() == 1 or bool((theirs == theirs.flatten()[0]).all()):
            assert torch.equal(ours, theirs), name  # constants: ones, zeros, layer scales, counters
            continue
        if theirs.numel() < 2000:  # too few values for a tight estimate of the spread
            continue
        ours, theirs = ours.double(), theirs.double()
        assert abs(ours.std() / theirs.std() - 1) < 0.1, (name, float(ours.std()), float(theirs.std()))
        assert abs(ours.mean() - theirs.mean()) < 0.1 * theirs.std(), name
        assert not torch.equal(ours, theirs)  # drawn afresh, not copied
        checked += 1
    assert checked >= 3


def test_dropped_layers_are_never_allocated():
    backbone = featx.build("vgg16", overrides=["device=cpu"])
    kept = sum(p.numel() for p in backbone.parameters()) + sum(b.numel() for b in backbone.buffers())
    assert kept == 14_714_688  # the 13 convs of vgg16 features[0:29]; the 123.6 M classifier ones exist only on meta
    assert all(t.device.type == "cpu" for t in backbone.state_dict().values())


def test_meta_construction_skips_kaiming_uniform():
    """Every Conv2d and Linear calls ``torch.nn.init.kaiming_uniform_`` (which passes its tensor by keyword to the
    mode). On a 1-D tensor it raises (no fan-in), so returning quietly on meta shows it was skipped, not run; on a
    real tensor it still runs."""
    on_meta = torch.empty(3, device="meta")
    with SkipValueWritesOnMeta():
        assert torch.nn.init.kaiming_uniform_(on_meta) is on_meta
        with pytest.raises(ValueError, match="Fan in and fan out can not be computed"):
            torch.nn.init.kaiming_uniform_(torch.empty(3))
