#!/usr/bin/env python3
"""Train a small float Keras classifier that normalizes its own input, the Keras tutorials'
pattern: a ``Rescaling(1/255)`` (or ``Rescaling(1/127.5, offset=-1)``) layer right after the
input, so the model takes raw 0..255 pixels. Needs TensorFlow (``pip install 'edge[quantize]'``).

It tells circles, squares and triangles apart in square frames drawn by ``edge.scene``
(32×32 input, three 3×3 conv + max-pool blocks, global max pooling); six epochs on 2,400 frames
take about 4 s on two cores and classify about 99 % of held-out frames right. The quantize
tests train it in a session fixture (``tests/quantize_models.py``); run this script to try
``edge quantize`` on it::

    python scripts/make_rescaling_classifier.py --out work/rescaling
    edge quantize work/rescaling/shapes.keras --calibration work/rescaling/calibration \\
        --holdout work/rescaling/holdout --out work/rescaling-int8

writes ``shapes.keras`` and ``labels.txt`` (no manifest: the tool reads the normalization from
the model), 40 calibration frames and 200 held-out frames (PNG, another seed) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Runnable from a source checkout without installing edge.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec
from edge.scene import COLOURS, SHAPES, Shape, background, draw

SIZE = 32
TRAIN = 2400
EPOCHS = 6
RESCALINGS = {"1/255": (1 / 255, 0.0), "1/127.5-1": (1 / 127.5, -1.0)}
# The model takes the pixels as they are; edge's Preprocessor only resizes and reorders them.
RAW = PreprocessConfig(mean=(0.0,), std=(1.0,))


def shape_frame(rng: np.random.Generator, square: bool = False) -> tuple[np.ndarray, int]:
    """A BGR frame with one random shape; the class is its kind (index in SHAPES). square: a
    square frame, so a stretch resize keeps circles round and squares square."""
    w, h = int(rng.integers(48, 160)), int(rng.integers(48, 160))
    if square:
        h = w
    size = float(rng.uniform(0.4, 0.8)) * min(w, h)
    kind = int(rng.integers(len(SHAPES)))
    s = Shape(
        kind=SHAPES[kind],
        colour=str(rng.choice(list(COLOURS))),
        cx=float(rng.uniform(size * 0.6, w - size * 0.6)),
        cy=float(rng.uniform(size * 0.6, h - size * 0.6)),
        size=size,
        angle=float(rng.uniform(0, 360)),
    )
    image = background(rng, w, h)
    draw(image, s)
    return image, kind


def raw_pixels(images: list[np.ndarray]) -> np.ndarray:
    """N×32×32×3 float32 RGB pixels 0..255, through edge's own Preprocessor."""
    pre = Preprocessor(TensorSpec(0, "x", (1, SIZE, SIZE, 3), np.dtype(np.float32)), RAW)
    return np.concatenate([pre.to_array(image)[0] for image in images])


def training_data(seed: int = 1, n: int = TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """``n`` square frames as raw-pixel tensors, and their classes."""
    rng = np.random.default_rng(seed)
    pairs = [shape_frame(rng, square=True) for _ in range(n)]
    return raw_pixels([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def rescaling_classifier(
    tf: Any, x: np.ndarray, y: np.ndarray, scale: float, offset: float, path: Path
) -> Path:
    """Train and save (``path``, a .keras file, with labels.txt beside it) the classifier
    whose first layer is ``Rescaling(scale, offset)``. x: N×H×W×3 float32 raw pixels (RGB);
    y: class ids. Global max pooling is what makes six short epochs enough."""
    tf.keras.utils.set_random_seed(1)
    layers = tf.keras.layers
    inp = tf.keras.Input(x.shape[1:])
    h = layers.Rescaling(scale, offset=offset)(inp)
    for filters in (16, 32, 32):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.GlobalMaxPooling2D()(h)
    model = tf.keras.Model(inp, layers.Dense(len(SHAPES), activation="softmax")(h))
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=EPOCHS, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    (path.parent / "labels.txt").write_text("\n".join(SHAPES) + "\n")
    return path


def write_images(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the model and frames to")
    parser.add_argument("--rescaling", choices=list(RESCALINGS), default="1/255")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    out = Path(args.out)
    t0 = time.perf_counter()
    x, y = training_data()
    rng = np.random.default_rng(2)
    calibration = [shape_frame(rng, square=True)[0] for _ in range(40)]
    hold_rng = np.random.default_rng(99)
    holdout = [shape_frame(hold_rng, square=True) for _ in range(200)]
    t1 = time.perf_counter()
    scale, offset = RESCALINGS[args.rescaling]
    path = rescaling_classifier(tf, x, y, scale, offset, out / "shapes.keras")
    t2 = time.perf_counter()
    write_images(out / "calibration", calibration)
    write_images(out / "holdout", [image for image, _ in holdout])
    model = tf.keras.models.load_model(path, compile=False)
    pred = model.predict(raw_pixels([image for image, _ in holdout]), verbose=0).argmax(axis=1)
    accuracy = float(np.mean(pred == np.array([k for _, k in holdout])))
    print(
        f"{path}: Rescaling {args.rescaling}, top-1 {100 * accuracy:.1f} % on 200 held-out "
        f"frames (float, raw pixels); data {t1 - t0:.1f} s, training {t2 - t1:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
