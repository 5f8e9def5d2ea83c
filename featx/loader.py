"""Turn whatever names a backbone — a packaged name, a YAML path, a mapping, a DictConfig, a BackboneSpec —
plus Hydra-grammar overrides into one validated :class:`~featx.spec.BackboneSpec`.

Example::

    spec = load_spec("resnet50_fpn", overrides=["fpn.out_channels=128", "frozen_stages=1"])
    spec.fpn.out_channels   # 128
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from featx.errors import SpecError
from featx.resources import backbone_names, config_dir
from featx.spec import BackboneSpec, FpnSpec, StageSpec, key_path, suggest, validate_spec

SpecSource = Union[str, os.PathLike, Mapping[str, Any], DictConfig, BackboneSpec]

#: The ``_target_`` that conf files carry for ``hydra.utils.instantiate``; the only one a spec may name.
INSTANTIATE_TARGET = "featx.hydra_conf.instantiate_backbone"
#: The defaults list of a conf file: the schema from featx's ConfigStore, then the file itself.
SCHEMA_DEFAULTS = ["/featx/backbone_schema@_here_", "_self_"]
ROOT_KEY = key_path()


def _omegaconf_error(error: OmegaConfBaseException, prefix: str = "") -> SpecError:
    full_key = str(getattr(error, "full_key", "") or "")
    key = key_path(*filter(None, (prefix, full_key)))
    if isinstance(error, MissingMandatoryValue):
        return SpecError(key, "missing value (a spec must set it)")
    message = str(getattr(error, "msg", "") or error).splitlines()[0]
    if message.startswith("Key '") and " not in " in message:
        unknown = message.split("'")[1]
        fields = [f.name for f in dataclasses.fields(FpnSpec if prefix == "fpn" else _schema_of(full_key))]
        return SpecError(key, f"unknown key {unknown!r}{suggest(unknown, fields)} (valid keys: {', '.join(fields)})")
    return SpecError(key, message)


def _schema_of(full_key: str) -> type:
    return StageSpec if full_key.startswith("stages.") else BackboneSpec


#: PyYAML's safe loader, libyaml's C parser where installed (several times faster than the pure-Python one)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Dict[str, Any]:
    origin = str(path)
    if not path.is_file():
        raise SpecError(ROOT_KEY, f"spec file not found: {origin}")
    try:
        data = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except yaml.YAMLError as error:
        raise SpecError(ROOT_KEY, f"not valid YAML: {error}", origin=origin) from None
    if not isinstance(data, dict):
        raise SpecError(ROOT_KEY, f"a spec file must hold a mapping of keys, found {type(data).__name__}", origin=origin)
    return data


def _plain_data(source: SpecSource) -> tuple[Dict[str, Any], Optional[str]]:
    """The spec as plain data and where it came from (a file path, or None)."""
    if isinstance(source, BackboneSpec):
        return dataclasses.asdict(source), None
    if isinstance(source, (DictConfig, Mapping)):
        try:
            config = source if isinstance(source, DictConfig) else OmegaConf.create(dict(source))
            return OmegaConf.to_container(config, resolve=True), None  # type: ignore[return-value]
        except OmegaConfBaseException as error:
            raise _omegaconf_error(error) from None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        text = str(source)
        looks_like_path = path.suffix in (".yaml", ".yml") or os.sep in text or "/" in text
        if not looks_like_path:
            names = backbone_names()
            if text not in names:
                raise SpecError(
                    ROOT_KEY,
                    f"unknown backbone {text!r}{suggest(text, names)} (the {len(names)} packaged ones are listed by "
                    "`featx-list`; or pass a path to a .yaml spec file)",
                )
            path = config_dir() / "backbone" / f"{text}.yaml"
        return _read_yaml(path), str(path)
    raise SpecError(ROOT_KEY, f"cannot build from {type(source).__name__}; pass a name, a path, a mapping or a BackboneSpec")


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
    if target != INSTANTIATE_TARGET:
        raise SpecError(
            key_path("_target_"),
            f"{target!r} is refused: a spec is data and featx never calls what it names (allowed: {INSTANTIATE_TARGET})",
        )
    return data


def _apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply Hydra-grammar overrides to plain data (untyped, so ``fpn.out_channels=128`` works on ``fpn: null``;
    the typed merge that follows rejects unknown keys and wrong types)."""
    if not overrides:
        return data
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise SpecError(key_path("overrides"), str(error).splitlines()[0]) from None
    config = OmegaConf.create(data)
    for override in parsed:
        if override.is_sweep_override():
            raise SpecError(key_path(override.key_or_group), f"{override.input_line!r} is a sweep; build takes one value")
        try:
            ConfigLoaderImpl._apply_overrides_to_config([override], config)
        except HydraException as error:
            raise SpecError(key_path(override.key_or_group), str(error).splitlines()[0]) from None
    try:
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise _omegaconf_error(error) from None


def _typed_spec(data: Dict[str, Any]) -> BackboneSpec:
    try:
        spec: BackboneSpec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneSpec), data))  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        raise _omegaconf_error(error) from None
    if spec.fpn is not None:
        if not isinstance(spec.fpn, Mapping):
            raise SpecError(key_path("fpn"), f"expected null or a mapping {{out_channels, extra_blocks}}, got {spec.fpn!r}")
        try:
            spec.fpn = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FpnSpec), spec.fpn))
        except OmegaConfBaseException as error:
            raise _omegaconf_error(error, prefix="fpn") from None
    return spec


def load_spec(source: SpecSource, overrides: Optional[Sequence[str]] = None) -> BackboneSpec:
    """Resolve ``source`` and ``overrides`` (Hydra grammar, relative to the backbone node) into a checked spec.

    Raises :class:`~featx.errors.SpecError` naming the key path (and the file, for a file) on any problem.
    """
    data, origin = _plain_data(source)
    try:
        spec = _typed_spec(_strip_hydra_keys(_apply_overrides(data, overrides or ())))
        validate_spec(spec)
    except SpecError as error:
        raise (error.with_origin(origin) if origin else error) from None
    return spec
