"""Synthetic scenes of coloured shapes on a textured background.

One drawing code serves three users so they can never drift apart: the scripts that train the
bundled classifier and detector, the ``synthetic`` frame source, and the sample clip. Coordinates
are pixels of the image being drawn; ``Shape.box()`` is x0, y0, x1, y1 in pixels (exclusive end).

The layout and noise are drawn from any :class:`Draws`: the scripts and tests pass numpy's
``Generator``; :class:`MovingScene` (the synthetic camera) uses :class:`SceneRandom`, so a daemon
on the synthetic source never imports ``numpy.random`` (its nine extension modules and the
``secrets``/``hmac`` it pulls in cost the daemon 1.8 MiB of resident memory, which a real camera
does not).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

SHAPES = ("circle", "square", "triangle")

# BGR, saturated enough to stay distinct after JPEG and YUV round trips.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 220),
    "green": (50, 190, 50),
    "blue": (220, 90, 30),
    "yellow": (30, 220, 230),
}

CLASSIFIER_LABELS = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)

# Noise values drawn per band of a background: its float64 temporaries stay under glibc's
# 128 KiB mmap threshold, so they reuse one small piece of the heap.
_BAND_VALUES = 12_288


@dataclass(frozen=True, slots=True)
class Shape:
    """A shape centred at (cx, cy) with outer size ``size`` (pixels) and rotation in degrees."""

    kind: str
    colour: str
    cx: float
    cy: float
    size: float
    angle: float = 0.0
    vx: float = 0.0
    vy: float = 0.0

    def polygon(self) -> np.ndarray:
        """Vertices (N×2 float) of a square or triangle; circles have none."""
        r = self.size / 2
        if self.kind == "square":
            pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
        elif self.kind == "triangle":
            pts = [(0.0, -r), (r, r * 0.8), (-r, r * 0.8)]
        else:
            return np.zeros((0, 2))
        a = math.radians(self.angle)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        out: np.ndarray = np.asarray(pts) @ rot.T + (self.cx, self.cy)
        return out

    def box(self) -> tuple[float, float, float, float]:
        """Tight bounding box in pixels: x0, y0, x1, y1."""
        if self.kind == "circle":
            r = self.size / 2
            return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)
        p = self.polygon()
        return (
            float(p[:, 0].min()),
            float(p[:, 1].min()),
            float(p[:, 0].max()),
            float(p[:, 1].max()),
        )


def draw(image: np.ndarray, shape: Shape) -> None:
    """Draw ``shape`` filled and anti-aliased, in place, on an H×W×3 uint8 image.

    Plain numpy, so a synthetic camera needs no OpenCV: each pixel (centre at integer
    coordinates) is blended with the shape colour by its coverage, 1 − d clipped to 0..1, where
    d is the pixel centre's signed distance in pixels to the outline (negative inside). Only the
    shape's bounding box is touched.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = shape.box()
    xa, ya = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
    xb, yb = min(w, math.ceil(x1) + 2), min(h, math.ceil(y1) + 2)
    if xa >= xb or ya >= yb:
        return
    xs = np.arange(xa, xb, dtype=np.float32)[None, :]
    ys = np.arange(ya, yb, dtype=np.float32)[:, None]
    if shape.kind == "circle":
        dist = np.hypot(xs - np.float32(shape.cx), ys - np.float32(shape.cy))
        dist -= np.float32(shape.size / 2)
    else:
        dist = _polygon_distance(shape.polygon(), xs, ys)
    cover = np.clip(np.float32(1.0) - dist, 0.0, 1.0)[..., None]
    region = image[ya:yb, xa:xb]
    blended = region.astype(np.float32)
    blended += cover * (np.asarray(COLOURS[shape.colour], np.float32) - blended)
    np.rint(blended, out=blended)
    region[...] = blended.astype(np.uint8)


def _polygon_distance(pts: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) from grid points to a convex polygon's outline,
    exact along the edges and slightly under at the corners, which only softens their tips."""
    nxt = np.roll(pts, -1, axis=0)
    edges = nxt - pts
    turn = float(np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1]))
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1) * (1.0 if turn > 0 else -1.0)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    offsets = np.sum(normals * pts, axis=1)
    dist: np.ndarray | None = None
    for (nx, ny), c in zip(normals.astype(np.float32), offsets.astype(np.float32), strict=True):
        d = xs * nx + ys * ny - c
        dist = d if dist is None else np.maximum(dist, d)
    assert dist is not None
    return dist


class Draws(Protocol):
    """The random draws a scene is made of; numpy's ``Generator`` and :class:`SceneRandom` fit."""

    def uniform(self, low: float, high: float, /) -> float: ...

    def choice(self, seq: Sequence[str], /) -> Any: ...

    def normal(self, loc: float, scale: float, size: tuple[int, ...], /) -> Any: ...


class SceneRandom(random.Random):
    """The standard library's Mersenne Twister plus the one array draw a scene needs, so that
    drawing a scene needs no ``numpy.random``. Deterministic in its seed."""

    def normal(self, loc: float, scale: float, size: tuple[int, ...], /) -> np.ndarray:
        """Normally distributed float32 samples of shape ``size`` (Box–Muller on 24-bit
        uniforms in (0, 1), so the logarithm never sees 0)."""
        n = math.prod(size)
        pairs = (n + 1) // 2
        bits = np.frombuffer(self.randbytes(8 * pairs), dtype=np.uint32) >> 8
        u = (bits.astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
        radius = np.sqrt(np.float32(-2.0) * np.log(u[:pairs]))
        angle = np.float32(2 * math.pi) * u[pairs:]
        z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
        out: np.ndarray = (z * np.float32(scale) + np.float32(loc)).reshape(size)
        return out


def background(rng: Draws, width: int, height: int) -> np.ndarray:
    """A dim grey gradient with sensor-like noise, different for every call.

    Drawn a band of rows at a time, in the order one whole-image draw would take the values (so
    a numpy ``Generator`` gives the same image either way): the temporaries of a whole 640×480
    image (about 10 MB of floats) would stay in the drawing thread's malloc arena after they are
    freed, resident for the life of the process."""
    base = rng.uniform(60, 140)
    gx = np.linspace(0, rng.uniform(-40, 40), width, dtype=np.float32)
    gy = np.linspace(0, rng.uniform(-40, 40), height, dtype=np.float32)
    img = np.empty((height, width, 3), np.uint8)
    rows = max(1, _BAND_VALUES // (3 * width))
    for y in range(0, height, rows):
        plane = base + gy[y : y + rows, None] + gx[None, :]
        band = np.repeat(plane[:, :, None], 3, axis=2)
        band += np.asarray(rng.normal(0, 6, band.shape), dtype=np.float32)
        img[y : y + rows] = np.clip(band, 0, 255)
    return img


def random_shapes(
    rng: Draws,
    width: int,
    height: int,
    count: int,
    min_size: float,
    max_size: float,
    speed: float = 0.0,
    max_tries: int = 200,
    *,
    min_gap: float = 4.0,
    margin: float = 0.75,
) -> list[Shape]:
    """Up to ``count`` shapes inside the image whose boxes keep ``min_gap`` apart.

    speed: maximum velocity in pixels per second, for moving scenes (0 for stills).
    min_gap: pixels kept between any two boxes. A negative gap lets two boxes overlap by up to
    ``-min_gap`` pixels along one axis (any amount along the other), so shapes touch or partly
    cover each other; list order is drawing order, later shapes on top.
    margin: least distance from a shape's centre to the image border, as a fraction of its
    size. 0.75 keeps every rotated shape whole; below about 0.65 a rotated square or triangle
    may be cut by the border.
    """
    shapes: list[Shape] = []
    for _ in range(max_tries):
        if len(shapes) == count:
            break
        size = float(rng.uniform(min_size, max_size))
        border = size * margin
        s = Shape(
            kind=str(rng.choice(SHAPES)),
            colour=str(rng.choice(list(COLOURS))),
            cx=float(rng.uniform(border, width - border)),
            cy=float(rng.uniform(border, height - border)),
            size=size,
            angle=float(rng.uniform(-20, 20)),
            vx=float(rng.uniform(-speed, speed)),
            vy=float(rng.uniform(-speed, speed)),
        )
        if all(not _overlap(s.box(), o.box(), pad=min_gap) for o in shapes):
            shapes.append(s)
    return shapes


def render(shapes: list[Shape], canvas: np.ndarray) -> np.ndarray:
    """Draw ``shapes`` on a copy of ``canvas`` and return it."""
    img = canvas.copy()
    for s in shapes:
        draw(img, s)
    return img


class MovingScene:
    """Shapes drifting and bouncing off the edges; ``frame(t)`` is deterministic in (seed, t).

    draws: what the layout and the background noise are drawn with, made from ``seed``. The
    default keeps ``numpy.random`` out of the process; the sample clip and the benchmark model's
    calibration scenes were made with ``numpy.random.default_rng``, and their scripts pass it so
    that they still rebuild the same files.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        count: int = 3,
        seed: int = 0,
        min_size: float | None = None,
        max_size: float | None = None,
        speed: float | None = None,
        draws: Callable[[int], Draws] = SceneRandom,
    ) -> None:
        self.width = width
        self.height = height
        rng = draws(seed)
        short = min(width, height)
        self._canvas = background(rng, width, height)
        self._shapes = random_shapes(
            rng,
            width,
            height,
            count,
            min_size if min_size is not None else short * 0.12,
            max_size if max_size is not None else short * 0.3,
            speed=speed if speed is not None else short * 0.25,
        )

    def shapes_at(self, t: float) -> list[Shape]:
        """Shape positions at ``t`` seconds, reflected at the image borders."""
        out = []
        for s in self._shapes:
            r = s.size * 0.6
            out.append(
                replace(
                    s,
                    cx=_bounce(s.cx + s.vx * t, r, self.width - r),
                    cy=_bounce(s.cy + s.vy * t, r, self.height - r),
                )
            )
        return out

    def frame(self, t: float) -> tuple[np.ndarray, list[Shape]]:
        shapes = self.shapes_at(t)
        return render(shapes, self._canvas), shapes


def _bounce(x: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return lo
    m = (x - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


def _overlap(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float], pad: float
) -> bool:
    return not (a[2] + pad < b[0] or b[2] + pad < a[0] or a[3] + pad < b[1] or b[3] + pad < a[1])
