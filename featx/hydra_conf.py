"""The ``_target_`` older featx versions wrote into the configs they dumped
(``_target_: featx.hydra_conf.instantiate_backbone``, in ``--cfg job`` output and runs' ``.hydra/config.yaml``):
``hydra.utils.instantiate`` of such a node still builds the backbone, as ``featx.build`` of it does. New configs
name :func:`featx.spec.hydra_store.instantiate_backbone`. Example::

    hydra.utils.instantiate(OmegaConf.load("old_run/.hydra/config.yaml").backbone)   # a featx Backbone
"""

from featx.spec.hydra_store import instantiate_backbone

__all__ = ["instantiate_backbone"]
