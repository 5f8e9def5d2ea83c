"""Upper bounds on what featx accepts, so no input can take unbounded memory or time (an alias bomb in a YAML
file, a million-item list, a 100000x100000 image). Each is far above any real use.

Example::

    check_data_size(yaml.safe_load(text))     # SpecError if it expands past MAX_SPEC_NODES
"""

from __future__ import annotations

import math
import numbers
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from featx.errors import ArgumentError, SpecError
from featx.spec.keys import key_path

#: a spec file is a few hundred bytes; a file larger than this is not a spec
MAX_SPEC_BYTES = 1 << 20
#: scalars, lists and mappings in a spec with YAML aliases expanded (the packaged ones have < 100)
MAX_SPEC_NODES = 10_000
#: stages in a spec, and module paths in one stage
MAX_STAGES = 64
MAX_STAGE_MODULES = 4096
#: the largest height or width of an input featx runs or probes (an 8K image is 7680 wide)
MAX_SIDE = 16_384
#: the largest batch the apps run
MAX_BATCH = 4096
#: the widest neck (``fpn.out_channels``): one 3x3 conv of 4096 -> 4096 channels is 0.6 GB of float32, and an FPN
#: has one per level, so a wider neck would exhaust memory before any use (detection FPNs use 256)
MAX_CHANNELS = 4096
#: the most input pixels (batch × height × width) an app runs at once: 2^25, a 5792x5792 image or 668 images of
#: 224x224. A network's feature maps take far more memory than its input (VGG-16's first block holds 64 channels at
#: full size: 8.6 GB per map at this bound), so a larger batch would be killed by the system instead of refused
MAX_BATCH_PIXELS = 1 << 25
#: the largest ``seed`` (what ``torch.manual_seed`` takes as a non-negative 64-bit integer)
MAX_SEED = 2**63 - 1
#: overrides in one call, and characters in one override
MAX_OVERRIDES = 256
MAX_OVERRIDE_CHARS = 4096
#: characters of a value from a file quoted back in an error message
QUOTE_LIMIT = 80
#: digits of an integer in a spec (the largest any key takes, ``seed``'s 2^63 - 1, has 19); Python converts at most
#: 4300 to text, so a longer one would break any message that names it
MAX_INT_DIGITS = 100


#: control characters (line breaks, terminal escapes, Unicode's line separators) and the invisible format characters
#: that reorder or hide text (bidirectional overrides and isolates, zero-width ones): shown escaped, so an error stays
#: one line that says what it says
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def escaped(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``): one line that says what it says, whatever a
    file name or key holds. Example: ``escaped("a\\nb")`` is ``a\\\\nb``."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def shortened(text: str) -> str:
    """``text`` with control characters escaped (:func:`escaped`), cut to :data:`QUOTE_LIMIT` characters (for a name
    inside a key path, or a key of a file)."""
    text = escaped(text)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


def digit_count(value: int) -> int:
    """How many decimal digits ``value`` has, found without converting it to text (which Python refuses past
    ``sys.get_int_max_str_digits()`` digits). Example: ``digit_count(-(10**5000))`` is 5001."""
    size = abs(value)
    digits = int(size.bit_length() * math.log10(2)) + 1  # the digits of 2 ** bit_length: one too many, or right
    while digits > 1 and size < 10 ** (digits - 1):
        digits -= 1
    while size >= 10**digits:  # a rounding of the estimate's float
        digits += 1
    return digits


def _too_long_for_text(value: Any) -> bool:
    """Whether ``value`` is an integer Python refuses to convert to text (``sys.set_int_max_str_digits``)."""
    limit = sys.get_int_max_str_digits()
    return isinstance(value, int) and limit > 0 and value.bit_length() > limit * 3 and digit_count(value) > limit


def quoted(value: Any) -> str:
    """``repr(value)``, cut to :data:`QUOTE_LIMIT` characters: errors name a value, they never dump a file. An
    integer too long for Python to convert to text is named by its size: ``quoted(10**5000)`` is ``an integer of 5001
    digits``."""
    if _too_long_for_text(value):
        return f"an integer of {digit_count(value)} digits"
    return shortened(repr(value))


def long_integer(value: Any) -> Optional[str]:
    """Why ``value`` is no integer a spec holds (more than :data:`MAX_INT_DIGITS` digits), else None. Example:
    ``long_integer(10**100)`` is ``"an integer of 101 digits; a spec's integers have at most 100 digits"``."""
    if not isinstance(value, int) or isinstance(value, bool) or -(10**MAX_INT_DIGITS) < value < 10**MAX_INT_DIGITS:
        return None
    return f"an integer of {digit_count(value)} digits; a spec's integers have at most {MAX_INT_DIGITS} digits"


def check_integers(data: Any, path: Tuple[str, ...] = ()) -> None:
    """Raise :class:`SpecError` naming the key (or list item) of the first integer in ``data`` (a spec as plain data;
    mapping keys too) of more than :data:`MAX_INT_DIGITS` digits (:func:`long_integer`), which every message naming
    it would fail to convert to text. Run on data whose size is bounded (:func:`check_data_size`)."""
    if isinstance(data, dict):  # the containers :func:`expanded_size` counts
        for key, value in data.items():
            problem = long_integer(key)
            if problem is not None:
                raise SpecError(key_path(*path), f"a key that is {problem}")
            check_integers(value, (*path, shortened(str(key))))
    elif isinstance(data, (list, tuple)):
        for index, item in enumerate(data):
            check_integers(item, (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",))
    else:
        problem = long_integer(data)
        if problem is not None:
            raise SpecError(key_path(*path), problem)


def expanded_size(data: Any) -> int:
    """How many scalars, lists and mappings ``data`` holds with shared references (YAML aliases) counted at every
    place they appear; computed without expanding them, so a bomb is measured in microseconds."""
    sizes: Dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > 64:
            raise SpecError(key_path(), "nested more than 64 levels deep; a spec is a flat mapping of a few keys")
        if not isinstance(node, (dict, list, tuple)):
            return 1
        if id(node) not in sizes:
            children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else list(node)
            sizes[id(node)] = 1 + sum(size(child, depth + 1) for child in children)
        return sizes[id(node)]

    return size(data, 0)


#: what a spec given as Python data (or a checkpoint's) shares: counted where used, as a YAML file's aliases are
SHARED_CONTAINERS = "shared lists and mappings"


def check_data_size(data: Any, shared: str = "YAML aliases") -> None:
    """Raise :class:`SpecError` when ``data`` (a spec as plain data) expands past :data:`MAX_SPEC_NODES` nodes or holds
    an integer of more than :data:`MAX_INT_DIGITS` digits (:func:`check_integers`); ``shared`` names what the count
    takes at every place it is used (a YAML file's aliases; a checkpoint's spec: :data:`SHARED_CONTAINERS`)."""
    nodes = expanded_size(data)
    if nodes > MAX_SPEC_NODES:
        raise SpecError(
            key_path(),
            f"expands to {nodes} values ({shared} counted where they are used), more than the {MAX_SPEC_NODES} a "
            "spec may hold; a backbone spec is a few dozen values",
        )
    check_integers(data)


def check_batch_shape(
    where: str, batch_size: Any, height: Any, width: Any, *, names: Optional[Tuple[str, str, str]] = None
) -> None:
    """Raise :class:`ArgumentError` naming ``<where>.batch_size``/``height``/``width`` (or ``names``, a function's
    own arguments) unless each is an integer in bounds and the batch holds at most :data:`MAX_BATCH_PIXELS` pixels.

    Example: ``check_batch_shape("input", 1, 224, 224)``.
    """
    keys = names or (f"{where}.batch_size", f"{where}.height", f"{where}.width")
    for key, value, most in zip(keys, (batch_size, height, width), (MAX_BATCH, MAX_SIDE, MAX_SIDE), strict=True):
        if type(value) is not int or not 1 <= value <= most:
            raise ArgumentError(f"{key}: must be an integer in 1..{most}, got {quoted(value)}")
    size_key = f"{where}.height/width" if names is None else "/".join(dict.fromkeys(names[1:]))
    check_batch_pixels(where, batch_size, height, width, size_key=size_key, batch_key=keys[0])


def check_batch_pixels(
    key: str, batch_size: int, height: int, width: int, size_key: Optional[str], batch_key: Optional[str] = None
) -> None:
    """Raise :class:`ArgumentError` naming ``key`` if a batch of ``batch_size`` inputs of ``height``×``width`` holds
    more than :data:`MAX_BATCH_PIXELS` pixels (``batch_key``, by default ``<key's parent>.batch_size``, and
    ``size_key``, None where the size is no setting, are what to lower)."""
    if batch_size * height * width > MAX_BATCH_PIXELS:
        batch_key = batch_key or f"{key.rpartition('.')[0] or key}.batch_size"
        raise ArgumentError(
            f"{key}: a batch of {batch_size} inputs of {height}x{width} is more than {MAX_BATCH_PIXELS} pixels; "
            f"lower {batch_key}" + (f" or {size_key}" if size_key else "")
        )


def real_value(value: object) -> float:
    """``value`` as a float if it is a real number (not a bool; numpy's too): an int past a float's range is
    ``inf``, anything else ``nan``, so one ``math.isfinite`` check refuses both. Example: ``real_value(2) == 2.0``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf


def unknown_home(path: str) -> Optional[str]:
    """Why ``path``'s leading ``~user`` cannot be expanded (no such user, or no home folder), else None: featx
    expands ``~`` in the paths it is given (:func:`expand_home`), and takes a path whose ``~name`` exists as written
    (a file ``~x.pt`` or a folder ``~x`` in the current folder) as written, as a shell does. Example:
    ``unknown_home("~nosuch/a.pth")``."""
    if not path.startswith("~") or os.path.lexists(path.split(os.sep)[0]):
        return None
    try:
        Path(path).expanduser()
    except RuntimeError:
        return (
            f"{quoted(path)} starts with {path.split(os.sep)[0]!r}, a user without a known home folder (for a file or "
            f"folder of that name in the current folder, write {quoted('./' + path)})"
        )
    return None


def expand_home(path: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, as written where that user has no home folder here
    (:func:`unknown_home` refuses such a path unless it exists as written). Example: ``expand_home("~/a.pth")``."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)
