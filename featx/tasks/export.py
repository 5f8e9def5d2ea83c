"""Exporting a built backbone: TorchScript (traced), ``torch.export`` programs and ONNX, each checked against eager.

Example::

    bb = featx.build("resnet18_fpn", overrides=["device=cpu"])
    result = export_backbone(bb, "resnet18_fpn.onnx", "onnx", example_size=(224, 224))
    result.max_abs_diff          # largest difference from eager on a fresh input (None if not verifiable)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from featx.errors import ArgumentError, first_line
from featx.files import flag_argument, path_argument, write_atomically
from featx.nn.backbone import Backbone
from featx.spec.limits import check_batch_shape

#: format -> the file suffix it is written with
FORMATS = {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}

#: runs the reloaded export on an input and returns its outputs in ``feature_info`` order
RunLoaded = Callable[[Tensor], List[Tensor]]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how far its outputs are from eager (``None``: no runtime here to check ONNX)."""

    path: Path
    format: str
    max_abs_diff: Optional[float]


def _dynamic_dims(backbone: Backbone, dynamic: bool) -> Dict[int, object]:
    """``dynamic_shapes`` for the input: batch, height and width left to ``torch.export`` to keep symbolic (it adds
    the ranges the model needs, e.g. maps of at least 2 pixels before a stride-2 layer)."""
    if not dynamic:
        return {}
    dims = {0: torch.export.Dim.AUTO}
    if backbone.spec.input_size is None:  # a fixed-size model (MaxViT) keeps its height and width static
        dims.update({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO})
    return dims


def _max_abs_diff(expected: Dict[str, Tensor], actual: List[Tensor]) -> float:
    return max(
        float((want - torch.as_tensor(got, device=want.device)).abs().max())
        for want, got in zip(expected.values(), actual, strict=True)
    )


def _other_size(backbone: Backbone, example: Tensor) -> Tensor:
    """An input of another height and width than ``example`` (by the backbone's largest stride, one and two)."""
    stride = max(info.stride for info in backbone.feature_info)
    height, width = example.shape[-2:]
    return torch.randn(
        *example.shape[:-2], height + stride, width + 2 * stride, device=example.device, dtype=example.dtype
    )


def _write_torchscript(backbone: Backbone, example: Tensor, path: Path, dynamic: bool) -> RunLoaded:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notices and its (handled) shape-check TracerWarnings
        traced = torch.jit.trace(backbone, example, strict=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    if dynamic and backbone.spec.input_size is None:  # a trace may have kept sizes as constants: run it at another
        other = _other_size(backbone, example)
        with torch.no_grad():
            expected = backbone(other)
            try:
                difference = _max_abs_diff(expected, list(loaded(other).values()))
            except RuntimeError as error:
                difference, failure = float("inf"), f"fails ({first_line(error)})"
            else:
                failure = f"differs from eager by {difference:.3g}"
        scale = max(float(value.abs().max()) for value in expected.values())
        if not difference <= 1e-4 * (1 + scale):
            raise ArgumentError(
                f"export: the TorchScript trace of this backbone keeps the example's size "
                f"{tuple(example.shape[-2:])}: at {tuple(other.shape[-2:])} it {failure}. Use format exported or "
                f"onnx for other sizes, or export.dynamic=false (dynamic=False) for a file of this size alone; "
                f"nothing was written"
            )
    return lambda x: list(loaded(x).values())


def _write_exported(backbone: Backbone, example: Tensor, path: Path, dynamic: bool) -> RunLoaded:
    program = torch.export.export(backbone, (example,), dynamic_shapes=(_dynamic_dims(backbone, dynamic),))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return lambda x: list(loaded(x).values())


def _require_onnx_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ArgumentError(
            "export format 'onnx' needs the onnx and onnxscript packages (torch.onnx's exporter): "
            "pip install 'featx[export]'"
        ) from None


def _write_onnx(backbone: Backbone, example: Tensor, path: Path, dynamic: bool) -> Optional[RunLoaded]:
    """Writes the ONNX file; returns ``None`` when onnxruntime is not installed to run it."""
    names = [info.name for info in backbone.feature_info]
    torch.onnx.export(
        backbone,
        (example,),
        str(path),
        input_names=["image"],
        output_names=names,
        dynamo=True,
        external_data=False,
        dynamic_shapes=(_dynamic_dims(backbone, dynamic),),
        verbose=False,
    )
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: [torch.from_numpy(out) for out in session.run(None, {"image": x.cpu().numpy()})]


_WRITERS = {"torchscript": _write_torchscript, "exported": _write_exported, "onnx": _write_onnx}


def export_backbone(
    backbone: Backbone,
    path: str | os.PathLike,
    format: str,
    example_size: Tuple[int, int],
    batch_size: int = 1,
    dynamic: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``backbone`` (put in eval mode) to ``path`` as ``format`` (``torchscript``, ``exported`` or ``onnx``),
    traced with a random ``batch_size × C × example_size`` input; ``dynamic`` keeps batch, height and width
    symbolic where the format allows (TorchScript traces are shape-specialised in places).

    The file is written next to ``path`` first and renamed into place, so a failed export leaves nothing; an
    existing ``path`` is replaced only with ``overwrite``. The export is then reloaded and run on a fresh input.
    """
    if not isinstance(backbone, Backbone):
        raise ArgumentError(f"backbone: expected a featx Backbone (featx.build(...)), got {type(backbone).__name__}")
    path = path_argument(path, "path")
    if format not in FORMATS:
        raise ArgumentError(f"format: {format!r} is unknown (valid: {', '.join(FORMATS)})")
    if not (isinstance(example_size, (tuple, list)) and len(example_size) == 2):
        raise ArgumentError(f"example_size: expected (height, width), got {example_size!r:.80}")
    flag_argument(dynamic, "dynamic")
    flag_argument(overwrite, "overwrite")
    check_batch_shape("export", batch_size, *example_size)
    if format == "onnx":
        _require_onnx_exporter()
    first = next(backbone.parameters())
    if first.is_meta:
        raise ArgumentError(
            "backbone: it was built on the meta device (device: meta) and holds no weights to export; build it on a "
            "real device"
        )
    # a batch of 1 would be specialised to a constant by torch.export, so dynamic exports trace with at least 2
    shape = (max(batch_size, 2 if dynamic else 1), backbone.in_channels, *example_size)
    example = torch.randn(*shape, device=first.device, dtype=first.dtype)  # a half-precision backbone takes half
    backbone.eval()
    loaded: List[Optional[RunLoaded]] = []

    def write(partial: Path) -> None:
        loaded.append(_WRITERS[format](backbone, example, partial, dynamic))

    target = write_atomically(
        path,
        write,
        overwrite=overwrite,
        what="export.path",
        hint="set overwrite (export.overwrite=true) to replace it",
    )
    run_loaded = loaded[0]
    if run_loaded is None:
        return ExportResult(target, format, None)
    check = torch.randn_like(example)
    with torch.no_grad():
        expected = backbone(check)
        return ExportResult(target, format, _max_abs_diff(expected, run_loaded(check)))
