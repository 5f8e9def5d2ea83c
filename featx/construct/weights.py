"""Reading weights files safely and fitting their tensors to the layers a backbone keeps.

Files are read with ``torch.load(weights_only=True)`` (pickled code is refused, nothing in it runs) or safetensors;
what a file's tensors must satisfy to be loaded is checked before anything is copied.

Example::

    loaded = torch_load_file(Path("resnet50.pth"))              # whatever the file holds, plain data only
    load_kept_weights(model, ("conv1", "bn1", "layer1"), state, origin="resnet50.pth")
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.serialization import LoadEndianness

from featx.construct.checked_checkpoints import RememberedCheck
from featx.construct.tensor_records import UnknownLayout, record_mismatch
from featx.errors import WeightsError, first_line
from featx.files import is_utf8_path
from featx.spec.keys import key_path
from featx.spec.limits import quoted, shortened

_SHOWN = 5
#: compressed records of a zip checkpoint may inflate to this many bytes, or this many times the file's size
MAX_INFLATED_BYTES = 1 << 26
MAX_INFLATION = 16


class UnreadableWeightsError(WeightsError):
    """A weights file that cannot be read as a checkpoint at all (truncated, damaged, or another kind of file), as
    opposed to one that reads but holds the wrong content: a hub cache copy that is unreadable may be a download
    that stopped midway."""


#: lines of torch.load's refusal that are advice, not the reason (one of them advises weights_only=False: never)
_ADVICE = re.compile(r"weights_only|Re-running|documentation|pytorch\.org|^\s*$", re.IGNORECASE)


def _unpickler_reason(message: str) -> str:
    """The reason in ``torch.load``'s weights-only refusal, without its advice."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in message.splitlines() if not _ADVICE.search(line)]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "unreadable")


def _global_hint(named: str) -> str:
    """Advice for a refused global: the ``argparse.Namespace`` a training checkpoint keeps its run's arguments in
    (timm's CheckpointSaver stores them as ``args``, beside ``state_dict``); else ``""``. The advice still reads
    the file with ``weights_only=True``, allowing that class alone: nothing in the file runs."""
    if not named.endswith("GLOBAL argparse.Namespace"):
        return ""
    return (
        "; a training checkpoint's arguments: save its state dict alone, still loaded without running anything "
        "(with torch.serialization.safe_globals([argparse.Namespace]): torch.save(torch.load(path, "
        "weights_only=True)['state_dict'], 'weights.pth')) and give that file"
    )


def _safetensors_head(head: bytes) -> bool:
    """Whether a file's first 9 bytes are how a safetensors file starts: its header's length (8 bytes, little
    endian), then the header's JSON ``{``."""
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**32


def torch_load_file(path: Path) -> Any:
    """What a ``.pth``/``.pt`` file holds, read with ``weights_only=True`` (memory-mapped when it is a zip file:
    only the tensors a backbone keeps are ever read from disk)."""
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and path.is_file():
        try:
            with open(path, "rb") as handle:
                head = handle.read(9)
        except OSError as error:  # no permission to read it
            raise UnreadableWeightsError(
                f"{key_path('weights')}: cannot read {path}: {error.strerror or first_line(error)}"
            ) from None
        if head[:4] == b"PK\x03\x04":  # a zip's first record, without the listing a zip ends with
            raise UnreadableWeightsError(
                f"{key_path('weights')}: cannot read {path}: a zip archive cut short (it starts as one, and its end, "
                "the listing of its records, is missing: a copy or download that stopped midway?)"
            )
        if head[:1] != b"\x80":  # torch.save writes a zip, or (legacy) a pickle starting with PROTO
            looks_like = "; it looks like a safetensors file: name it .safetensors" if _safetensors_head(head) else ""
            raise UnreadableWeightsError(
                f"{key_path('weights')}: cannot read {path}: not a torch checkpoint (neither a zip archive nor a "
                f"pickle){looks_like}"
            )
    if is_zip and _is_torchscript(path):  # torch.load would warn, then refuse it with weights_only
        raise UnreadableWeightsError(
            f"{key_path('weights')}: cannot read {path}: a TorchScript program (torch.jit.save writes one, "
            "featx-export too), not a state dict or a featx.save file: load it with torch.jit.load, or give the state "
            "dict or featx.save file it was made from"
        )
    # torch maps a file by its name, which it takes as UTF-8 only: another name is read whole (torch's reading
    # path checks every record's size itself)
    mapped = is_zip and is_utf8_path(path) and _records_checked(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(str(error))
        if "GLOBAL" in reason or reason.lower().startswith("unsupported global"):
            named = reason.split(" was not")[0]
            raise WeightsError(
                f"{key_path('weights')}: {path} holds more than tensors and is refused (loaded with "
                f"weights_only=True; nothing in it ran): {quoted(named)[1:-1]}{_global_hint(named)}"
            ) from None
        raise UnreadableWeightsError(
            f"{key_path('weights')}: cannot read {path}: not a torch checkpoint ({quoted(reason)[1:-1]})"
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever an untrusted file makes the reader raise: it cannot be read
        reason = f"{type(error).__name__}: {first_line(error)}"
        raise UnreadableWeightsError(f"{key_path('weights')}: cannot read {path}: {quoted(reason)[1:-1]}") from None


def _is_torchscript(path: Path) -> bool:
    """Whether the zip file ``path`` is a TorchScript archive (its records under the archive's folder include
    ``constants.pkl`` or the ``code/`` of the program, which ``torch.save`` never writes); False for a zip Python
    cannot list (the reading path says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    inner = [name.partition("/")[2] for name in names]
    return any(name == "constants.pkl" or name.startswith("code/") for name in inner)


def _records_checked(path: Path) -> bool:
    """Whether every tensor record of a zip file holds what its pickle claims, so that memory mapping may read it
    (``torch.load(mmap=True)`` does not compare the sizes); False when the check cannot read the pickle, a record
    is compressed (torch's reading path then compares the sizes itself, and decompresses) or the file is big-endian
    (torch swaps the bytes of each mapped tensor in place: keys sharing a record would be swapped twice, and a
    mapping the caller made shared, ``torch.serialization.set_default_mmap_options``, would swap the file itself).
    A file that passed is remembered (:mod:`featx.construct.checked_checkpoints`): its pickle is not walked again."""
    remembered = RememberedCheck(path)  # the file's status before it is read
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    # the checks below need the listing: a zip Python cannot list is refused, not read by torch unchecked (a name
    # flagged UTF-8 that is not: UnicodeDecodeError; an extra field torch ignores)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        reason = f"{type(error).__name__}: {first_line(error)}"
        raise UnreadableWeightsError(f"{key_path('weights')}: cannot read {path}: {quoted(reason)[1:-1]}") from None
    try:
        problem = _archive_problem(records, path.stat().st_size)
        if problem is not None:
            raise UnreadableWeightsError(
                f"{key_path('weights')}: cannot read {path}: {problem} (a damaged or altered file)"
            )
        if any(info.compress_type != zipfile.ZIP_STORED for info in records):  # mapped bytes would be compressed
            return False
        reader = torch._C.PyTorchFileReader(str(path))
        if _swapped_on_load(reader):
            return False
        if remembered.passed:
            return True
        mismatch = record_mismatch(reader)
    except (UnknownLayout, OSError, RuntimeError, ValueError):  # a zip torch cannot read: torch.load says why
        return False
    if mismatch is not None:
        raise UnreadableWeightsError(
            f"{key_path('weights')}: cannot read {path}: {mismatch} (a damaged or altered file)"
        )
    remembered.remember_pass()
    return True


def _archive_problem(records: List[zipfile.ZipInfo], file_size: int) -> Optional[str]:
    """What makes a zip archive's records unsafe to load, or None: names that differ in case only (torch's reader
    finds a record whatever the case: a tensor could be read from another record than its pickle names), or
    compressed records that inflate to more than :data:`MAX_INFLATED_BYTES` and :data:`MAX_INFLATION` times the
    file (``torch.save`` never compresses; torch would inflate every record, the dropped layers' too)."""
    folded: Dict[str, str] = {}
    for info in records:
        other = folded.setdefault(info.filename.casefold(), info.filename)
        if other != info.filename:
            return f"it holds records {quoted(other)} and {quoted(info.filename)}, whose names differ in case only"
    inflated = sum(info.file_size for info in records if info.compress_type != zipfile.ZIP_STORED)
    if inflated > max(MAX_INFLATED_BYTES, MAX_INFLATION * file_size):
        return (
            f"its compressed records inflate to {inflated} bytes from a file of {file_size} (torch.save never "
            "compresses them)"
        )
    return None


def _swapped_on_load(reader: "torch._C.PyTorchFileReader") -> bool:
    """Whether ``torch.load`` swaps the bytes of the file's tensors (in place, mapped pages too), as torch decides:
    the file's ``byteorder`` record (found whatever its case), else torch's load default, against this machine's."""
    if reader.has_record("byteorder"):  # type: ignore[attr-defined]  # (torch's type stubs lack it)
        order: Optional[bytes] = reader.get_record("byteorder")
    else:
        default = torch.serialization.get_default_load_endianness()
        order = {None: b"little", LoadEndianness.LITTLE: b"little", LoadEndianness.BIG: b"big"}.get(default)
    return order is not None and order != sys.byteorder.encode()


def open_safetensors(path: Path) -> Any:
    """``safe_open(path, framework="pt")``, whose failures are all SafetensorError or OSError: safetensors opens the
    file, then torch maps it again by its name, and a file removed or replaced in between (a run rewriting it) was
    torch's raw RuntimeError. Example: ``with open_safetensors(path) as handle: handle.keys()``."""
    try:
        return safe_open(str(path), framework="pt")
    except RuntimeError as error:  # torch's second open of the file by its name
        raise (OSError if os.path.lexists(path) else FileNotFoundError)(first_line(error)) from None


def safetensors_file(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors and the metadata of a ``.safetensors`` file."""
    try:
        with open_safetensors(path) as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:  # the reader's message may quote the file: one line, cut
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except OSError:  # the reader's own refusal says why
            head = b""
        # torch.save writes a zip (``PK\x03\x04``), or (legacy) a pickle starting with PROTO
        looks_like = (
            "; it looks like a torch checkpoint: name it .pth" if head[:1] == b"\x80" or head == b"PK\x03\x04" else ""
        )
        raise UnreadableWeightsError(
            f"{key_path('weights')}: cannot read {path}: {quoted(first_line(error))[1:-1]}{looks_like}"
        ) from None
    return state, metadata


def owned_copy(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A plain tensor of ``dtype`` with its own memory holding ``tensor``'s values: what a backbone keeps of a file.
    Never the file's memory-mapped pages (a file rewritten later would change the backbone, or crash it when
    shortened), never shared with another tensor of the file (tied layers), never an ``nn.Parameter`` where the
    file had one in place of a buffer (a trainable BatchNorm statistic), always in the default (row-major) layout:
    a file saved from a channels_last model holds 1x1 kernels with channels_last strides, which would otherwise
    make the rebuilt backbone compute in a mix of layouts (the spec's ``channels_last`` sets the layout)."""
    return tensor.detach().to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)


def _listing(keys: Iterable[str], describe: Callable[[str], str]) -> str:
    """The first keys (each shortened: a file's key may be huge), each followed by ``describe(key)`` whole."""
    keys = list(keys)
    shown = "; ".join(f"{shortened(key)} {describe(key)}" for key in keys[:_SHOWN])
    return shown + (f"; and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def is_batch_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: older torchvision files lack it and FrozenBatchNorm2d drops it."""
    return key.endswith(".num_batches_tracked")


def _is_kept(key: str, kept_paths: Iterable[str]) -> bool:
    return any(key == path or key.startswith(path + ".") for path in kept_paths)


def _dtype_kind(dtype: torch.dtype) -> str:
    """``float``, ``complex``, ``bool`` or ``integer``: what a layer of ``dtype`` can take after a cast."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "bool" if dtype == torch.bool else "integer"


def _kind(tensor: torch.Tensor) -> str:
    """The kind of a checkpoint tensor's values, or why it holds none a layer can use."""
    if tensor.layout != torch.strided:
        return f"{tensor.layout} (not dense)"
    if tensor.is_meta:
        return "meta (no values)"
    if tensor.is_quantized:
        return "quantized"
    return _dtype_kind(tensor.dtype)


def check_fit(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    known: Iterable[str],
    origin: str,
    saved_by_featx: bool = False,
) -> None:
    """Raise unless ``state`` holds ``expected``'s keys with their shapes and kinds of values (a float layer takes
    any float dtype, cast; never integers, booleans or complex numbers) and no key outside ``known``. A state dict
    of a featx Backbone's own keys is told how such files load, unless it comes from one (``saved_by_featx``)."""
    known = set(known)
    unexpected = [key for key in state if key not in known and not is_batch_counter(key)]
    missing = [key for key in expected if key not in state and not is_batch_counter(key)]
    mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    wrong_kind = [key for key in expected if key in state and _kind(state[key]) != _dtype_kind(expected[key].dtype)]
    fitting = [key for key in expected if key in state and key not in mismatched and key not in wrong_kind]
    too_large = [key for key in fitting if _cast_overflows(state[key], expected[key].dtype)]
    problems: List[str] = []
    if unexpected:
        problems.append("unexpected keys: " + _listing(unexpected, lambda k: f"{tuple(state[k].shape)}"))
    if missing:
        problems.append("missing keys: " + _listing(missing, lambda k: f"{tuple(expected[k].shape)}"))
    if mismatched:
        problems.append(
            "shape mismatches: "
            + _listing(mismatched, lambda k: f"checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
        )
    if wrong_kind:
        problems.append(
            "value kinds differ: "
            + _listing(
                wrong_kind,
                lambda k: f"checkpoint {state[k].dtype} ({_kind(state[k])}) vs model {expected[k].dtype}",
            )
        )
    if too_large:
        problems.append(
            "values beyond the model's dtype (the cast would make them inf): "
            + _listing(too_large, lambda k: f"checkpoint {state[k].dtype} vs model {expected[k].dtype}")
        )
    if problems:
        raise WeightsError(
            f"{key_path('weights')}: {origin} does not fit the kept layers — "
            + " | ".join(problems)
            + _prefix_hint(unexpected, missing)
            + ("" if saved_by_featx else backbone_state_hint(unexpected, origin))
        )


def _prefix_hint(unexpected: List[str], missing: List[str]) -> str:
    """Advice for a state dict whose keys all carry one prefix the model's lack (``module.`` of DataParallel, a
    Lightning module's attribute name), which would make every missing key: else ``""``."""
    if not unexpected or not missing or "." not in unexpected[0]:
        return ""
    prefix = unexpected[0].split(".", 1)[0] + "."
    if not all(key.startswith(prefix) for key in unexpected):
        return ""
    if not set(missing) <= {key[len(prefix) :] for key in unexpected}:
        return ""
    return (
        f" (the file's keys are the model's with {quoted(prefix)} before them, as DataParallel and other wrappers "
        f"save them: save the state dict without it, {{key.removeprefix({quoted(prefix)}): value for key, value in "
        "state.items()})"
    )


#: the prefixes wrappers put before a module's keys in their state dict, and the wrappers
_WRAPPERS = {"module.": "DistributedDataParallel (or DataParallel)", "_orig_mod.": "torch.compile"}
#: one or more wrappers' prefixes at the start of a key (``module._orig_mod.``: a compiled backbone in DDP)
_WRAPPER_PREFIX = re.compile("(?:" + "|".join(map(re.escape, _WRAPPERS)) + ")+")


def backbone_state_hint(unexpected: List[str], origin: str) -> str:
    """Advice for the file ``origin`` of a featx Backbone's own ``state_dict()`` (keys ``stages.<stage>.<layer>`` and
    ``neck.*``), which neither ``weights`` takes (it takes the model's own keys) nor :func:`featx.load` (it takes
    :func:`featx.save` files), also as a wrapper saves it (keys ``module.stages.*`` of DistributedDataParallel,
    ``_orig_mod.stages.*`` of torch.compile): else ``""``. The advice reads a ``.safetensors`` file with
    safetensors, any other with ``torch.load``."""
    read = "safetensors.torch.load_file(path)" if origin.lower().endswith(".safetensors") else "torch.load(path)"
    wrapped = _WRAPPER_PREFIX.match(unexpected[0]) if unexpected else None
    prefix = wrapped.group() if wrapped else ""
    keys = [key[len(prefix) :] for key in unexpected if key.startswith(prefix)]
    ours = len(keys) == len(unexpected) and all(key.startswith(("stages.", "neck.")) for key in keys)
    if not unexpected or not ours or not any(key.startswith("stages.") for key in keys):
        return ""
    if not prefix:
        return (
            " (the file's keys are a featx Backbone's own, as bb.state_dict() names them: load it with "
            f"bb.load_state_dict({read}) into a backbone built from the same spec, or save the backbone with "
            "featx.save(bb, path) and load it with featx.load(path))"
        )
    wrappers = [_WRAPPERS[name + "."] for name in prefix.split(".")[:-1]]  # outermost first
    return (
        f" (the file's keys are a featx Backbone's own with {quoted(prefix)} before them, as the state_dict() of a "
        f"backbone wrapped by {' in '.join(reversed(wrappers))} names them: load it with "
        f"bb.load_state_dict({{key.removeprefix({quoted(prefix)}): value for key, value in {read}.items()}}) "
        "into a backbone built from the same spec, or save the backbone with featx.save(bb, path) and load it with "
        "featx.load(path))"
    )


def _cast_overflows(tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether casting ``tensor`` to the float ``dtype`` turns finite values into infinities (a float64 file's 1e300
    in a float32 layer); checked only where the dtype narrows."""
    if tensor.dtype == dtype or not (tensor.dtype.is_floating_point and dtype.is_floating_point):
        return False
    if torch.finfo(dtype).max >= torch.finfo(tensor.dtype).max:
        return False
    return bool((torch.isfinite(tensor) & ~torch.isfinite(tensor.to(dtype))).any())


def _loaded(value: torch.Tensor, dtype: torch.dtype, assign: bool) -> torch.Tensor:
    """What ``load_state_dict`` gets: an owned copy to assign, else the value (copied into the module's tensor)."""
    return owned_copy(value, dtype) if assign else value.to(dtype)


def load_kept_weights(
    model: nn.Module, kept_paths: Iterable[str], state: Mapping[str, torch.Tensor], origin: str, assign: bool = False
) -> None:
    """Load a torchvision-keyed ``state`` into the kept modules (and parameters named on their own) of ``model``.

    ``assign=True`` gives the modules copies of the state's tensors (:func:`owned_copy`, cast where the dtype
    differs) instead of copying them into allocated ones: ``model`` may then be on the meta device, nothing is
    initialised, and of a memory-mapped file only the kept tensors are read. Keys of dropped layers (classifier,
    unused stages) are skipped on purpose; a key ``model`` lacks, a kept key the state lacks, or a shape mismatch
    raises :class:`WeightsError` listing the first offending keys.
    """
    kept_paths = tuple(kept_paths)
    model_state = model.state_dict()
    expected = {key: value for key, value in model_state.items() if _is_kept(key, kept_paths)}
    check_fit(state, expected, model_state, origin)
    for path in kept_paths:  # module by module: the dropped ones may be on the meta device
        if path in model_state:  # a parameter kept on its own (a token model's class token)
            owner, _, name = path.rpartition(".")
            value = _loaded(state[path], model_state[path].dtype, assign)
            with torch.device("cpu"):  # torch's BatchNorm loader makes counters a state lacks on the default device
                model.get_submodule(owner).load_state_dict({name: value}, strict=False, assign=assign)
            continue
        prefix = path + "."
        own = {
            key[len(prefix) :]: _loaded(value, model_state[key].dtype, assign)
            for key, value in state.items()
            if key.startswith(prefix) and key in model_state
        }
        module = model.get_submodule(path)
        with torch.device("cpu"):
            module.load_state_dict(own, strict=False, assign=assign)
