"""Running figures: nearest-rank percentiles, event rates and counters, on golden values."""

from __future__ import annotations

import math
import threading

import pytest

from edge.stats import Counters, LatencyWindow, RateMeter, percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 25, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 26, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 99, 4.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0),
        ([7.0], 50, 7.0),
        ([float(v) for v in range(1, 101)], 7, 7.0),
        ([float(v) for v in range(1, 101)], 95, 95.0),
        ([float(v) for v in range(1, 101)], 99, 99.0),
        ([float(v) for v in range(1, 11)], 90, 9.0),
        ([float(v) for v in range(1, 11)], 91, 10.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    """The percentile is the sample at rank ceil(q/100·n): p50 of [1,2,3,4] is 2, never 3."""
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_nan() -> None:
    """An empty list has no percentile: nan, not an exception."""
    assert math.isnan(percentile([], 50))


def test_latency_window_reports_nearest_rank_over_the_last_samples() -> None:
    """The window keeps only its last ``size`` samples and reports their nearest-rank p50/p95/p99,
    sorting them itself."""
    w = LatencyWindow(size=4)
    assert w.percentiles() == {}
    for ms in (100.0, 100.0, 4.0, 2.0, 3.0, 1.0):  # the two 100s fall out of the window
        w.add(ms)
    assert len(w) == 4
    assert w.percentiles() == {"p50": 2.0, "p95": 4.0, "p99": 4.0}


def test_rate_of_ticks_one_second_apart_is_one_per_second() -> None:
    """Two ticks 1 s apart read 1.0/s; ten ticks 0.1 s apart read 10/s."""
    m = RateMeter(window=5.0)
    m.tick(100.0)
    m.tick(101.0)
    assert m.rate(101.0) == 1.0
    fast = RateMeter(window=5.0)
    for i in range(10):
        fast.tick(200.0 + i / 10)
    assert fast.rate(200.9) == 10.0


def test_rate_decays_after_the_last_tick_and_ends_at_zero() -> None:
    """After the ticks stop the rate falls (time since the first tick grows) and is 0 once the
    ticks have left the window; a single tick is no rate."""
    m = RateMeter(window=5.0)
    m.tick(0.0)
    assert m.rate(0.0) == 0.0
    m.tick(1.0)
    assert m.rate(2.0) == 0.5
    assert m.rate(4.0) == 0.25
    assert m.rate(5.5) == 0.0  # the tick at 0.0 left the window: one tick is no rate
    assert m.rate(7.0) == 0.0


def test_rate_counts_only_the_window() -> None:
    """Ticks older than the window do not count: a burst long ago does not inflate the rate."""
    m = RateMeter(window=2.0)
    for i in range(50):
        m.tick(i / 100)  # 50 ticks in the first half second
    m.tick(10.0)
    m.tick(11.0)
    assert m.rate(11.0) == 1.0


def test_counters_add_from_threads_without_losing_counts() -> None:
    """Four threads adding 10 000 each to one counter total exactly 40 000; unknown names read 0
    and the snapshot is a copy."""
    c = Counters("inferred", "dropped")

    def work() -> None:
        for _ in range(10_000):
            c.add("inferred")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c["inferred"] == 40_000
    assert c["missing"] == 0
    snap = c.snapshot()
    snap["dropped"] = 99
    assert c.snapshot() == {"inferred": 40_000, "dropped": 0}
