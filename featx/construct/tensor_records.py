"""The tensor records a ``torch.save`` zip file's pickle claims, checked against the records the file holds.

``torch.load(mmap=True)`` takes each tensor's size from the pickle and slices the memory-mapped file there without
comparing it with the record's own size (its reading path does compare): a damaged or forged pickle that claims
more bytes than a record holds would give a tensor filled from the records after it. The pickle is read here by
Python's own (C) unpickler with every global replaced by an inert placeholder: nothing is imported, built or run;
only the storage ids it meets are kept. Strings decode as UTF-8, as torch's weights-only loader decodes them, so
both name the same record; a pickle this reading refuses is read by torch without memory mapping.

Example::

    reader = torch._C.PyTorchFileReader("resnet50.pth")
    mismatch = record_mismatch(reader)      # None: every record holds what the pickle says it holds
"""

from __future__ import annotations

import io
import pickle
import warnings
from typing import Any, Dict, Optional, Tuple

import torch

from featx.spec.limits import quoted


class UnknownLayout(Exception):
    """The pickle uses what this check does not read: the file is read without memory mapping (torch then checks
    every record's size itself)."""


class _Global:
    """What a pickled global (``torch FloatStorage``, ``collections OrderedDict``) reads as: its name only. Calling
    it (a pickled reduce) gives a placeholder."""

    __slots__ = ("name",)

    def __init__(self, module: str, name: str) -> None:
        self.name = f"{module} {name}"

    def __call__(self, *args: Any, **kwargs: Any) -> "_Placeholder":
        return _Placeholder()


class _Placeholder:
    """An object the pickle builds (a tensor, an ``OrderedDict``): whatever it is given is dropped."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _StorageIds(pickle.Unpickler):
    """Reads a pickle for the storage ids it names (see the module docstring)."""

    def __init__(self, pickled: bytes) -> None:
        super().__init__(io.BytesIO(pickled), encoding="utf-8")
        self.claims: Dict[str, Tuple[str, int]] = {}

    def find_class(self, module: str, name: str) -> _Global:
        return _Global(module, name)

    def persistent_load(self, pid: Any) -> _Placeholder:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise UnknownLayout("persistent id that is not a storage")
        _, storage_type, key, _, numel = pid
        if not (isinstance(storage_type, _Global) and isinstance(key, str) and isinstance(numel, int)):
            raise UnknownLayout("storage id of unknown form")
        self.claims.setdefault(key, (storage_type.name, numel))  # torch's loader keeps a key's first storage
        return _Placeholder()


def claimed_storages(pickled: bytes) -> Dict[str, Tuple[str, int]]:
    """Each storage key the pickle names → (its storage type, e.g. ``torch FloatStorage``, and its element count),
    as torch's loader sees them: the first claim of a key counts.

    Raises:
        UnknownLayout: the pickle cannot be read this way.
    """
    reader = _StorageIds(pickled)
    try:
        reader.load()
    except UnknownLayout:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a damaged or forged pickle makes the unpickler raise
        raise UnknownLayout(f"{type(error).__name__}: {error}") from None
    return reader.claims


def _element_size(storage_type: str) -> Optional[int]:
    """Bytes per element of a pickled storage type (``torch FloatStorage`` → 4, ``torch.storage UntypedStorage`` →
    1: how torch saves the dtypes without a storage class of their own), None for one torch does not have."""
    module, _, name = storage_type.partition(" ")
    if module not in ("torch", "torch.storage") or not name.endswith("Storage"):
        return None
    if name == "UntypedStorage":
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy storage classes warn that TypedStorage is deprecated
        dtype = getattr(getattr(torch, name, None), "dtype", None)
    return dtype.itemsize if isinstance(dtype, torch.dtype) else None


def record_mismatch(reader: "torch._C.PyTorchFileReader") -> Optional[str]:
    """Why the file's tensor records do not hold what its pickle claims, or None when every one does.

    Raises:
        UnknownLayout: the pickle uses what this check does not read.
    """
    claims = claimed_storages(reader.get_record("data.pkl"))
    # (compressed records are refused by the caller: their size is the uncompressed one, the mapped bytes are not)
    records = set(reader.get_all_records())
    for key, (storage_type, numel) in claims.items():
        element_size = _element_size(storage_type)
        if element_size is None:
            raise UnknownLayout(f"storage type {storage_type}")
        record = f"data/{key}"
        if record not in records:
            return f"its pickle names a tensor record {quoted(record)} the file does not hold"
        claimed, held = numel * element_size, reader.get_record_size(record)
        if claimed != held:
            return f"tensor record {quoted(record)} holds {held} bytes, its pickle claims {claimed}"
    return None
