#!/usr/bin/env python3
"""Measure what tracking costs: per frame, and in import time and memory.

Usage: python scripts/bench_tracking.py [--objects 10] [--frames 3000] [--repeats 5] [--json]

Per frame: ``Tracker.update`` alone, and with ``TrackEvents.step`` over two zones (what the
daemon will run per result), on a synthetic scene of ``--objects`` objects bouncing around the
frame at 30 fps with detection jitter, missed detections (5 %) and short-lived false positives
(one frame in ten); the median, 90th and 99th percentiles over all frames of all repeats, and the
median of the repeats' medians (robust on a shared machine).

Memory: the RSS growth over the runs with events. Import: each measurement runs in a fresh
interpreter with bytecode caches: the wall time and RSS growth of importing the tracking
modules after numpy, edge.config and edge.result (which the daemon has loaded anyway), and,
after numpy, of the optimal assignment solvers the tracker could have used instead of greedy
matching, when installed (scipy's ``linear_sum_assignment``, ``lap.lapjv``), with their cost
on a 10×10 problem.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.result import Detection
from edge.trackevents import TrackEvents
from edge.tracking import Tracker, TrackingSettings
from edge.zones import Zone

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("person", "car", "dog")
FPS = 30.0

# Run in a fresh interpreter: prints import seconds and RSS growth (kB) of `modules` after
# `base` is imported.
_PROBE = """
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
for m in {base!r}:
    __import__(m)
r0, t0 = rss(), time.perf_counter()
for m in {modules!r}:
    __import__(m)
print(time.perf_counter() - t0, rss() - r0)
"""


def scene(rng: np.random.Generator, objects: int, frames: int) -> list[list[Detection]]:
    """Per frame, the detections of ``objects`` boxes bouncing inside the frame."""
    pos = rng.uniform(0.15, 0.85, (objects, 2))
    vel = rng.uniform(-0.25, 0.25, (objects, 2))  # frame widths per second
    size = rng.uniform(0.05, 0.15, objects)
    labels = [LABELS[k % len(LABELS)] for k in range(objects)]
    out = []
    for _ in range(frames):
        pos += vel / FPS
        for axis in range(2):
            low, high = pos[:, axis] < 0.1, pos[:, axis] > 0.9
            vel[low | high, axis] *= -1
        dets = []
        for k in range(objects):
            if rng.random() < 0.05:
                continue  # missed
            cx, cy = pos[k] + rng.normal(0, 0.003, 2)
            h = size[k] / 2 * rng.uniform(0.95, 1.05)
            box = (float(cx - h), float(cy - h), float(cx + h), float(cy + h))
            label = labels[k]
            dets.append(Detection(label, LABELS.index(label), float(rng.uniform(0.6, 0.95)), box))
        if rng.random() < 0.1:
            cx, cy = rng.uniform(0.1, 0.9, 2)
            dets.append(Detection("dog", 2, 0.5, (cx - 0.03, cy - 0.03, cx + 0.03, cy + 0.03)))
        out.append(dets)
    return out


def per_frame(frames: list[list[Detection]], with_events: bool) -> list[float]:
    """Microseconds per frame for one run over ``frames``."""
    tracker = Tracker(TrackingSettings())
    zones = [
        Zone("left", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))),
        Zone("lawn", ((0.3, 0.5), (0.9, 0.5), (0.95, 0.95), (0.2, 0.95)), min_dwell_s=0.5),
    ]
    events = TrackEvents("cam", "dev", zones, tracker.settings, labels=LABELS)
    times = []
    clock = time.perf_counter
    for i, dets in enumerate(frames):
        ts = i / FPS
        t0 = clock()
        update = tracker.update(dets, ts, i)
        if with_events:
            events.step(update, 1.7e9 + ts)
        times.append((clock() - t0) * 1e6)
    return times


def rss_kb() -> int:
    """This process's resident set size in kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def summary(runs: list[list[float]], skip: int) -> dict[str, float]:
    flat = np.concatenate([np.asarray(r[skip:]) for r in runs])
    return {
        "median_us": round(float(np.median(flat)), 1),
        "p90_us": round(float(np.percentile(flat, 90)), 1),
        "p99_us": round(float(np.percentile(flat, 99)), 1),
        "median_of_run_medians_us": round(statistics.median(float(np.median(r)) for r in runs), 1),
    }


def import_cost(modules: list[str], base: list[str], repeats: int) -> dict[str, float] | None:
    """Median import seconds and RSS growth over ``repeats`` fresh interpreters; None when a
    module is not installed."""
    code = _PROBE.format(modules=modules, base=base)
    # Bytecode caching on, as in an installed daemon; the first run writes the caches.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    seconds, kbytes = [], []
    for _ in range(repeats + 1):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
        )
        if proc.returncode:
            return None
        s, kb = proc.stdout.split()
        seconds.append(float(s))
        kbytes.append(int(kb))
    seconds, kbytes = seconds[1:], kbytes[1:]
    return {
        "import_ms": round(statistics.median(seconds) * 1000, 1),
        "rss_mb": round(statistics.median(kbytes) / 1024, 2),
    }


def solver_cost(repeats: int = 2000) -> dict[str, float]:
    """Median microseconds of each installed optimal solver on a random 10×10 cost matrix."""
    rng = np.random.default_rng(0)
    cost = rng.random((10, 10))
    out: dict[str, float] = {}
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        pass
    else:
        out["scipy_linear_sum_assignment_us"] = _time(lambda: linear_sum_assignment(cost), repeats)
    try:
        import lap
    except ImportError:
        pass
    else:
        out["lap_lapjv_us"] = _time(lambda: lap.lapjv(cost, extend_cost=True), repeats)
    return out


def _time(fn: object, repeats: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    frames = scene(np.random.default_rng(0), args.objects, args.frames)
    skip = 30  # the first second: tracks still being confirmed
    rss0 = rss_kb()
    with_events = [per_frame(frames, True) for _ in range(args.repeats)]
    run_rss_mb = round((rss_kb() - rss0) / 1024, 2)
    report: dict[str, object] = {
        "objects": args.objects,
        "frames": args.frames,
        "repeats": args.repeats,
        "tracker": summary([per_frame(frames, False) for _ in range(args.repeats)], skip),
        "tracker_events_2_zones": summary(with_events, skip),
        "rss_growth_while_running_mb": run_rss_mb,
        "import": {
            # What the daemon adds: it has numpy, edge.config and edge.result loaded already.
            "edge.association+tracking+zones+trackevents": import_cost(
                ["edge.association", "edge.tracking", "edge.zones", "edge.trackevents"],
                ["numpy", "edge.config", "edge.result"],
                args.repeats,
            ),
            "scipy.optimize": import_cost(["scipy.optimize"], ["numpy"], args.repeats),
            "lap": import_cost(["lap"], ["numpy"], args.repeats),
        },
        "solvers_10x10": solver_cost(),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.objects} objects, {args.frames} frames at {FPS:g} fps, {args.repeats} runs")
    for name in ("tracker", "tracker_events_2_zones"):
        r = report[name]
        assert isinstance(r, dict)
        print(
            f"  {name:24} median {r['median_us']:7.1f} µs  p90 {r['p90_us']:7.1f}  "
            f"p99 {r['p99_us']:7.1f}  (median of run medians {r['median_of_run_medians_us']:.1f})"
        )
    print(f"  RSS growth over the runs with events: {run_rss_mb:.2f} MB")
    imports = report["import"]
    assert isinstance(imports, dict)
    print("import (fresh interpreter, median; ours after numpy + edge.config + edge.result,")
    print("solvers after numpy):")
    for name, cost in imports.items():
        shown = (
            f"{cost['import_ms']:7.1f} ms  +{cost['rss_mb']:.2f} MB RSS"
            if cost
            else "not installed"
        )
        print(f"  {name:44} {shown}")
    solvers = report["solvers_10x10"]
    assert isinstance(solvers, dict)
    for name, us in solvers.items():
        print(f"  {name:44} {us:7.1f} µs per 10×10 solve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
