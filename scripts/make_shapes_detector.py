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
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
from model_readme import size_text, update_section
from shapes_data import (
    DETECTOR_FRAMES,
    VISIBLE_MIN,
    DetectorFrame,
    detector_sample,
    float_preprocessor,
    jpeg,
    pack,
    seconds,
    shape_class,
    to_model,
    truth_boxes,
)

from edge.engine import Engine, Overrides
from edge.preprocess import PreprocessConfig, Transform
from edge.quantize.convert import Converter, identify
from edge.quantize.metrics import Boxes, match, mean_average_precision
from edge.quantize.report import format_report
from edge.quantize.tool import MODEL_FILE, Request, quantize, update_manifest
from edge.runtime import RuntimeOptions
from edge.scene import SHAPES

NAME = "shapes-detector"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / NAME
CLIP = ROOT / "samples" / "shapes.mp4"  # made by scripts/make_sample_clip.py; never trained on
SIZE = 192
STRIDE = 8
GRID = SIZE // STRIDE
CENTRE_RADIUS = 1.5  # positives: cells within this many strides of a box centre (FCOS)
WIDTH = 80  # channels of the depthwise-separable blocks
DILATIONS = (1, 2, 2, 4, 1)  # one block each
# Receptive field in input pixels: 15 after the three stride-2 convolutions, then each 3×3
# depthwise conv at stride 8 adds 2 × 8 × dilation.
RECEPTIVE_FIELD = 15 + 16 * sum(DILATIONS)
TOUCHING_SHARE = 0.7  # training frames drawn with touching and overlapping shapes
JPEG_SHARE = 0.3  # training frames put through a JPEG round trip
# Shapes showing IGNORE_MIN..VISIBLE_MIN of their area are neither object nor background in
# training: the 40 % truth rule is a line drawn through a continuum, and cells near it would
# only teach noise.
IGNORE_MIN = 0.25
IGNORE = -2
PREPROCESS = PreprocessConfig(resize="letterbox", color="rgb", mean=(0.0,), std=(255.0,), pad=114)
POSTPROCESS = {"threshold": 0.4, "iou_threshold": 0.45, "max_detections": 20}
# Candidates for the shipped score threshold and NMS IoU, chosen on validation frames.
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
IOUS = (0.45, 0.55, 0.65)


def cell_targets(
    boxes_px: np.ndarray,
    classes: np.ndarray,
    visible: np.ndarray,
    cell_owner: np.ndarray,
    fallback: list[tuple[int, int] | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell class (-1 = background, ``IGNORE`` = left out of the class loss) and
    left/top/right/bottom distances in strides.

    boxes_px: N×4 boxes in model-input pixels; visible: shown fraction per shape; cell_owner:
    GRID×GRID index + 1 of the shape seen at each cell centre (0 background, -1 padding);
    fallback: per shape the (gx, gy) cell at the centroid of its visible pixels.

    A cell is positive for a box when its centre lies inside the box, within
    ``CENTRE_RADIUS`` strides of the box centre, and does not show another shape (a cell
    covered by the shape on top must not be taught the hidden one's class); the cell holding
    the box centre is positive under the same condition, and a shape left with no cell gets
    the one at the centroid of its visible part. Smaller boxes win where boxes compete.
    Shapes showing less than ``VISIBLE_MIN`` are not objects; from ``IGNORE_MIN`` up their
    cells are ignored.
    """
    centres = (np.arange(GRID) + 0.5) * STRIDE
    px, py = np.meshgrid(centres, centres)
    cls = np.full((GRID, GRID), -1, np.int64)
    ltrb = np.zeros((GRID, GRID, 4), np.float32)
    areas = (boxes_px[:, 2] - boxes_px[:, 0]) * (boxes_px[:, 3] - boxes_px[:, 1])
    r = CENTRE_RADIUS * STRIDE

    def cells(k: int) -> np.ndarray:
        x0, y0, x1, y1 = boxes_px[k]
        visible_cell = fallback[k]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        free = (cell_owner <= 0) | (cell_owner == k + 1)
        pos = (px > x0) & (px < x1) & (py > y0) & (py < y1)
        pos &= (np.abs(px - cx) < r) & (np.abs(py - cy) < r) & free
        gx = min(GRID - 1, max(0, int(cx // STRIDE)))
        gy = min(GRID - 1, max(0, int(cy // STRIDE)))
        pos[gy, gx] |= free[gy, gx]
        if not pos.any() and visible_cell is not None:
            pos[visible_cell[1], visible_cell[0]] = True
        out: np.ndarray = pos
        return out

    for k in np.flatnonzero((visible >= IGNORE_MIN) & (visible < VISIBLE_MIN)):
        cls[cells(int(k))] = IGNORE
    for k in np.argsort(-areas):
        if visible[k] < VISIBLE_MIN:
            continue
        pos = cells(int(k))
        x0, y0, x1, y1 = boxes_px[k]
        cls[pos] = classes[k]
        ltrb[pos] = np.stack([px - x0, py - y0, x1 - px, y1 - py], -1)[pos] / STRIDE
    return cls.reshape(-1), np.maximum(ltrb, 0.0).reshape(-1, 4)


def cell_view(
    frame: DetectorFrame, transform: Transform
) -> tuple[np.ndarray, list[tuple[int, int] | None]]:
    """(GRID×GRID owner index seen at each cell centre, -1 on padding; per shape the cell at
    the centroid of its visible pixels, None when none shows)."""
    h, w = frame.owner.shape
    u = (np.arange(GRID) + 0.5) / GRID
    fx = np.floor((u * transform.sx + transform.ox) * w).astype(np.int64)
    fy = np.floor((u * transform.sy + transform.oy) * h).astype(np.int64)
    inside = ((fy >= 0) & (fy < h))[:, None] & ((fx >= 0) & (fx < w))[None, :]
    cell_owner = np.where(
        inside, frame.owner[np.clip(fy, 0, h - 1)][:, np.clip(fx, 0, w - 1)], -1
    ).astype(np.int64)
    fallback: list[tuple[int, int] | None] = []
    for k in range(len(frame.shapes)):
        ys, xs = np.nonzero(frame.owner == k + 1)
        if not len(xs):
            fallback.append(None)
            continue
        mx = ((xs.mean() + 0.5) / w - transform.ox) / transform.sx
        my = ((ys.mean() + 0.5) / h - transform.oy) / transform.sy
        fallback.append(
            (min(GRID - 1, max(0, int(mx * GRID))), min(GRID - 1, max(0, int(my * GRID))))
        )
    return cell_owner, fallback


def dataset(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` preprocessed frames (packed uint8) with per-cell classes and distances:
    ``TOUCHING_SHARE`` of them with touching and overlapping shapes, ``JPEG_SHARE`` through a
    JPEG round trip."""
    rng = np.random.default_rng(seed)
    pre = float_preprocessor(SIZE, PREPROCESS)
    xs = np.empty((n, SIZE, SIZE, 3), np.uint8)
    cls = np.empty((n, GRID * GRID), np.int64)
    ltrb = np.empty((n, GRID * GRID, 4), np.float32)
    for i in range(n):
        frame = detector_sample(rng, touching=bool(rng.random() < TOUCHING_SHARE))
        image = jpeg(rng, frame.image) if rng.random() < JPEG_SHARE else frame.image
        h, w = image.shape[:2]
        tensor, transform = pre.to_array(image)
        xs[i] = pack(tensor, PREPROCESS)
        shapes = list(frame.shapes)
        boxes = to_model(truth_boxes(shapes, w, h), transform) * SIZE
        cell_owner, fallback = cell_view(frame, transform)
        cls[i], ltrb[i] = cell_targets(
            boxes,
            np.array([shape_class(s) for s in shapes], np.int64),
            frame.visible,
            cell_owner,
            fallback,
        )
    return xs, cls, ltrb


def frames(seed: int, n: int, touching: bool = False) -> list[tuple[np.ndarray, Boxes]]:
    """``n`` raw BGR frames with their ground truth (boxes normalized to the frame; shapes
    showing less than ``VISIBLE_MIN`` of their area left out)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        frame = detector_sample(rng, touching)
        h, w = frame.image.shape[:2]
        shapes = frame.truth()
        out.append(
            (
                frame.image,
                Boxes.truth(truth_boxes(shapes, w, h).tolist(), [shape_class(s) for s in shapes]),
            )
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
    for d in DILATIONS:
        x = block(x, WIDTH, dilation=d)
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
    """(sigmoid focal loss over all cells but ignored ones, 1 − GIoU over positive cells),
    both per positive."""
    pos = cls >= 0
    counted = tf.cast(cls != IGNORE, tf.float32)[..., None]
    n_pos = tf.maximum(tf.reduce_sum(tf.cast(pos, tf.float32)), 1.0)
    onehot = tf.one_hot(tf.where(pos, cls, 0), len(SHAPES)) * tf.cast(pos, tf.float32)[..., None]
    p = tf.sigmoid(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=logits)
    pt = p * onehot + (1 - p) * (1 - onehot)
    alpha = 0.25 * onehot + 0.75 * (1 - onehot)
    focal = tf.reduce_sum(counted * alpha * (1 - pt) ** 2 * ce) / n_pos

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


@dataclass(frozen=True, slots=True)
class SceneScore:
    """How a model does at its shipped threshold, frame by frame.

    exact: frames whose detected labels, as a multiset, equal the truth's; matched: truth
    objects matched (one to one) by a detection of their label with IoU ≥ 0.5.
    """

    frames: int
    exact: int
    objects: int
    matched: int

    @property
    def exact_rate(self) -> float:
        return self.exact / max(self.frames, 1)

    @property
    def match_rate(self) -> float:
        return self.matched / max(self.objects, 1)

    def text(self) -> str:
        return (
            f"exact label set {self.exact}/{self.frames} frames ({100 * self.exact_rate:.1f} %), "
            f"objects matched {self.matched}/{self.objects} ({100 * self.match_rate:.1f} %)"
        )


def scene_score(model_dir: Path, data: Iterable[tuple[np.ndarray, Boxes]]) -> SceneScore:
    """Exact-label-set and object-match counts of a model directory at the threshold in its
    manifest."""
    engine = Engine.load(model_dir, RuntimeOptions(threads=1))
    n = exact = objects = matched = 0
    for image, truth in data:
        pred = Boxes.of(engine.infer(image).detections)
        n += 1
        exact += sorted(pred.classes.tolist()) == sorted(truth.classes.tolist())
        objects += len(truth)
        matched += len(match(pred, truth))
    return SceneScore(n, exact, objects, matched)


def choose_postprocess(
    model_dir: Path, data: list[tuple[np.ndarray, Boxes]]
) -> tuple[dict[str, Any], SceneScore]:
    """The score threshold and NMS IoU (from ``THRESHOLDS`` × ``IOUS``) under which the
    model gets the most frames' label sets exactly right plus the most objects matched on
    ``data`` (validation frames, none of them test frames), with that score.

    Raising the threshold after NMS keeps exactly the boxes NMS at that threshold would, so
    one run per IoU serves every threshold. Ties keep the first pair in (IoU, threshold) order.
    """
    best: tuple[float, dict[str, Any], SceneScore] | None = None
    for iou in IOUS:
        engine = Engine.load(
            model_dir,
            RuntimeOptions(threads=1),
            Overrides(threshold=min(THRESHOLDS), iou_threshold=iou),
        )
        runs = [(Boxes.of(engine.infer(image).detections), truth) for image, truth in data]
        for threshold in THRESHOLDS:
            n = exact = objects = matched = 0
            for pred, truth in runs:
                keep = pred.scores >= threshold
                kept = Boxes(pred.boxes[keep], pred.classes[keep], pred.scores[keep])
                n += 1
                exact += sorted(kept.classes.tolist()) == sorted(truth.classes.tolist())
                objects += len(truth)
                matched += len(match(kept, truth))
            score = SceneScore(n, exact, objects, matched)
            value = score.exact_rate + score.match_rate
            if best is None or value > best[0]:
                settings = {**POSTPROCESS, "threshold": threshold, "iou_threshold": iou}
                best = (value, settings, score)
    assert best is not None
    return best[1], best[2]


def clip_frames(clip: Path) -> Iterator[tuple[np.ndarray, Boxes]]:
    """Frames of the sample clip with the truth in the JSON file next to it (all its shapes,
    boxes normalized to the frame). Raises FileNotFoundError / RuntimeError when the clip or
    its truth is missing or unreadable (remake both with scripts/make_sample_clip.py)."""
    truth = json.loads(clip.with_suffix(".json").read_text(encoding="utf-8"))["frames"]
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {clip}; remake it with scripts/make_sample_clip.py")
    try:
        for entry in truth:
            ok, image = cap.read()
            if not ok:
                raise RuntimeError(
                    f"{clip} ends before its truth does (frame {entry['index']}); remake both "
                    "with scripts/make_sample_clip.py"
                )
            objects = entry["objects"]
            yield (
                image,
                Boxes.truth(
                    [o["box"] for o in objects], [SHAPES.index(o["label"]) for o in objects]
                ),
            )
    finally:
        cap.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=7000, help="training frames")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument(
        "--holdout", type=int, default=500, help="held-out test frames, of each kind"
    )
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument(
        "--measure",
        action="store_true",
        help="no training: measure the model in --out again with the current edge (no "
        "TensorFlow) and update its manifest figures (and models/README.md for the default)",
    )
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="model folder (models/README.md is updated only for the default)",
    )
    args = parser.parse_args()
    if args.measure:
        return measure(Path(args.out), args.seed, args.holdout)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level="WARNING")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)

    t0 = time.perf_counter()
    xs, cls, ltrb = dataset(args.seed, args.train)
    apart = frames(args.seed + 1000, args.holdout)
    touching = frames(args.seed + 3000, args.holdout, touching=True)
    validation = frames(args.seed + 4000, 200) + frames(args.seed + 4500, 300, touching=True)
    half = args.calibration // 2
    calibration = [image for image, _ in frames(args.seed + 2000, args.calibration - half)]
    calibration += [image for image, _ in frames(args.seed + 2500, half, touching=True)]
    print(f"data: {args.train} training frames in {seconds(time.perf_counter() - t0)}")

    train_model, export_model = build(tf)
    batch = 32
    steps = args.epochs * (args.train // batch)
    opt = tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(2e-3, steps))
    scale = np.float32(1.0 / PREPROCESS.std[0])

    @tf.function  # type: ignore[untyped-decorator]
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
    compared = [image for image, _ in apart[:100] + touching[:100]]
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        export_model.export(str(saved), verbose=False)
        report = quantize(
            Request(
                model=saved,
                out=out,
                calibration=calibration,
                holdout=compared,
                io="uint8",
                preprocess=PREPROCESS,
                labels=_labels(Path(tmp)),
                task="detection",
                manifest={
                    "name": NAME,
                    "version": "1.1.0",
                    "description": "Synthetic demo detector: circles, squares and triangles "
                    "(any colour, touching or partly hidden) on the edge.scene background; "
                    "YOLOv8-layout output. Not for real-world images.",
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
        float_map, _ = evaluate(float_dir, apart)
        float_touching, _ = evaluate(float_dir, touching)
    postprocess, validation_score = choose_postprocess(out, validation)
    update_manifest(out, {"postprocess": postprocess})
    print(
        f"postprocess chosen on {len(validation)} validation frames: threshold "
        f"{postprocess['threshold']}, NMS IoU {postprocess['iou_threshold']} "
        f"({validation_score.text()})"
    )
    measured = engine_metrics(out, args.seed, args.holdout)
    int8_map = measured["map50"]
    size = (out / MODEL_FILE).stat().st_size
    metrics = {
        **measured,
        "map50_float": round(float_map, 4),
        "map50_touching_float": round(float_touching, 4),
        "visible_min": VISIBLE_MIN,
        "train_images": args.train,
        "epochs": args.epochs,
        "train_seconds": round(train_time, 1),
    }
    update_manifest(out, {"metrics": metrics})
    print(
        f"\n{NAME}: mAP@0.5 {int8_map:.4f} int8 / {float_map:.4f} float (edge Engine), "
        f"{len(apart)} held-out frames of shapes apart; mAP@0.5 "
        f"{measured['map50_touching']:.4f} int8 / {float_touching:.4f} float touching; "
        f"clip label sets {100 * measured['clip_exact_label_set']:.1f} %"
        f"\n  {size_text(size)}; trained in {seconds(train_time)}"
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

- **Task**: detection of 3 classes, `circle`, `square`, `triangle` (any of the 4 colours),
  also when shapes touch or partly cover each other.
- **Output**: one tensor `[1, 7, {GRID * GRID}]`: rows cx, cy, w, h normalized 0..1 to the
  {SIZE}×{SIZE} input, then 3 sigmoid class scores: the layout of ultralytics' YOLOv8 TFLite
  export, decoded by edge's YOLOv8 decoder (class-aware NMS, threshold
  {postprocess["threshold"]}, IoU {postprocess["iou_threshold"]}: the pair, of
  {len(THRESHOLDS)} thresholds × {len(IOUS)} IoUs, that got the most label sets and objects
  right on {len(validation)} validation frames, seeds {args.seed + 4000} and
  {args.seed + 4500}).
- **Truth for partly hidden shapes**: a shape keeps its whole box (`Shape.box()`, clipped to
  the frame) while at least {100 * VISIBLE_MIN:.0f} % of its area shows; one hidden more than that
  (by shapes drawn over it or the frame border) is not an object. In training, shapes showing
  {100 * IGNORE_MIN:.0f}–{100 * VISIBLE_MIN:.0f} % are ignored rather than taught as background.
- **Data**: synthetic, drawn by `edge.scene` on the noisy gradient background, shapes
  rotated ±20°; frames {frames_text}, letterboxed (pad 114) by edge's own `Preprocessor` to
  {SIZE}×{SIZE}. Two kinds of frame: *apart* (1–5 shapes with boxes ≥ 4 px apart, 65 % of
  frames with the sizes `MovingScene` uses, 12–30 % of the short side, 35 % with 8–14 %) and
  *touching* (2–6 shapes, 80 % of frames 12–30 %, 20 % 7–16 %; boxes may overlap, centres as
  close to the border as `MovingScene` lets them, and about half the shapes moved next to
  another one, from a small gap to covering half of it, drawn in random order).
  {args.train} training frames (seed {args.seed}), {100 * TOUCHING_SHARE:.0f} % of them touching and
  {100 * JPEG_SHARE:.0f} % through a JPEG round trip (quality 30–90, as compressed camera streams
  look); {args.calibration} calibration frames (half of each kind, seeds
  {args.seed + 2000}/{args.seed + 2500}).
- **Architecture**: anchor-free grid detector at stride {STRIDE} ({GRID}×{GRID} cells): three
  3×3 stride-2 convolutions (16/24/48 filters), {len(DILATIONS)} depthwise-separable blocks
  of {WIDTH} (dilations {", ".join(map(str, DILATIONS))}: a receptive field of
  {RECEPTIVE_FIELD} px),
  a 1×1 class head and a 1×1 distance head (left/top/right/bottom, ReLU). Cells within
  {CENTRE_RADIUS} strides of a box centre are positives (FCOS centre sampling) unless they show
  another shape; sigmoid focal loss + GIoU loss; {args.epochs} epochs of Adam with cosine
  decay, batch {batch}; training took {seconds(train_time)}. Box decoding (a fixed 1×1 conv
  plus the cell-centre grid) and the sigmoid run inside the graph.
- **Quantization**: full integer, uint8 input and output, by `edge quantize`'s Python API
  from a SavedModel.
- **Size and speed**: {size_text(size)} (float {size_text(report.float_bytes)}); invoke p50
  {lat.p50_ms if lat else float("nan"):.2f} ms at 1 thread on the machine that built it
  (x86_64), measured by `edge.bench`.
<!-- {FIGURES}: begin -->
{figures_text(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"])}
<!-- {FIGURES}: end -->
""",
    )
    return 0 if int8_map >= 0.8 else 1


FIGURES = f"{NAME} figures"  # the part of the section --measure rewrites


def figures_text(m: dict[str, Any]) -> str:
    """The section's measured figures (how well it does, its limits), from the manifest's
    ``metrics`` as training or ``--measure`` wrote them."""
    ap, tap, q = m["ap50_per_class"], m["ap50_touching_per_class"], m["quantization"]
    return f"""- **How well it does** (int8 model through edge's Engine; boxes in frame coordinates
  vs `Shape.box()`; figures by `scripts/make_shapes_detector.py --measure`, which re-measures
  them with the current edge and no TensorFlow, float figures from training):
  - {m["holdout_images"]} held-out *apart* frames (seed {m["holdout_seed"]}): mAP@0.5
    **{m["map50"]:.3f}** ({m["map50_float"]:.3f} float); AP circle {ap["circle"]:.3f}, square
    {ap["square"]:.3f}, triangle {ap["triangle"]:.3f}.
  - {m["touching_holdout_images"]} held-out *touching* frames (seed
    {m["touching_holdout_seed"]}): mAP@0.5 **{m["map50_touching"]:.3f}**
    ({m["map50_touching_float"]:.3f} float; AP circle {tap["circle"]:.3f}, square
    {tap["square"]:.3f}, triangle {tap["triangle"]:.3f}); at the shipped threshold
    {100 * m["touching_exact_label_set"]:.1f} % of frames get exactly the right labels and
    {100 * m["touching_object_match"]:.1f} % of shapes a box of their label with IoU ≥ 0.5.
  - The sample clip `{m["clip"]}` (never trained or tuned on; shapes move, touch and
    pass over each other; truth = every shape): at the shipped
    threshold **{100 * m["clip_exact_label_set"]:.1f} %** of its {m["clip_frames"]} frames get
    exactly the right labels, and **{100 * m["clip_object_match"]:.1f} %** of its
    {m["clip_objects"]} shapes a box of their label with IoU ≥ 0.5.
  - int8 recalls {q["box_recall"]:.1f} % of the float model's boxes (mean IoU
    {q["mean_iou"]:.3f}) on 100 frames of each kind.
- **Limits**: only these synthetic shapes on this kind of background. Shapes that (nearly)
  touch or overlap remain its weak spot: {100 - 100 * m["touching_exact_label_set"]:.0f} % of
  the held-out touching frames and {100 - 100 * m["clip_exact_label_set"]:.0f} % of the clip's
  frames get a wrong label set, mostly a weakly scored second label on a shape right next to
  another, or a partly hidden shape missed or named wrongly. Two shapes of the same class whose
  boxes overlap more than the NMS IoU merge into one detection; touching shapes of the same
  colour form one blob whose split is a guess; shapes cut deeply by the frame border were never
  in the training data."""


def engine_metrics(out: Path, seed: int, holdout: int) -> dict[str, Any]:
    """The manifest figures that depend on edge's Engine alone (preprocessing, runtime,
    decoding), measured on the held-out frames and the sample clip."""
    apart = frames(seed + 1000, holdout)
    touching = frames(seed + 3000, holdout, touching=True)
    int8_map, per_class = evaluate(out, apart)
    touching_map, touching_per_class = evaluate(out, touching)
    touching_score = scene_score(out, touching)
    clip = scene_score(out, clip_frames(CLIP))
    return {
        "map50": round(int8_map, 4),
        "ap50_per_class": {c: round(a, 4) for c, a in zip(SHAPES, per_class, strict=True)},
        "holdout_images": len(apart),
        "holdout_seed": seed + 1000,
        "map50_touching": round(touching_map, 4),
        "ap50_touching_per_class": {
            c: round(a, 4) for c, a in zip(SHAPES, touching_per_class, strict=True)
        },
        "touching_exact_label_set": round(touching_score.exact_rate, 4),
        "touching_object_match": round(touching_score.match_rate, 4),
        "touching_holdout_images": len(touching),
        "touching_holdout_seed": seed + 3000,
        "clip": f"samples/{CLIP.name}",
        "clip_frames": clip.frames,
        "clip_objects": clip.objects,
        "clip_exact_label_set": round(clip.exact_rate, 4),
        "clip_object_match": round(clip.match_rate, 4),
    }


def measure(out: Path, seed: int, holdout: int) -> int:
    """``--measure``: the Engine figures of the model in ``out`` again, into its manifest and
    (for the bundled model) its README figures. No TensorFlow, no training."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    metrics = {**manifest["metrics"], **engine_metrics(out, seed, holdout)}
    update_manifest(out, {"metrics": metrics})
    print(
        f"{NAME}: mAP@0.5 {metrics['map50']:.4f} apart, {metrics['map50_touching']:.4f} "
        f"touching; clip label sets {100 * metrics['clip_exact_label_set']:.1f} %"
    )
    if out.resolve() == DEFAULT_OUT.resolve():
        update_section(FIGURES, figures_text(metrics))
    return 0


def _labels(tmp: Path) -> Path:
    path = tmp / "labels.txt"
    path.write_text("\n".join(SHAPES) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    sys.exit(main())
