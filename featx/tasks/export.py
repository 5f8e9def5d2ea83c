"""Exporting a built backbone: TorchScript (traced), ``torch.export`` programs and ONNX, each checked against eager.

Example::

    bb = featx.build("resnet18_fpn", overrides=["device=cpu"])
    result = export_backbone(bb, "resnet18_fpn.onnx", "onnx", example_size=(224, 224))
    result.max_abs_diff   # largest difference from eager on fresh inputs (None: no onnxruntime to run it)
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, cast

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from featx.errors import ArgumentError, FeatxError, InputShapeError, first_line
from featx.files import (
    file_path_argument,
    flag_argument,
    printable_path,
    utf8_path,
    write_atomically,
)
from featx.nn.backbone import Backbone
from featx.spec.limits import check_batch_shape, escaped, quoted

#: format -> the file suffix it is written with
FORMATS = {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}
#: format -> what its file holds, for messages
_WRITTEN = {"torchscript": "TorchScript trace", "exported": "torch.export program", "onnx": "ONNX file"}

#: runs the reloaded export on an input and returns its outputs in ``feature_info`` order
RunLoaded = Callable[[Tensor], List[Tensor]]


@dataclass(frozen=True)
class ExportKeys:
    """How :func:`export_backbone`'s errors name what to change: its own arguments (the default) or an app's keys."""

    path: str = "path"
    format: str = "format"
    size: str = "example_size"
    #: how to say "replace an existing file"
    overwrite: str = "pass overwrite=True to replace it"


#: the names ``featx-export`` gives: its ``export.*`` keys
APP_KEYS = ExportKeys(
    path="export.path",
    format="export.format",
    size="export.height, export.width",
    overwrite="set overwrite (export.overwrite=true) to replace it",
)


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


def _differences(expected: Dict[str, Tensor], actual: List[Tensor]) -> Dict[str, float]:
    """Each output's largest difference from eager's."""
    return {
        name: float((want - torch.as_tensor(got, device=want.device)).abs().max())
        for (name, want), got in zip(expected.items(), actual, strict=True)
    }


def _quoted_error(error: BaseException) -> str:
    """``Type: first line`` of a library's exception, its control characters (torch's terminal colours) escaped."""
    return f"{type(error).__name__}: {escaped(first_line(error))}"


def _random(shape: Sequence[int], like: Tensor, generator: torch.Generator) -> Tensor:
    """A standard-normal input of ``shape`` on ``like``'s device and dtype, drawn from ``generator`` (on the CPU):
    the user's global random state is left alone."""
    return torch.randn(*shape, generator=generator).to(device=like.device, dtype=like.dtype)


def _largest_stride(backbone: Backbone) -> int:
    """The largest stride of the backbone's outputs (the step of the sizes it is checked at)."""
    return max(info.stride for info in backbone.feature_info)


def _other_size(backbone: Backbone, example: Tensor, generator: torch.Generator) -> Tensor:
    """An input of another height and width than ``example`` (by the backbone's largest stride, one and two)."""
    stride = _largest_stride(backbone)
    height, width = example.shape[-2:]
    return _random((*example.shape[:-2], height + stride, width + 2 * stride), example, generator)


def _smaller_sizes(backbone: Backbone, example: Tensor) -> List[Tuple[int, int]]:
    """The heights and widths below ``example``'s that a dynamic export is checked at, largest first: less the
    backbone's largest stride on each side (a branch just below the traced size), where both stay at least 1; then
    each side halved, rounded down to a multiple of that stride and kept at least the stride (a side already under
    it is kept), until neither changes (a branch far below: Swin turns its window shift off at 224 and less)."""
    stride = _largest_stride(backbone)
    height, width = (int(side) for side in example.shape[-2:])
    sizes = [(height - stride, width - stride)] if min(height, width) > stride else []
    while True:
        smaller = (_halved(height, stride), _halved(width, stride))
        if smaller == (height, width):
            return sizes
        height, width = smaller
        if smaller not in sizes:
            sizes.append(smaller)


def _halved(side: int, stride: int) -> int:
    """Half of ``side`` rounded down to a multiple of ``stride``, at least ``stride``, at most ``side``."""
    return min(side, max(stride, side // 2 // stride * stride))


#: the Tensor methods that turn a tensor's value into a Python bool or number (which a trace keeps as a constant)
_TO_PYTHON = (Tensor.__bool__, Tensor.item, Tensor.__int__, Tensor.__float__, Tensor.__index__)


class _TensorValueSites(TorchFunctionMode):
    """Records where Python code turns a tensor into a bool or number (``if x.max() > 1:``, ``x.max().item()``), as
    ``(file, line)``."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Set[Tuple[str, int]] = set()

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None
    ) -> Any:
        if func in _TO_PYTHON:
            caller = sys._getframe(1)  # the code that asked for the value
            self.sites.add((caller.f_code.co_filename, caller.f_lineno))
        return func(*args, **(kwargs or {}))


def _value_sites(backbone: Backbone, example: Tensor) -> Set[Tuple[str, int]]:
    """Where an eager forward of ``example`` turns a tensor's values into Python ones: there a shape is a Python int,
    so such a tensor holds values (in a trace, shapes are tensors too: Swin's branch on its padded size is one)."""
    with torch.no_grad(), _TensorValueSites() as recorder:
        backbone(example)
    return recorder.sites


def _refuse_value_branches(
    caught: List[warnings.WarningMessage], backbone: Backbone, example: Tensor, format_key: str
) -> None:
    """:class:`ArgumentError` naming ``format_key`` when the tracer warned that it took a tensor made a Python bool
    or number as a constant where eager turns a tensor's values into one: the trace keeps the branch (or number) its
    example gave for every input (the check's random inputs would take the same branch and pass). The eager forward
    that tells values from shapes runs only after such a warning."""
    warned = [warning for warning in caught if issubclass(warning.category, torch.jit.TracerWarning)]
    value_sites = _value_sites(backbone, example) if warned else set()
    branch = next((warning for warning in warned if (warning.filename, warning.lineno) in value_sites), None)
    if branch is not None:
        raise ArgumentError(
            f"{format_key}: torchscript cannot hold this backbone: at {printable_path(branch.filename)}:"
            f"{branch.lineno} it branches on a tensor's values (torch's tracer: {escaped(first_line(branch.message))}"
            "), and a trace keeps the branch its example input took for every input. torch.export (format exported "
            "or onnx) refuses such a branch too: write it with torch.where or torch.cond; nothing was written"
        )


class _FixedShape(torch.nn.Module):
    """A trace that takes only the input shape it was traced with (``dynamic=False``): at another shape a trace
    computes what its example's shape gave (Swin's window padding), where the other formats' static files refuse."""

    def __init__(self, traced: torch.nn.Module, shape: Sequence[int]) -> None:
        super().__init__()
        self.traced = traced
        self.shape = list(shape)
        self.refusal = (
            f"featx: this TorchScript file was exported for inputs of shape {tuple(shape)} only (dynamic=False); "
            "export it again with dynamic=True (export.dynamic=true) for other shapes"
        )

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        if list(x.shape) != self.shape:
            raise RuntimeError(self.refusal + f"; got {list(x.shape)}")
        return self.traced(x)


def _write_torchscript(backbone: Backbone, example: Tensor, path: Path, dynamic: bool) -> RunLoaded:
    """Trace (in a scripted check of the input's shape unless ``dynamic``), save and reload (its warnings are the
    caller's: :func:`_write` reads them)."""
    # without gradients: torch's check of the trace runs so, and nn.MultiheadAttention takes another path with them
    # (a ViT's trace failed torch's check); the trace is an inference graph, as the other formats' are
    with torch.no_grad():
        traced: torch.nn.Module = torch.jit.trace(backbone, example, strict=False)
    if not dynamic:
        traced = torch.jit.script(_FixedShape(traced, example.shape))
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


def _onnxruntime_hint(example: Tensor) -> str:
    """What can be written instead of an ONNX file onnxruntime cannot load: float32 types are what it runs."""
    if example.dtype != torch.float32:
        return "a float32 backbone, or format exported or torchscript, can be"
    if torch.is_autocast_enabled(example.device.type):  # the autocast types reach the file
        return "exported outside torch.autocast, or as format exported or torchscript, it can be"
    return "format exported or torchscript can be"


#: the name of an ONNX file's input
ONNX_INPUT = "image"
#: the names of its dynamic input axes (as users of ``torch.onnx.export(dynamic_axes=...)`` name them)
ONNX_AXES = {0: "batch", 2: "height", 3: "width"}
#: the opset of the ONNX files featx writes (torch's default today, set so that it moves with featx, not torch)
ONNX_OPSET = 20
#: the most weight bytes torch's ONNX exporter writes into the .onnx file itself: beyond them (a protobuf holds 2 GiB)
#: it writes them as external data, a second file named after the one it writes (featx's temporary file)
ONNX_ONE_FILE_BYTES = 1536 * 2**20


def _refuse_unfit_for_onnx(backbone: Backbone, format_key: str) -> None:
    """:class:`ArgumentError` for a backbone no single, valid ONNX file holds: an output named as the input (names in
    an ONNX graph are unique), or weights beyond :data:`ONNX_ONE_FILE_BYTES` (counted without reading them: a meta
    backbone's too)."""
    if any(info.name == ONNX_INPUT for info in backbone.feature_info):
        raise ArgumentError(
            f"backbone.stages: output '{ONNX_INPUT}' has the name of the ONNX file's input ('{ONNX_INPUT}'), and an "
            "ONNX graph's names are unique; rename that stage, or use format exported or torchscript; nothing was "
            "written"
        )
    tensors = {*backbone.parameters(), *backbone.buffers()}
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    if size > ONNX_ONE_FILE_BYTES:
        raise ArgumentError(
            f"{format_key}: this backbone's parameters and buffers take {size / 2**30:.2f} GiB, more than the "
            f"{ONNX_ONE_FILE_BYTES / 2**30:.1f} GiB torch's ONNX exporter writes into one file (it writes larger "
            "weights into a second file beside it); use format exported or torchscript; nothing was written"
        )


def _axis_names(program: "torch.onnx.ONNXProgram") -> Dict[Any, str]:
    """torch.export's symbol (``s77``) of each dynamic axis of the program's input -> its name in
    :data:`ONNX_AXES`, for ``ONNXProgram.rename_axes`` (which renames it in every output's shape expression too)."""
    shape = program.model.graph.inputs[0].shape or ()  # None: a shape the exporter did not infer
    names: Dict[Any, str] = {}  # rename_axes takes str or onnx_ir's SymbolicDim keys
    for axis, name in ONNX_AXES.items():
        symbol = getattr(shape[axis], "value", None) if axis < len(shape) else None  # a static axis is an int
        if isinstance(symbol, str):
            names.setdefault(symbol, name)  # two sides of one symbol (a square-only model) keep the first name
    return names


def _write_onnx(backbone: Backbone, example: Tensor, path: Path, dims: Dict[int, object]) -> Optional[RunLoaded]:
    """Writes the ONNX file; returns ``None`` when onnxruntime is not installed to run it."""
    names = [info.name for info in backbone.feature_info]
    program = cast(  # dynamo=True: always the ONNX program (None is the TorchScript-based exporter's answer)
        "torch.onnx.ONNXProgram",
        torch.onnx.export(
            backbone,
            (example,),
            input_names=[ONNX_INPUT],
            output_names=names,
            opset_version=ONNX_OPSET,
            dynamo=True,
            dynamic_shapes=(dims,),
            verbose=False,
        ),
    )
    program.rename_axes(_axis_names(program))
    program.save(str(path), external_data=False)
    try:
        import onnxruntime
    except ImportError:
        return None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - a file torch wrote that onnxruntime cannot run: it cannot be checked
        raise ArgumentError(
            f"export: onnxruntime cannot load the ONNX file torch wrote for this backbone, so it cannot be checked "
            f"({_quoted_error(error)}); nothing was written ({_onnxruntime_hint(example)})"
        ) from None
    return lambda x: [torch.from_numpy(out) for out in session.run(None, {ONNX_INPUT: x.cpu().numpy()})]


def static_may_help(format: str, dynamic: bool) -> bool:
    """Whether an export of ``format`` that failed with ``dynamic`` may succeed with ``dynamic=False``: a dynamic
    ``exported``/``onnx`` export (a TorchScript trace is the same whether dynamic or not)."""
    return dynamic and format != "torchscript"


def export_path(path: Path, format: str, key: str) -> Path:
    """``path`` where torch's writer of ``format`` can write, else :class:`ArgumentError` naming ``key``: TorchScript
    and ONNX take paths that are UTF-8 (their writers take text; ``torch.export`` writes through an open file).
    Example: ``export_path(Path("bb.pt"), "torchscript", "export.path")``."""
    return path if format == "exported" else utf8_path(path, key, reader=f"torch's {_WRITTEN[format]} writer takes")


def _write(
    format: str, backbone: Backbone, example: Tensor, path: Path, dynamic: bool, keys: ExportKeys
) -> Optional[RunLoaded]:
    """Write ``backbone`` as ``format`` to ``path`` and return how to run the file (``None``: no ONNX runtime)."""
    if format == "torchscript":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # kept from the output: trace's deprecation notices, shape-check warnings
            run_loaded = _write_torchscript(backbone, example, path, dynamic)
        _refuse_value_branches(caught, backbone, example, keys.format)
        return run_loaded
    dims = _dynamic_dims(backbone, dynamic)
    writer = _write_exported if format == "exported" else _write_onnx
    return writer(backbone, example, path, dims)


#: how far an export's output may be from eager's, relative to that output's largest eager value (at least 16
#: machine epsilons: a half-precision backbone's)
RELATIVE_TOLERANCE = 1e-4


def _tolerances(outputs: Dict[str, Tensor]) -> Dict[str, float]:
    """Each output's tolerance: :data:`RELATIVE_TOLERANCE` times its largest eager value, plus its type's smallest
    normal number (an output of zeros, or of subnormals a runtime flushes to zero)."""
    tolerances = {}
    for name, value in outputs.items():
        types = torch.finfo(value.dtype)
        tolerances[name] = max(RELATIVE_TOLERANCE, 16 * types.eps) * float(value.abs().max()) + types.tiny
    return tolerances


def _nan_largest(difference: float) -> float:
    """``difference`` for ordering, a NaN (an output that is no number) above any other."""
    return math.inf if math.isnan(difference) else difference


def _worst_output(differences: Dict[str, float], tolerances: Dict[str, float]) -> str:
    """The output furthest from eager for its tolerance."""
    return max(differences, key=lambda name: _nan_largest(differences[name]) / tolerances[name])


def _unit_sides(outputs: Dict[str, Tensor]) -> List[str]:
    """The outputs with a side of 1 (``c5 is 1x1``): torch.export fixes such a side, so the program takes no other."""
    return [
        f"{name} is {value.shape[-2]}x{value.shape[-1]}" for name, value in outputs.items() if 1 in value.shape[-2:]
    ]


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


def _mismatch(expected: Dict[str, Tensor], run_loaded: RunLoaded, x: Tensor) -> Tuple[float, Optional[str]]:
    """The file's largest difference from eager's ``expected`` on ``x``, and what is wrong (``None``: each output is
    within its tolerance): the output furthest from eager named, or the runtime's failure."""
    try:
        differences = _differences(expected, run_loaded(x))
    except Exception as error:  # noqa: BLE001 - any runtime's failure to run the file is the finding
        return math.inf, f"fails ({_quoted_error(error)})"
    tolerances = _tolerances(expected)
    worst = _worst_output(differences, tolerances)
    largest = max(differences.values(), key=_nan_largest)
    if differences[worst] <= tolerances[worst]:
        return largest, None
    return largest, (
        f"differs from eager by {differences[worst]:.3g} in output '{worst}' (tolerance {tolerances[worst]:.3g}: "
        f"{RELATIVE_TOLERANCE:g} times its largest eager value, {float(expected[worst].abs().max()):.3g})"
    )


def _check_inputs(
    backbone: Backbone, example: Tensor, dynamic: bool, generator: torch.Generator
) -> List[Tuple[Tensor, str]]:
    """The inputs the written file is checked on, each with what it is (``example``, ``larger`` or ``smaller``): a
    fresh one of the example's shape and, when the export is dynamic and the model takes any size, one larger
    (:func:`_other_size`) and those of :func:`_smaller_sizes`."""
    inputs = [(_random(example.shape, example, generator), "example")]
    if dynamic and backbone.spec.input_size is None:
        inputs.append((_other_size(backbone, example, generator), "larger"))
        for size in _smaller_sizes(backbone, example):
            inputs.append((_random((*example.shape[:-2], *size), example, generator), "smaller"))
    return inputs


def _check_against_eager(
    backbone: Backbone,
    run_loaded: RunLoaded,
    example: Tensor,
    format: str,
    dynamic: bool,
    generator: torch.Generator,
    size_key: str,
) -> float:
    """Run the written export on :func:`_check_inputs`, a smaller size only where eager takes it (and, for a
    ``torch.export`` program, where eager gives no output a side of 1, which torch.export keeps apart: the program
    refuses it); the largest difference from eager, or :class:`ArgumentError`."""
    worst = 0.0
    unit_sides: List[str] = []
    for x, kind in _check_inputs(backbone, example, dynamic, generator):
        with torch.no_grad(), _float32_without_tf32(x.device):
            try:
                expected = backbone(x)
            except Exception:  # noqa: BLE001 - a smaller size eager itself cannot take (too small) is not checked
                if kind == "smaller":
                    continue
                raise
            if kind == "smaller" and format == "exported" and _unit_sides(expected):
                continue
            difference, failure = _mismatch(expected, run_loaded, x)
        if kind == "example":
            unit_sides = _unit_sides(expected)
        if failure is not None:
            size = tuple(x.shape[-2:])
            if kind == "example":
                raise ArgumentError(
                    f"export: the {_WRITTEN[format]} of this backbone does not match eager at the example size {size}: "
                    f"it {failure}; nothing was written"
                )
            # no other format is advised: one whose model branches on sizes in Python keeps the branch in each
            # (Swin's: exported refuses other sizes, the ONNX file computes the traced branch)
            retry = "Use"
            if unit_sides and format != "torchscript":
                retry = (
                    f"At the example size {', '.join(unit_sides)}, and torch.export keeps a side of 1 fixed: export "
                    f"at a larger size ({size_key}) that makes every output at least 2x2, or use"
                )
            raise ArgumentError(
                f"export: the {_WRITTEN[format]} of this backbone keeps the example's size "
                f"{tuple(example.shape[-2:])}: at {size} it {failure}. {retry} export.dynamic=false "
                f"(dynamic=False) for a file of this size alone; nothing was written"
            )
        worst = max(worst, difference)
    return worst


def _compiled_module(backbone: object) -> object:
    """The module ``torch.compile`` wrapped, where ``backbone`` is its wrapper (exported is the module itself: the
    exporters trace it, and Dynamo compiles nothing for them); else ``backbone``. Without Dynamo imported, nothing
    was compiled."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    while eval_frame is not None and isinstance(backbone, eval_frame.OptimizedModule):
        backbone = backbone._orig_mod
    return backbone


def _int(value: Any) -> Any:
    """``value`` as an ``int`` where it is an integral number other than a bool (numpy's integers), else itself."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def export_backbone(
    backbone: Backbone,
    path: str | os.PathLike,
    format: str,
    example_size: Tuple[int, int],
    batch_size: int = 1,
    dynamic: bool = True,
    overwrite: bool = False,
    keys: ExportKeys = ExportKeys(),
) -> ExportResult:
    """Export ``backbone`` (in eval mode; each module's mode is restored afterwards) to ``path`` as ``format``
    (``torchscript``, ``exported`` or ``onnx``), traced with a random ``batch_size × C × example_size`` input;
    ``dynamic`` keeps batch, height and width symbolic where the format allows (TorchScript traces are
    shape-specialised in places).

    The file is written next to ``path`` first, reloaded and run on a fresh input, and, when ``dynamic`` and the
    model takes any size, at a larger height and width and at smaller ones down to the backbone's largest stride
    (:func:`_smaller_sizes`); it is renamed into place only if each output is within 1e-4 × its largest eager value
    of eager's there (16 epsilons of a half type), else :class:`ArgumentError` naming the output, and nothing is
    written (nor are the folders it created for ``path`` left). An existing ``path`` is replaced only with
    ``overwrite``. An ONNX file (opset :data:`ONNX_OPSET`, dynamic axes named by :data:`ONNX_AXES`) is checked with
    onnxruntime when that is installed (``max_abs_diff`` is ``None`` otherwise); a backbone with an output named
    ``image`` (the file's input) or weights beyond :data:`ONNX_ONE_FILE_BYTES` is refused as ONNX before exporting.
    A TorchScript trace of a model that branches on a tensor's values is refused; one of ``dynamic=False`` refuses
    other input shapes than its example's. ``torch.compile(backbone)`` exports ``backbone``. Sizes and the batch are
    integral numbers (numpy's too). A size the backbone cannot take is an :class:`ArgumentError` naming
    ``example_size``, and an exporter's own failure one naming the format; ``keys`` (an :class:`ExportKeys`;
    :data:`APP_KEYS`: the app's ``export.*``) says how errors name the arguments.
    """
    inner = _compiled_module(backbone)
    if not isinstance(inner, Backbone):
        compiled = f" of {type(inner).__name__}" if inner is not backbone else ""
        raise ArgumentError(
            "backbone: expected a featx Backbone (featx.build(...)), or torch.compile of one, got "
            f"{type(backbone).__name__}{compiled}"
        )
    backbone = inner
    if not isinstance(keys, ExportKeys):
        raise ArgumentError(
            "keys: expected featx.export.ExportKeys (how errors name the arguments: ExportKeys(), the default, names "
            f"export_backbone's own), got {quoted(keys)}"
        )
    path = file_path_argument(path, "path")
    if not isinstance(format, str) or format not in FORMATS:
        raise ArgumentError(f"format: {format!r} is unknown (valid: {', '.join(FORMATS)})")
    export_path(path, format, "path")
    if not (isinstance(example_size, (tuple, list)) and len(example_size) == 2):
        raise ArgumentError(f"example_size: expected (height, width), got {example_size!r:.80}")
    flag_argument(dynamic, "dynamic")
    flag_argument(overwrite, "overwrite")
    batch_size, example_size = _int(batch_size), (_int(example_size[0]), _int(example_size[1]))
    check_batch_shape(
        "batch_size, example_size", batch_size, *example_size, names=("batch_size", "example_size", "example_size")
    )
    if format == "onnx":
        _require_onnx_exporter()
        _refuse_unfit_for_onnx(backbone, keys.format)
    first = next(backbone.parameters())
    if first.is_meta:
        raise ArgumentError(
            "backbone: its tensors are on the meta device (built with device: meta, or moved there) and hold no "
            "weights to export; build it on a real device"
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
            run_loaded = _write(format, backbone, example, partial, dynamic, keys)
        except (FeatxError, OSError):  # an OSError is the file's (a full disk): write_atomically names the path
            raise
        except Exception as error:  # noqa: BLE001 - whatever torch's exporter raises for this model: one featx error
            retry = "; try dynamic=False (export.dynamic=false)" if static_may_help(format, dynamic) else ""
            raise ArgumentError(
                f"export: torch could not write this backbone as {_WRITTEN[format]} ({_quoted_error(error)}){retry}; "
                "nothing was written"
            ) from None
        differences.append(
            None
            if run_loaded is None
            else _check_against_eager(backbone, run_loaded, example, format, dynamic, generator, keys.size)
        )

    try:
        with torch.no_grad():  # a size the model cannot take: its own error, before any exporter meets it
            try:
                backbone(example)
            except InputShapeError as error:
                raise ArgumentError(f"{keys.size}: {example_size[0]}x{example_size[1]}: {error}") from None
        # a refused or failed write leaves none of the folders it made for the file
        target = write_atomically(path, write, overwrite=overwrite, what=keys.path, hint=keys.overwrite)
    finally:  # a backbone exported mid-training goes on training (BatchNorm statistics, dropout)
        for module, training in modes:
            module.training = training
    return ExportResult(target, format, differences[0])
