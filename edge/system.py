"""Readings of this process and board for benchmarks and the stats topic: resident memory, CPU
time, and the SoC temperature where the board exposes it (Raspberry Pi: thermal_zone0)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU seconds used by this process so far."""
    t = os.times()
    return t.user + t.system


def cpu_temperature_c() -> float | None:
    """SoC temperature in °C, or None where the board does not expose one."""
    try:
        return int(_THERMAL.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None
