"""shape_only_layers: the same output shapes (and the same refusals) as the real layers, restored afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featx.construct.probe import shape_only_layers


def _model() -> nn.Sequential:
    """A channels-last block as ConvNeXt writes it: conv, permute, LayerNorm, Linear, GELU, Linear, back."""

    class Permute(nn.Module):
        def __init__(self, *dims: int) -> None:
            super().__init__()
            self.dims = dims

        def forward(self, x):
            return x.permute(*self.dims)

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Hardswish(),
        Permute(0, 2, 3, 1),
        nn.LayerNorm(8),
        nn.Linear(8, 32),
        nn.GELU(),
        nn.Dropout(0.5),
        nn.Linear(32, 16),
        Permute(0, 3, 1, 2),
    )


def test_meta_shapes_equal_the_real_layers_shapes():
    torch.manual_seed(0)
    model = _model().eval()
    real = model(torch.randn(2, 3, 17, 23))
    meta_model = _model().to("meta")
    with shape_only_layers(meta_model), torch.no_grad():
        meta = meta_model(torch.empty(2, 3, 17, 23, device="meta"))
    assert meta.is_meta and meta.shape == real.shape == (2, 16, 9, 12)


@pytest.mark.parametrize(
    "layer, shape, error, message",
    [
        (nn.Linear(8, 4), (2, 5), RuntimeError, r"Linear\(8, 4\) got an input of shape \(2, 5\)"),
        (nn.LayerNorm(8), (2, 5), RuntimeError, r"LayerNorm\(\(8,\)\) got an input of shape \(2, 5\)"),
        (nn.BatchNorm2d(8), (2, 5, 3, 3), RuntimeError, r"BatchNorm2d\(8\) got an input of shape \(2, 5, 3, 3\)"),
        (nn.BatchNorm2d(8), (2, 8, 3), ValueError, r"expected 4D input \(got 3D input\)"),
    ],
)
def test_a_wrong_input_is_refused_as_the_real_layer_refuses_it(layer, shape, error, message):
    with pytest.raises(error):
        layer(torch.zeros(shape))  # the real layer refuses it with the same exception type
    meta_layer = layer.to("meta")
    with shape_only_layers(meta_layer), pytest.raises(error, match=message):
        meta_layer(torch.empty(shape, device="meta"))


def test_the_layers_compute_again_after_the_block():
    torch.manual_seed(0)
    model = _model().eval()
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    with shape_only_layers(model):
        pass
    assert "forward" not in vars(model[6])  # the per-instance shortcut is removed
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "layer", [nn.ReLU(), nn.ReLU(inplace=True), nn.Hardswish(inplace=True), nn.BatchNorm2d(3), nn.LayerNorm(5)]
)
def test_a_layer_changes_its_input_in_place_exactly_when_the_real_layer_does(layer):
    """The planner tells a returned stage's output that a later stage changes in place by its version: a shape-only
    layer must return a new tensor, or its input with the version bumped, as the real layer does."""
    real_input = torch.randn(2, 3, 4, 5)
    version = real_input._version
    real = layer.eval()(real_input)
    meta_layer = layer.to("meta")
    meta_input = torch.empty(2, 3, 4, 5, device="meta")
    meta_version = meta_input._version
    with shape_only_layers(meta_layer), torch.no_grad():
        meta = meta_layer(meta_input)
    assert (meta is meta_input) == (real is real_input)
    assert (meta_input._version != meta_version) == (real_input._version != version)


@pytest.mark.parametrize(
    "layer, training",
    [(nn.Dropout(0.5), False), (nn.Dropout(0.0), True), (nn.Dropout(0.5), True), (nn.Dropout2d(0.5), False)],
    ids=["eval", "p0-training", "training", "dropout2d-eval"],
)
def test_a_dropout_layer_returns_its_input_itself_exactly_when_the_real_one_does(layer, training):
    """In eval mode (or with p=0) torch's dropout returns its very input: a stage that ends on one returns the map of
    the stage before it, which a later in-place layer then changes; the stand-in returned a new tensor, so the
    planner blamed the wrong stage."""
    real_input = torch.randn(2, 3, 4, 5)
    real = layer.train(training)(real_input)
    meta_layer = layer.to("meta")
    meta_input = torch.empty(2, 3, 4, 5, device="meta")
    with shape_only_layers(meta_layer), torch.no_grad():
        meta = meta_layer(meta_input)
    assert (meta is meta_input) == (real is real_input)


def test_an_in_place_dropout_starting_the_next_stage_counts_as_changing_the_map():
    """Dropout2d(inplace=True) changes its input in training mode only; the planner (which probes in eval mode)
    must still have the backbone copy the map before it."""
    from collections import OrderedDict

    from featx.construct.plan import plan_backbone
    from featx.spec.load import load_spec

    with torch.device("meta"):
        model = nn.Sequential(
            OrderedDict(conv=nn.Conv2d(3, 8, 3, 2, 1), drop=nn.Dropout2d(0.5, inplace=True), conv2=nn.Conv2d(8, 8, 1))
        ).eval()
    stages = {"a": {"modules": ["conv"]}, "b": {"modules": ["drop", "conv2"]}}
    plan = plan_backbone(load_spec({"model": "resnet18", "stages": stages}), model)
    assert plan.changed_later == ("a",)
