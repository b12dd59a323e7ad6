"""Readings of this process and board for benchmarks and the stats topic: resident memory, CPU
time, and the SoC temperature where the board exposes it (Raspberry Pi: thermal_zone0); and the
one allocator setting the daemon makes for itself (:func:`one_malloc_arena`); and the pause of
the cyclic garbage collector while a command starts (:func:`pause_collector`)."""

from __future__ import annotations

import gc
import os
import resource
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
_M_ARENA_MAX = -8  # glibc's malloc.h
_paused = [False]  # whether pause_collector() disabled the collector and nothing resumed it


def pause_collector() -> None:
    """Stop the cyclic garbage collector until :func:`resume_collector`.

    A command's imports and set-up allocate some 50,000 objects that live as long as the
    process (modules, classes, functions); the collector would scan them again and again while
    they are made, finding nothing to free (about 70 collections before the daemon's first
    result). Nothing here if the collector is already off (the caller's choice stands).
    """
    if gc.isenabled():
        gc.disable()
        _paused[0] = True


def resume_collector(*, freeze: bool = False) -> None:
    """Turn the collector back on if :func:`pause_collector` turned it off. With ``freeze``,
    first move every object alive now to the permanent generation (:func:`gc.freeze`): what
    start-up made is not scanned by the next collection nor by any later one, and the next
    collection does not run at once over everything allocated during the pause."""
    if _paused[0]:
        _paused[0] = False
        if freeze:
            gc.freeze()
        gc.enable()


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


def one_malloc_arena() -> bool:
    """Have glibc's malloc serve the threads started from now on from its main arena, as it
    serves the main thread; False where it cannot (not glibc) or ``MALLOC_ARENA_MAX`` decides.

    By default each thread that allocates gets an arena of its own (up to eight per core), and
    what it frees stays resident in that arena for that thread alone: 0.4-0.9 MiB over the
    daemon's threads. Nearly all their allocations are made holding the GIL (``invoke()``, which
    runs without it, allocates nothing), so they seldom wait for the shared arena: the daemon's
    throughput did not change measurably. Threads started before the call keep their own
    arenas: call it first.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes  # already loaded with numpy in the daemon; only this needs it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no such C library function here
        return False
    return bool(mallopt(_M_ARENA_MAX, 1))
