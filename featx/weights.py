"""Resolving the ``weights`` key and loading only the kept layers' weights.

``weights`` is ``null`` (random init), ``DEFAULT`` or a member name of the model's torchvision weights enum
(``IMAGENET1K_V2``; looked up in the torch hub cache, downloaded only if absent), or a path to a local
``.pth``/``.pt`` state dict (optionally nested under ``state_dict`` or ``model``), a ``.safetensors`` file, or a
checkpoint written by :func:`featx.save`.

Example::

    checkpoint = read_checkpoint(resolve_weights("resnet50", "IMAGENET1K_V2"))
    load_kept_weights(model, ("conv1", "bn1", "layer1"), checkpoint)
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors

from featx.errors import SpecError, WeightsError
from featx.loader import load_spec
from featx.spec import BackboneSpec, key_path, suggest
from featx.zoo import weights_enum

_NESTING_KEYS = ("state_dict", "model")
#: The key under which featx.save stores the spec, frozen stages and versions.
FORMAT_KEY = "featx"
#: Spec keys that shape a backbone's state dict, named when a featx checkpoint does not fit.
STRUCTURE_KEYS = ("model", "source", "stages", "out_features", "fpn")
#: Set to 1 to never download: a weights enum missing from the cache is then an immediate WeightsError.
OFFLINE_VARIABLE = "FEATX_OFFLINE"
_SHOWN = 5


def is_weights_file(value: str) -> bool:
    """Whether a ``weights`` value names a file rather than an enum member (``DEFAULT``, ``IMAGENET1K_V1``)."""
    return bool(Path(value).suffix) or "/" in value or os.sep in value or Path(value).exists()


def cached_weights_path(url: str) -> Path:
    """Where torchvision's loader caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def enum_member(model: str, name: str):  # -> torchvision.models.WeightsEnum
    """The torchvision weights enum member ``name`` (``DEFAULT`` or a member name) of ``model``; SpecError if none."""
    enum = weights_enum(model)
    if name == "DEFAULT":
        return enum.DEFAULT
    members = [member.name for member in enum]
    if name not in members:
        raise SpecError(
            key_path("weights"),
            f"{name!r} is not a weights name of {model}{suggest(name, members)} "
            f"(valid: null, DEFAULT, {', '.join(members)}; or a path to a checkpoint file)",
        )
    return enum[name]


def resolve_weights(model: str, value: str) -> Path:
    """The local file holding the weights ``value`` names, downloading an enum's file into the cache if absent."""
    if is_weights_file(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise WeightsError(f"{key_path('weights')}: checkpoint file not found: {path}")
        return path
    member = enum_member(model, value)
    path = cached_weights_path(member.url)
    if path.is_file():
        return path
    where = f"Place the file at {path} (get it from {member.url})"
    if os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0"):
        raise WeightsError(f"{key_path('weights')}: {model} {member} is not in the torch hub cache and "
                           f"{OFFLINE_VARIABLE} forbids downloading. {where}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(member.url, str(path), progress=True)
    except (URLError, OSError) as error:
        raise WeightsError(
            f"{key_path('weights')}: {model} {member} is not in the torch hub cache and could not be downloaded "
            f"({error}). {where}"
        ) from None
    return path


@dataclass(frozen=True)
class Checkpoint:
    """Tensors read from a weights file; ``saved`` holds the featx block (spec, frozen stages, versions) of a
    checkpoint written by :func:`featx.save`, else ``None`` (a torchvision-keyed state dict)."""

    path: Path
    state: Dict[str, torch.Tensor]
    saved: Optional[Dict[str, Any]] = None


def _read_safetensors(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_safetensors(str(path))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{key_path('weights')}: cannot read {path}: {error}") from None
    try:
        saved = json.loads(metadata[FORMAT_KEY]) if FORMAT_KEY in metadata else None
    except json.JSONDecodeError as error:
        raise WeightsError(f"{key_path('weights')}: {path} has unreadable featx metadata: {error}") from None
    return _checked(Checkpoint(path, state, saved))


def _checked(checkpoint: Checkpoint) -> Checkpoint:
    if checkpoint.saved is not None and not isinstance(checkpoint.saved.get("spec"), Mapping):
        raise WeightsError(f"{key_path('weights')}: {checkpoint.path} has a featx block without a spec")
    return checkpoint


def _torch_load(path: Path) -> Any:
    try:
        # memory-map zip-format files: only the tensors a backbone keeps are ever read from disk
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


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a ``.pth``/``.pt`` (``weights_only=True``: pickled code is refused) or ``.safetensors`` file."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    loaded = _torch_load(path)
    saved = None
    if isinstance(loaded, Mapping) and isinstance(loaded.get(FORMAT_KEY), Mapping):
        saved = dict(loaded[FORMAT_KEY])
    for key in _NESTING_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{key_path('weights')}: {path} does not hold a state dict (name → tensor)")
    return _checked(Checkpoint(path, dict(loaded), saved))


def _listing(keys: Iterable[str], describe) -> str:
    keys = list(keys)
    shown = "; ".join(describe(key) for key in keys[:_SHOWN])
    return shown + (f"; and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _is_batch_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: older torchvision files lack it and FrozenBatchNorm2d drops it."""
    return key.endswith(".num_batches_tracked")


def _is_kept(key: str, kept_paths: Iterable[str]) -> bool:
    return any(key.startswith(path + ".") for path in kept_paths)


def _check_fit(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], known: Iterable[str],
               origin: str) -> None:
    """Raise unless ``state`` holds ``expected``'s keys with their shapes and no key outside ``known``."""
    known = set(known)
    unexpected = [key for key in state if key not in known and not _is_batch_counter(key)]
    missing = [key for key in expected if key not in state and not _is_batch_counter(key)]
    mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    problems: List[str] = []
    if unexpected:
        problems.append("unexpected keys: " + _listing(unexpected, lambda k: f"{k} {tuple(state[k].shape)}"))
    if missing:
        problems.append("missing keys: " + _listing(missing, lambda k: f"{k} {tuple(expected[k].shape)}"))
    if mismatched:
        problems.append(
            "shape mismatches: "
            + _listing(mismatched, lambda k: f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
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


def load_kept_weights(model: nn.Module, kept_paths: Iterable[str], checkpoint: Checkpoint, assign: bool = False
                      ) -> None:
    """Load a torchvision-keyed ``checkpoint`` into the kept modules of ``model``.

    ``assign=True`` makes the checkpoint's tensors the module's own (cast where the dtype differs) instead of copying
    them into allocated ones: ``model`` may then be on the meta device, and nothing is initialised or copied (a
    memory-mapped file is only read as its pages are used). Keys of dropped layers (classifier, unused stages) are
    skipped on purpose; a key ``model`` lacks, a kept key the checkpoint lacks, or a shape mismatch raises
    :class:`WeightsError` listing the first offending keys.
    """
    kept_paths = tuple(kept_paths)
    model_state = model.state_dict()
    expected = {key: value for key, value in model_state.items() if _is_kept(key, kept_paths)}
    _check_fit(checkpoint.state, expected, model_state, str(checkpoint.path))
    for path in kept_paths:  # module by module: the dropped ones may be on the meta device
        prefix = path + "."
        own = {key[len(prefix):]: value.to(model_state[key].dtype)
               for key, value in checkpoint.state.items() if key.startswith(prefix) and key in model_state}
        module = model.get_submodule(path)
        module.load_state_dict(own, strict=False, assign=assign)
        if assign:
            _materialise_meta_batch_counters(module)


def load_saved_backbone(backbone: nn.Module, spec: BackboneSpec, checkpoint: Checkpoint) -> None:
    """Load a checkpoint written by :func:`featx.save` into ``backbone``; if it does not fit, say how the spec it
    was saved from differs."""
    expected = backbone.state_dict()
    try:
        _check_fit(checkpoint.state, expected, expected, str(checkpoint.path))
    except WeightsError as error:
        saved = load_spec(checkpoint.saved["spec"])
        differing = [field for field in STRUCTURE_KEYS if getattr(saved, field) != getattr(spec, field)]
        raise WeightsError(
            f"{key_path('weights')}: {checkpoint.path} was saved by featx.save from a different spec (it differs in "
            f"{', '.join(differing) or 'no structural key'}); rebuild that backbone with "
            f"featx.load({str(checkpoint.path)!r}) and no structural overrides. {error}"
        ) from None
    backbone.load_state_dict({key: checkpoint.state[key] for key in expected if key in checkpoint.state}, strict=False)
