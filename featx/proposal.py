"""``featx.propose``: write the backbone spec of a torchvision classifier by probing it on the meta device.

The model's modules are run in order on meta inputs, from the root's children down: a plain ``nn.Sequential``
that spans a stride boundary is opened into its children, a ``ModuleList`` always is. The chain ends at the first
module whose output no longer grows with the input (a global pool), switches layout (Swin's final permute) or
cannot take the map (the classifier). A module in between whose output is not a feature map (an auxiliary
classifier) is left out. Each stage then ends at the last module of its stride: ``c2`` at stride 4 up to ``c5``
at stride 32.

Example::

    spec = featx.propose("resnet50")           # {"model": "resnet50", "stages": {"c2": {"modules": [...]}, ...}}
    backbone = featx.build(spec)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from featx.errors import ArgumentError, SpecError
from featx.meta_probe import shape_only_layers
from featx.plan import PROBE_SIZES
from featx.zoo import check_model_name, create_model, default_crop_size

Size = Tuple[int, int]


@dataclass(frozen=True)
class ChainLink:
    """One module of the feature chain: its path from the model root, output channels and stride."""

    path: str
    channels: int
    stride: int


@dataclass(frozen=True)
class ProposedStage:
    """One stage of a proposal: its name (``c{log2 stride}``), stride, channels and member paths."""

    name: str
    stride: int
    channels: int
    paths: Tuple[str, ...]


@dataclass(frozen=True)
class Proposal:
    """What :func:`analyse` found: the spec and what it is made of.

    ``left_out`` are modules inside the chain that the stages skip (auxiliary classifiers); ``head`` are the
    root-level modules after the chain (pooling, classifier) that a backbone does not run.
    """

    spec: Dict[str, Any]
    stages: Tuple[ProposedStage, ...]
    left_out: Tuple[str, ...]
    head: Tuple[str, ...]


def _runs_children_in_order(module: nn.Module) -> bool:
    """True for containers whose forward is exactly "each child in turn" (``nn.Sequential`` not overriding it)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward and len(module) > 0


def _has_no_forward(module: nn.Module) -> bool:
    """True for pure containers (``nn.ModuleList``, ``nn.ModuleDict``) that cannot be called."""
    return type(module).forward is nn.Module.forward and any(True for _ in module.children())


def _feature_maps(module: nn.Module, inputs: Sequence[Tensor]) -> Optional[List[Tensor]]:
    """``module`` applied to each input, or ``None`` if it fails or does not return 4-D tensors."""
    outputs = []
    for x in inputs:
        try:
            y = module(x)
        except Exception:  # noqa: BLE001 - any failure means "not part of the chain here"
            return None
        if not isinstance(y, Tensor) or y.dim() != 4:
            return None
        outputs.append(y)
    return outputs


def _layout(outputs: Sequence[Tensor], current: Optional[str]) -> Optional[str]:
    """``"nchw"`` or ``"nhwc"`` from how the shapes change with the input size; ``None`` when the spatial size no
    longer depends on it (a global or adaptive pool). With one probe size (a fixed-size model) the shape decides."""
    shapes = [tuple(y.shape) for y in outputs]
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


def _stride(output: Tensor, layout: str, size: Size) -> int:
    height = output.shape[1] if layout == "nhwc" else output.shape[2]
    return 2 ** max(0, round(math.log2(size[0] / height)))


def _channels(output: Tensor, layout: str) -> int:
    return int(output.shape[3] if layout == "nhwc" else output.shape[1])


def _splits_at_boundary(module: nn.Module, xs: List[Tensor], layout: str, low: int, high: int, min_stride: int,
                        size: Size) -> bool:
    """True if running ``module``'s children one by one reaches a stage boundary (a power of two ``>= min_stride``)
    strictly between strides ``low`` and ``high`` in ``layout``: then the container is worth opening."""
    if max(min_stride, low * 2) >= high:
        return False
    for child in module.children():
        xs = _feature_maps(child, xs)
        if xs is None:
            return False
        if _layout(xs, layout) == layout and max(min_stride, low * 2) <= _stride(xs[0], layout, size) < high:
            return True
    return False


def _walk(model: nn.Module, sizes: Sequence[Size], min_stride: int
          ) -> Tuple[List[ChainLink], List[str], List[str], str]:
    """The feature chain of ``model`` at the probe ``sizes``: links, left-out modules, head modules, layout."""
    xs = [torch.empty(1, 3, *size, device="meta") for size in sizes]
    queue: List[Tuple[str, nn.Module]] = list(model.named_children())
    links: List[ChainLink] = []
    skipped: List[str] = []
    left_out: List[str] = []
    layout: Optional[str] = None
    stride = 1
    while queue:
        path, module = queue.pop(0)
        if _has_no_forward(module):
            queue[:0] = [(f"{path}.{name}", child) for name, child in module.named_children()]
            continue
        outputs = _feature_maps(module, xs)
        if outputs is None:
            skipped.append(path)
            continue
        kind = _layout(outputs, layout)
        if kind is None or (layout is not None and kind != layout):
            queue.insert(0, (path, module))
            break
        out_stride = _stride(outputs[0], kind, sizes[0])
        if _runs_children_in_order(module) and _splits_at_boundary(module, xs, kind, stride, out_stride, min_stride,
                                                                    sizes[0]):
            queue[:0] = [(f"{path}.{name}", child) for name, child in module.named_children()]
            continue
        layout, stride, xs = kind, out_stride, outputs
        left_out.extend(skipped)
        skipped = []
        links.append(ChainLink(path, _channels(outputs[0], kind), out_stride))
    head = skipped + [path for path, _ in queue]
    return links, left_out, head, layout or "nchw"


def _group_stages(links: Sequence[ChainLink], min_stride: int) -> Tuple[ProposedStage, ...]:
    """Cut the chain after the last link of each stride ``>= min_stride``."""
    stages: List[ProposedStage] = []
    members: List[str] = []
    for index, link in enumerate(links):
        members.append(link.path)
        is_last_of_stride = index + 1 == len(links) or links[index + 1].stride != link.stride
        if is_last_of_stride and link.stride >= min_stride:
            name = f"c{int(math.log2(link.stride))}"
            stages.append(ProposedStage(name, link.stride, link.channels, tuple(members)))
            members = []
    return tuple(stages)


def _as_slices(stages: Sequence[ProposedStage], left_out: Sequence[str], model: nn.Module
               ) -> Optional[Tuple[str, Dict[str, Dict[str, List[int]]]]]:
    """``(source, {stage: {"slice": [a, b]}})`` when every member is a numbered child of one container, in order
    from its first child with none skipped; else ``None`` (the stages then list module paths)."""
    paths = [path for stage in stages for path in stage.paths]
    parents = {path.rpartition(".")[0] for path in paths}
    if left_out or len(parents) != 1 or "" in parents:
        return None
    (source,) = parents
    children = [name for name, _ in model.get_submodule(source).named_children()]
    if not all(name.isdigit() for name in children) or [p.rpartition(".")[2] for p in paths] != children[: len(paths)]:
        return None
    slices, start = {}, 0
    for stage in stages:
        slices[stage.name] = {"slice": [start, start + len(stage.paths)]}
        start += len(stage.paths)
    return source, slices


def analyse(model_name: str, *, min_stride: int = 4, fpn: Optional[int] = None, frozen_stages: int = 1) -> Proposal:
    """Probe torchvision's ``model_name`` on the meta device and propose a spec (see :func:`propose`)."""
    try:
        check_model_name(model_name)
    except SpecError as error:
        raise ArgumentError(f"propose(): {error.message}") from None
    if min_stride < 1 or min_stride & (min_stride - 1):
        raise ArgumentError(f"propose(): min_stride must be a power of two (1, 2, 4, ...), got {min_stride}")
    if fpn is not None and fpn < 1:
        raise ArgumentError(f"propose(): fpn must be a positive channel count or None, got {fpn}")
    model = create_model(model_name, device="meta").eval()
    with shape_only_layers(model), torch.no_grad():
        input_size = None
        links, left_out, head, layout = _walk(model, PROBE_SIZES, min_stride)
        stages = _group_stages(links, min_stride)
        if len(stages) < 2:  # a model that takes one input size only (MaxViT) fails at the general probe sizes
            crop = default_crop_size(model_name)
            fixed = _walk(model, ((crop, crop),), min_stride)
            if len(_group_stages(fixed[0], min_stride)) >= 2:
                input_size = [crop, crop]
                links, left_out, head, layout = fixed
                stages = _group_stages(links, min_stride)
    strides = sorted({link.stride for link in links})
    if len(stages) < 2:
        raise ArgumentError(
            f"propose(): {model_name!r} has no spatial hierarchy to cut into stages: its feature maps "
            f"({', '.join(link.path for link in links) or 'none'}) have stride {', '.join(map(str, strides)) or '-'} "
            f"only, and what follows ({', '.join(head) or 'nothing'}) works on other shapes (token sequences), while a "
            f"backbone needs at least two strides >= {min_stride}. featx builds hierarchical models (CNNs, Swin, "
            "MaxViT); a plain ViT has a single stride"
        )
    if not 0 <= frozen_stages <= len(stages):
        raise ArgumentError(f"propose(): frozen_stages must be in 0..{len(stages)}, got {frozen_stages}")
    slices = _as_slices(stages, left_out, model)
    source, stage_specs = slices if slices else (None, {s.name: {"modules": list(s.paths)} for s in stages})
    spec = {
        "model": model_name,
        "weights": None,
        "source": source,
        "stages": stage_specs,
        "out_features": None,
        "frozen_stages": frozen_stages,
        "reinit": [],
        "norm": "frozen",
        "fpn": None if fpn is None else {"out_channels": fpn, "extra_blocks": None},
        "layout": layout,
        "input_size": input_size,
        "device": "auto",
        "channels_last": False,
    }
    return Proposal(spec, stages, tuple(left_out), tuple(head))


def propose(model_name: str, *, min_stride: int = 4, fpn: Optional[int] = None, frozen_stages: int = 1
            ) -> Dict[str, Any]:
    """A complete backbone spec for torchvision's ``model_name``, with one stage per stride from ``min_stride``
    (default 4) up to the model's deepest: ``c2`` (stride 4) ... ``c5`` (stride 32). ``fpn`` adds an FPN of that
    width; the first ``frozen_stages`` stages are frozen.

    Raises :class:`~featx.errors.ArgumentError` for an unknown model (with close names) or a model without a
    spatial hierarchy (ViT). Example::

        featx.build(featx.propose("convnext_tiny", fpn=256))
    """
    return analyse(model_name, min_stride=min_stride, fpn=fpn, frozen_stages=frozen_stages).spec
