"""The ``device`` key: ``auto`` picks cuda, then mps, then cpu; an explicit device must exist here; ``meta`` builds
the structure without memory.

Example::

    resolve_device("auto")     # device(type='cpu') on a machine without accelerators
    resolve_device("cuda:1")   # DeviceError unless a second GPU is visible
"""

from __future__ import annotations

import torch

from featx.errors import DeviceError
from featx.spec.keys import key_path


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for a (validated) device string; raises :class:`DeviceError` if it is not here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    device = torch.device(name)
    key = key_path("device")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{key}: {name!r} is not available on this machine (no CUDA device); use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{key}: {name!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(valid: cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"{key}: 'mps' is not available on this machine; use 'cpu' or 'auto'")
    return device
