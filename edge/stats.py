"""Running figures for the stats topic and the preview: latency percentiles over a sliding
window, event rates, and counters. Writers are the pipeline threads; readers take snapshots
from another thread, so every structure here is guarded by its own small lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list; nan when empty.

    The smallest sample with at least ``q`` % of the samples at or below it: the value at rank
    ``ceil(q / 100 * n)`` (1-based), so always one of the samples, never an interpolation. p50 of
    ``[1, 2, 3, 4]`` is 2, p0 is the minimum and p100 the maximum.
    """
    n = len(sorted_values)
    if not n:
        return float("nan")
    # Rounded first so that float noise (0.07 * 100 = 7.000000000000001) cannot add a rank.
    rank = math.ceil(round(q * n / 100, 9))
    return sorted_values[max(0, min(n - 1, rank - 1))]


class LatencyWindow:
    """The last ``size`` samples of one duration (milliseconds) and their percentiles, and the
    count and sum of every sample ever added (what a Prometheus summary carries)."""

    def __init__(self, size: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._count = 0
        self._sum = 0.0

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)
            self._count += 1
            self._sum += ms

    def totals(self) -> tuple[int, float]:
        """(samples ever added, their sum in milliseconds)."""
        with self._lock:
            return self._count, self._sum

    def percentiles(self, qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
        """``{"p50": …, "p95": …, "p99": …}`` (nearest rank); empty when nothing was added."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return {}
        return {f"p{q}": round(percentile(values, q), 3) for q in qs}

    def __len__(self) -> int:
        return len(self._values)


class RateMeter:
    """Events per second over the last ``window`` seconds (monotonic clock).

    The rate is the number of intervals between the ticks still in the window divided by the
    time from the first of them to now: ticks 1 s apart read 1.0/s, a steady rate reads exactly
    at each tick, and after the last tick the rate decays, reaching 0 once fewer than two ticks
    are left in the window.
    """

    def __init__(self, window: float = 5.0) -> None:
        self._window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(t)
            self._trim(t)

    def rate(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._trim(t)
            if len(self._times) < 2:
                return 0.0
            span = max(t - self._times[0], 1e-6)
            return round((len(self._times) - 1) / span, 2)

    def _trim(self, now: float) -> None:
        cutoff = now - self._window
        while self._times and self._times[0] < cutoff:
            self._times.popleft()


class Counters:
    """Named monotonically increasing integers."""

    def __init__(self, *names: str) -> None:
        self._values = dict.fromkeys(names, 0)
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)
