"""Turn whatever names a backbone — a packaged name, a YAML path, a mapping, a DictConfig, a BackboneSpec —
plus Hydra-grammar overrides into one validated :class:`~featx.spec.schema.BackboneSpec`.

Example::

    spec = load_spec("resnet50_fpn", overrides=["fpn.out_channels=128", "frozen_stages=1"])
    spec.fpn.out_channels   # 128
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from featx.errors import SpecError, first_line
from featx.spec.config_files import backbone_names, config_dir
from featx.spec.keys import key_path, suggest
from featx.spec.limits import (
    MAX_SEED,
    QUOTE_LIMIT,
    SHARED_CONTAINERS,
    check_data_size,
    check_integers,
    expand_home,
    quoted,
    shortened,
    unknown_home,
)
from featx.spec.overrides import apply_overrides, apply_plain_overrides
from featx.spec.references import calls_resolver, resolve_without_resolvers
from featx.spec.schema import (
    DEVICE_CHOICES,
    EXTRA_BLOCKS,
    FPN_STYLES,
    LAYOUTS,
    NORM_POLICIES,
    OUTPUT_NAMES,
    BackboneSpec,
    FpnSpec,
    StageSpec,
    TokenSpec,
)
from featx.spec.typed import typed
from featx.spec.validate import validate_spec
from featx.spec.yaml_file import is_spec_suffix, read_spec_file

SpecSource = Union[str, os.PathLike, Mapping[str, Any], DictConfig, BackboneSpec]

#: The ``_target_`` that conf files carry for ``hydra.utils.instantiate``; the only one a spec may name.
INSTANTIATE_TARGET = "featx.spec.hydra_store.instantiate_backbone"
#: Targets older featx versions wrote into dumped configs; accepted as data, never called.
ACCEPTED_TARGETS = (INSTANTIATE_TARGET, "featx.hydra_conf.instantiate_backbone")
#: The defaults list of a conf file: the schema from featx's ConfigStore, then the file itself.
SCHEMA_DEFAULTS = ["/featx/backbone_schema@_here_", "_self_"]
ROOT_KEY = key_path()
MISSING_VALUE = "missing value (a spec must set it)"


def _omegaconf_error(error: OmegaConfBaseException, prefix: str = "") -> SpecError:
    full_key = str(getattr(error, "full_key", "") or "")
    key = key_path(*filter(None, (prefix, full_key)))
    if isinstance(error, MissingMandatoryValue):
        return SpecError(key, MISSING_VALUE)
    message = first_line(getattr(error, "msg", "") or error)
    if message.startswith("Key '") and " not in " in message:
        unknown = message.split("'")[1]
        schema = _NESTED.get(prefix) or (StageSpec if full_key.startswith("stages.") else BackboneSpec)
        fields = [spec_field.name for spec_field in dataclasses.fields(schema)]
        if not _KEY_NAME.fullmatch(unknown):  # a line of some other file, maybe a secret: not repeated
            parent = key_path(*filter(None, (prefix, full_key.rpartition(".")[0])))
            return SpecError(parent, f"unknown key of {len(unknown)} characters (valid keys: {', '.join(fields)})")
        return SpecError(key, f"unknown key {unknown!r}{suggest(unknown, fields)} (valid keys: {', '.join(fields)})")
    message = quoted(message)[1:-1] if len(message) > QUOTE_LIMIT * 2 else message
    if message.startswith("Recursive interpolation detected"):  # OmegaConf.save(cfg.backbone, path), loaded again
        message += (
            "; if this is a node saved without resolve=True, it keeps its references (${...}) to the config it came "
            "from: save it resolved, OmegaConf.save(cfg.backbone, path, resolve=True)"
        )
    if "could not be converted to Integer" in message and full_key in _INTEGER_KEYS:
        message += f"; it takes {_INTEGER_KEYS[full_key]}"
    return SpecError(key, message)


#: what the integer keys of a spec take, said where a value of another type is given
_INTEGER_KEYS = {
    "frozen_stages": "how many stages to freeze, counted from the first (0 for none): a number, not stage names",
    "seed": f"an integer in 0..{MAX_SEED}, the seed of the random init (not true or false)",
}
#: the optional nested nodes (typed ``Any`` in the schema, see :class:`BackboneSpec`) and their schemas
_NESTED: Dict[str, type] = {"fpn": FpnSpec, "tokens": TokenSpec}
#: what an unknown key must look like to be repeated in an error
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_STAGE_FORM = "{slice: [start, end]} or {modules: [path, ...]}"


def _check_nesting(data: Mapping[str, Any]) -> None:
    """``stages`` is a mapping of mappings and ``fpn`` null or a mapping, named by key before the typed merge (whose
    own messages name neither)."""
    stages = data.get("stages")
    if stages is not None and not isinstance(stages, Mapping):
        raise SpecError(
            key_path("stages"), f"expected a mapping of stage name to {_STAGE_FORM}, got {type(stages).__name__}"
        )
    for name, stage in (stages or {}).items():
        if not isinstance(stage, Mapping):
            raise SpecError(
                key_path("stages", shortened(str(name))), f"expected {_STAGE_FORM}, got {type(stage).__name__}"
            )


def _nodes(data: Mapping[str, Any]) -> List[Tuple[Tuple[str, ...], Mapping[str, Any], type]]:
    """(key path, node, schema) of the spec's root and each of its nested nodes (fpn, tokens, each stage)."""
    nodes: List[Tuple[Tuple[str, ...], Mapping[str, Any], type]] = [((), data, BackboneSpec)]
    for key, schema in _NESTED.items():
        if isinstance(data.get(key), Mapping):
            nodes.append(((key,), data[key], schema))
    for name, stage in (data.get("stages") or {}).items():
        nodes.append((("stages", str(name)), stage, StageSpec))
    return nodes


def _check_lists_and_flags(data: Mapping[str, Any]) -> None:
    """Each list key holds a list (or null) of names or numbers, and each flag true or false, named by key:
    OmegaConf's merge refuses a mapping for a list without naming the key, keeps a nested list or mapping as one
    item (which the checks cannot compare), and takes ``2`` or ``yes`` for true (the apps refuse them)."""
    for parents, node, schema in _nodes(data):
        for key, hint in typing.get_type_hints(schema).items():
            value = node.get(key)
            if hint is bool and value is not None and not is_true_or_false(value):  # null: _check_single_values
                raise SpecError(key_path(*parents, key), f"must be true or false, got {quoted(value)}")
            item_type = list_item(hint)
            if item_type is None:
                continue
            expected = "a list (or null)" if type(None) in typing.get_args(hint) else "a list"
            if isinstance(value, Mapping):
                raise SpecError(key_path(*parents, key), f"expected {expected}, got a mapping")
            if value is not None and not isinstance(value, (list, tuple)):
                raise SpecError(key_path(*parents, key), f"expected {expected}, got {quoted(value)}")
            for position, item in enumerate(value if isinstance(value, list) else ()):
                if item is None:  # OmegaConf's "Invalid type assigned: NoneType is not a subclass of str"
                    raise SpecError(key_path(*parents, f"{key}[{position}]"), null_item_refusal(item_type))
                if isinstance(item, (list, tuple, Mapping)):
                    raise SpecError(
                        key_path(*parents, f"{key}[{position}]"),
                        f"expected {item_kind(item_type)}, got a {'mapping' if isinstance(item, Mapping) else 'list'}",
                    )


#: the keys taking one of fixed choices, named where a list or mapping (or a null none of them is) is given for one
_CHOICES: Dict[Tuple[str, ...], Sequence[str]] = {
    ("norm",): NORM_POLICIES,
    ("layout",): LAYOUTS,
    ("output_names",): OUTPUT_NAMES,
    ("device",): DEVICE_CHOICES,
    ("fpn", "extra_blocks"): ("null", *EXTRA_BLOCKS),
    ("fpn", "style"): FPN_STYLES,
}


#: what a key of each type takes, said where it is given null
_KINDS: Dict[Any, str] = {bool: "true or false", int: "an integer", str: "a string", list: "a list", dict: "a mapping"}
#: what the spec keys a type says too little of take (dotted key below the backbone)
_TAKES = {**_INTEGER_KEYS, "stages": f"a mapping of stage name to {_STAGE_FORM}"}


def item_kind(item_type: Any) -> str:
    """What an item of a list of ``item_type`` is, in errors: ``item_kind(int)`` is ``"a number"``, else a name."""
    return "a number" if item_type is int else "a name"


def null_item_refusal(item_type: Any) -> str:
    """Why an item of a list of ``item_type`` takes no null: ``null_item_refusal(str)``."""
    return f"null is not allowed; it takes {item_kind(item_type)}"


def null_refusal(key: Sequence[str], hint: Any) -> Optional[str]:
    """Why the key ``key`` of type ``hint`` takes no null, with its choices or what it takes; None where its type
    takes null (``Optional``). A spec key below the backbone (``("norm",)``, ``("fpn", "style")``) names its
    choices; any key, a spec's or an app's own, says what its type takes. Example: ``null_refusal(["norm"], str)``
    is ``"null is not allowed (valid: frozen, eval, train, sync)"``; ``null_refusal(["input", "batch_size"], int)``
    says it takes an integer."""
    if type(None) in typing.get_args(hint):
        return None
    parts = tuple(key)
    choices = _CHOICES.get(parts)
    if choices is not None:
        return f"null is not allowed (valid: {', '.join(choices)})"
    takes = _TAKES.get(".".join(parts)) or _KINDS.get(typing.get_origin(hint) or hint)
    return None if takes is None else f"null is not allowed; it takes {takes}"


def _check_single_values(data: Mapping[str, Any]) -> None:
    """Each key taking one name or number holds no list or mapping, named by key with its choices (OmegaConf's
    "Cannot convert 'ListConfig' to string" named neither), no null unless it takes one, naming its choices or what
    it takes (:func:`null_refusal`), and a string key no true or false (nor ``weights`` a number), which OmegaConf
    turned into the string ``'False'``."""
    for parents, node, schema in _nodes(data):
        for key, hint in typing.get_type_hints(schema).items():
            arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
            single = arguments[0] if typing.get_origin(hint) in (Union, types.UnionType) and arguments else hint
            value = node.get(key)
            where = key_path(*parents, key)
            choices = _CHOICES.get((*parents, key))
            refusal = null_refusal((*parents, key), hint) if key in node and value is None else None
            if refusal is not None:  # OmegaConf's "Incompatible value 'None' for field of type 'str'"
                raise SpecError(where, refusal)
            if single is str and isinstance(value, bool):  # OmegaConf made it 'False': `pretrained: false` habits
                advice = " (null for random init)" if where == key_path("weights") else ""
                expected = f"one of {', '.join(choices)}" if choices else "a string"
                raise SpecError(where, f"expected {expected}, got {str(value).lower()}{advice}")
            if where == key_path("weights") and isinstance(value, (int, float)):
                raise SpecError(
                    where,
                    f"expected a weights name or a file path, got the number {value}; quote a file named so "
                    f"(weights: '{value}')",
                )
            if single not in (str, int) or not isinstance(value, (list, tuple, Mapping)):
                continue
            got = "a mapping" if isinstance(value, Mapping) else "a list"
            expected = f"one of {', '.join(choices)}" if choices else "a string" if single is str else "a number"
            raise SpecError(where, f"expected {expected}, got {got}")


def _plain_scalars(data: Any) -> Any:
    """``data`` with numpy's scalars as Python's (``np.int64(3)`` is 3) and a ``torch.device`` as its name: values
    a Python caller computes, which OmegaConf refuses as "not a supported primitive type". Run after
    :func:`check_data_size`, which bounds the walk (it counts shared lists and mappings wherever they are used)."""
    if isinstance(data, dict):
        return {key: _plain_scalars(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        values = [_plain_scalars(value) for value in data]
        return values if isinstance(data, list) else tuple(values)
    kind = type(data)
    if kind.__module__ == "numpy" and hasattr(data, "item") and getattr(data, "ndim", None) == 0:
        return data.item()
    if kind.__module__ == "torch" and kind.__name__ == "device":
        return str(data)
    return data


def list_item(hint: Any) -> Optional[type]:
    """The item type of a ``List[X]`` or ``Optional[List[X]]`` field's hint, else None."""
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType) and len(arguments) == 1:
        hint = arguments[0]
    return typing.get_args(hint)[0] if typing.get_origin(hint) is list else None


def is_true_or_false(value: Any) -> bool:
    """A bool, ``'true'``/``'false'`` quoted (as YAML and Hydra's grammar may give them), or an interpolation (an
    app resolves it and checks the result; a spec file featx reads refuses it before)."""
    if isinstance(value, str):
        return value.lower() in ("true", "false") or "${" in value
    return isinstance(value, bool)


def check_spec_values(data: Mapping[str, Any]) -> None:
    """The checks a spec's own values get before any merge, each naming its key (``stages`` a mapping of mappings,
    list keys lists, flags true or false): what the apps run on a backbone file of the user's before Hydra composes
    it, where OmegaConf would take ``channels_last: 2`` or ``yes`` as true. Raises :class:`SpecError`."""
    _check_nesting(data)
    _check_lists_and_flags(data)
    _check_single_values(data)


def _is_path(text: str) -> bool:
    return is_spec_suffix(Path(text)) or os.sep in text or "/" in text


def _plain_data(source: SpecSource) -> Tuple[Dict[str, Any], Optional[str]]:
    """The spec as plain data and where it came from (a file path, or None)."""
    if isinstance(source, BackboneSpec):
        fields = source.to_dict()
        check_data_size(fields, shared=SHARED_CONTAINERS)
        return _plain_scalars(fields), None
    if isinstance(source, DictConfig):
        try:
            refuse_resolvers(OmegaConf.to_container(source, resolve=False))
            return resolve_without_resolvers(source), None
        except OmegaConfBaseException as error:
            raise _omegaconf_error(error) from None
    if isinstance(source, Mapping):
        data: Dict[str, Any] = dict(source)
        check_data_size(data, shared=SHARED_CONTAINERS)
        return _plain_scalars(data), None
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(source, os.PathLike) or _is_path(text):
            problem = unknown_home(text)
            if problem is not None:
                raise SpecError(ROOT_KEY, problem)
            path = expand_home(text)
        else:
            names = backbone_names()
            if text not in names:
                raise SpecError(
                    ROOT_KEY,
                    f"unknown backbone {text!r}{suggest(text, names)} (the {len(names)} packaged ones are listed by "
                    "`featx-list`; or pass a path to a .yaml spec file)",
                )
            path = config_dir() / "backbone" / f"{text}.yaml"
        return read_spec_file(path), str(path)
    raise SpecError(
        ROOT_KEY, f"cannot build from {type(source).__name__}; pass a name, a path, a mapping or a BackboneSpec"
    )


def _find_string(
    data: Any, matches: Callable[[str], bool], path: Tuple[str, ...] = (), keys: bool = True
) -> Optional[Tuple[str, ...]]:
    """The key path of the first string in ``data`` (keys included unless ``keys`` is false) that ``matches``, or
    None."""
    if isinstance(data, str):
        return path if matches(data) else None
    if isinstance(data, Mapping):
        for key, value in data.items():
            if keys and isinstance(key, str) and matches(key):
                return (*path, key)
            found = _find_string(value, matches, (*path, str(key)), keys)
            if found is not None:
                return found
    if isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            item_path = (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",)
            found = _find_string(value, matches, item_path, keys)
            if found is not None:
                return found
    return None


def refuse_resolvers(data: Any) -> None:
    """A composed config may refer to its own nodes (``${device}``); it may not call resolvers. Example:
    ``refuse_resolvers({"model": "${oc.env:HOME}"})`` raises SpecError naming ``backbone.model``."""
    found = _find_string(data, calls_resolver)
    if found is not None:
        raise SpecError(
            key_path(*found),
            "calls an OmegaConf resolver (${name:...}); a backbone spec is data, and featx resolves no resolver "
            "(they can read the environment). Put the value itself",
        )


def _refuse_interpolations(data: Any) -> None:
    """Spec files, checkpoints, mappings and overrides are literal data: no ``${...}`` at all."""
    found = _find_string(data, lambda text: "${" in text)
    if found is not None:
        raise SpecError(
            key_path(*found),
            "holds an interpolation (${...}); featx reads spec files, checkpoints, mappings and overrides as literal "
            "data and resolves nothing. Put the value itself (or compose it with Hydra and pass the composed node)",
        )


def _refuse_missing_markers(data: Any) -> None:
    """OmegaConf's ``???`` ("must be set") is a missing value wherever it stands: merged into the schema it would
    silently become the key's default (``weights: ???`` a random init)."""
    found = _find_string(data, lambda text: text == MISSING, keys=False)
    if found is not None:
        raise SpecError(key_path(*found), MISSING_VALUE)


def _strip_hydra_keys(data: Dict[str, Any]) -> Dict[str, Any]:
    """Drop the two Hydra keys a conf file carries; refuse any other defaults list or target."""
    data = dict(data)
    defaults = data.pop("defaults", SCHEMA_DEFAULTS)
    if not isinstance(defaults, list) or defaults != SCHEMA_DEFAULTS:
        raise SpecError(
            key_path("defaults"),
            f"{defaults!r}: featx reads a spec file on its own, so its defaults list may only be {SCHEMA_DEFAULTS}; "
            "compose other defaults with Hydra and pass the composed node",
        )
    target = data.pop("_target_", INSTANTIATE_TARGET)
    if target not in ACCEPTED_TARGETS:
        raise SpecError(
            key_path("_target_"),
            f"{target!r} is refused: a spec is data and featx never calls what it names "
            f"(allowed: {INSTANTIATE_TARGET})",
        )
    return data


def _typed_spec(config: DictConfig) -> BackboneSpec:
    try:
        spec: BackboneSpec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneSpec), config))  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        raise _omegaconf_error(error) from None
    for key, schema in _NESTED.items():
        node = getattr(spec, key)
        if node is None:
            continue
        if not isinstance(node, Mapping):
            fields = ", ".join(spec_field.name for spec_field in dataclasses.fields(schema))
            raise SpecError(key_path(key), f"expected null or a mapping {{{fields}}}, got {quoted(node)}")
        try:
            setattr(spec, key, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node)))
        except OmegaConfBaseException as error:
            raise _omegaconf_error(error, prefix=key) from None
    return spec


def _with_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``data`` with ``overrides`` applied, as plain data: without OmegaConf for plain data and simple overrides (the
    common case, see :func:`~featx.spec.overrides.apply_plain_overrides`), else through OmegaConf."""
    literal = apply_plain_overrides(data, overrides)
    if literal is not None:
        return literal
    try:
        config = apply_overrides(data, overrides)
    except OmegaConfBaseException as error:
        raise _omegaconf_error(error) from None
    return OmegaConf.to_container(config, resolve=False)  # type: ignore[return-value]


def load_spec(source: SpecSource, overrides: Optional[Sequence[str]] = None) -> BackboneSpec:
    """Resolve ``source`` and ``overrides`` (Hydra grammar, relative to the backbone node) into a spec checked
    without the model: keys, types, choices, slices, stage names (the model's checks, such as module paths and their
    execution order, run when :func:`featx.build` builds it).

    Raises :class:`~featx.errors.SpecError` naming the key path (and the file, for a file's own value) on any problem.
    """
    return load_spec_and_origin(source, overrides)[0]


def load_spec_and_origin(
    source: SpecSource, overrides: Optional[Sequence[str]] = None
) -> Tuple[BackboneSpec, Optional[str]]:
    """:func:`load_spec`, and the spec file ``source`` names (None for a mapping or spec object): what the model's
    checks name with :func:`attributed`."""
    data, origin = _plain_data(source)
    try:
        _refuse_interpolations(data)
    except SpecError as error:
        raise (error.with_origin(origin) if origin else error) from None
    try:
        literal = _with_overrides(data, overrides or ())
    except SpecError as error:
        raise _with_prefix_hint(error, overrides or ()) from None
    _refuse_interpolations(literal)  # from the overrides: named without the file
    try:
        check_integers(literal)  # an override's or a DictConfig source's (a mapping's and a file's: again, cheap)
        _refuse_missing_markers(literal)  # before the checks of form: ``stages: ???`` is missing, not a string
        _check_nesting(literal)
        _check_lists_and_flags(literal)
        _check_single_values(literal)
        fields = _strip_hydra_keys(literal)
        spec = typed(BackboneSpec, fields, nested=_NESTED)  # without OmegaConf where it would give the same
        if spec is None:
            spec = _typed_spec(OmegaConf.create(fields))
        validate_spec(spec)
    except SpecError as error:
        raise attributed(_with_prefix_hint(error, overrides or ()), origin, overrides) from None
    return spec, origin


#: the key of the app's backbone node, which an override copied from the app's command line starts with
_APP_NODE = "backbone"


def _with_prefix_hint(error: SpecError, overrides: Sequence[str]) -> SpecError:
    """``error``, about a key under ``backbone.backbone``, with a hint to drop the app's ``backbone.`` where an
    override starts with it and names a spec key after it (``backbone.seed=3``: "write seed=3")."""
    node = key_path(_APP_NODE)
    if error.key != node and not error.key.startswith((node + ".", node + "[")):
        return error
    fields = {spec_field.name for spec_field in dataclasses.fields(BackboneSpec)}
    for line in overrides:
        sign = line[: len(line) - len(line.lstrip("+~"))]
        first, _, rest = line[len(sign) :].partition(".")
        if first == _APP_NODE and re.split(r"[.=\[]", rest, maxsplit=1)[0] in fields:
            hint = f"overrides here are relative to the backbone: write {quoted(sign + rest)[1:-1]}"
            return SpecError(error.key, f"{error.message}; {hint}", origin=error.origin)
    return error


def attributed(error: SpecError, origin: Optional[str], overrides: Optional[Sequence[str]]) -> SpecError:
    """``error`` attributed to the spec file ``origin``, unless it has a file already or is about a value an
    override set; with other overrides, to the file with them (an override of one key may break a check of another:
    ``tokens.stride=null`` makes an FPN's strides wrong)."""
    if origin and error.origin is None and not _set_by_override(error.key, overrides or ()):
        return error.with_origin(f"{origin} with overrides {quoted(list(overrides))}" if overrides else origin)
    return error


def _set_by_override(key: str, overrides: Sequence[str]) -> bool:
    """Whether the value at ``key`` (``backbone.device``) is one an override set (``device=cpu:1``), or a node other
    than the root that an override changed inside (``backbone.stages.c2`` after ``stages.c2.slice=[0,1]``): its
    error is the override's, not the spec file's."""
    for line in overrides:
        target = key_path(line.split("=", 1)[0].lstrip("+~"))
        if key == target or key.startswith((target + ".", target + "[")):
            return True
        if key != ROOT_KEY and target.startswith((key + ".", key + "[")):
            return True
    return False
