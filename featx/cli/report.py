"""The app's table: one row per kept stage and per FPN level, with totals, device and timings.

Example::

    report = measure(featx.build("resnet34"), batch_size=1, height=224, width=224, build_seconds=0.4)
    print(format_report(report))
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from featx.nn.backbone import Backbone


@dataclass(frozen=True)
class Row:
    name: str
    covers: str
    channels: int
    stride: int
    shape: Tuple[int, ...]
    params: int
    trainable: int
    output: Optional[str]  # the output's key where the row is a returned output, else None
    holds: str = ""  # parameters the row's stage holds beyond the modules it covers (a token model's embed stage)


@dataclass(frozen=True)
class Report:
    title: str
    device: str
    input_shape: Tuple[int, ...]
    rows: List[Row]
    build_seconds: float
    forward_seconds: float


def _count(*modules: nn.Module) -> Tuple[int, int]:
    """(parameters, trainable parameters) of ``modules`` together."""
    params = [p for module in modules for p in module.parameters()]
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _stage_shapes(
    backbone: Backbone, batch: torch.Tensor
) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, Tuple[int, ...]], float]:
    """Run one timed forward, recording every stage's output shape (as N×C×H×W) and every output's shape."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    nhwc = backbone.spec.layout == "nhwc"
    patch = backbone.stage_info[0].stride if backbone.spec.tokens is not None else None

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            shape = tuple(output.shape)
            if patch is not None:  # tokens: shown as the map they become
                shapes[name] = (shape[0], shape[2], batch.shape[2] // patch, batch.shape[3] // patch)
                return
            shapes[name] = (shape[0], shape[3], shape[1], shape[2]) if nhwc else shape

        return hook

    handles = [stage.register_forward_hook(recorder(name)) for name, stage in backbone.stages.items()]
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            outputs = backbone(batch)
            if batch.device.type == "cuda":
                torch.cuda.synchronize(batch.device)
            seconds = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    return shapes, {name: tuple(t.shape) for name, t in outputs.items()}, seconds


def _neck_rows(backbone: Backbone, output_shapes: Dict[str, Tuple[int, ...]]) -> List[Row]:
    neck = backbone.neck
    assert neck is not None
    level_parts = getattr(neck, "level_parts", None)
    if level_parts is None:  # a hand-made neck: its parameters on the first row
        parts = [(type(neck).__name__, [neck])] + [("", [])] * (len(backbone.feature_info) - 1)
    else:
        parts = level_parts(backbone.spec.returned_stages)
    rows = []
    for info, (covers, modules) in zip(backbone.feature_info, parts, strict=True):
        params, trainable = _count(*modules)
        rows.append(
            Row(info.name, covers, info.channels, info.stride, output_shapes[info.name], params, trainable, info.name)
        )
    return rows


def _token_parameters_held(backbone: Backbone, paths: Tuple[str, ...]) -> str:
    """The prefix tokens and position embedding held (and counted) by the stage with these ``paths`` when it holds a
    token model's embedding, e.g. ``class_token, encoder.pos_embedding``; else ``""``."""
    tokens = backbone.spec.tokens
    if tokens is None or not any(tokens.embed == path or tokens.embed.startswith(path + ".") for path in paths):
        return ""
    return ", ".join([*tokens.prefix, *([tokens.position] if tokens.position is not None else [])])


def measure(backbone: Backbone, batch_size: int, height: int, width: int, build_seconds: float, title: str) -> Report:
    """Run a random batch through ``backbone`` and collect the table's rows."""
    device = next(backbone.parameters()).device
    batch = torch.randn(batch_size, backbone.in_channels, height, width, device=device)
    if backbone.spec.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    stage_shapes, output_shapes, forward_seconds = _stage_shapes(backbone, batch)
    returned = [name for name in backbone.stages if name in backbone.spec.returned_stages]
    # without a neck the returned stages are the outputs, under their output names ('0', '1', ... as torchvision's)
    keys = (
        {} if backbone.neck is not None else dict(zip(returned, (i.name for i in backbone.feature_info), strict=True))
    )
    rows = []
    for info in backbone.stage_info:
        params, trainable = _count(backbone.stages[info.name])
        rows.append(
            Row(
                info.name,
                info.covers,
                info.channels,
                info.stride,
                stage_shapes[info.name],
                params,
                trainable,
                keys.get(info.name),
                _token_parameters_held(backbone, info.paths),
            )
        )
    if backbone.neck is not None:
        rows.extend(_neck_rows(backbone, output_shapes))
    return Report(title, str(device), tuple(batch.shape), rows, build_seconds, forward_seconds)


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _short_covers(covers: str) -> str:
    """A long list of module paths as its first and last (``a, b, c, d`` → ``a .. d (4 modules)``)."""
    paths = covers.split(", ")
    if len(covers) <= 60 or len(paths) < 3:
        return covers
    return f"{paths[0]} .. {paths[-1]} ({len(paths)} modules)"


def format_report(report: Report) -> str:
    """The table as text."""
    header = ("output", "name", "covers", "channels", "stride", "shape", "params", "trainable", "state")
    lines = []
    for row in report.rows:
        state = (
            "frozen"
            if row.params and not row.trainable
            else ("trainable" if row.trainable == row.params else "partly frozen")
        )
        lines.append(
            (
                "" if row.output is None else "*" if row.output == row.name else f"* as {row.output}",
                row.name,
                _short_covers(row.covers) + (f" + {row.holds}" if row.holds else ""),
                str(row.channels),
                str(row.stride),
                "x".join(map(str, row.shape)),
                _millions(row.params),
                _millions(row.trainable),
                state if row.params else "-",
            )
        )
    total_params = sum(row.params for row in report.rows)
    total_trainable = sum(row.trainable for row in report.rows)
    lines.append(("", "total", "", "", "", "", _millions(total_params), _millions(total_trainable), ""))
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells: Tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    body = [render(header), render(tuple("-" * w for w in widths)), *map(render, lines)]
    forward = (
        "forward - (meta device: structure only)"  # run=false or backbone.device=meta
        if report.device == "meta"
        else f"forward {report.forward_seconds * 1000:.1f} ms"
    )
    footer = (
        f"device {report.device} | input {'x'.join(map(str, report.input_shape))} | "
        f"build {report.build_seconds:.2f} s | {forward} | * = returned output (as: under that key)"
    )
    return "\n".join([report.title, *body, footer])
