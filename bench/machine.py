"""What the figures were measured on: cores, memory, CPU model, Python, and whether the
machine was busy with something else (load average above our own use)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def describe() -> dict[str, object]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def shared(load_before: float, cores: int | None) -> bool:
    """True when, before we started anything, the 1-minute load average already used a
    fair part of the machine: someone else's work competed with ours for the cores."""
    return load_before >= 0.25 * (cores or 1)


def load_average() -> float:
    return os.getloadavg()[0]


def load_averages() -> str:
    """The 1-, 5- and 15-minute load, as a report's line prints them."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
