"""Synthetic training and test data for the bundled shape models, drawn with ``edge.scene``
(the code the synthetic camera and the sample clip use) and preprocessed with edge's own
Preprocessor, so the models see at training time exactly the tensors edge feeds them later.

Tensors are kept as uint8 pixels ("packed") to save memory: for the 0..1 models here
(mean 0, std 255) unpacking with ``(p - mean) / std`` gives back the float tensor the
Preprocessor produced; :func:`pack` checks that round trip.
"""

from __future__ import annotations

import math

import numpy as np

from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec, Transform
from edge.scene import CLASSIFIER_LABELS, COLOURS, SHAPES, Shape, background, draw, random_shapes

# Frame sizes the detector is trained on: the daemon's usual camera modes, portrait, square.
DETECTOR_FRAMES = ((640, 480), (480, 640), (320, 240), (240, 320), (416, 416), (800, 600))


def float_preprocessor(size: int, config: PreprocessConfig) -> Preprocessor:
    """edge's Preprocessor for a float32 [1, size, size, 3] model input."""
    spec = TensorSpec(0, "input", (1, size, size, 3), np.dtype(np.float32))
    return Preprocessor(spec, config)


def pack(tensor: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The preprocessed float tensor [1,H,W,C] as uint8 pixels [H,W,C] (lossless for a scalar
    mean/std)."""
    mean, std = config.mean[0], config.std[0]
    pixels = np.round(tensor[0] * std + mean)
    out = np.clip(pixels, 0, 255).astype(np.uint8)
    if not np.allclose((out.astype(np.float32) - mean) / std, tensor[0], atol=1e-5):
        raise ValueError("this preprocessing is not a per-pixel affine map of 0..255 pixels")
    return out


def classifier_sample(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One BGR frame holding a single shape (random size, place, rotation) and its class id
    in ``CLASSIFIER_LABELS``."""
    short = int(rng.integers(64, 360))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 4, 16 / 9]))
    w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    kind = str(rng.choice(SHAPES))
    colour = str(rng.choice(list(COLOURS)))
    size = float(rng.uniform(0.3, 0.8)) * min(w, h)
    margin = size * 0.6
    shape = Shape(
        kind=kind,
        colour=colour,
        cx=float(rng.uniform(margin, w - margin)),
        cy=float(rng.uniform(margin, h - margin)),
        size=size,
        angle=float(rng.uniform(0, 360)),
    )
    image = background(rng, w, h)
    draw(image, shape)
    return image, CLASSIFIER_LABELS.index(f"{colour} {kind}")


def detector_sample(rng: np.random.Generator) -> tuple[np.ndarray, list[Shape]]:
    """One BGR frame with 1–5 shapes: mostly the sizes ``MovingScene`` uses (12–30 % of the
    short side), sometimes smaller ones (8–14 %)."""
    w, h = DETECTOR_FRAMES[int(rng.integers(len(DETECTOR_FRAMES)))]
    short = min(w, h)
    if rng.random() < 0.65:
        lo, hi = 0.12 * short, 0.30 * short
    else:
        lo, hi = 0.08 * short, 0.14 * short
    shapes = random_shapes(rng, w, h, int(rng.integers(1, 6)), lo, hi)
    image = background(rng, w, h)
    for s in shapes:
        draw(image, s)
    return image, shapes


def truth_boxes(shapes: list[Shape], width: int, height: int) -> np.ndarray:
    """N×4 x0,y0,x1,y1 boxes normalized to the frame, clipped to 0..1."""
    boxes = np.array([s.box() for s in shapes], np.float64).reshape(-1, 4)
    boxes /= np.array([width, height, width, height], np.float64)
    out: np.ndarray = np.clip(boxes, 0.0, 1.0)
    return out


def to_model(boxes: np.ndarray, transform: Transform) -> np.ndarray:
    """Frame-normalized boxes → model-input-normalized boxes (inverse of ``transform``)."""
    out = np.empty_like(boxes)
    out[:, 0::2] = (boxes[:, 0::2] - transform.ox) / transform.sx
    out[:, 1::2] = (boxes[:, 1::2] - transform.oy) / transform.sy
    return out


def shape_class(shape: Shape) -> int:
    """Detector class id (index in ``SHAPES``)."""
    return SHAPES.index(shape.kind)


def seconds(t: float) -> str:
    """``1 min 23 s`` style duration for the printed summaries."""
    m, s = divmod(math.ceil(t), 60)
    return f"{m} min {s} s" if m else f"{s} s"
