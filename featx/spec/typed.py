"""Plain data to the spec dataclasses without OmegaConf, for data that already has exactly the schema's types.

:func:`featx.spec.load.load_spec` types a spec with OmegaConf's structured merge, which converts some values
(``"3"`` to ``3`` for an int) and refuses others with its own messages, and takes most of the time of a load.
:func:`typed` does neither: it returns None unless every key is a field, every required field is set and every
value has exactly the field's type (an int that is not a bool for ``int``, a list for ``List``, a dict with string
keys for ``Dict`` or a nested dataclass; no OmegaConf ``"???"`` anywhere), so the caller falls back to OmegaConf
for the result or the error. Where it returns a dataclass, that equals what OmegaConf's merge and ``to_object``
give, in fresh lists and dicts.

Example::

    typed(FpnSpec, {"out_channels": 128})     # FpnSpec(out_channels=128, extra_blocks=None, style='fpn')
    typed(FpnSpec, {"out_channels": "128"})   # None: OmegaConf would convert it
    typed(BackboneSpec, data, nested={"fpn": FpnSpec, "tokens": TokenSpec})   # the ``Any`` fields' schemas
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Dict, Mapping, Optional, Tuple, TypeVar, Union

from omegaconf import MISSING

T = TypeVar("T")
#: what a value that OmegaConf would convert or refuse turns into; it makes the whole result None
_REFUSED: Any = object()
_SCALARS = (str, int, bool)
_NO_NESTED: Mapping[str, type] = {}


@functools.lru_cache(maxsize=None)
def _fields(schema: type) -> Tuple[Tuple[str, Any, bool], ...]:
    """``(name, type hint, required)`` of each field of the dataclass ``schema``; required: its default is
    OmegaConf's ``MISSING``."""
    hints = typing.get_type_hints(schema)
    return tuple(
        (field.name, hints[field.name], isinstance(field.default, str) and field.default == MISSING)
        for field in dataclasses.fields(schema)
    )


def _value(value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` gives it, or :data:`_REFUSED`."""
    if hint in _SCALARS:
        if type(value) is not hint or (hint is str and value == MISSING):
            return _REFUSED
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union and len(args) == 2 and type(None) in args:  # Optional[X]
        return None if value is None else _value(value, args[0] if args[1] is type(None) else args[1])
    if origin is list and type(value) is list:
        items = [_value(item, args[0]) for item in value]
        return _REFUSED if any(item is _REFUSED for item in items) else items
    if origin is dict and args[0] is str and type(value) is dict:
        if not all(type(key) is str for key in value):
            return _REFUSED
        entries = {key: _value(item, args[1]) for key, item in value.items()}
        return _REFUSED if any(item is _REFUSED for item in entries.values()) else entries
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, value, _NO_NESTED)
    return _REFUSED


def _dataclass(schema: type, data: Any, nested: Mapping[str, type]) -> Any:
    if type(data) is not dict or not all(type(key) is str for key in data):
        return _REFUSED
    fields = _fields(schema)
    if not data.keys() <= {name for name, _, _ in fields}:
        return _REFUSED
    values: Dict[str, Any] = {}
    for name, hint, required in fields:
        if name not in data:
            if required:
                return _REFUSED
            continue
        value = data[name]
        if hint is Any:  # typed ``Any`` in the schema: null or a mapping of the schema ``nested`` names
            if name not in nested:
                return _REFUSED
            value = None if value is None else _dataclass(nested[name], value, _NO_NESTED)
        else:
            value = _value(value, hint)
        if value is _REFUSED:
            return _REFUSED
        values[name] = value
    return schema(**values)


def typed(schema: type[T], data: Any, nested: Optional[Mapping[str, type]] = None) -> Optional[T]:
    """``data`` as an instance of the dataclass ``schema`` when it already has exactly the schema's types, else
    None. ``nested`` names the schema of each field typed ``Any`` (a field holding null or such a mapping); any
    other ``Any`` field makes the result None."""
    result = _dataclass(schema, data, _NO_NESTED if nested is None else nested)
    return None if result is _REFUSED else result
