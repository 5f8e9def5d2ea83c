"""Checkpoints that rebuild themselves: the state dict saved together with the resolved spec.

Example::

    featx.save(bb, "runs/bb.pt")              # or "runs/bb.safetensors"
    same = featx.load("runs/bb.pt")            # rebuilt from the embedded spec, outputs identical
    featx.load("runs/bb.pt", overrides=["device=cpu"])
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torchvision
from safetensors.torch import save_file as save_safetensors

from featx.backbone import Backbone
from featx.build import build
from featx.errors import ArgumentError, WeightsError
from featx.weights import FORMAT_KEY, read_checkpoint

PathLike = Union[str, os.PathLike]


def _metadata(backbone: Backbone) -> Dict[str, Any]:
    versions = {"featx": version("featx"), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}
    return {"spec": backbone.spec.to_dict(), "versions": versions}


def save(backbone: Backbone, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``backbone``'s weights, resolved spec and library versions to ``path``.

    ``.safetensors`` paths are written with safetensors (the metadata as JSON), anything else with ``torch.save``
    (plain data only, so ``weights_only=True`` reads it). The file appears whole or not at all; an existing file
    is kept unless ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ArgumentError(f"save(): {path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in backbone.state_dict().items()}
    try:
        if path.suffix == ".safetensors":
            save_safetensors(state, str(partial), metadata={FORMAT_KEY: json.dumps(_metadata(backbone))})
        else:
            torch.save({FORMAT_KEY: _metadata(backbone), "state_dict": state}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load(path: PathLike, overrides: Optional[Sequence[str]] = None) -> Backbone:
    """Rebuild the backbone saved at ``path`` from its embedded spec (plus ``overrides``) and load its weights.

    The spec's ``frozen_stages`` apply again; freezing changed at run time (``bb.unfreeze()``) is not saved.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if checkpoint.saved is None:
        raise WeightsError(
            f"{path} has no featx spec (it was not written by featx.save); build a spec with weights: {path} instead"
        )
    return build(dict(checkpoint.saved["spec"], weights=str(path), reinit=[]), overrides)
