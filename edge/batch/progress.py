"""The progress line of ``edge batch``: count, bar, rate and ETA, redrawn in place on a
terminal (stderr); nothing at all when it is not a terminal.
"""

from __future__ import annotations

import math
import os
import time
from typing import TextIO

PROGRESS_HZ = 10.0


class Progress:
    """A one-line progress bar with rate and ETA on a terminal; silent when ``stream`` is None.

    total: items expected (an estimate for videos; 0 = unknown, no bar or ETA).
    Thread affinity: the main thread.
    """

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self.stream = stream
        self.total = total
        self.start = time.monotonic()
        self._last = 0.0
        self._width = 0

    def update(self, items: int, errors: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._last < 1 / PROGRESS_HZ:
            return
        self._last = now
        elapsed = now - self.start
        rate = items / elapsed if elapsed > 0 else 0.0
        parts = []
        if self.total:
            frac = min(1.0, items / self.total)
            filled = round(frac * 24)
            parts.append(f"[{'#' * filled}{'-' * (24 - filled)}] {items}/{self.total} {frac:4.0%}")
        else:
            parts.append(f"{items} items")
        parts.append(f"{rate:.1f} items/s")
        if self.total and rate > 0 and items < self.total:
            parts.append(f"ETA {_clock((self.total - items) / rate)}")
        if errors:
            parts.append(f"{errors} error{'s' * (errors != 1)}")
        line = "  ".join(parts)
        cols = _columns(self.stream) - 1
        line = line[:cols]
        self.stream.write("\r" + line + " " * max(0, self._width - len(line)))
        self.stream.flush()
        self._width = len(line)

    def finish(self, items: int, errors: int) -> None:
        if self.stream is None:
            return
        self.update(items, errors, force=True)
        self.stream.write("\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    s = math.ceil(seconds)
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 100
