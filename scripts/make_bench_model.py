#!/usr/bin/env python3
"""Build the bundled ``mobilenet-v2-bench`` model: Keras MobileNetV2 (224×224, 1000 classes) with
RANDOM weights, quantized to full int8 by edge's quantize tool on synthetic images.

It exists to give performance work a fixed, realistic target (the op mix and size of a real
MobileNetV2); its outputs mean nothing. Needs TensorFlow (``pip install 'edge[quantize]'``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_readme import size_text, update_section
from shapes_data import seconds

from edge.bench import bench
from edge.preprocess import PreprocessConfig
from edge.quantize.report import format_report
from edge.quantize.tool import MODEL_FILE, Request, quantize, update_manifest
from edge.runtime import RuntimeOptions
from edge.scene import MovingScene

NAME = "mobilenet-v2-bench"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / NAME
# MobileNetV2's own convention: pixels scaled to -1..1.
PREPROCESS = PreprocessConfig(resize="stretch", color="rgb", mean=(127.5,), std=(127.5,))
DESCRIPTION = (
    "RANDOM WEIGHTS, outputs are meaningless: Keras MobileNetV2 (224x224, 1000 classes) "
    "with untrained weights, quantized to full int8. A fixed, realistic benchmark target for "
    "performance work only."
)


def calibration_images(seed: int, n: int) -> list[np.ndarray]:
    """Half synthetic scenes (edge.scene), half uniform noise, at camera-like sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 2:
            out.append(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        else:
            scene = MovingScene(
                640,
                480,
                count=int(rng.integers(1, 6)),
                seed=seed * 1000 + i,
                draws=np.random.default_rng,  # as when the bundled model was made
            )
            out.append(scene.frame(float(rng.uniform(0, 10)))[0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", type=int, default=100)
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="model folder (models/README.md is updated only for the default)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level="WARNING")
    import tensorflow as tf

    t0 = time.perf_counter()
    tf.keras.utils.set_random_seed(args.seed)
    model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)
    out = Path(args.out)
    made_by = f"scripts/make_bench_model.py --seed {args.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "mobilenet_v2_random.keras"
        model.save(keras_path)
        report = quantize(
            Request(
                model=keras_path,
                out=out,
                calibration=calibration_images(args.seed + 2000, args.calibration),
                holdout=calibration_images(args.seed + 1000, 50),
                io="uint8",
                preprocess=PREPROCESS,
                task="classification",
                manifest={
                    "name": NAME,
                    "version": "1.0.0",
                    "description": DESCRIPTION,
                    "made_by": made_by,
                    "postprocess": {"threshold": 0.0, "top_k": 5, "logits": False},
                },
                bench_runs=50,
                threads=1,
            )
        )
    print(format_report(report))
    threads = {t: bench(out / MODEL_FILE, RuntimeOptions(threads=t), runs=50) for t in (1, 2)}
    size = (out / MODEL_FILE).stat().st_size
    update_manifest(
        out,
        {
            "metrics": {
                "note": "random weights: there is no accuracy to report",
                "invoke_p50_ms_1_thread": round(threads[1].p50_ms, 3),
                "invoke_p50_ms_2_threads": round(threads[2].p50_ms, 3),
                "measured_on": "x86_64 build machine (edge.bench, XNNPACK)",
            }
        },
    )
    print(
        f"\n{NAME}: {size_text(size)}; invoke p50 {threads[1].p50_ms:.2f} ms (1 thread), "
        f"{threads[2].p50_ms:.2f} ms (2 threads)"
    )
    if out.resolve() != DEFAULT_OUT.resolve():
        return 0
    fl, il = report.float_latency, report.int8_latency
    update_section(
        NAME,
        f"""## mobilenet-v2-bench: RANDOM WEIGHTS, outputs are meaningless

Made by `{made_by}` (TensorFlow needed; about {seconds(time.perf_counter() - t0)}).

- **What it is**: `tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3),
  weights=None, classes=1000)`: the real architecture (the op mix and size of MobileNetV2
  1.0/224) with **untrained, random weights**. It exists to give performance work (`edge
  bench`, the daemon's budgets, thread and delegate comparisons) a fixed, realistic target.
  **Its outputs mean nothing**; there is no labels file and no accuracy to report.
- **Quantization**: full integer, uint8 input and output, by `edge quantize`'s Python API,
  calibrated on {args.calibration} synthetic images (half `edge.scene` frames, half uniform
  noise; seed {args.seed + 2000}); preprocessing stretch to 224×224, RGB, scaled to -1..1
  (mean 127.5, std 127.5).
- **Size and speed**: {size_text(size)} (float {size_text(report.float_bytes)}). Invoke p50
  on the x86_64 machine that built it (`edge.bench`, XNNPACK): int8
  {threads[1].p50_ms:.2f} ms at 1 thread, {threads[2].p50_ms:.2f} ms at 2 threads; float
  {fl.p50_ms if fl else float("nan"):.2f} ms vs int8 {il.p50_ms if il else float("nan"):.2f}
  ms at 1 thread in the quantize report. Measure your own device with
  `edge bench mobilenet-v2-bench --threads 1,2,4`.
""",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
