"""Shared fixtures: small specs, checkpoints written by the tests themselves, Hydra state hygiene."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from featx.resources import backbone_names


def pytest_configure(config) -> None:
    """Under pytest-xdist (``-n N``) the workers share the machine's cores: each gets its share of torch threads,
    so N workers do not run N x cores threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _clean_hydra():
    """No test sees another test's GlobalHydra."""
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(params=backbone_names())
def backbone_name(request) -> str:
    """Every packaged ``conf/backbone/*.yaml``."""
    return request.param


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
