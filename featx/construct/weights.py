"""Reading weights files safely and fitting their tensors to the layers a backbone keeps.

Files are read with ``torch.load(weights_only=True)`` (pickled code is refused, nothing in it runs) or safetensors;
what a file's tensors must satisfy to be loaded is checked before anything is copied.

Example::

    loaded = torch_load_file(Path("resnet50.pth"))              # whatever the file holds, plain data only
    load_kept_weights(model, ("conv1", "bn1", "layer1"), state, origin="resnet50.pth")
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Tuple

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from featx.errors import WeightsError
from featx.spec.keys import key_path

_SHOWN = 5


def torch_load_file(path: Path) -> Any:
    """What a ``.pth``/``.pt`` file holds, read with ``weights_only=True`` (memory-mapped when it is a zip file:
    only the tensors a backbone keeps are ever read from disk)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        reason = found.group(1).strip() if found else str(error).splitlines()[0]
        if reason.startswith("Unsupported global"):
            raise WeightsError(
                f"{key_path('weights')}: {path} holds more than tensors and is refused (loaded with "
                f"weights_only=True; nothing in it ran): {reason.split(' was not')[0]}"
            ) from None
        raise WeightsError(f"{key_path('weights')}: cannot read {path}: not a torch checkpoint ({reason})") from None
    except (OSError, RuntimeError, EOFError) as error:
        raise WeightsError(f"{key_path('weights')}: cannot read {path}: {str(error).splitlines()[0]}") from None


def safetensors_file(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors and the metadata of a ``.safetensors`` file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{key_path('weights')}: cannot read {path}: {error}") from None
    return state, metadata


def _listing(keys: Iterable[str], describe: Callable[[str], str]) -> str:
    keys = list(keys)
    shown = "; ".join(describe(key) for key in keys[:_SHOWN])
    return shown + (f"; and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def is_batch_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: older torchvision files lack it and FrozenBatchNorm2d drops it."""
    return key.endswith(".num_batches_tracked")


def _is_kept(key: str, kept_paths: Iterable[str]) -> bool:
    return any(key.startswith(path + ".") for path in kept_paths)


def check_fit(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], known: Iterable[str], origin: str
) -> None:
    """Raise unless ``state`` holds ``expected``'s keys with their shapes and no key outside ``known``."""
    known = set(known)
    unexpected = [key for key in state if key not in known and not is_batch_counter(key)]
    missing = [key for key in expected if key not in state and not is_batch_counter(key)]
    mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    problems: List[str] = []
    if unexpected:
        problems.append("unexpected keys: " + _listing(unexpected, lambda k: f"{k} {tuple(state[k].shape)}"))
    if missing:
        problems.append("missing keys: " + _listing(missing, lambda k: f"{k} {tuple(expected[k].shape)}"))
    if mismatched:
        problems.append(
            "shape mismatches: "
            + _listing(
                mismatched, lambda k: f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
            )
        )
    if problems:
        raise WeightsError(f"{key_path('weights')}: {origin} does not fit the kept layers — " + " | ".join(problems))


def _materialise_meta_batch_counters(module: nn.Module) -> None:
    """Zero ``num_batches_tracked`` counters a checkpoint did not carry (they stay on meta after an assign)."""
    for name, buffer in list(module.named_buffers()):
        if buffer.is_meta:
            owner_path, _, attribute = name.rpartition(".")
            owner = module.get_submodule(owner_path)
            owner.register_buffer(attribute, torch.zeros(buffer.shape, dtype=buffer.dtype))


def load_kept_weights(
    model: nn.Module, kept_paths: Iterable[str], state: Mapping[str, torch.Tensor], origin: str, assign: bool = False
) -> None:
    """Load a torchvision-keyed ``state`` into the kept modules of ``model``.

    ``assign=True`` makes the state's tensors the module's own (cast where the dtype differs) instead of copying
    them into allocated ones: ``model`` may then be on the meta device, and nothing is initialised or copied (a
    memory-mapped file is only read as its pages are used). Keys of dropped layers (classifier, unused stages) are
    skipped on purpose; a key ``model`` lacks, a kept key the state lacks, or a shape mismatch raises
    :class:`WeightsError` listing the first offending keys.
    """
    kept_paths = tuple(kept_paths)
    model_state = model.state_dict()
    expected = {key: value for key, value in model_state.items() if _is_kept(key, kept_paths)}
    check_fit(state, expected, model_state, origin)
    for path in kept_paths:  # module by module: the dropped ones may be on the meta device
        prefix = path + "."
        own = {
            key[len(prefix) :]: value.to(model_state[key].dtype)
            for key, value in state.items()
            if key.startswith(prefix) and key in model_state
        }
        module = model.get_submodule(path)
        module.load_state_dict(own, strict=False, assign=assign)
        if assign:
            _materialise_meta_batch_counters(module)
