"""What the scripts' generated pages say about where they ran: the CPU model and core count.

from machine import machine_description
machine_description()     # 'AMD EPYC 7B13, 2 cores'
"""

from __future__ import annotations

import os
from pathlib import Path


def machine_description() -> str:
    """The CPU model (Linux: ``/proc/cpuinfo``; else "unknown CPU") and the core count."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"
