"""Measure a model repository's hot swap: how long a version copied into the folder takes to
serve, where that time goes, what it costs in memory, and whether the results stream notices.

Runs the daemon's pipeline in this process (one synthetic camera, no broker) on a repository of
copies of a bundled model, with the daemon's repository watcher and swap (``edge.modelrepo``).
Per round a new version is copied in; printed, in seconds from the copy: seen = the first poll
that sees it, stable = its files found unchanged and checked (the child process starts), ready
= verified in the child, loaded here and warmed up, served = the first result carrying it;
the gap between the last result of the old version and the first of the new one, the longest
gap from the copy to half a second after the swap and when it ended (the verification and the
loading compete for the CPU), and the median gap; frames the
camera dropped meanwhile (inference behind) and seq gaps counted at the listener; RSS before
the copy, while both versions are loaded, and after the old one is closed. Figures only; the
load average is printed because the machine may be shared.

    python scripts/bench_swap.py [--model shapes-detector] [--rounds 3] [--poll-s 0.5]
                                 [--fps 30] [--threads 1]

Run from the repo root with the project's environment (``PYTHONPATH=$PWD`` in a checkout).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge.config.loading import validate
from edge.daemon import SWITCH_INTERVAL_S
from edge.engine import Overrides
from edge.modelrepo.serving import Serving
from edge.modelrepo.watch import Repository
from edge.models import bundled_models
from edge.output import ResultEvent
from edge.pipeline import Pipeline
from edge.runtime import RuntimeOptions
from edge.system import rss_mb


class Listener:
    """Every result's (seq, version, arrival time), from the result thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, float]] = []
        self.lock = threading.Lock()

    def on_result(self, event: ResultEvent) -> None:
        with self.lock:
            self.seen.append((event.seq, event.result.model_version, time.monotonic()))

    def first(self, version: str) -> float | None:
        with self.lock:
            return next((t for _, v, t in self.seen if v == version), None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="shapes-detector")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--poll-s", type=float, default=0.5)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as the daemon runs
    source = bundled_models()[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(source, repo / "1")
        model = {"path": str(repo), "threads": args.threads, "repository_poll_s": args.poll_s}
        camera = {"name": "cam", "source": "synthetic", "fps": args.fps}
        config = validate({"device": "bench", "model": model, "cameras": [camera]})
        m = config.model
        options, post = RuntimeOptions.from_settings(m), Overrides.from_settings(m)
        serving = Serving(m.repository_poll_s)
        repos: dict[str, Repository] = {}
        ref = str(repo)
        engine = serving.load(ref, options, post, None, None, repos)
        listener = Listener()
        pipeline = Pipeline(config, [listener], engine_loader=lambda _ref: engine)
        engines = {(ref, options, post): engine}
        pipeline.start()
        serving.follow(repos, options, post, m.repository_poll_s)
        load = os.getloadavg()[0]
        print(
            f"model {args.model}, poll {args.poll_s:g} s, camera {args.fps:g} fps, load {load:.1f}"
        )
        print(
            "round  seen_s  stable_s  ready_s  served_s  swap_gap_ms  max_gap_ms  max_gap_at"
            "  median_gap_ms  dropped  seq_gaps  rss_before  rss_both  rss_after"
        )
        time.sleep(2.0)
        for n in range(2, 2 + args.rounds):
            rss_before = rss_mb()
            dropped0 = pipeline.cameras["cam"].counters["dropped"]
            t0 = time.monotonic()
            shutil.copytree(source, repo / str(n))
            seen = stable = ready = None
            rss_both = 0.0
            while listener.first(str(n)) is None and time.monotonic() - t0 < 60:
                states = {s.number: s.state for s in serving.repos[ref].status()}
                now = time.monotonic() - t0
                if seen is None and n in states:
                    seen = now
                if stable is None and states.get(n) == "loading":
                    stable = now
                if ready is None and serving.watcher._ready:  # private: a figure only
                    ready, rss_both = now, rss_mb()
                serving.swap_ready(pipeline, engines)
                time.sleep(0.005)
            served = (listener.first(str(n)) or t0) - t0
            time.sleep(1.0)
            rss_after = rss_mb()
            with listener.lock:
                times = [t for _, _, t in listener.seen]
                seqs = [s for s, _, _ in listener.seen]
            gaps = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
            t_swap = t0 + served
            during = [
                (g, t - t0)
                for g, t in zip(gaps, times[1:], strict=False)
                if t0 <= t <= t_swap + 0.5
            ]
            worst, worst_at = max(during, default=(0.0, 0.0))
            seq_gaps = max(seqs) - len(set(seqs))
            dropped = pipeline.cameras["cam"].counters["dropped"] - dropped0
            with listener.lock:
                first = next(i for i, (_, v, _) in enumerate(listener.seen) if v == str(n))
                swap_gap = (listener.seen[first][2] - listener.seen[first - 1][2]) * 1000
            print(
                f"{n:5d}  {seen or 0:6.2f}  {stable or 0:8.2f}  {ready or 0:7.2f}  "
                f"{served:8.2f}  {swap_gap:11.1f}  {worst:10.1f}  {worst_at:9.2f}  "
                f"{statistics.median(gaps):13.1f}  {dropped:7d}  {seq_gaps:8d}  "
                f"{rss_before:10.1f}  {rss_both:8.1f}  {rss_after:9.1f}"
            )
        pipeline.stop()
        serving.close()
        for e in engines.values():
            e.close()
    print("(seconds from the copy; gaps between consecutive results; RSS in MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
