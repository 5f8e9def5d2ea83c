"""Helpers shared by the tests: a small spec, BatchNorm statistics worth testing, checkpoints the tests write."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def resnet18_spec(**changes: Any) -> Dict[str, Any]:
    """A small three-stage ResNet-18 spec (c2..c4) used where the model does not matter."""
    spec: Dict[str, Any] = {
        "model": "resnet18",
        "stages": {
            "c2": {"modules": ["conv1", "bn1", "relu", "maxpool", "layer1"]},
            "c3": {"modules": ["layer2"]},
            "c4": {"modules": ["layer3"]},
        },
        "device": "cpu",
    }
    spec.update(changes)
    return spec


def randomize_norm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so norm handling is really tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, _BatchNorm):
                shape = layer.running_mean.shape
                layer.running_mean.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
                layer.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                layer.bias.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
    return model


def save_state_dict(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def folder_state(folder: Path) -> Dict[str, Any]:
    """Every entry under ``folder``: relative path → file bytes, ``"<folder>"``, ``"<fifo>"``, or ``"-> target"`` for
    a link; what a hostile-input test compares before and after, so nothing outside the output is created, changed or
    lost."""
    state: Dict[str, Any] = {}
    for path in sorted(Path(folder).rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            state[relative] = f"-> {path.readlink()}"
        elif path.is_dir():
            state[relative] = "<folder>"
        elif path.is_fifo():
            state[relative] = "<fifo>"
        else:
            state[relative] = path.read_bytes()
    return state
