"""Running figures for the stats topic and the preview: latency percentiles over a sliding
window, event rates, and counters. Writers are the pipeline threads; readers take snapshots
from another thread, so every structure here is guarded by its own small lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list; nan when empty."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class LatencyWindow:
    """The last ``size`` samples of one duration (milliseconds) and their percentiles."""

    def __init__(self, size: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)

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
    """Events per second over the last ``window`` seconds (monotonic clock)."""

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
            return round(len(self._times) / max(span, min(self._window, span)), 2)

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
