"""Reading a spec file: UTF-8 YAML, safely parsed (no tags, no code), bounded in size and alias expansion, with
duplicate keys refused; errors name the file, the line and the problem, never quote the file's contents.

Example::

    data = read_spec_file(Path("my_configs/backbone/resnet18_c4.yaml"))     # a dict
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from featx.errors import SpecError
from featx.spec.keys import key_path
from featx.spec.limits import MAX_INT_DIGITS, MAX_SPEC_BYTES, check_data_size, quoted, shortened

#: the suffixes of a spec file, in any letter case (``MY.YAML``): see :func:`is_spec_suffix`
SPEC_SUFFIXES = (".yaml", ".yml")
ROOT_KEY = key_path()
#: PyYAML's safe loader, libyaml's C parser where installed (several times faster than the pure-Python one)
_SAFE_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


#: the tag of YAML's merge key ``<<: *anchor``, which the safe loader expands (the mapping's own keys win)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _NotSpecData(yaml.constructor.ConstructorError):
    """A value YAML's safe loader makes but a spec cannot hold (a date, a set, bytes, an empty key)."""


#: the tags of the safe loader's values a spec has no use for, and what to call them
_REFUSED_TAGS = {
    "tag:yaml.org,2002:timestamp": "a date or time",
    "tag:yaml.org,2002:set": "a set (!!set)",
    "tag:yaml.org,2002:binary": "bytes (!!binary)",
    "tag:yaml.org,2002:omap": "an ordered mapping (!!omap)",
    "tag:yaml.org,2002:pairs": "a list of pairs (!!pairs)",
}


def _refuse(loader: Any, node: yaml.Node) -> None:
    raise _NotSpecData(
        None,
        None,
        f"{_REFUSED_TAGS[node.tag]} (a spec holds strings, numbers, true/false, null, lists and mappings; quote it "
        "to give a string)",
        node.start_mark,
    )


class _UniqueKeyLoader(_SAFE_BASE):
    """The safe loader, refusing a mapping that gives one of its own keys twice (YAML would silently keep the
    last) or an empty (null) key, and values a spec cannot hold (:data:`_REFUSED_TAGS`); keys merged in with
    ``<<: *anchor`` may be given again, as YAML's merge key means."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if key is None or isinstance(key, (list, dict)):
                kind = "mapping" if isinstance(key, dict) else "list"
                what = "an empty (null) key" if key is None else f"a {kind} as a key (a key is a name or a number)"
                raise _NotSpecData(None, None, what, key_node.start_mark)
            if isinstance(key, bool):  # OmegaConf's "Key True (bool) is incompatible with (str)"; an override's name
                raise _NotSpecData(
                    None,
                    None,
                    f"the key {quoted(key_node.value)[1:-1]}, which YAML reads as a bool and an override as a name "
                    f"(a key is a name or a number; quote it, {quoted(key_node.value)}, for the name)",
                    key_node.start_mark,
                )
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {quoted(key)} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _decimal_int(loader: Any, node: yaml.ScalarNode) -> int:
    """An integer as YAML 1.1 reads it, refusing the forms read otherwise by featx's overrides (Hydra's grammar):
    a leading zero (``017``: octal 15 in a file, 17 in an override) and base 60 (``1:30``: 90); and a decimal one of
    more than :data:`MAX_INT_DIGITS` digits, unconverted (a hexadecimal one converts at any length, and
    :func:`check_data_size` names its key)."""
    digits = str(node.value).replace("_", "").lstrip("+-")
    if ":" in digits or (len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()):
        raise _NotSpecData(
            None,
            None,
            f"the number {quoted(node.value)[1:-1]}, which YAML reads as octal (a leading 0) or base 60 (a:b) and an "
            "override as decimal; write it without the leading 0 or the colon (or quote it to give a string)",
            node.start_mark,
        )
    if digits.isascii() and digits.isdigit() and len(digits) > MAX_INT_DIGITS:  # Python converts at most 4300 digits
        raise _NotSpecData(
            None,
            None,
            f"an integer of {len(digits)} digits; a spec's integers have at most {MAX_INT_DIGITS} digits",
            node.start_mark,
        )
    return int(loader.construct_yaml_int(node))


def _true_or_false(loader: Any, node: yaml.ScalarNode) -> bool:
    """A bool as YAML 1.1 reads it, refusing the words read otherwise by featx's overrides (Hydra's grammar), which
    take ``true`` and ``false`` only: ``yes``, ``no``, ``on`` and ``off`` (a stage named ``off``, a module ``yes``)."""
    value = bool(loader.construct_yaml_bool(node))
    word = str(node.value)
    if word.lower() not in ("true", "false"):
        raise _NotSpecData(
            None,
            None,
            f"the word {quoted(word)[1:-1]}, which YAML reads as {str(value).lower()} and an override as the string "
            f"{quoted(word)}; write {str(value).lower()} (or quote it, {quoted(word)}, for the string)",
            node.start_mark,
        )
    return value


for _tag in _REFUSED_TAGS:
    _UniqueKeyLoader.add_constructor(_tag, _refuse)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _decimal_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:bool", _true_or_false)

#: the line breaks YAML counts (a CR LF pair is one)
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def yaml_problem(error: yaml.YAMLError, text: Optional[str] = None) -> str:
    """The parser's problem and where, without the snippet of the file PyYAML puts in ``str(error)``; a character
    YAML does not take (a NUL) by its code, at its line and column in ``text`` where given (else at the reader's
    position: characters with PyYAML's own reader, bytes with libyaml's)."""
    if isinstance(error, yaml.reader.ReaderError):
        code = ord(error.character) if isinstance(error.character, str) else error.character
        where = f" at position {error.position}"
        if text is not None and chr(code) in text:
            index = text.index(chr(code))  # the reader names the first one
            breaks = list(_LINE_BREAK.finditer(text, 0, index))
            column = index - (breaks[-1].end() if breaks else 0)
            where = f" at line {len(breaks) + 1}, column {column + 1}"
        return f"unacceptable character #x{code:04x} ({error.reason}){where}"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def is_spec_suffix(path: Path) -> bool:
    """Whether ``path`` ends in a spec file's suffix, in any letter case: ``is_spec_suffix(Path("MY.YAML"))``."""
    return path.suffix.lower() in SPEC_SUFFIXES


def read_spec_file(path: Path) -> Dict[str, Any]:
    """The mapping a spec file holds; :class:`SpecError` naming the file for anything else."""
    origin = str(path)
    if not is_spec_suffix(path):
        raise SpecError(ROOT_KEY, f"a spec file is a .yaml or .yml file (in any letter case), got {origin}")
    try:
        info = os.stat(path)
    except ValueError:  # a NUL, or a character no file name holds (a lone surrogate)
        raise SpecError(ROOT_KEY, f"spec file not found: {origin}") from None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise SpecError(ROOT_KEY, f"spec file not found: {origin}") from None
        named = shortened(origin) if error.errno == errno.ENAMETOOLONG else origin
        raise SpecError(
            ROOT_KEY, f"cannot look up the spec file {named}: {error.strerror or type(error).__name__}"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(ROOT_KEY, f"{origin} is a folder, not a spec file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(ROOT_KEY, f"{origin} is not a regular file (a device, fifo or socket), not a spec file")
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError(
            ROOT_KEY, f"{info.st_size} bytes is too large for a spec file (at most {MAX_SPEC_BYTES})", origin=origin
        )
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError(ROOT_KEY, f"cannot read the file: {error.strerror or error}", origin=origin) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(
            ROOT_KEY, f"not UTF-8 text (byte {error.start} cannot be decoded); save the file as UTF-8", origin=origin
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _NotSpecData as error:
        raise SpecError(ROOT_KEY, f"not a spec value: {yaml_problem(error)}", origin=origin) from None
    except yaml.YAMLError as error:
        raise SpecError(ROOT_KEY, f"not valid YAML: {yaml_problem(error, text)}", origin=origin) from None
    except RecursionError:
        raise SpecError(ROOT_KEY, "not valid YAML for a spec: nested too deeply", origin=origin) from None
    if not isinstance(data, dict):
        raise SpecError(
            ROOT_KEY, f"a spec file must hold a mapping of keys, found {type(data).__name__}", origin=origin
        )
    try:
        check_data_size(data)
    except SpecError as error:
        raise error.with_origin(origin) from None
    return data
