"""What ran a bench: the CPU model, read once for every bench script."""
from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo, or ``"unknown"`` where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
