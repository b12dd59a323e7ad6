#!/usr/bin/env python3
"""Train and quantize the bundled ``shapes-classifier``: 12 classes (colour × shape), one shape
per image, drawn by ``edge.scene``. Needs TensorFlow (``pip install 'edge[quantize]'``).

Training data, calibration and the held-out set come from different seeds. The int8 model is
made by edge's quantize tool and measured through edge's Engine; the figures go into the
manifest and ``models/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_readme import size_text, update_section
from shapes_data import classifier_sample, float_preprocessor, pack, seconds

from edge.engine import Engine, Overrides
from edge.preprocess import PreprocessConfig
from edge.quantize.report import format_report
from edge.quantize.tool import Request, quantize, update_manifest
from edge.runtime import RuntimeOptions
from edge.scene import CLASSIFIER_LABELS

NAME = "shapes-classifier"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / NAME
SIZE = 64
PREPROCESS = PreprocessConfig(resize="stretch", color="rgb", mean=(0.0,), std=(255.0,))


def build_model(tf: Any, size: int, classes: int) -> Any:
    """A small all-convolutional network: four 3×3 conv blocks (three with stride 2), global
    average pooling, softmax."""
    keras = tf.keras
    x = inp = keras.Input((size, size, 3), name="image")
    for filters, stride in ((16, 2), (32, 2), (64, 2), (64, 1)):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(classes, activation="softmax", name="scores")(x)
    return keras.Model(inp, out, name="shapes_classifier")


def dataset(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preprocessed samples (packed uint8 tensors) and their class ids."""
    rng = np.random.default_rng(seed)
    pre = float_preprocessor(SIZE, PREPROCESS)
    xs = np.empty((n, SIZE, SIZE, 3), np.uint8)
    ys = np.empty(n, np.int64)
    for i in range(n):
        image, label = classifier_sample(rng)
        xs[i] = pack(pre.to_array(image)[0], PREPROCESS)
        ys[i] = label
    return xs, ys


def frames(seed: int, n: int) -> tuple[list[np.ndarray], list[int]]:
    """``n`` raw BGR frames and labels (for calibration and the held-out test)."""
    rng = np.random.default_rng(seed)
    pairs = [classifier_sample(rng) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=12000, help="training images")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--holdout", type=int, default=1000, help="held-out test images")
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="model folder (models/README.md is updated only for the default)",
    )
    parser.add_argument(
        "--keep-float",
        metavar="DIR",
        help="also write the float Keras model and the calibration and held-out frames (PNG) "
        "there, to try `edge quantize` on",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level="WARNING")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    t0 = time.perf_counter()
    x_train, y_train = dataset(args.seed, args.train)
    hold_frames, hold_labels = frames(args.seed + 1000, args.holdout)
    cal_frames, _ = frames(args.seed + 2000, args.calibration)
    print(f"data: {args.train} training images in {seconds(time.perf_counter() - t0)}")

    model = build_model(tf, SIZE, len(CLASSIFIER_LABELS))
    model.compile(
        optimizer=tf.keras.optimizers.Adam(
            tf.keras.optimizers.schedules.CosineDecay(3e-3, args.epochs * (args.train // 64))
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    scale = np.float32(1.0 / PREPROCESS.std[0])
    t1 = time.perf_counter()
    model.fit(
        x_train.astype(np.float32) * scale,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        verbose=2,
    )
    train_time = time.perf_counter() - t1

    pre = float_preprocessor(SIZE, PREPROCESS)
    x_hold = np.concatenate([pre.to_array(f)[0] for f in hold_frames])
    float_pred = model.predict(x_hold, verbose=0).argmax(axis=1)
    float_acc = float(np.mean(float_pred == np.asarray(hold_labels)))

    out = Path(args.out)
    made_by = f"scripts/make_shapes_classifier.py --seed {args.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "shapes_classifier.keras"
        model.save(keras_path)
        labels = Path(tmp) / "labels.txt"
        labels.write_text("\n".join(CLASSIFIER_LABELS) + "\n", encoding="utf-8")
        report = quantize(
            Request(
                model=keras_path,
                out=out,
                calibration=cal_frames,
                holdout=hold_frames[:500],
                io="uint8",
                preprocess=PREPROCESS,
                labels=labels,
                task="classification",
                manifest={
                    "name": NAME,
                    "version": "1.0.0",
                    "description": "Synthetic demo classifier: one coloured shape per image "
                    "(12 classes: red/green/blue/yellow × circle/square/triangle), trained "
                    "on edge.scene drawings. Not for real-world images.",
                    "made_by": made_by,
                    "postprocess": {"threshold": 0.3, "top_k": 3, "logits": False},
                },
                bench_runs=100,
                threads=1,
            )
        )
    print(format_report(report))
    if args.keep_float:
        keep = Path(args.keep_float)
        keep.mkdir(parents=True, exist_ok=True)
        model.save(keep / "shapes_classifier.keras")
        for folder, images in (("calibration", cal_frames), ("holdout", hold_frames)):
            (keep / folder).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                cv2.imwrite(str(keep / folder / f"{i:04d}.png"), image)
        print(f"float model and frames kept in {keep}")

    engine = Engine.load(out, RuntimeOptions(threads=1), Overrides(threshold=0.0))
    correct = 0
    for frame, label in zip(hold_frames, hold_labels, strict=True):
        classes = engine.infer(frame).classes
        correct += bool(classes) and classes[0].class_id == label
    int8_acc = correct / len(hold_frames)
    size = (out / "model.tflite").stat().st_size
    metrics = {
        "top1": round(int8_acc, 4),
        "top1_float": round(float_acc, 4),
        "holdout_images": len(hold_frames),
        "holdout_seed": args.seed + 1000,
        "train_images": args.train,
        "epochs": args.epochs,
        "train_seconds": round(train_time, 1),
    }
    update_manifest(out, {"metrics": metrics})
    print(
        f"\n{NAME}: top-1 {100 * int8_acc:.2f} % int8 (edge Engine), {100 * float_acc:.2f} % "
        f"float (Keras), {len(hold_frames)} held-out images; {size_text(size)}; trained in "
        f"{seconds(train_time)}"
    )
    lat = report.int8_latency
    if out.resolve() != DEFAULT_OUT.resolve():
        return 0 if int8_acc >= 0.95 else 1
    update_section(
        NAME,
        f"""## shapes-classifier

Made by `{made_by}` (TensorFlow needed; about {seconds(time.perf_counter() - t0)} on 2 CPU
cores).

- **Task**: classification, 12 classes = colour (red, green, blue, yellow) × shape (circle,
  square, triangle), `labels.txt` line *i* = class *i*.
- **Data**: synthetic, drawn by `edge.scene` (the code behind the synthetic camera and the
  sample clip): one shape per frame, 30–80 % of the short side, any position and rotation, on
  the noisy gradient background; frames {SIZE}–360 px with aspect 1, 4:3, 3:4 or 16:9.
  {args.train} training frames (seed {args.seed}), {args.calibration} calibration frames
  (seed {args.seed + 2000}), {len(hold_frames)} held-out frames (seed {args.seed + 1000}).
  Every frame went through edge's own `Preprocessor` (stretch to {SIZE}×{SIZE}, RGB, 0..1).
- **Architecture**: 4 conv blocks (3×3 conv, batch norm, ReLU; 16/32/64/64 filters, three
  with stride 2), global average pooling, dense softmax. {epochs_text(args.epochs)} of Adam
  with cosine decay, batch 64; training took {seconds(train_time)}.
- **Quantization**: full integer, uint8 input and output, by `edge quantize`'s Python API.
- **How well it does** (held-out frames): top-1 **{100 * int8_acc:.2f} %** for the int8
  model through edge's Engine, {100 * float_acc:.2f} % for the float Keras model; int8 vs
  float top-1 agreement {report.agreement.top1_agreement:.2f} % on 500 of them.
- **Size and speed**: {size_text(size)} (float {size_text(report.float_bytes)});
  invoke p50 {lat.p50_ms if lat else float("nan"):.3f} ms at 1 thread on the machine that
  built it (x86_64), measured by `edge.bench`.
- **Limits**: it only knows these 12 synthetic classes on this kind of background; one shape
  per frame; frames are stretched to a square, so very wide or tall frames (beyond 16:9 or
  3:4) distort the shapes it learned; real photos are out of its domain.
""",
    )
    return 0 if int8_acc >= 0.95 else 1


def epochs_text(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


if __name__ == "__main__":
    sys.exit(main())
