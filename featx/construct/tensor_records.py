"""The tensor records a ``torch.save`` zip file's pickle claims, checked against the records the file holds.

``torch.load(mmap=True)`` takes each tensor's size from the pickle and slices the memory-mapped file there without
comparing it with the record's own size (its reading path does compare): a damaged or forged pickle that claims
more bytes than a record holds would give a tensor filled from the records after it. The pickle is read here as
opcodes only (``pickletools``; nothing is built and nothing runs), for the opcodes torch's weights-only loader
accepts.

Example::

    reader = torch._C.PyTorchFileReader("resnet50.pth")
    mismatch = record_mismatch(reader)      # None: every record holds what the pickle says it holds
"""

from __future__ import annotations

import pickletools
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch

from featx.spec.limits import quoted

#: opcodes whose only effect on the stack is to push one value this check never reads
_PUSH_OTHER = {"NONE", "NEWFALSE", "NEWTRUE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BINFLOAT"}
#: (SHORT_BINSTRING is not among them: pickletools decodes it as latin-1 where torch's loader takes UTF-8, so a key
#: written with it could name another record for torch than for this check; torch.save never writes one)
_PUSH_ARGUMENT = {"BININT", "BININT1", "BININT2", "LONG1", "BINUNICODE"}
_MARK = object()
_OTHER = object()


class UnknownLayout(Exception):
    """The pickle uses what this check does not read: the file is read without memory mapping (torch then checks
    every record's size itself)."""


def _pop_to_mark(stack: List[Any]) -> List[Any]:
    items: List[Any] = []
    while stack:
        item = stack.pop()
        if item is _MARK:
            return items[::-1]
        items.append(item)
    raise UnknownLayout("no mark")


def _pop(stack: List[Any], count: int) -> List[Any]:
    if len(stack) < count:
        raise UnknownLayout("stack underflow")
    taken = stack[len(stack) - count :]
    del stack[len(stack) - count :]
    return taken


def claimed_storages(pickled: bytes) -> Dict[str, Tuple[str, int]]:
    """Each storage key the pickle names → (its storage type, e.g. ``torch FloatStorage``, and its element count),
    as torch's loader sees them: the first claim of a key counts."""
    stack: List[Any] = []
    memo: Dict[Any, Any] = {}
    claims: Dict[str, Tuple[str, int]] = {}
    try:
        for opcode, argument, _ in pickletools.genops(pickled):
            name = opcode.name
            if name in _PUSH_ARGUMENT:
                stack.append(argument)
            elif name in _PUSH_OTHER:
                stack.append(_OTHER)
            elif name == "GLOBAL":
                stack.append(("global", argument))
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(tuple(_pop(stack, int(name[-1]))))
            elif name == "TUPLE":
                stack.append(tuple(_pop_to_mark(stack)))
            elif name in ("BINPUT", "LONG_BINPUT"):
                if not stack:
                    raise UnknownLayout("memo of an empty stack")
                memo[argument] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                if argument not in memo:
                    raise UnknownLayout(f"memo {argument} unset")
                stack.append(memo[argument])
            elif name == "BINPERSID":
                _claim(_pop(stack, 1)[0], claims)
                stack.append(_OTHER)
            elif name in ("REDUCE", "NEWOBJ"):
                _pop(stack, 2)
                stack.append(_OTHER)
            elif name in ("BUILD", "APPEND"):
                _pop(stack, 1)
            elif name == "SETITEM":
                _pop(stack, 2)
            elif name in ("APPENDS", "SETITEMS"):
                _pop_to_mark(stack)
            elif name not in ("PROTO", "STOP"):
                raise UnknownLayout(f"opcode {name}")
    except ValueError as error:  # pickletools' own refusal of a malformed stream
        raise UnknownLayout(str(error)) from None
    return claims


def _claim(pid: Any, claims: Dict[str, Tuple[str, int]]) -> None:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
        raise UnknownLayout("persistent id that is not a storage")
    _, storage_type, key, _, numel = pid
    if not (isinstance(storage_type, tuple) and isinstance(key, str) and isinstance(numel, int)):
        raise UnknownLayout("storage id of unknown form")
    claims.setdefault(key, (storage_type[1], numel))


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
