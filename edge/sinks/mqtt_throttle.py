"""A rate limit for log lines that can repeat many times a second (a broker that refuses every
connection attempt, every result of a camera refused by an ACL, a callback failing on each
message). The MQTT sink, its connection and its refusal tracking share one ``Throttle``: each
kind of message has its own key, is logged at most once per interval, and says how many like it
were suppressed since the last one.
"""

from __future__ import annotations

import threading
import time


class Throttle:
    """``ready(key)`` returns how many were suppressed since the last report when one may be
    logged now (at most once per ``interval_s`` per key), else None. Any thread."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
