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


def _recurrent_layers():
    """torch's recurrent layers in each layout (batch first or not, one or two directions and layers, projections),
    as (kind, its arguments after the input and hidden sizes)."""
    layers = []
    for kind in (nn.LSTM, nn.GRU, nn.RNN):
        for batch_first in (True, False):
            layers += [(kind, {"batch_first": batch_first})]
            layers += [(kind, {"num_layers": 2, "batch_first": batch_first, "bidirectional": True})]
    return layers + [
        (nn.LSTM, {"proj_size": 3}),
        (nn.LSTM, {"num_layers": 2, "batch_first": True, "bidirectional": True, "proj_size": 3}),
    ]


def _shapes(outputs):
    """The shapes of an LSTM's (output, (h, c)) or a GRU's/RNN's (output, h)."""
    output, states = outputs
    return [output.shape] + [state.shape for state in (states if isinstance(states, tuple) else (states,))]


@pytest.mark.parametrize("kind, arguments", _recurrent_layers(), ids=lambda value: getattr(value, "__name__", value))
@pytest.mark.parametrize("shape", [(2, 7, 8), (7, 8)], ids=["batched", "unbatched"])
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_a_recurrent_layer_gives_the_shapes_of_its_real_outputs(kind, arguments, shape):
    """torch runs an LSTM on meta as tens of prims per time step (timm's sequencer2d_s took about 30 s to plan);
    the shape-only one gives the real layer's output and state shapes, on meta and without running the steps."""
    layer = kind(8, 5, **arguments)
    real = _shapes(layer(torch.zeros(shape)))
    meta_layer = layer.to("meta")
    with shape_only_layers(meta_layer), torch.no_grad():
        meta = meta_layer(torch.empty(shape, device="meta"))
        assert _shapes(meta) == real
        assert meta_layer.__dict__["forward"]  # shape-only inside the block


@pytest.mark.parametrize(
    "shape, dtype, error, message",
    [
        ((2, 7, 9), torch.float32, RuntimeError, r"^input.size\(-1\) must be equal to input_size. Expected 8, got 9$"),
        ((2, 7, 8), torch.float64, ValueError, r"^RNN input dtype \(torch.float64\) does not match weight dtype"),
        ((2, 1, 7, 8), torch.float32, ValueError, r"^LSTM: Expected input to be 2D or 3D, got 4D instead$"),
    ],
)
def test_a_recurrent_layer_refuses_an_input_as_the_real_one_does(shape, dtype, error, message):
    layer = nn.LSTM(8, 5, batch_first=True)
    with pytest.raises(error, match=message):
        layer(torch.zeros(shape, dtype=dtype))
    meta_layer = layer.to("meta")
    with shape_only_layers(meta_layer), pytest.raises(error, match=message):
        meta_layer(torch.empty(shape, dtype=dtype, device="meta"))


def test_a_recurrent_layer_given_initial_states_runs_its_own_forward():
    """Its states' shapes are checked by torch's own forward: a wrong one is refused, as by the real layer."""
    layer = nn.LSTM(8, 5, batch_first=True).to("meta")
    x = torch.empty(2, 7, 8, device="meta")
    states = (torch.empty(1, 2, 5, device="meta"), torch.empty(1, 2, 5, device="meta"))
    with shape_only_layers(layer), torch.no_grad():
        assert _shapes(layer(x, states)) == [(2, 7, 5), (1, 2, 5), (1, 2, 5)]
        with pytest.raises(RuntimeError, match=r"^Expected hidden\[0\] size \(1, 2, 5\), got \[1, 3, 5\]$"):
            layer(x, (torch.empty(1, 3, 5, device="meta"), states[1]))
