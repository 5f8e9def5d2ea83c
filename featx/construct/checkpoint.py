"""Checkpoints: every file layout the ``weights`` key reads, and the one :func:`save` writes (the state dict together
with the resolved spec and library versions, so :func:`featx.load` rebuilds the backbone from the file alone).

Read: a ``.pth``/``.pt`` state dict (optionally nested under ``state_dict`` or ``model``), a ``.safetensors`` file,
or a file written by :func:`save` (its featx block under :data:`FORMAT_KEY`: in the pickle-free ``.pth`` dict, or as
JSON in the safetensors metadata).

Example::

    save(bb, "runs/bb.pt")                       # or "runs/bb.safetensors"
    checkpoint = read_checkpoint(Path("runs/bb.pt"))
    checkpoint.saved["spec"]["model"]            # 'resnet50'
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

import torch
import torchvision
from safetensors.torch import save_file as save_safetensors
from torch import nn

from featx.construct.weights import (
    check_fit,
    owned_copy,
    safetensors_file,
    torch_load_file,
)
from featx.errors import ArgumentError, SpecError, WeightsError, first_line
from featx.file_records import UNCHANGED_FIELDS
from featx.files import file_path_argument, flag_argument, refuse_interpolation_in_path, utf8_path, write_atomically
from featx.models.registry import library_version
from featx.spec.keys import key_path
from featx.spec.limits import SHARED_CONTAINERS, check_data_size, quoted
from featx.spec.load import load_spec
from featx.spec.schema import BackboneSpec
from featx.version import __version__

PathLike = Union[str, os.PathLike]
#: The key under which featx.save stores the spec, frozen stages and versions.
FORMAT_KEY = "featx"
#: Spec keys that decide what a checkpoint's tensors mean: a featx checkpoint loads only into a spec equal in all of
#: them, even where every tensor fits by name and shape (timm's resnet18 and resnetblur18 share one state dict).
MEANING_KEYS = ("model", "source", "stages", "layout", "tokens")
#: Spec keys that shape a backbone's state dict, named when a featx checkpoint does not fit (``norm``, ``fpn`` and
#: ``out_features`` may change where the tensors still fit: another norm policy, extra levels, fewer outputs).
STRUCTURE_KEYS = (*MEANING_KEYS, "out_features", "norm", "fpn")
#: Keys a third-party ``.pth`` may nest its state dict under.
_NESTING_KEYS = ("state_dict", "model")
#: how many state dicts an ambiguity message names, and how deep a file's mappings are searched for them
_SHOWN_HOLDERS = 4
_SEARCHED_DEPTH = 6


def _identity(path: Path) -> Tuple[int, ...]:
    """Which file ``path`` is and which version of it (:data:`~featx.file_records.UNCHANGED_FIELDS`: device, inode,
    size, modification and status change times; a rewrite in place with its modification time put back changes the
    last)."""
    info = os.stat(path)
    return tuple(getattr(info, field) for field in UNCHANGED_FIELDS)


@dataclass(frozen=True)
class Checkpoint:
    """Tensors read from a weights file; ``saved`` holds the featx block (spec, versions) of a file written by
    :func:`save`, else ``None`` (a torchvision-keyed state dict). ``identity`` is the file's as reading began: a
    ``.pth`` file's tensors are memory-mapped and copied only when the backbone takes them."""

    path: Path
    state: Dict[str, torch.Tensor]
    saved: Optional[Dict[str, Any]] = None
    identity: Optional[Tuple[int, ...]] = None

    def check_unchanged(self) -> None:
        """WeightsError if the file is no longer the one reading began with: rewritten while its tensors were
        copied, the backbone would hold some tensors of each version."""
        try:
            now: Optional[Tuple[int, ...]] = _identity(self.path)
        except OSError:
            now = None
        if self.identity is not None and now != self.identity:
            raise WeightsError(
                f"{key_path('weights')}: {self.path} changed while featx read it (is it being written?); build "
                "again once it is complete"
            )


def _checked(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint``, unless its featx block lacks a spec (WeightsError) or holds one past the size bound
    (SpecError named with the file, before anything walks it)."""
    if checkpoint.saved is None:
        return checkpoint
    spec = checkpoint.saved.get("spec")
    if not isinstance(spec, Mapping):
        raise WeightsError(f"{key_path('weights')}: {checkpoint.path} has a featx block without a spec")
    try:
        check_data_size(spec, shared=SHARED_CONTAINERS)  # not YAML: pickle's shared references
    except SpecError as error:  # named with the file, as saved_spec names the file's other spec errors
        raise error.with_origin(os.fspath(checkpoint.path)) from None
    return checkpoint


def _read_safetensors(path: Path, identity: Tuple[int, ...]) -> Checkpoint:
    state, metadata = safetensors_file(path)
    try:
        saved = json.loads(metadata[FORMAT_KEY]) if FORMAT_KEY in metadata else None
    # RecursionError: nested deeper than json can read; ValueError: an integer of more digits than Python converts
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else first_line(error)
        raise WeightsError(f"{key_path('weights')}: {path} has unreadable featx metadata: {reason}") from None
    if saved is not None and not isinstance(saved, dict):
        raise WeightsError(f"{key_path('weights')}: {path} has unreadable featx metadata (not a mapping)")
    return _checked(Checkpoint(path, state, saved, identity))


def _check_regular_file(path: Path) -> None:
    """WeightsError unless ``path`` is a regular file (never read a folder, a device such as /dev/zero, or a fifo)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        reason = "not found" if isinstance(error, FileNotFoundError) else (error.strerror or str(error))
        raise WeightsError(f"{key_path('weights')}: cannot read {path}: {reason}") from None
    except ValueError:  # a NUL character: no file has such a name
        raise WeightsError(
            f"{key_path('weights')}: cannot read {quoted(str(path))}: no file name holds a NUL"
        ) from None
    if stat.S_ISDIR(mode):
        raise WeightsError(f"{key_path('weights')}: {path} is a folder, not a checkpoint file")
    if not stat.S_ISREG(mode):
        raise WeightsError(f"{key_path('weights')}: {path} is not a regular file (a device, fifo or socket)")


def is_safetensors_path(path: Path) -> bool:
    """Whether ``path`` names a safetensors file (``.safetensors``, in any case)."""
    return path.suffix.lower() == ".safetensors"


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a ``.pth``/``.pt`` (``weights_only=True``: pickled code is refused) or ``.safetensors`` file."""
    _check_regular_file(path)
    identity = _identity(path)
    if is_safetensors_path(path):
        try:
            utf8_path(path, key_path("weights"))
        except ArgumentError as error:  # a weights file that cannot be read, as the reading errors say
            raise WeightsError(str(error)) from None
        return _read_safetensors(path, identity)
    content = torch_load_file(path)
    saved = None
    if isinstance(content, Mapping) and isinstance(content.get(FORMAT_KEY), Mapping):
        saved = dict(content[FORMAT_KEY])
    loaded, followed = _the_state_dict(content, path)
    problem = _not_a_state_dict(loaded, followed)
    if problem is not None:
        count, holders = _networks_within(content)  # one, under a key featx does not follow (``net``)
        where = (
            f"; it holds one at {_indexing(holders[0])}: torch.save(checkpoint{_indexing(holders[0])}, path) "
            "saves it alone"
            if count == 1 and holders[0] and holders[0] != followed
            else ""
        )
        raise WeightsError(
            f"{key_path('weights')}: {path} does not hold a state dict (name → tensor): {problem}{where}"
        )
    assert isinstance(loaded, Mapping)
    return _checked(Checkpoint(path, dict(loaded), saved, identity))


def _not_a_state_dict(loaded: object, followed: Tuple[object, ...]) -> Optional[str]:
    """Why ``loaded`` (the file's content at ``followed``) is no state dict: its first entry that is not a name with
    a tensor (never a value), or None."""
    if not isinstance(loaded, Mapping):
        return f"it holds a value of type {type(loaded).__name__}"
    for key, value in loaded.items():
        entry = _indexing((*followed, key)) if followed else quoted(key)
        if not isinstance(key, str):
            return f"its key {entry} (of type {type(key).__name__}) is not a name"
        if not isinstance(value, torch.Tensor):
            return f"its entry {entry} holds a value of type {type(value).__name__}, not a tensor"
    return None


def _holds_weights(value: object) -> bool:
    """Whether ``value`` holds a network's tensors: a mapping with a tensor of at least one dimension under a layer
    path (``conv1.weight``). A scalar beside a checkpoint's entries (``best_acc1``), an RNG state (``{"cpu": ...}``)
    or Lightning's ``best_k_models`` (file paths to scores) is no network."""
    return isinstance(value, Mapping) and any(
        isinstance(key, str) and "." in key and "/" not in key and isinstance(tensor, torch.Tensor) and tensor.dim()
        for key, tensor in value.items()
    )


def _indexing(trail: Tuple[object, ...]) -> str:
    """How Python reaches the value at ``trail`` in a checkpoint: ``['ema'][0]``."""
    return "".join(f"[{quoted(key)}]" for key in trail)


def _networks_within(value: object) -> Tuple[int, List[Tuple[object, ...]]]:
    """How many mappings in ``value`` and below it hold a network's tensors, at any depth, through mappings, lists
    and tuples, and the key paths (an index is a key: ``ema.0``) of the first :data:`_SHOWN_HOLDERS` of them and of
    the last. Each container is visited once: a file can hold one dict under many keys (pickle keeps shared
    references), and ``K`` such keys ``d`` levels deep would otherwise cost ``K**d`` visits from a few kilobytes.
    Each container remembers only its parent and key, and only the paths returned are spelt out: the search takes
    time proportional to the file however deep it nests."""
    found: List[int] = []
    seen: Set[int] = set()
    parents: List[Tuple[int, object]] = []  # visited container -> (its parent's index, its key there); root: -1
    pending: List[Tuple[object, int, object]] = [(value, -1, None)]
    while pending:
        current, parent, key = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        index = len(parents)
        parents.append((parent, key))
        if isinstance(current, Mapping):
            if _holds_weights(current):
                found.append(index)
            inner: List[Tuple[object, object]] = list(current.items())
        elif isinstance(current, (list, tuple)):
            inner = list(enumerate(current))
        else:
            continue
        pending += [(item, index, name) for name, item in reversed(inner) if isinstance(item, (Mapping, list, tuple))]
    spelt = found[:_SHOWN_HOLDERS] + found[-1:] if len(found) > _SHOWN_HOLDERS else found
    return len(found), [_trail(parents, index) for index in spelt]


def _trail(parents: List[Tuple[int, object]], index: int) -> Tuple[object, ...]:
    """The keys from the root to the container at ``index`` of :func:`_networks_within`'s parent links."""
    keys: List[object] = []
    while parents[index][0] >= 0:
        index, key = parents[index]
        keys.append(key)
    return tuple(reversed(keys))


def _the_state_dict(loaded: object, path: Path) -> Tuple[object, Tuple[object, ...]]:
    """The one mapping in a file's content that holds a network's tensors when ``state_dict``/``model`` entries (a
    training checkpoint's nesting) lead to it, whatever else they hold; the content itself otherwise (where a
    network under another key is named by the caller's error); with the keys followed. A file holding a second
    network's tensors anywhere (a model's EMA, at any depth, or layers beside a ``state_dict`` entry) is ambiguous:
    which one is meant?"""
    count, holders = _networks_within(loaded)
    if count > 1:
        names = ", ".join(
            quoted(".".join(map(str, holder)))[1:-1] or "the top level" for holder in holders[:_SHOWN_HOLDERS]
        )
        more = f" and {count - _SHOWN_HOLDERS} more" if count > _SHOWN_HOLDERS else ""
        raise WeightsError(
            f"{key_path('weights')}: {path} holds {count} state dicts ({names}{more}) and featx cannot "
            f"tell which you mean; save the one you want alone: torch.save(checkpoint{_indexing(holders[-1])}, path)"
        )
    if count == 1:
        if not all(key in _NESTING_KEYS for key in holders[0]):
            return loaded, ()
        for key in holders[0]:
            loaded = loaded[key]  # type: ignore[index]  # (the keys lead through mappings)
        return loaded, holders[0]
    followed: Tuple[object, ...] = ()
    for _ in range(_SEARCHED_DEPTH):  # no layer path (a network of top-level tensors): follow the nesting keys
        if not isinstance(loaded, Mapping):
            break
        key = next((key for key in _NESTING_KEYS if isinstance(loaded.get(key), Mapping)), None)
        if key is None:
            break
        loaded, followed = loaded[key], (*followed, key)
    return loaded, followed


def _metadata(spec: BackboneSpec) -> Dict[str, Any]:
    versions = {"featx": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}
    library, _, library_release = library_version(spec.model).partition(" ")
    versions[library] = library_release  # timm's, for a timm model
    return {"spec": spec.to_dict(), "versions": versions}


def _sharing_memory(tensors: Mapping[str, torch.Tensor]) -> List[str]:
    """The first two keys of ``tensors`` whose values lie in one storage, or ``[]``."""
    seen: Dict[Tuple[str, int], str] = {}
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage()
        if storage.nbytes() == 0:
            continue
        where = (str(tensor.device), storage.data_ptr())
        if where in seen:
            return [seen[where], key]
        seen[where] = key
    return []


def write_backbone_file(backbone: nn.Module, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``backbone``'s weights, resolved spec and library versions to ``path`` (what :func:`featx.save` writes
    once it has checked that the spec rebuilds the backbone).

    ``.safetensors`` paths are written with safetensors (the metadata as JSON), anything else with ``torch.save``
    (plain data only, so ``weights_only=True`` reads it). The file appears whole or not at all; an existing file
    is kept unless ``overwrite=True``.
    """
    spec: BackboneSpec = getattr(backbone, "spec", None)  # type: ignore[assignment]
    if not isinstance(spec, BackboneSpec):
        raise ArgumentError(f"save(): expected a featx Backbone (featx.build(...)), got {type(backbone).__name__}")
    path = file_path_argument(path, "save(): path")
    refuse_interpolation_in_path(path, "save(): path")
    if is_safetensors_path(path):
        utf8_path(path, "save(): path")
    flag_argument(overwrite, "save(): overwrite")
    if any(tensor.is_meta for tensor in backbone.state_dict().values()):
        raise ArgumentError(
            f"save(): the backbone's tensors are on the meta device (built with device: meta, or moved there) and "
            f"hold no weights to save; build it on a real device. Nothing was written to {path}"
        )
    tensors = backbone.state_dict()
    tied = _sharing_memory(tensors)
    if tied:
        raise ArgumentError(
            f"save(): {' and '.join(tied)} share memory (tied tensors); a featx checkpoint holds independent tensors "
            f"and featx.load gives each its own, so untie them (tensor.clone()) first. Nothing was written to {path}"
        )
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in tensors.items()}
    if spec.device == "meta":  # built on meta, its weights assigned since: load rebuilds it where they are
        spec = dataclasses.replace(spec, device=str(next(iter(tensors.values())).device))
    metadata = _metadata(spec)

    def write(partial: Path) -> None:
        if is_safetensors_path(path):
            save_safetensors(state, str(partial), metadata={FORMAT_KEY: json.dumps(metadata)})
        else:
            torch.save({FORMAT_KEY: metadata, "state_dict": state}, partial)

    return write_atomically(path, write, overwrite=overwrite, what="save()", hint="pass overwrite=True to replace it")


def saved_spec(checkpoint: Checkpoint) -> BackboneSpec:
    """The spec a file written by :func:`save` was saved from (its errors named with the file)."""
    assert checkpoint.saved is not None
    try:
        return load_spec(checkpoint.saved["spec"])
    except SpecError as error:  # the file's spec, not the one being built: named with the file
        raise error.with_origin(str(checkpoint.path)) from None


def load_saved_backbone(
    backbone: nn.Module, spec: BackboneSpec, checkpoint: Checkpoint, saved: BackboneSpec, values: bool = True
) -> None:
    """Load a checkpoint written by :func:`save` into ``backbone`` (whose tensors may be on the meta device: the
    checkpoint's are assigned, cast where the dtype differs); if it does not fit, say how the spec it was saved from
    differs. A file without an FPN gives the trunk of a spec with one (its FPN drawn from the seed, as on a
    torchvision file); a file's FPN is left out by a spec without one (``fpn: null``: the trunk alone). ``saved`` is
    the file's spec (:func:`saved_spec`). Without ``values`` (``featx.load`` on ``device: meta``) the file is checked
    as for a load, and ``backbone`` left on the meta device: it describes only what the file can give."""

    def refused(keys: Tuple[str, ...], reason: str) -> WeightsError:
        differing = [field for field in keys if getattr(saved, field) != getattr(spec, field)]
        overridden = differing or keys  # the keys to leave as saved (norm, fpn, out_features may change elsewhere)
        return WeightsError(
            f"{key_path('weights')}: {checkpoint.path} was saved by featx.save from a different spec (it differs in "
            f"{', '.join(differing) or 'no structural key'}); rebuild that backbone with "
            f"featx.load({str(checkpoint.path)!r}) and no override{'s' if len(overridden) > 1 else ''} of "
            f"{', '.join(overridden)}{reason}"
        )

    if any(getattr(saved, field) != getattr(spec, field) for field in MEANING_KEYS):
        raise refused(MEANING_KEYS, "")  # tensors that fit by name and shape can be another network's
    file_fpn = dataclasses.asdict(saved.fpn) if saved.fpn is not None and spec.fpn is not None else {}
    spec_fpn = dataclasses.asdict(spec.fpn) if file_fpn and spec.fpn is not None else {}
    # every setting but extra levels that hold no tensors (maxpool, or none) decides the FPN's tensors
    differing = ", ".join(
        f"{name} {file_fpn[name]!r} there, {spec_fpn[name]!r} here"
        for name in file_fpn
        if file_fpn[name] != spec_fpn[name] and (name != "extra_blocks" or "p6p7" in (file_fpn[name], spec_fpn[name]))
    )
    if differing:  # before out_features: a simple pyramid over a file's FPN was told to return one stage, then refused
        saved_settings = ", ".join(f"{name}: {value}" for name, value in file_fpn.items()).replace("None", "null")
        raise WeightsError(
            f"{key_path('fpn')}: the FPN of {checkpoint.path} was saved with other settings ({differing}); keep "
            f"them (fpn: {{{saved_settings}}}, as featx.load does with no override of fpn), or give fpn: null to "
            "take the file's trunk alone"
        )
    if saved.fpn is not None and spec.fpn is not None and saved.returned_stages != spec.returned_stages:
        raise WeightsError(  # the FPN's tensors are per level, by position: they would fit other stages' maps
            f"{key_path('out_features')}: the FPN of {checkpoint.path} was trained on the maps of "
            f"{', '.join(saved.returned_stages)}, and this spec feeds it {', '.join(spec.returned_stages)}; keep the "
            f"saved out_features: [{', '.join(saved.returned_stages)}] (as featx.load does with no override of it)"
        )
    expected = backbone.state_dict()
    if saved.fpn is None:  # the FPN a spec adds is drawn from its seed (as over a torchvision file), not read
        expected = {key: value for key, value in expected.items() if not key.startswith("neck.")}
    # saved stages past the deepest one returned now (fewer out_features) are not built: their tensors are skipped,
    # as a torchvision-keyed file's dropped layers are, and so is a saved FPN that the spec leaves out
    built = {key.split(".")[1] for key in expected if key.startswith("stages.")}
    unbuilt = tuple(f"stages.{name}." for name in saved.stages if name not in built)
    unbuilt += ("neck.",) if spec.fpn is None else ()
    file_state = {key: value for key, value in checkpoint.state.items() if not (unbuilt and key.startswith(unbuilt))}
    try:
        check_fit(file_state, expected, expected, str(checkpoint.path), saved_by_featx=True)
    except WeightsError as error:
        if all(getattr(saved, field) == getattr(spec, field) for field in STRUCTURE_KEYS):
            # the spec the file holds builds these very layers: its tensors are what do not fit
            raise WeightsError(
                f"{error} (the spec saved in the file builds these layers: was the file edited?)"
            ) from None
        raise refused(STRUCTURE_KEYS, f". {str(error).removeprefix(key_path('weights') + ': ')}") from None
    if not values:
        return
    state = {key: owned_copy(checkpoint.state[key], expected[key].dtype) for key in expected if key in checkpoint.state}
    backbone.load_state_dict(state, strict=False, assign=True)
    unfilled = [
        name
        for name, tensor in itertools.chain(backbone.named_parameters(), backbone.named_buffers())
        if tensor.is_meta
    ]
    if unfilled:  # never a backbone with tensors that hold no values
        raise WeightsError(f"{key_path('weights')}: {checkpoint.path} leaves {', '.join(unfilled[:5])} without values")
