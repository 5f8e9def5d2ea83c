"""A torchvision model on the meta device, and the one place where its kept layers get real tensors.

:meth:`MetaModel.materialise` turns the meta model into the backbone's model in one of three ways:

- no checkpoint: the kept layers are constructed for real with torchvision's own init (the dropped ones stay on
  meta and cost nothing);
- a torchvision-keyed checkpoint: copies of its kept tensors are assigned to the kept layers (no init);
- a :func:`featx.save` checkpoint: the kept layers stay on meta; the whole backbone's state is assigned to them once
  the backbone is assembled (:func:`~featx.construct.checkpoint.load_saved_backbone`).

Example::

    meta = MetaModel.create("resnet50")
    model = meta.materialise(("conv1", "bn1", "relu", "maxpool", "layer1"))     # random init, layer2.. on meta
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from featx.construct.checkpoint import Checkpoint
from featx.construct.weights import load_kept_weights
from featx.models.meta_construction import Registration, construct_keeping, construct_on_meta


@dataclass
class MetaModel:
    """torchvision's ``name`` on the meta device with its parameter and buffer registrations in construction order.

    Materialising consumes it: the returned model is the meta model itself (or a fresh construction), so create
    one per build.
    """

    name: str
    model: nn.Module
    registrations: Tuple[Registration, ...]

    @classmethod
    def create(cls, name: str) -> "MetaModel":
        """Construct ``name`` on the meta device (see :func:`~featx.models.meta_construction.construct_on_meta`)."""
        model, registrations = construct_on_meta(name)
        return cls(name, model, registrations)

    def _kept_modules(self, kept_paths: Sequence[str]) -> list[nn.Module]:
        """The modules among ``kept_paths`` (the others name single parameters: a token model's class token)."""
        parameters = dict(self.model.named_parameters())
        return [self.model.get_submodule(path) for path in kept_paths if path not in parameters]

    def _has_non_persistent_buffers(self, kept_paths: Sequence[str]) -> bool:
        """Buffers no checkpoint carries (computed in ``__init__``), so the kept layers must be constructed for real."""
        kept = self._kept_modules(kept_paths)
        return any(module._non_persistent_buffers_set for root in kept for module in root.modules())

    def _construct_kept(self, kept_paths: Sequence[str]) -> nn.Module:
        path_of = {id(module): path for path, module in self.model.named_modules()}

        def is_kept(registration: Registration) -> bool:
            path = path_of.get(id(registration.module))
            if path is None:
                return False
            tensor = f"{path}.{registration.name}" if path else registration.name
            return any(tensor == kept or tensor.startswith(kept + ".") for kept in kept_paths)

        return construct_keeping(self.name, self.registrations, [is_kept(r) for r in self.registrations])

    def materialise(self, kept_paths: Sequence[str], checkpoint: Optional[Checkpoint] = None) -> nn.Module:
        """The model with real tensors in the modules under ``kept_paths`` (see the module docstring)."""
        if checkpoint is None or self._has_non_persistent_buffers(kept_paths):
            with torch.device("cpu"):  # whatever the caller's default device
                model = self._construct_kept(kept_paths)
            if checkpoint is not None and checkpoint.saved is None:
                load_kept_weights(model, kept_paths, checkpoint.state, str(checkpoint.path))
            return model
        if checkpoint.saved is None:
            load_kept_weights(self.model, kept_paths, checkpoint.state, str(checkpoint.path), assign=True)
        return self.model  # a featx.save checkpoint: its tensors are assigned once the backbone is assembled
