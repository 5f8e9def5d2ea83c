"""timm's model registry, as featx uses it: ``model: timm:NAME`` names, constructing one, its pretrained tags and
the input size its default weights were evaluated at. timm is imported only when a spec names a timm model.

Example::

    check_timm_name("convnext_tiny")          # SpecError with close names if timm has no such model
    construct_timm("convnext_tiny")           # timm.create_model("convnext_tiny", pretrained=False)
    pretrained_tags("resnet18")               # ['a1_in1k', 'a2_in1k', ...]; the first is timm's default
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType
from typing import Any, List, Optional

from torch import nn

from featx.errors import SpecError
from featx.models.library_code import is_library_code
from featx.spec.keys import key_path, suggest
from featx.spec.limits import quoted

#: the prefix of a timm model in a spec's ``model`` key
TIMM_PREFIX = "timm:"


def is_timm_model(model: str) -> bool:
    """Whether a spec's ``model`` names a timm model (``timm:convnext_tiny``)."""
    return model.startswith(TIMM_PREFIX)


def timm_name(model: str) -> str:
    """``timm:convnext_tiny`` → ``convnext_tiny``."""
    return model[len(TIMM_PREFIX) :]


def is_timms_own(model: str) -> bool:
    """Whether timm's registry entry for ``model`` is timm's own code, not a model the user's code registered (under
    a new name or one of timm's). Before ``import timm`` no code can have registered anything: true."""
    timm = sys.modules.get("timm")
    if timm is None:
        return True
    name = timm_name(model)
    if not timm.models.is_model(name):  # an unknown name: planning names it
        return False
    return is_library_code(timm.models.model_entrypoint(name), timm)


#: how to get timm, which featx's ``timm`` extra installs
TIMM_INSTALL = "pip install 'featx[timm]' (or pip install timm)"


class TimmNotInstalled(SpecError):
    """A spec names a ``timm:`` model and timm is not installed (featx's optional ``timm`` extra)."""


def timm_module() -> ModuleType:
    """``import timm``, or :class:`TimmNotInstalled` saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise TimmNotInstalled(key_path("model"), f"timm models need timm: {TIMM_INSTALL}") from None


@functools.lru_cache(maxsize=1)
def timm_models() -> List[str]:
    """Every architecture name in timm's registry (``timm.list_models()``)."""
    return list(timm_module().list_models())


def timm_counterpart(name: str) -> str:
    """A hint for a name torchvision does not have: ``"; timm has a model of this name: timm:NAME"`` where
    timm is installed and has it, else ``""``."""
    try:
        known = name in timm_models()
    except TimmNotInstalled:
        return ""
    return f"; timm has a model of this name: {TIMM_PREFIX}{name}" if known else ""


def matching_timm_models(patterns: List[str]) -> List[str]:
    """``timm:NAME`` for every timm architecture matching one of the shell-style ``patterns`` (written with or
    without ``timm:``), in timm's order."""
    names = timm_module().list_models([pattern.removeprefix(TIMM_PREFIX) for pattern in patterns])
    return [TIMM_PREFIX + name for name in names]


def deprecated_name_advice(name: str) -> Optional[str]:
    """What to write instead of ``name`` (without ``timm:``) where it is a deprecated timm name, which timm maps to an
    architecture and most to a pretrained tag (``timm.models.get_deprecated_models()``); None for any other name."""
    deprecated = timm_module().models.get_deprecated_models()
    if name not in deprecated:
        return None
    current = deprecated[name]
    if current is None:
        return f"{TIMM_PREFIX}{name} is a timm name timm has removed (valid: timm.list_models())"
    architecture, _, tag = current.partition(".")
    weights = f" and weights: {tag}" if tag else ""
    return f"{TIMM_PREFIX}{name} is a deprecated timm name: write model: {TIMM_PREFIX}{architecture}{weights}"


def check_timm_name(name: str) -> None:
    """Raise :class:`SpecError` unless ``name`` (without ``timm:``) is an architecture in timm's registry (asked each
    time: a model the user's code registers later counts too) and not one of timm's deprecated names."""
    architecture, dot, tag = name.partition(".")
    advice = deprecated_name_advice(architecture)  # is_model takes them, and they have no pretrained configs
    if advice is not None:
        raise SpecError(key_path("model"), advice)
    is_model = timm_module().models.is_model  # takes NAME.TAG (and NAME.) for NAME: a tag is refused below
    if not dot and is_model(name):
        return
    if tag and is_model(architecture):
        tags = pretrained_tags(architecture)
        if tag in tags:
            raise SpecError(
                key_path("model"),
                f"{quoted(TIMM_PREFIX + name)} names a pretrained tag: write model: {TIMM_PREFIX}{architecture} and "
                f"weights: {tag}",
            )
        published = (
            f"(its tags: {', '.join(tags)}); write model: {TIMM_PREFIX}{architecture} and weights: TAG"
            if tags
            else f"(timm publishes none); write model: {TIMM_PREFIX}{architecture}"
        )
        raise SpecError(
            key_path("model"),
            f"{quoted(TIMM_PREFIX + name)}: {quoted(tag)} is no pretrained tag of timm's {architecture}"
            f"{suggest(tag, tags)} {published}",
        )
    if is_timm_model(name):
        raise SpecError(key_path("model"), f"{quoted(TIMM_PREFIX + name)}: write the {TIMM_PREFIX} prefix once")
    raise SpecError(
        key_path("model"),
        f"unknown timm model {quoted(name)}{suggest(name, timm_models(), prefix=TIMM_PREFIX)} (valid: "
        "timm.list_models(); "
        "featx-list --timm 'PATTERN' lists them)",
    )


def construct_timm(name: str) -> nn.Module:
    """timm's ``name`` with its own random init (on the current default device), no weights read."""
    return timm_module().create_model(name, pretrained=False)


def _published_configs(name: str) -> List[Any]:
    """The pretrained configs timm registers for architecture ``name`` that name weights (a tag and a hub repo
    or URL), in timm's order: the first is its default."""
    return [
        config
        for config in timm_module().models.get_arch_pretrained_cfgs(name).values()
        if config.tag and (config.hf_hub_id or config.url)
    ]


def pretrained_tags(name: str) -> List[str]:
    """The pretrained tags timm publishes for architecture ``name``, timm's default first."""
    return [config.tag for config in _published_configs(name)]


#: the ``weights`` a model needs no published tag for
_LOCAL_FILE = "or a path to a checkpoint file: ./NAME for one in the working directory"


def pretrained_config(name: str, tag: str) -> Any:
    """timm's ``PretrainedCfg`` of ``name`` with ``tag`` (``DEFAULT``: timm's default tag); SpecError if none."""
    configs = _published_configs(name)
    tags = [config.tag for config in configs]
    if not tags:
        raise SpecError(
            key_path("weights"), f"timm publishes no pretrained weights for {name} (valid: null; {_LOCAL_FILE})"
        )
    if tag == "DEFAULT":
        tag = tags[0]
    if tag not in tags:
        raise SpecError(
            key_path("weights"),
            f"{quoted(tag)} is not a pretrained tag of timm's {name}{suggest(tag, ['DEFAULT', *tags])} "
            f"(valid: null, DEFAULT, {', '.join(tags)}; {_LOCAL_FILE})",
        )
    return configs[tags.index(tag)]


def timm_crop_size(name: str) -> int:
    """The square input size of ``name``'s default pretrained config (224 if it has none)."""
    configs = _published_configs(name) or list(timm_module().models.get_arch_pretrained_cfgs(name).values())
    return int(configs[0].input_size[-1]) if configs and configs[0].input_size else 224
