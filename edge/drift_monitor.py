"""The daemon's drift watch: a listener keeping, per model with a baseline, a rolling window of
its last results, and the two measures of :mod:`edge.drift` between that window and the
baseline, published in stats (``drift``), in the metrics, and as a degraded state while either
is over its threshold (``[drift]``).

Threads: ``on_result`` runs on each model's result thread; ``stats`` and ``degraded`` on the
main and metrics threads. Each window has its own lock, and its measures are worked out again
only after it changed.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edge.config import DriftSettings
from edge.engine import Engine
from edge.output import ResultEvent

if TYPE_CHECKING:
    from edge.drift import Baseline
    from edge.result import Result

log = logging.getLogger(__name__)


class DriftWindow:
    """The last ``size`` results of one model, against its baseline."""

    def __init__(self, baseline: Baseline, size: int) -> None:
        from edge import drift  # the measures: imported once a model has a baseline

        self._drift = drift
        self.baseline = baseline
        self.size = size
        self._items: deque[tuple[tuple[str, ...], tuple[float, ...]]] = deque()
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._changed = True
        self._measured: tuple[float | None, float | None] = (None, None)

    def add(self, classes: tuple[str, ...], scores: tuple[float, ...]) -> None:
        with self._lock:
            self._items.append((classes, scores))
            self._counts.update(classes)
            if len(self._items) > self.size:
                old, _ = self._items.popleft()
                self._counts.subtract(old)
            self._changed = True

    def add_result(self, result: Result) -> None:
        self.add(*self._drift.observe(result))

    def __len__(self) -> int:
        return len(self._items)

    def measures(self) -> tuple[float | None, float | None]:
        """(class divergence, score distance), each None until the window is full (or, for
        the scores, when the baseline or the window has none)."""
        with self._lock:
            if not self._changed:
                return self._measured
            self._changed = False
            if len(self._items) < self.size:
                self._measured = (None, None)
                return self._measured
            counts = {k: float(v) for k, v in self._counts.items() if v > 0}
            window_qs = self._drift.deciles(s for _, scores in self._items for s in scores)
        js = self._drift.js_divergence(self.baseline.classes, counts)
        base_qs = self.baseline.score_deciles
        linf = self._drift.linf_distance(base_qs, window_qs) if base_qs and window_qs else None
        self._measured = (round(js, 6), None if linf is None else round(linf, 6))
        return self._measured


class DriftMonitor:
    """Every model's window; kept across reloads for models whose baseline and window size
    did not change."""

    def __init__(self) -> None:
        self.settings = DriftSettings()
        self._windows: dict[str, DriftWindow] = {}
        self._drifted: dict[str, str] = {}  # model -> the sentence last logged
        self._lock = threading.Lock()

    def configure(self, engines: Iterable[Engine], settings: DriftSettings) -> None:
        """Watch the models of ``engines`` that have a baseline (before their pipeline starts)."""
        windows: dict[str, DriftWindow] = {}
        for e in engines:
            base = e.spec.baseline
            if base is None:
                continue
            old = self._windows.get(e.name)
            keep = old is not None and old.baseline == base and old.size == settings.window
            windows[e.name] = (
                old if keep and old is not None else DriftWindow(base, settings.window)
            )
            threshold = e.postprocess_config.threshold
            if base.threshold is not None and abs(base.threshold - threshold) > 1e-9:
                log.warning(
                    "model %s: its baseline was made at score threshold %g, it runs at %g: the "
                    "drift measures compare different things; make the baseline again at %g",
                    e.name,
                    base.threshold,
                    threshold,
                    threshold,
                )
        with self._lock:
            self.settings = settings
            self._windows = windows

    def on_result(self, event: ResultEvent) -> None:
        window = self._windows.get(event.result.model)
        if window is not None:
            window.add_result(event.result)

    def stats(self) -> dict[str, Any]:
        """Model → ``{results, window, class_divergence, score_distance}`` (the measures None
        until the window is full)."""
        out = {}
        for name, w in self._windows.items():
            js, linf = w.measures()
            out[name] = {
                "results": len(w),
                "window": w.size,
                "class_divergence": js,
                "score_distance": linf,
            }
        return out

    def degraded(self) -> list[str]:
        """One sentence per model over a threshold; each change is logged once."""
        s, windows = self.settings, self._windows
        now: dict[str, str] = {}
        for name, w in windows.items():
            js, linf = w.measures()
            over = []
            if js is not None and js > s.class_threshold:
                over.append(f"class divergence over {s.class_threshold:g}")
            if linf is not None and linf > s.score_threshold:
                over.append(f"score distance over {s.score_threshold:g}")
            if over:
                # No figures in the sentence: the retained status/details topic changes only
                # when the state does (the figures are in stats and metrics).
                now[name] = f"model {name}: results drifted from its baseline ({', '.join(over)})"
        with self._lock:
            for name in sorted(now.keys() - self._drifted.keys()):
                log.warning("%s (%s)", now[name], _figures(windows[name]))
            for name in sorted(now.keys() & self._drifted.keys()):
                if now[name] != self._drifted[name]:
                    log.warning("%s (%s)", now[name], _figures(windows[name]))
            for name in self._drifted.keys() - now.keys():
                log.info("model %s: results are back within the drift thresholds", name)
            self._drifted = now
        return list(now.values())


def _figures(w: DriftWindow) -> str:
    js, linf = w.measures()
    return f"divergence {js}, score distance {linf} over the last {len(w)} results"
