"""The one shape probe: modules run on meta tensors (shapes only, no values, no memory), and what their output
shapes say — layout, channels, stride.

On meta only shapes are computed, but the meta kernels of BatchNorm, LayerNorm, Linear and several activations
are Python decompositions: they make up most of a probe's time (0.12 s of a ResNet-50 forward, 0.01 s without them;
MobileNetV3's hardswish alone 0.2 s; ConvNeXt-T's Linear layers 0.06 s), and torch's recurrent layers run every
time step as tens of prims (timm's sequencer2d_s: about 30 s). Inside :func:`shape_only_layers` the norm, Linear
and recurrent layers check their input as their own forward would and return the output's shape; elementwise
activations and dropout return their input; BatchNorm layers with a forward of their own run in eval mode.

Example::

    with shape_only_layers(model), torch.no_grad():
        outputs = [model.features(meta_input(size)) for size in PROBE_SIZES]
    layout = infer_layout([tuple(y.shape) for y in outputs])          # 'nchw'
    stride_of(tuple(outputs[0].shape), layout, PROBE_SIZES[0])        # 32
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from featx.errors import SpecError
from featx.spec.keys import key_path

Size = Tuple[int, int]
Shape = Tuple[int, ...]

#: Two (height, width) meta inputs: the stride is read from the first; comparing both tells the channel dimension
#: (constant) from the spatial ones (which grow with the input). Meta tensors cost nothing, so they can be generous.
PROBE_SIZES: Tuple[Size, ...] = ((224, 288), (320, 416))


def meta_input(size: Size, channels: int = 3) -> Tensor:
    """A ``1×channels×H×W`` tensor on the meta device."""
    return torch.empty(1, channels, *size, device="meta")


def _declared_channels(model: nn.Module) -> Optional[int]:
    """The input channels ``model`` declares: a timm model's ``in_chans``, else its ``pretrained_cfg`` input size."""
    channels = getattr(model, "in_chans", None)
    if isinstance(channels, int) and not isinstance(channels, bool):
        return channels
    config = getattr(model, "pretrained_cfg", None)
    size = config.get("input_size") if isinstance(config, dict) else None
    if isinstance(size, (tuple, list)) and len(size) == 3 and isinstance(size[0], int):
        return size[0]
    return None


def _channels_through(layers: Sequence[nn.Module], channels: int) -> Optional[int]:
    """The channels a meta image of ``channels`` channels has after ``layers`` run on it in turn (their own
    forward, so no hook sees it), ``None`` where they fail on it or do not return an N x C x H x W map."""
    x = meta_input(PROBE_SIZES[0], channels)
    try:
        with torch.no_grad():
            for layer in layers:
                x = layer.forward(x)
    except Exception:  # noqa: BLE001 - layers that do not run on an image are not what the image meets first
        return None
    return int(x.shape[1]) if isinstance(x, Tensor) and x.dim() == 4 else None


def input_channels(module: nn.Module) -> int:
    """Channels ``module`` (a model, or a stage of its own modules) takes: what the model declares (timm's
    ``in_chans``, or its ``pretrained_cfg`` input size), else what its first layer with an ``in_channels`` attribute
    takes (3 if none says). Layers registered before that one may change the channel count (timm's SpaceToDepth
    turns 3 into 48): then that count or else the image's 3, whichever they turn into it (that count where they do
    not run on an image: a head registered first). SpecError where they run on an image but turn neither into it."""
    declared = _declared_channels(module)
    if declared is not None:
        return declared
    first_found = next(
        ((layer, n) for layer in module.modules() if isinstance(n := getattr(layer, "in_channels", None), int)), None
    )
    if first_found is None:
        return 3
    first, found = first_found
    inside = set(first.modules())
    leaves = [layer for layer in module.modules() if next(layer.children(), None) is None]
    before = leaves[: next(i for i, layer in enumerate(leaves) if layer in inside)]
    if not before or found == 3:
        return found
    given = {channels: _channels_through(before, channels) for channels in (found, 3)}
    taken = [channels for channels, out in given.items() if out == found]
    if taken or all(out is None for out in given.values()):
        return taken[0] if taken else found
    names = ", ".join(type(layer).__name__ for layer in before)
    gives = " and ".join("no map" if out is None else str(out) for out in given.values())
    raise SpecError(
        key_path("model"),
        f"featx cannot tell how many channels the model's input has: its first layer with in_channels "
        f"({type(first).__name__}) takes {found}, but the layers registered before it ({names}) turn neither {found} "
        f"nor 3 channels into {found} (they give {gives})",
    )


def spatial_dims(layout: str) -> Tuple[int, int, int]:
    """(channel, height, width) dimension indices of a 4-D map in ``layout``."""
    return (3, 1, 2) if layout == "nhwc" else (1, 2, 3)


def stride_of(shape: Shape, layout: str, size: Size) -> int:
    """The map's stride: the input height over its height, rounded to a power of two."""
    height = shape[spatial_dims(layout)[1]]
    return int(2 ** max(0, round(math.log2(size[0] / height))))


class Growth(NamedTuple):
    """How much one spatial dimension of a map grew between two probe inputs that differ by ``more`` pixels."""

    unit: str
    grown: int
    more: int


def growth_against_stride(shapes: Sequence[Shape], sizes: Sequence[Size], layout: str, stride: int) -> Optional[Growth]:
    """The first spatial dimension (rows, then columns) whose growth between the first and last probe differs from
    what the power-of-two ``stride`` gives by a row or more (rounding and borders stay within one), else ``None``: a
    stride that is no power of two (ConvMixer's 7-pixel patches, a 7x7 convolution without padding after a stride-32
    map) is read by :func:`stride_of` as the nearest one."""
    _, height, width = spatial_dims(layout)
    for axis, (dim, unit) in enumerate(((height, "rows"), (width, "columns"))):
        more = sizes[-1][axis] - sizes[0][axis]
        grown = shapes[-1][dim] - shapes[0][dim]
        if abs(grown - more / stride) >= 1:
            return Growth(unit, grown, more)
    return None


def channels_of(shape: Shape, layout: str) -> int:
    """The map's channel count in ``layout``."""
    return int(shape[spatial_dims(layout)[0]])


def infer_layout(shapes: Sequence[Shape], current: Optional[str] = None) -> Optional[str]:
    """``"nchw"`` or ``"nhwc"`` from how a map's shapes change with the probe sizes; ``None`` when the spatial size
    no longer depends on the input (a global or adaptive pool). With one shape (a fixed-size model) its form decides,
    ``current`` breaking ties."""
    if len(shapes) > 1:
        first, last = shapes[0], shapes[-1]
        if first[1] == last[1] and first[2:] != last[2:]:
            return "nchw"
        if first[3] == last[3] and first[1:3] != last[1:3]:
            return "nhwc"
        return None
    (shape,) = shapes
    nchw, nhwc = shape[2] == shape[3] and shape[1] != shape[2], shape[1] == shape[2] and shape[2] != shape[3]
    layout = "nhwc" if nhwc and not nchw else "nchw" if nchw else current or "nchw"
    spatial = shape[1:3] if layout == "nhwc" else shape[2:]
    return None if spatial == (1, 1) else layout


def _batch_norm_shape(layer: _BatchNorm) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        layer._check_input_dim(x)  # the layer's own dimension check (4-D for BatchNorm2d)
        if x.shape[1] != layer.num_features:
            raise RuntimeError(f"{type(layer).__name__}({layer.num_features}) got an input of shape {tuple(x.shape)}")
        return torch.empty_like(x)

    return forward


def _layer_norm_shape(layer: nn.LayerNorm) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        trailing = tuple(layer.normalized_shape)
        if tuple(x.shape[x.dim() - len(trailing) :]) != trailing:
            raise RuntimeError(f"LayerNorm({trailing}) got an input of shape {tuple(x.shape)}")
        return torch.empty_like(x)

    return forward


def _linear_shape(layer: nn.Linear) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[-1] != layer.in_features:
            raise RuntimeError(
                f"Linear({layer.in_features}, {layer.out_features}) got an input of shape {tuple(x.shape)}"
            )
        return x.new_empty((*x.shape[:-1], layer.out_features))

    return forward


#: layers whose output has their input's shape, whatever it is
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh)


def _changed_in_place(x: Tensor) -> Tensor:
    """``x``, its version bumped as an in-place kernel bumps it (an inference tensor has no version)."""
    if not x.is_inference():
        torch.autograd.graph.increment_version(x)
    return x


def _elementwise_shape(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """A new tensor of the input's shape, as the layer gives; with ``inplace=True`` the input itself, counted as
    changed (its version bumped), as the layer's own in-place kernel does."""

    def forward(x: Tensor) -> Tensor:
        return _changed_in_place(x) if getattr(layer, "inplace", False) else torch.empty_like(x)

    return forward


def _dropout_shape(layer: _DropoutNd) -> Callable[[Tensor], Tensor]:
    """torch's dropout layers: the input itself in eval mode or with ``p=0`` (as they return it), else a new tensor;
    with ``inplace=True`` the input counted as changed in either mode (in training it is)."""

    def forward(x: Tensor) -> Tensor:
        if layer.inplace:
            return _changed_in_place(x)
        return x if not layer.training or layer.p == 0 else torch.empty_like(x)

    return forward


RecurrentOutput = Tuple[Tensor, Union[Tensor, Tuple[Tensor, Tensor]]]


def _recurrent_shape(layer: nn.RNNBase) -> Callable[..., RecurrentOutput]:
    """torch's LSTM, GRU and RNN: the output and final states of a 2-D (unbatched) or 3-D tensor without initial
    states, its dimensions and dtype checked by the layer's own ``check_input``; any other call (initial states, a
    PackedSequence, another number of dimensions) runs the layer's own forward."""
    full = type(layer).forward

    def forward(x: Any, hx: Any = None) -> RecurrentOutput:
        if hx is not None or not isinstance(x, Tensor) or x.dim() not in (2, 3):
            return full(layer, x, hx)
        batched = x.dim() == 3
        batch_dim = 0 if layer.batch_first else 1
        layer.check_input(x if batched else x.unsqueeze(batch_dim), None)
        directions = 2 if layer.bidirectional else 1
        width = layer.proj_size or layer.hidden_size
        batch = (x.shape[batch_dim],) if batched else ()
        output = x.new_empty((*x.shape[:-1], directions * width))
        hidden = x.new_empty((directions * layer.num_layers, *batch, width))
        if not isinstance(layer, nn.LSTM):
            return output, hidden
        return output, (hidden, x.new_empty((directions * layer.num_layers, *batch, layer.hidden_size)))

    return forward


def _shape_only_forward(layer: nn.Module) -> Optional[Callable[..., Any]]:
    if isinstance(layer, nn.LayerNorm) and type(layer).forward is nn.LayerNorm.forward:
        return _layer_norm_shape(layer)
    if isinstance(layer, _BatchNorm) and type(layer).forward is _BatchNorm.forward:
        return _batch_norm_shape(layer)
    if type(layer) is nn.Linear:
        return _linear_shape(layer)
    if type(layer) in _ELEMENTWISE:
        return _elementwise_shape(layer)
    if isinstance(layer, nn.RNNBase) and type(layer) in (nn.LSTM, nn.GRU, nn.RNN):
        return _recurrent_shape(layer)
    if isinstance(layer, _DropoutNd) and type(layer).__module__ == _DropoutNd.__module__:  # not a subclass of yours
        return _dropout_shape(layer)
    return None


@contextlib.contextmanager
def shape_only_layers(model: nn.Module) -> Iterator[None]:
    """Inside the block, ``model``'s BatchNorm and LayerNorm layers only check their input's shape and return a new
    tensor of it, its Linear layers check the input's last dimension and return the output's shape, its LSTM, GRU
    and RNN layers check their input and return their outputs' shapes (a call with initial states runs as it is),
    and its elementwise activations and dropout layers return a new tensor of their input's shape (with
    ``inplace=True``: their input, its version bumped as an in-place kernel bumps it).

    BatchNorm layers with a forward of their own (timm's ``BatchNormAct2d``) run as they are, in eval mode: in
    training mode they would refuse the probe's one image where a map is 1x1 (one value per channel), which a real
    batch of two passes.

    Meant for meta tensors: the outputs' shapes are right, their (absent) values are not normalised. Blocks may
    nest: an inner one leaves the layers an outer one patched as they are.
    """
    patched: List[nn.Module] = []
    evaluating: List[nn.Module] = []
    try:
        for layer in model.modules():
            forward = None if "forward" in layer.__dict__ else _shape_only_forward(layer)
            if forward is not None:
                layer.__dict__["forward"] = forward  # an instance attribute shadows the class's forward
                patched.append(layer)
            elif isinstance(layer, _BatchNorm) and layer.training:
                layer.training = False  # the layer's own mode only: its children keep theirs
                evaluating.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.__dict__["forward"]
        for layer in evaluating:
            layer.training = True
