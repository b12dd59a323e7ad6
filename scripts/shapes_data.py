"""Synthetic training and test data for the bundled shape models, drawn with ``edge.scene``
(the code the synthetic camera and the sample clip use) and preprocessed with edge's own
Preprocessor, so the models see at training time exactly the tensors edge feeds them later.

Tensors are kept as uint8 pixels ("packed") to save memory: for the 0..1 models here
(mean 0, std 255) unpacking with ``(p - mean) / std`` gives back the float tensor the
Preprocessor produced; :func:`pack` checks that round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec, Transform
from edge.scene import CLASSIFIER_LABELS, COLOURS, SHAPES, Shape, background, draw, random_shapes

# Frame sizes the detector is trained on: the daemon's usual camera modes, portrait, square.
DETECTOR_FRAMES = ((640, 480), (480, 640), (320, 240), (240, 320), (416, 416), (800, 600))

# The truth rule for partly hidden shapes: a shape counts (with its whole box) while at least
# this fraction of its area shows; one hidden more than that is dropped from the truth.
VISIBLE_MIN = 0.4
# Centre-to-border distance (× size) for touching frames: what MovingScene's bounce allows.
BORDER = 0.6


def float_preprocessor(size: int, config: PreprocessConfig) -> Preprocessor:
    """edge's Preprocessor for a float32 [1, size, size, 3] model input."""
    spec = TensorSpec(0, "input", (1, size, size, 3), np.dtype(np.float32))
    return Preprocessor(spec, config)


def pack(tensor: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The preprocessed float tensor [1,H,W,C] as uint8 pixels [H,W,C] (lossless for a scalar
    mean/std)."""
    mean, std = config.mean[0], config.std[0]
    pixels = np.round(tensor[0] * std + mean)
    out: np.ndarray = np.clip(pixels, 0, 255).astype(np.uint8)
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


@dataclass(frozen=True, slots=True)
class DetectorFrame:
    """One drawn detector frame and what shows of each shape.

    image: BGR uint8. shapes: in drawing order (later ones on top). visible: per shape, the
    fraction of its area that shows (0..1) after the shapes drawn over it and the frame border
    have taken their share. owner: H×W int16, index + 1 of the shape each pixel shows (0 for
    background), a pixel belonging to a shape when its anti-aliased coverage is over half.
    """

    image: np.ndarray
    shapes: tuple[Shape, ...]
    visible: np.ndarray
    owner: np.ndarray

    def truth(self) -> list[Shape]:
        """The shapes the detector must find: those with at least ``VISIBLE_MIN`` showing."""
        return [s for s, v in zip(self.shapes, self.visible, strict=True) if v >= VISIBLE_MIN]


def detector_sample(rng: np.random.Generator, touching: bool = False) -> DetectorFrame:
    """One BGR frame with 1–5 shapes, mostly the sizes ``MovingScene`` uses (12–30 % of the
    short side), sometimes smaller ones (8–14 %).

    touching=False: boxes at least 4 px apart and shapes whole (the original data; same draws
    from ``rng`` as before). touching=True: 2–6 shapes (12–30 % or 7–16 %) whose centres may
    come as close to the border as ``MovingScene`` lets them (0.6 × size), boxes allowed to
    overlap, and about half the shapes moved next to another one, from a gap of a quarter of
    their mean size to covering half of it: touching and partly hidden shapes as a moving
    scene shows them when shapes pass each other.
    """
    w, h = DETECTOR_FRAMES[int(rng.integers(len(DETECTOR_FRAMES)))]
    short = min(w, h)
    if not touching:
        if rng.random() < 0.65:
            lo, hi = 0.12 * short, 0.30 * short
        else:
            lo, hi = 0.08 * short, 0.14 * short
        shapes = random_shapes(rng, w, h, int(rng.integers(1, 6)), lo, hi)
    else:
        if rng.random() < 0.8:
            lo, hi = 0.12 * short, 0.30 * short
        else:
            lo, hi = 0.07 * short, 0.16 * short
        count = int(rng.integers(2, 7))
        shapes = random_shapes(rng, w, h, count, lo, hi, min_gap=-0.3 * hi, margin=BORDER)
        shapes = _bring_together(rng, shapes, w, h)
    image = background(rng, w, h)
    for s in shapes:
        draw(image, s)
    owner = owner_map(shapes, w, h)
    visible = np.array(
        [np.count_nonzero(owner == k + 1) / area(s) for k, s in enumerate(shapes)], np.float64
    )
    # Rasterized shapes come out a few per cent larger than their exact area (the edge
    # pixels counted at half coverage), so fractions are that much generous; cap at 1.
    return DetectorFrame(image, tuple(shapes), np.minimum(visible, 1.0), owner)


def _bring_together(
    rng: np.random.Generator, shapes: list[Shape], width: int, height: int
) -> list[Shape]:
    """Move each shape after the first, with probability 1/2, next to a random other shape:
    centre distance 0.5–1.25 × their mean size, any direction, kept ``BORDER`` from the
    frame border."""
    out = list(shapes)
    for k in range(1, len(out)):
        if rng.random() >= 0.5:
            continue
        other = out[int(rng.choice([j for j in range(len(out)) if j != k]))]
        s = out[k]
        d = float(rng.uniform(0.5, 1.25)) * (s.size + other.size) / 2
        a = float(rng.uniform(0, 2 * math.pi))
        border = BORDER * s.size
        out[k] = replace(
            s,
            cx=float(np.clip(other.cx + d * math.cos(a), border, width - border)),
            cy=float(np.clip(other.cy + d * math.sin(a), border, height - border)),
        )
    return out


def owner_map(shapes: list[Shape], width: int, height: int) -> np.ndarray:
    """H×W int16: index + 1 of the topmost shape at each pixel, 0 for background."""
    owner = np.zeros((height, width), np.int16)
    for k, s in enumerate(shapes):
        x0, y0, x1, y1 = s.box()
        # Drawn in a small canvas around the shape only: the whole frame per shape would cost
        # more than drawing the frame itself.
        ix0, iy0 = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
        ix1, iy1 = min(width, math.ceil(x1) + 2), min(height, math.ceil(y1) + 2)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        canvas = np.zeros((iy1 - iy0, ix1 - ix0, 3), np.uint8)
        draw(canvas, replace(s, colour="red", cx=s.cx - ix0, cy=s.cy - iy0))
        # Red is (40, 40, 220) in BGR: over half coverage leaves more than 110 in channel 2.
        region = owner[iy0:iy1, ix0:ix1]
        region[canvas[:, :, 2] > COLOURS["red"][2] // 2] = k + 1
    return owner


def area(shape: Shape) -> float:
    """Area of the whole shape in pixels (also the part outside the frame)."""
    r = shape.size / 2
    if shape.kind == "circle":
        return math.pi * r * r
    if shape.kind == "square":
        return shape.size * shape.size
    return 1.8 * r * r  # base 2r, height 1.8r (see Shape.polygon)


def jpeg(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` through a JPEG round trip at quality 30–90: the blocking and the smoothed-away
    sensor noise of compressed camera streams (MJPG cameras, video files)."""
    quality = int(rng.integers(30, 91))
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG; check the opencv installation")
    out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if out is None:
        raise RuntimeError("OpenCV could not decode its own JPEG; check the opencv installation")
    return np.asarray(out)


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
