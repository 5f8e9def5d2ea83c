"""Helpers shared by the tests: a small spec, BatchNorm statistics worth testing, checkpoints the tests write, featx
run from a checkout that is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

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


ROOT = Path(__file__).resolve().parents[1]


def run_not_installed(
    folder: Path, code: str, *args: str, env: Optional[Mapping[str, str]] = None
) -> "subprocess.CompletedProcess[str]":
    """Run ``code`` (``sys.argv[1:]`` are ``args``) in a fresh interpreter that imports featx from a copy of the
    package folder alone (with the packaged configs), with the environment's other packages but no distribution
    metadata of featx: a checkout run without installing it (as on a lent GPU machine). Works in ``folder``; the
    caller asserts on the result."""
    installed = Path(sysconfig.get_paths()["purelib"])
    site_packages = folder / "site-packages"  # the environment's packages, less featx's install
    site_packages.mkdir()
    for entry in installed.iterdir():
        if "featx" not in entry.name:
            (site_packages / entry.name).symlink_to(entry)
    source = folder / "source"  # the package alone: the checkout's folder holds an editable install's metadata
    shutil.copytree(  # without a featx/conf link a checkout may hold (scripts/gpu_session.sh makes one)
        ROOT / "featx",
        source / "featx",
        ignore=lambda folder, names: [
            name for name in names if name == "__pycache__" or (Path(folder) == ROOT / "featx" and name == "conf")
        ],
    )
    shutil.copytree(ROOT / "conf", source / "featx" / "conf")  # the packaged configs, as gpu_session.sh links them
    prelude = f"import sys; sys.path[:0] = [{str(source)!r}, {str(site_packages)!r}]\n"
    return subprocess.run(  # -S: no site processing, so no editable install's finder and no metadata of featx
        [sys.executable, "-S", "-c", prelude + code, *args],
        capture_output=True,
        text=True,
        cwd=folder,  # not the checkout, for the same reason
        env=None if env is None else dict(env),
    )
