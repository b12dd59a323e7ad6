"""Benchmark of the inference core against a bare interpreter loop.

Prints two figures the core is held to:
  1. `edge bench`'s steady-state p50 on the benchmark model versus a bare ai-edge-litert loop
     doing only ``invoke()`` with the same threads (target: within 5 %);
  2. `edge infer`'s per-image cost beyond ``invoke()`` — preprocessing, postprocessing and JSON —
     for a 640x480 frame (target: under 2 ms), for each bundled model.
Rounds alternate between the two sides so that load from other processes hits both alike.

    python scripts/bench_core.py [--threads 1] [--runs 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from edge.bench import bench
from edge.engine import Engine
from edge.models import resolve
from edge.runtime import RuntimeOptions
from edge.stats import percentile

REPO = Path(__file__).resolve().parent.parent


def bare_loop(model: Path, threads: int, runs: int, warmup: int = 10) -> float:
    """p50 (ms) of a plain ai-edge-litert loop: set one input, then invoke() only."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    info = np.iinfo(d["dtype"])
    interp.set_tensor(
        d["index"],
        np.random.default_rng(0).integers(
            info.min, info.max, size=d["shape"], endpoint=True, dtype=d["dtype"]
        ),
    )
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t) * 1000)
    return percentile(sorted(times), 50)


def overhead(model: str, frame: np.ndarray, runs: int) -> dict[str, float]:
    """Per-image cost beyond invoke(), in ms: pre + post + json.dumps of the result."""
    engine = Engine.load(model, RuntimeOptions(threads=1))
    extra, pre, post = [], [], []
    for _ in range(runs):
        r = engine.infer(frame, source="frame.png")
        t = time.perf_counter()
        json.dumps(r.to_dict(), separators=(",", ":"))
        js = (time.perf_counter() - t) * 1000
        pre.append(r.timings.preprocess_ms)
        post.append(r.timings.postprocess_ms)
        extra.append(r.timings.preprocess_ms + r.timings.postprocess_ms + js)
    return {
        "p50": statistics.median(extra),
        "mean": statistics.fmean(extra),
        "pre_p50": statistics.median(pre),
        "post_p50": statistics.median(post),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="mobilenet-v2-bench")
    args = parser.parse_args()

    path = resolve(args.model)[0]
    bare, ours = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop(path, args.threads, args.runs))
        ours.append(bench(args.model, RuntimeOptions(threads=args.threads), runs=args.runs).p50_ms)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"1. {args.model}, {args.threads} thread(s), {args.rounds} rounds x {args.runs} runs")
    print(
        f"   bare invoke() loop p50  {b:.3f} ms   (rounds: {', '.join(f'{x:.3f}' for x in bare)})"
    )
    print(
        f"   edge bench p50          {o:.3f} ms   (rounds: {', '.join(f'{x:.3f}' for x in ours)})"
    )
    print(f"   edge bench / bare       {o / b:.3f}   (target <= 1.05)")

    frame = cv2.imread(str(REPO / "tests" / "data" / "shapes" / "scene_0.jpg"))
    assert frame is not None and frame.shape[:2] == (480, 640)
    print(
        "2. edge infer per-image overhead beyond invoke() on a 640x480 frame "
        "(preprocess + postprocess + JSON)"
    )
    for model in ("shapes-detector", "shapes-classifier", "mobilenet-v2-bench"):
        o2 = overhead(model, frame, args.runs)
        print(
            f"   {model:<20} p50 {o2['p50']:.3f} ms  mean {o2['mean']:.3f} ms  "
            f"(pre {o2['pre_p50']:.3f}, post {o2['post_p50']:.3f})   (target < 2 ms)"
        )


if __name__ == "__main__":
    main()
