"""The line every benchmark records about the machine it ran on (imported by the benchmarks)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(*extras: str) -> str:
    """``"2 cores (AMD EPYC ...), 24 GiB RAM, Python 3.11.7"`` plus ``extras``, comma-separated."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    parts = [
        f"{os.cpu_count()} cores ({cpu})",
        f"{mem:.0f} GiB RAM",
        f"Python {platform.python_version()}",
        *extras,
    ]
    return ", ".join(parts)
