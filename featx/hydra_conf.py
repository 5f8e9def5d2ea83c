"""Registers featx's schemas in Hydra's ConfigStore (on ``import featx``).

- ``featx/backbone_schema``: every ``conf/backbone/*.yaml`` starts with
  ``defaults: [/featx/backbone_schema@_here_, _self_]``, so composing it checks keys and types, and the node
  carries ``_target_`` so ``hydra.utils.instantiate(cfg.backbone)`` returns a :class:`featx.Backbone`.
- ``featx_app_schema``: the primary ``conf/config.yaml`` of the ``featx`` app (the input batch it runs).
- ``featx_export_schema``: the primary ``conf/export.yaml`` of the ``featx-export`` app.
- ``featx_extract_schema``: the primary ``conf/extract.yaml`` of the ``featx-extract`` app.

Example (a downstream app that reuses featx's backbone group)::

    import featx, hydra
    with hydra.initialize_config_module("featx.conf", version_base="1.3"):
        cfg = hydra.compose("config", overrides=["backbone=resnet34"])
    backbone = hydra.utils.instantiate(cfg.backbone)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from featx.extraction import ExtractOptions
from featx.loader import INSTANTIATE_TARGET
from featx.spec import BackboneSpec

if TYPE_CHECKING:
    from featx.backbone import Backbone


@dataclass
class BackboneNode(BackboneSpec):
    """The schema of a composed ``backbone`` node: the spec plus its instantiate target."""

    _target_: str = INSTANTIATE_TARGET


@dataclass
class InputConfig:
    """The random batch the app runs through the backbone."""

    batch_size: int = 1
    height: int = 224
    width: int = 224


@dataclass
class AppConfig:
    """The primary config of the ``featx`` app; ``run: false`` builds on the meta device (structure only)."""

    backbone: Any = MISSING
    input: InputConfig = field(default_factory=InputConfig)
    run: bool = True


@dataclass
class ExportConfig:
    """What the ``featx-export`` app writes: format (torchscript, exported, onnx), file, example input, options."""

    format: str = "onnx"
    path: str = MISSING
    height: int = 224
    width: int = 224
    batch_size: int = 1
    dynamic: bool = True
    overwrite: bool = False


@dataclass
class ExportAppConfig:
    """The primary config of the ``featx-export`` app."""

    backbone: Any = MISSING
    export: ExportConfig = field(default_factory=ExportConfig)


@dataclass
class ExtractAppConfig:
    """The primary config of the ``featx-extract`` app."""

    backbone: Any = MISSING
    extract: ExtractOptions = field(default_factory=lambda: ExtractOptions(input=MISSING, output=MISSING))


def instantiate_backbone(**spec_fields: Any) -> "Backbone":
    """The ``_target_`` of a backbone node: ``featx.build`` on the node's keys."""
    from featx.build import build

    return build(spec_fields)


def register_configs() -> None:
    """Store the schemas; safe to call more than once."""
    store = ConfigStore.instance()
    store.store(group="featx", name="backbone_schema", node=BackboneNode)
    store.store(name="featx_app_schema", node=AppConfig)
    store.store(name="featx_export_schema", node=ExportAppConfig)
    store.store(name="featx_extract_schema", node=ExtractAppConfig)


register_configs()
