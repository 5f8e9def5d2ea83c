"""Exporting a built backbone: TorchScript (traced), ``torch.export`` programs and ONNX, each checked against eager.

Example::

    bb = featx.build("resnet18_fpn", overrides=["device=cpu"])
    result = export_backbone(bb, "resnet18_fpn.onnx", "onnx", example_size=(224, 224))
    result.max_abs_diff   # largest difference from eager on fresh inputs (None: no onnxruntime to run it)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from featx.errors import ArgumentError, FeatxError, InputShapeError, first_line
from featx.files import file_path_argument, flag_argument, utf8_path, write_atomically
from featx.nn.backbone import Backbone
from featx.spec.limits import check_batch_shape

#: format -> the file suffix it is written with
FORMATS = {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}
#: format -> what its file holds, for messages
_WRITTEN = {"torchscript": "TorchScript trace", "exported": "torch.export program", "onnx": "ONNX file"}

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


def _random(shape: Sequence[int], like: Tensor, generator: torch.Generator) -> Tensor:
    """A standard-normal input of ``shape`` on ``like``'s device and dtype, drawn from ``generator`` (on the CPU):
    the user's global random state is left alone."""
    return torch.randn(*shape, generator=generator).to(device=like.device, dtype=like.dtype)


def _other_size(backbone: Backbone, example: Tensor, generator: torch.Generator) -> Tensor:
    """An input of another height and width than ``example`` (by the backbone's largest stride, one and two)."""
    stride = max(info.stride for info in backbone.feature_info)
    height, width = example.shape[-2:]
    return _random((*example.shape[:-2], height + stride, width + 2 * stride), example, generator)


def _write_torchscript(backbone: Backbone, example: Tensor, path: Path) -> RunLoaded:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notices and its (handled) shape-check TracerWarnings
        traced = torch.jit.trace(backbone, example, strict=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    return lambda x: list(loaded(x).values())


def _write_exported(backbone: Backbone, example: Tensor, path: Path, dims: Dict[int, object]) -> RunLoaded:
    program = torch.export.export(backbone, (example,), dynamic_shapes=(dims,))
    # as open files: torch.export warns that a path not ending in .pt2 (the partial file's) cannot be loaded
    with path.open("wb") as file, warnings.catch_warnings():
        # torch's notice on tensors sharing storage in other layouts (a channels_last backbone), which it saves whole
        warnings.filterwarnings("ignore", message="No complete tensor found", category=UserWarning)
        torch.export.save(program, file)
    with path.open("rb") as file:
        loaded = torch.export.load(file).module()
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


def _write_onnx(backbone: Backbone, example: Tensor, path: Path, dims: Dict[int, object]) -> Optional[RunLoaded]:
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
        dynamic_shapes=(dims,),
        verbose=False,
    )
    try:
        import onnxruntime
    except ImportError:
        return None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - a file torch wrote that onnxruntime cannot run: it cannot be checked
        raise ArgumentError(
            f"export: onnxruntime cannot load the ONNX file torch wrote for this backbone, so it cannot be checked "
            f"({type(error).__name__}: {first_line(error)}); nothing was written (a float32 backbone, or format "
            "exported or torchscript, can be)"
        ) from None
    return lambda x: [torch.from_numpy(out) for out in session.run(None, {"image": x.cpu().numpy()})]


def export_path(path: Path, format: str, key: str) -> Path:
    """``path`` where torch's writer of ``format`` can write, else :class:`ArgumentError` naming ``key``: TorchScript
    and ONNX take paths that are UTF-8 (their writers take text; ``torch.export`` writes through an open file).
    Example: ``export_path(Path("bb.pt"), "torchscript", "export.path")``."""
    return path if format == "exported" else utf8_path(path, key, reader=f"torch's {_WRITTEN[format]} writer takes")


def _write(format: str, backbone: Backbone, example: Tensor, path: Path, dynamic: bool) -> Optional[RunLoaded]:
    """Write ``backbone`` as ``format`` to ``path`` and return how to run the file (``None``: no ONNX runtime)."""
    if format == "torchscript":
        return _write_torchscript(backbone, example, path)
    dims = _dynamic_dims(backbone, dynamic)
    writer = _write_exported if format == "exported" else _write_onnx
    return writer(backbone, example, path, dims)


def _tolerance(outputs: Dict[str, Tensor]) -> float:
    """How far an export's outputs may be from eager's: 1e-4 (16 machine epsilons of a half-precision backbone)
    times one plus the largest eager value."""
    dtype = next(iter(outputs.values())).dtype
    scale = max(float(value.abs().max()) for value in outputs.values())
    return max(1e-4, 16 * torch.finfo(dtype).eps) * (1 + scale)


#: the float32 precision settings (torch's ``torch.backends.<backend>.<op>.fp32_precision``) that apply to a
#: backbone's convolutions and matmuls on each device type
_PRECISION_SETTINGS = {
    "cuda": (("cuda", "matmul"), ("cudnn", "conv")),
    "cpu": (("mkldnn", "matmul"), ("mkldnn", "conv")),
}


def _precision_setting(backend: str, op: str) -> Any:
    return getattr(getattr(torch.backends, backend), op)


@contextlib.contextmanager
def _float32_without_tf32(device: torch.device) -> Iterator[None]:
    """Full float32 precision for the convolutions and matmuls on ``device`` inside the block (no TF32 on CUDA, no
    bfloat16 in oneDNN on the CPU), as they were after it: the check compares float32 with float32 (an ONNX file runs
    on the CPU, and TF32's rounding is far above the tolerance). With torch's per-backend settings (``fp32_precision``,
    which it refuses to mix with the legacy ``allow_tf32`` and ``set_float32_matmul_precision``) only a setting that
    is not already full precision is changed, and put back as torch's own ``flags()`` managers do."""
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # a torch before the per-backend settings
        with _legacy_float32_without_tf32():
            yield
        return
    settings = [_precision_setting(*names) for names in _PRECISION_SETTINGS.get(device.type, ())]
    changed = {
        setting: setting.fp32_precision for setting in settings if setting.fp32_precision not in ("ieee", "none")
    }
    for setting in changed:
        setting.fp32_precision = "ieee"
    try:
        yield
    finally:
        for setting, precision in changed.items():
            setting.fp32_precision = precision


@contextlib.contextmanager
def _legacy_float32_without_tf32() -> Iterator[None]:
    convolutions, matmuls = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = convolutions
        torch.set_float32_matmul_precision(matmuls)


def _check_against_eager(
    backbone: Backbone,
    run_loaded: RunLoaded,
    example: Tensor,
    format: str,
    dynamic: bool,
    generator: torch.Generator,
) -> float:
    """Run the written export on a fresh input of the example's shape and, when it is dynamic and the model takes
    any size, at another height and width; the largest difference from eager, or :class:`ArgumentError`."""
    inputs = [_random(example.shape, example, generator)]
    if dynamic and backbone.spec.input_size is None:
        inputs.append(_other_size(backbone, example, generator))
    worst = 0.0
    for x in inputs:
        with torch.no_grad(), _float32_without_tf32(x.device):
            expected = backbone(x)
            tolerance = _tolerance(expected)
            try:
                difference = _max_abs_diff(expected, run_loaded(x))
            except Exception as error:  # noqa: BLE001 - any runtime's failure to run the file is the finding
                difference, failure = float("inf"), f"fails ({type(error).__name__}: {first_line(error)})"
            else:
                failure = f"differs from eager by {difference:.3g} (tolerance {tolerance:.3g})"
        if not difference <= tolerance:
            size = tuple(x.shape[-2:])
            if x is inputs[0]:
                raise ArgumentError(
                    f"export: the {_WRITTEN[format]} of this backbone does not match eager at the example size {size}: "
                    f"it {failure}; nothing was written"
                )
            retry = "Use format exported or onnx for other sizes, or" if format == "torchscript" else "Use"
            raise ArgumentError(
                f"export: the {_WRITTEN[format]} of this backbone keeps the example's size "
                f"{tuple(example.shape[-2:])}: at {size} it {failure}. {retry} export.dynamic=false "
                f"(dynamic=False) for a file of this size alone; nothing was written"
            )
        worst = max(worst, difference)
    return worst


def export_backbone(
    backbone: Backbone,
    path: str | os.PathLike,
    format: str,
    example_size: Tuple[int, int],
    batch_size: int = 1,
    dynamic: bool = True,
    overwrite: bool = False,
    size_key: str = "example_size",
) -> ExportResult:
    """Export ``backbone`` (in eval mode; each module's mode is restored afterwards) to ``path`` as ``format``
    (``torchscript``, ``exported`` or ``onnx``), traced with a random ``batch_size × C × example_size`` input;
    ``dynamic`` keeps batch, height and width symbolic where the format allows (TorchScript traces are
    shape-specialised in places).

    The file is written next to ``path`` first, reloaded and run on a fresh input, and, when ``dynamic`` and the
    model takes any size, at another height and width too; it is renamed into place only if its outputs are within
    1e-4 × (1 + the largest eager value) of eager's there (16 epsilons of a half type), else :class:`ArgumentError`
    and nothing is written. An existing ``path`` is replaced only with ``overwrite``. An ONNX file is checked with
    onnxruntime when that is installed (``max_abs_diff`` is ``None`` otherwise). A size the backbone cannot take is
    an :class:`ArgumentError` naming ``size_key`` (the app's ``export.height, export.width``), and an exporter's own
    failure one naming the format.
    """
    if not isinstance(backbone, Backbone):
        raise ArgumentError(f"backbone: expected a featx Backbone (featx.build(...)), got {type(backbone).__name__}")
    path = file_path_argument(path, "path")
    if not isinstance(format, str) or format not in FORMATS:
        raise ArgumentError(f"format: {format!r} is unknown (valid: {', '.join(FORMATS)})")
    export_path(path, format, "path")
    if not (isinstance(example_size, (tuple, list)) and len(example_size) == 2):
        raise ArgumentError(f"example_size: expected (height, width), got {example_size!r:.80}")
    flag_argument(dynamic, "dynamic")
    flag_argument(overwrite, "overwrite")
    check_batch_shape(
        "batch_size, example_size", batch_size, *example_size, names=("batch_size", "example_size", "example_size")
    )
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
    generator = torch.Generator().manual_seed(0)
    example = _random(shape, first, generator)  # a half-precision backbone takes half
    modes = [(module, module.training) for module in backbone.modules()]
    backbone.eval()
    differences: List[Optional[float]] = []

    def write(partial: Path) -> None:
        try:
            run_loaded = _write(format, backbone, example, partial, dynamic)
        except (FeatxError, OSError):  # an OSError is the file's (a full disk): write_atomically names the path
            raise
        except Exception as error:  # noqa: BLE001 - whatever torch's exporter raises for this model: one featx error
            retry = "; try dynamic=False (export.dynamic=false)" if dynamic else ""
            raise ArgumentError(
                f"export: torch could not write this backbone as {_WRITTEN[format]} ({type(error).__name__}: "
                f"{first_line(error)}){retry}; nothing was written"
            ) from None
        differences.append(
            None
            if run_loaded is None
            else _check_against_eager(backbone, run_loaded, example, format, dynamic, generator)
        )

    try:
        with torch.no_grad():  # a size the model cannot take: its own error, before any exporter meets it
            try:
                backbone(example)
            except InputShapeError as error:
                raise ArgumentError(f"{size_key}: {example_size[0]}x{example_size[1]}: {error}") from None
        target = write_atomically(
            path,
            write,
            overwrite=overwrite,
            what="export.path",
            hint="set overwrite (export.overwrite=true) to replace it",
        )
    finally:  # a backbone exported mid-training goes on training (BatchNorm statistics, dropout)
        for module, training in modes:
            module.training = training
    return ExportResult(target, format, differences[0])
