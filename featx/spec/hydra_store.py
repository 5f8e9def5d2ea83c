"""Registers featx's schemas in Hydra's ConfigStore (on ``import featx``) and holds the ``_target_`` of a composed
``backbone`` node.

- ``featx/backbone_schema``: every ``conf/backbone/*.yaml`` starts with
  ``defaults: [/featx/backbone_schema@_here_, _self_]``, so composing it checks keys and types, and the node
  carries ``_target_`` so ``hydra.utils.instantiate(cfg.backbone)`` returns a :class:`featx.Backbone`.
- ``featx_app_schema``, ``featx_export_schema``, ``featx_extract_schema``: the primary configs of the apps
  (:mod:`featx.spec.apps`).

Example (a downstream app that reuses featx's backbone group)::

    import featx, hydra
    with hydra.initialize_config_module("featx.conf", version_base="1.3"):
        cfg = hydra.compose("config", overrides=["backbone=resnet34"])
    backbone = hydra.utils.instantiate(cfg.backbone)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore

from featx.spec.apps import AppConfig, BackboneNode, ExportAppConfig, ExtractAppConfig

if TYPE_CHECKING:
    from featx.nn.backbone import Backbone


def instantiate_backbone(**spec_fields: Any) -> "Backbone":
    """The ``_target_`` of a backbone node: ``featx.build`` on the node's keys."""
    from featx.construct.builder import build

    return build(spec_fields)


def register_configs() -> None:
    """Store the schemas; safe to call more than once."""
    store = ConfigStore.instance()
    store.store(group="featx", name="backbone_schema", node=BackboneNode)
    store.store(name="featx_app_schema", node=AppConfig)
    store.store(name="featx_export_schema", node=ExportAppConfig)
    store.store(name="featx_extract_schema", node=ExtractAppConfig)
