#!/usr/bin/env python3
"""Train and quantize the bundled ``shapes-detector``: circles, squares and triangles (any
colour) in camera-like frames drawn by ``edge.scene``. Needs TensorFlow
(``pip install 'edge[quantize]'``).

The network is a small anchor-free grid detector (FCOS-style centre sampling, stride 8) whose
box decoding runs inside the graph, so its single output has the layout ultralytics' YOLOv8
TFLite export uses: ``[1, 4 + C, N]`` with rows cx, cy, w, h normalized 0..1 to the model
input, then C sigmoid class scores. edge's generic YOLOv8 decoder (class-aware NMS) reads it.
The int8 model is made by edge's quantize tool; mAP@0.5 is measured on it through edge's
Engine, on held-out frames drawn with another seed, against ``Shape.box()``.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_readme import size_text, update_section
from shapes_data import (
    DETECTOR_FRAMES,
    detector_sample,
    float_preprocessor,
    pack,
    seconds,
    shape_class,
    to_model,
    truth_boxes,
)

from edge.engine import Engine, Overrides
from edge.preprocess import PreprocessConfig
from edge.quantize.convert import Converter, identify
from edge.quantize.metrics import Boxes, mean_average_precision
from edge.quantize.report import format_report
from edge.quantize.tool import MODEL_FILE, Request, quantize, update_manifest
from edge.runtime import RuntimeOptions
from edge.scene import SHAPES

NAME = "shapes-detector"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / NAME
SIZE = 192
STRIDE = 8
GRID = SIZE // STRIDE
CENTRE_RADIUS = 1.5  # positives: cells within this many strides of a box centre (FCOS)
PREPROCESS = PreprocessConfig(resize="letterbox", color="rgb", mean=(0.0,), std=(255.0,), pad=114)
POSTPROCESS = {"threshold": 0.4, "iou_threshold": 0.45, "max_detections": 20}


def cell_targets(boxes_px: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell class (-1 = background) and left/top/right/bottom distances in strides.

    A cell is positive for a box when its centre lies inside the box and within
    ``CENTRE_RADIUS`` strides of the box centre; the cell holding the centre always is.
    Smaller boxes win where boxes compete.
    """
    centres = (np.arange(GRID) + 0.5) * STRIDE
    px, py = np.meshgrid(centres, centres)
    cls = np.full((GRID, GRID), -1, np.int64)
    ltrb = np.zeros((GRID, GRID, 4), np.float32)
    areas = (boxes_px[:, 2] - boxes_px[:, 0]) * (boxes_px[:, 3] - boxes_px[:, 1])
    for k in np.argsort(-areas):
        x0, y0, x1, y1 = boxes_px[k]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        r = CENTRE_RADIUS * STRIDE
        pos = (px > x0) & (px < x1) & (py > y0) & (py < y1)
        pos &= (np.abs(px - cx) < r) & (np.abs(py - cy) < r)
        gx = min(GRID - 1, max(0, int(cx // STRIDE)))
        gy = min(GRID - 1, max(0, int(cy // STRIDE)))
        pos[gy, gx] = True
        cls[pos] = classes[k]
        ltrb[pos] = np.stack([px - x0, py - y0, x1 - px, y1 - py], -1)[pos] / STRIDE
    return cls.reshape(-1), np.maximum(ltrb, 0.0).reshape(-1, 4)


def dataset(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` preprocessed frames (packed uint8) with per-cell classes and distances."""
    rng = np.random.default_rng(seed)
    pre = float_preprocessor(SIZE, PREPROCESS)
    xs = np.empty((n, SIZE, SIZE, 3), np.uint8)
    cls = np.empty((n, GRID * GRID), np.int64)
    ltrb = np.empty((n, GRID * GRID, 4), np.float32)
    for i in range(n):
        image, shapes = detector_sample(rng)
        h, w = image.shape[:2]
        tensor, transform = pre.to_array(image)
        xs[i] = pack(tensor, PREPROCESS)
        boxes = to_model(truth_boxes(shapes, w, h), transform) * SIZE
        cls[i], ltrb[i] = cell_targets(boxes, np.array([shape_class(s) for s in shapes]))
    return xs, cls, ltrb


def frames(seed: int, n: int) -> list[tuple[np.ndarray, Boxes]]:
    """``n`` raw BGR frames with their ground truth (boxes normalized to the frame)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image, shapes = detector_sample(rng)
        h, w = image.shape[:2]
        out.append(
            (image, Boxes.truth(truth_boxes(shapes, w, h), [shape_class(s) for s in shapes]))
        )
    return out


def build(tf: Any) -> tuple[Any, Any]:
    """(training model → class logits [B,N,C] and distances [B,N,4], export model → [1,4+C,N])."""
    keras = tf.keras
    layers = keras.layers

    def block(x: Any, filters: int, stride: int = 1, dilation: int = 1) -> Any:
        x = layers.DepthwiseConv2D(
            3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False
        )(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.ReLU()(x)

    def conv(x: Any, filters: int) -> Any:
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.ReLU()(x)

    inp = keras.Input((SIZE, SIZE, 3), name="image")
    # Plain convolutions down to stride 8 (depthwise ones train slowly at high resolution on
    # CPUs), then depthwise-separable blocks with growing dilation for context.
    x = conv(conv(conv(inp, 16), 24), 48)
    for d in (1, 2, 2, 4):
        x = block(x, 64, dilation=d)
    x = block(x, 64)
    prior = float(-np.log((1 - 0.01) / 0.01))  # start every cell at 1 % object probability
    logits = layers.Conv2D(
        len(SHAPES), 1, bias_initializer=keras.initializers.Constant(prior), name="cls"
    )(x)
    dist = layers.Conv2D(4, 1, bias_initializer=keras.initializers.Constant(1.0), name="reg")(x)
    dist = layers.ReLU()(dist)
    flat_logits = layers.Reshape((GRID * GRID, len(SHAPES)))(logits)
    flat_dist = layers.Reshape((GRID * GRID, 4))(dist)
    train_model = keras.Model(inp, [flat_logits, flat_dist], name="shapes_detector_train")

    # In-graph decode: a fixed 1×1 conv maps l,t,r,b (strides) to cx,cy offsets and w,h,
    # normalized to the input; a constant grid adds each cell's centre.
    s = STRIDE / SIZE
    kernel = (
        np.array([[-0.5, 0, 1, 0], [0, -0.5, 0, 1], [0.5, 0, 1, 0], [0, 0.5, 0, 1]], np.float32) * s
    )
    decode = layers.Conv2D(4, 1, use_bias=False, trainable=False, name="decode")
    xywh = decode(dist)
    decode.set_weights([kernel.reshape(1, 1, 4, 4)])
    centres = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    gx, gy = np.meshgrid(centres, centres)
    grid = np.stack([gx, gy, np.zeros_like(gx), np.zeros_like(gx)], -1)[None]
    xywh = add_constant_layer(tf)(grid)(xywh)
    scores = layers.Activation("sigmoid")(logits)
    merged = layers.Concatenate(axis=-1)(
        [layers.Reshape((GRID * GRID, 4))(xywh), layers.Reshape((GRID * GRID, len(SHAPES)))(scores)]
    )
    out = layers.Permute((2, 1), name="detections")(merged)
    export_model = keras.Model(inp, out, name="shapes_detector")
    return train_model, export_model


def add_constant_layer(tf: Any) -> Any:
    """A Keras layer class adding a fixed tensor (made here so TensorFlow loads lazily)."""

    class AddConstant(tf.keras.layers.Layer):  # type: ignore[misc]
        """Adds a fixed tensor (the grid of cell centres)."""

        def __init__(self, value: np.ndarray, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.value = tf.constant(value)

        def call(self, x: Any) -> Any:
            return x + self.value

    return AddConstant


def losses(tf: Any, logits: Any, dist: Any, cls: Any, target: Any) -> tuple[Any, Any]:
    """(sigmoid focal loss over all cells, 1 − GIoU over positive cells), both per positive."""
    pos = cls >= 0
    n_pos = tf.maximum(tf.reduce_sum(tf.cast(pos, tf.float32)), 1.0)
    onehot = tf.one_hot(tf.where(pos, cls, 0), len(SHAPES)) * tf.cast(pos, tf.float32)[..., None]
    p = tf.sigmoid(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=logits)
    pt = p * onehot + (1 - p) * (1 - onehot)
    alpha = 0.25 * onehot + 0.75 * (1 - onehot)
    focal = tf.reduce_sum(alpha * (1 - pt) ** 2 * ce) / n_pos

    pd = tf.boolean_mask(dist, pos)
    gd = tf.boolean_mask(target, pos)
    pl, pt_, pr, pb = tf.unstack(pd, axis=-1)
    gl, gt, gr, gb = tf.unstack(gd, axis=-1)
    area_p = (pl + pr) * (pt_ + pb)
    area_g = (gl + gr) * (gt + gb)
    inter = (tf.minimum(pl, gl) + tf.minimum(pr, gr)) * (tf.minimum(pt_, gt) + tf.minimum(pb, gb))
    union = area_p + area_g - inter + 1e-6
    enclose = (tf.maximum(pl, gl) + tf.maximum(pr, gr)) * (tf.maximum(pt_, gt) + tf.maximum(pb, gb))
    giou = inter / union - (enclose - union) / (enclose + 1e-6)
    box = tf.reduce_sum(1.0 - giou) / n_pos
    return focal, box


def evaluate(model_dir: Path, data: list[tuple[np.ndarray, Boxes]]) -> tuple[float, list[float]]:
    """mAP@0.5 (and AP per class) of a model directory through edge's Engine."""
    engine = Engine.load(
        model_dir, RuntimeOptions(threads=1), Overrides(threshold=0.05, max_detections=100)
    )
    preds = [Boxes.of(engine.infer(image).detections) for image, _ in data]
    return mean_average_precision(preds, [t for _, t in data], len(SHAPES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=6000, help="training frames")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--holdout", type=int, default=500, help="held-out test frames")
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="model folder (models/README.md is updated only for the default)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level="WARNING")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)

    t0 = time.perf_counter()
    xs, cls, ltrb = dataset(args.seed, args.train)
    holdout = frames(args.seed + 1000, args.holdout)
    calibration = [image for image, _ in frames(args.seed + 2000, args.calibration)]
    print(f"data: {args.train} training frames in {seconds(time.perf_counter() - t0)}")

    train_model, export_model = build(tf)
    batch = 32
    steps = args.epochs * (args.train // batch)
    opt = tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(2e-3, steps))
    scale = np.float32(1.0 / PREPROCESS.std[0])

    @tf.function  # type: ignore[misc]
    def step(x: Any, c: Any, t: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            logits, dist = train_model(tf.cast(x, tf.float32) * scale, training=True)
            focal, box = losses(tf, logits, dist, c, t)
            loss = focal + 2.0 * box
        grads = tape.gradient(loss, train_model.trainable_variables)
        opt.apply_gradients(zip(grads, train_model.trainable_variables, strict=True))
        return focal, box

    rng = np.random.default_rng(args.seed)
    t1 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(args.train)
        sums = np.zeros(2)
        for b in range(args.train // batch):
            idx = np.sort(order[b * batch : (b + 1) * batch])
            f, bx = step(xs[idx], cls[idx], ltrb[idx])
            sums += (float(f), float(bx))
        n = args.train // batch
        print(
            f"epoch {epoch + 1}/{args.epochs}: focal {sums[0] / n:.4f}  1-GIoU {sums[1] / n:.4f}"
            f"  ({seconds(time.perf_counter() - t1)})",
            flush=True,
        )
    train_time = time.perf_counter() - t1
    del xs, cls, ltrb

    out = Path(args.out)
    made_by = f"scripts/make_shapes_detector.py --seed {args.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        export_model.export(str(saved), verbose=False)
        report = quantize(
            Request(
                model=saved,
                out=out,
                calibration=calibration,
                holdout=[image for image, _ in holdout[:200]],
                io="uint8",
                preprocess=PREPROCESS,
                labels=_labels(Path(tmp)),
                task="detection",
                manifest={
                    "name": NAME,
                    "version": "1.0.0",
                    "description": "Synthetic demo detector: circles, squares and triangles "
                    "(any colour) on the edge.scene background; YOLOv8-layout output. Not "
                    "for real-world images.",
                    "made_by": made_by,
                    "postprocess": POSTPROCESS,
                },
                bench_runs=100,
                threads=1,
            )
        )
        print(format_report(report))
        # The float reference, converted by the same tool code, in a model dir of its own.
        float_dir = Path(tmp) / "float"
        float_dir.mkdir()
        (float_dir / MODEL_FILE).write_bytes(Converter(identify(saved)).float_tflite())
        for f in ("labels.txt", "manifest.json"):
            (float_dir / f).write_bytes((out / f).read_bytes())
        float_map, _ = evaluate(float_dir, holdout)
    int8_map, per_class = evaluate(out, holdout)
    size = (out / MODEL_FILE).stat().st_size
    metrics = {
        "map50": round(int8_map, 4),
        "map50_float": round(float_map, 4),
        "ap50_per_class": {c: round(a, 4) for c, a in zip(SHAPES, per_class, strict=True)},
        "holdout_images": len(holdout),
        "holdout_seed": args.seed + 1000,
        "train_images": args.train,
        "epochs": args.epochs,
        "train_seconds": round(train_time, 1),
    }
    update_manifest(out, {"metrics": metrics})
    print(
        f"\n{NAME}: mAP@0.5 {int8_map:.4f} int8 / {float_map:.4f} float (edge Engine), "
        f"{len(holdout)} held-out frames; AP per class "
        + ", ".join(f"{c} {a:.3f}" for c, a in zip(SHAPES, per_class, strict=True))
        + f"; {size_text(size)}; trained in {seconds(train_time)}"
    )
    lat = report.int8_latency
    frames_text = ", ".join(f"{w}×{h}" for w, h in DETECTOR_FRAMES)
    if out.resolve() != DEFAULT_OUT.resolve():
        return 0 if int8_map >= 0.8 else 1
    update_section(
        NAME,
        f"""## shapes-detector

Made by `{made_by}` (TensorFlow needed; about {seconds(time.perf_counter() - t0)} on 2 CPU
cores).

- **Task**: detection of 3 classes, `circle`, `square`, `triangle` (any of the 4 colours).
- **Output**: one tensor `[1, 7, {GRID * GRID}]`: rows cx, cy, w, h normalized 0..1 to the
  {SIZE}×{SIZE} input, then 3 sigmoid class scores: the layout of ultralytics' YOLOv8 TFLite
  export, decoded by edge's YOLOv8 decoder (class-aware NMS, threshold
  {POSTPROCESS["threshold"]}, IoU {POSTPROCESS["iou_threshold"]}).
- **Data**: synthetic, drawn by `edge.scene`: 1–5 non-overlapping shapes per frame, 65 % of
  frames with the sizes `MovingScene` uses (12–30 % of the short side), 35 % with smaller ones
  (8–14 %), rotated ±20°, on the noisy gradient background; frames {frames_text}, letterboxed
  (pad 114) by edge's own `Preprocessor` to {SIZE}×{SIZE}. {args.train} training frames (seed
  {args.seed}), {args.calibration} calibration frames (seed {args.seed + 2000}),
  {len(holdout)} held-out frames (seed {args.seed + 1000}).
- **Architecture**: anchor-free grid detector at stride {STRIDE} ({GRID}×{GRID} cells): three
  3×3 stride-2 convolutions (16/24/48 filters), five depthwise-separable blocks of 64
  (dilations 1, 2, 2, 4, 1: a receptive field of ~175 px),
  a 1×1 class head and a 1×1 distance head (left/top/right/bottom, ReLU). Cells within
  {CENTRE_RADIUS} strides of a box centre are positives (FCOS centre sampling); sigmoid focal
  loss + GIoU loss; {args.epochs} epochs of Adam with cosine decay, batch {batch}; training
  took {seconds(train_time)}. Box decoding (a fixed 1×1 conv plus the cell-centre grid) and
  the sigmoid run inside the graph.
- **Quantization**: full integer, uint8 input and output, by `edge quantize`'s Python API
  from a SavedModel.
- **How well it does** (held-out frames, boxes in frame coordinates vs `Shape.box()`):
  mAP@0.5 **{int8_map:.3f}** for the int8 model through edge's Engine, {float_map:.3f} for
  the float model (same Engine); AP circle {per_class[0]:.3f}, square {per_class[1]:.3f},
  triangle {per_class[2]:.3f}. int8 recalls {report.agreement.box_recall:.1f} % of the float
  model's boxes (mean IoU {report.agreement.mean_iou:.3f}) on 200 of them.
- **Size and speed**: {size_text(size)} (float {size_text(report.float_bytes)}); invoke p50
  {lat.p50_ms if lat else float("nan"):.2f} ms at 1 thread on the machine that built it
  (x86_64), measured by `edge.bench`.
- **Limits**: only these synthetic shapes on this kind of background; shapes that overlap or
  touch the frame edge were never in the training data.
""",
    )
    return 0 if int8_map >= 0.8 else 1


def _labels(tmp: Path) -> Path:
    path = tmp / "labels.txt"
    path.write_text("\n".join(SHAPES) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    sys.exit(main())
