#!/usr/bin/env python3
"""Render a clip of shapes entering the frame, crossing a zone and leaving, with its truth.

Usage: python scripts/make_zone_clip.py --out zones.mp4 [--seed 0] [--fps 10] [--width 640]
[--height 480]

Four shapes the bundled ``shapes-detector`` detects (80-100 px, drawn by ``edge.scene`` on its
background) travel straight lines across the frame: one low through the zone, one along the
top past it, one through the zone's upper part against the first (their boxes pass about
30 px apart), and one up from the bottom edge through the zone. The zone is a trapezoid on
the lower half, not drawn; a shape is in it by its box's bottom centre.

Every change a tracker can see (a shape entering the frame, entering the zone, leaving the
zone, leaving the frame) happens at a whole second plus ``PHASE``: shapes move piecewise at
constant speed between those moments, so at every whole second the truth has been steady for
``1 - PHASE`` seconds and a tracker's counts, which lag the truth by its confirmation and
timeout delays, can be compared with it exactly. A shape is in the frame while at least 40 % of
its area shows (the detector's truth rule).

Next to the clip (MPEG-4 Part 2, like ``samples/shapes.mp4``), a JSON file of the same name
holds the zone, each object's label and transition times, and per frame the objects in it with
their ids, boxes (x0, y0, x1, y1 normalized to the frame, clipped) and whether they are in the
zone. Seed, size and rate decide everything (kinds, colours, sizes, speeds): the same
arguments give the same truth, and the same bytes with the same OpenCV build.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes_data import VISIBLE_MIN, area, owner_map

from edge.scene import COLOURS, SHAPES, Shape, background, render

PHASE = 0.15  # transitions happen at whole seconds plus this
ZONE_NAME = "lawn"
# Corners normalized to the frame, clockwise on screen; convex (the truth test below needs it).
ZONE = ((0.30, 0.55), (0.72, 0.55), (0.85, 0.92), (0.18, 0.92))
MIN_DWELL_S = 0.3
# (direction, lane as a fraction of the frame, first transition time): the horizontal lanes
# are centre heights, the vertical one a centre x.
LANES = (
    ("right", 0.76, 0.0),
    ("left", 0.22, 1.0),
    ("left", 0.50, 2.0),
    ("up", 0.45, 6.0),
)


@dataclass(frozen=True, slots=True)
class Mover:
    """One shape on a straight path: knots (path distance px, time s) joined at constant speed."""

    shape: Shape  # its size, kind, colour and angle; the centre is set by ``at``
    start: tuple[float, float]
    direction: tuple[float, float]
    knots: tuple[tuple[float, float], ...]

    def distance(self, t: float) -> float:
        """Path distance at ``t``, extrapolated with the first or last speed."""
        k = self.knots
        i = 0 if t <= k[0][1] else len(k) - 2
        for j in range(len(k) - 1):
            if k[j][1] <= t <= k[j + 1][1]:
                i = j
                break
        (s0, t0), (s1, t1) = k[i], k[i + 1]
        return s0 + (s1 - s0) * (t - t0) / (t1 - t0)

    def at(self, s: float) -> Shape:
        return replace(
            self.shape,
            cx=self.start[0] + self.direction[0] * s,
            cy=self.start[1] + self.direction[1] * s,
        )


def visible(shape: Shape, width: int, height: int) -> float:
    """Share of the shape's area inside the frame."""
    return min(1.0, float(np.count_nonzero(owner_map([shape], width, height))) / area(shape))


def truth_box(shape: Shape, width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = shape.box()
    return [
        round(min(max(v / d, 0.0), 1.0), 5)
        for v, d in ((x0, width), (y0, height), (x1, width), (y1, height))
    ]


def in_zone(box: list[float]) -> bool:
    """Bottom centre inside the convex zone: on the inner side of every edge (own test, not
    edge.zones', so the truth does not depend on the code it checks)."""
    x, y = (box[0] + box[2]) / 2, min(box[3], 1.0 - 1e-9)
    n = len(ZONE)
    sides = [
        (ZONE[(i + 1) % n][0] - ZONE[i][0]) * (y - ZONE[i][1])
        - (ZONE[(i + 1) % n][1] - ZONE[i][1]) * (x - ZONE[i][0])
        for i in range(n)
    ]
    return all(v > 0 for v in sides) or all(v < 0 for v in sides)


def bisect(f: Callable[[float], bool], lo: float, hi: float) -> float:
    """The distance in lo..hi where the boolean f flips (f(lo) != f(hi)), to 0.01 px."""
    a = f(lo)
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        if f(mid) == a:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def plan(rng: np.random.Generator, width: int, height: int) -> list[Mover]:
    """The shapes and their timed paths: transitions at whole seconds + PHASE."""
    movers = []
    # Every kind at least once, so each label's count is checked.
    kinds = [*(str(k) for k in rng.permutation(SHAPES)), str(rng.choice(SHAPES))]
    for (direction, lane, first), kind in zip(LANES, kinds, strict=True):
        size = float(rng.uniform(80, 100))
        shape = Shape(
            kind=kind,
            colour=str(rng.choice(list(COLOURS))),
            cx=0.0,
            cy=0.0,
            size=size,
            angle=float(rng.uniform(-10, 10)),
        )
        speed = float(rng.uniform(90, 130))  # px/s, nominal
        off = size  # start and end this far outside the frame
        if direction == "right":
            start, step, length = (-off, lane * height), (1.0, 0.0), width + 2 * off
        elif direction == "left":
            start, step, length = (width + off, lane * height), (-1.0, 0.0), width + 2 * off
        else:
            start, step, length = (lane * width, height + off), (0.0, -1.0), height + 2 * off
        m = Mover(shape, start, step, ((0.0, 0.0), (1.0, 1.0)))

        def shown(s: float, m: Mover = m) -> bool:
            return visible(m.at(s), width, height) >= VISIBLE_MIN

        def inside(s: float, m: Mover = m) -> bool:
            return shown(s, m) and in_zone(truth_box(m.at(s), width, height))

        mid = length / 2
        marks = [bisect(shown, 0.0, mid)]
        samples = np.arange(marks[0] + 0.5, length - off, 1.0)
        flags = [inside(float(s)) for s in samples]
        for k in range(1, len(flags)):
            if flags[k] != flags[k - 1]:
                marks.append(bisect(inside, float(samples[k - 1]), float(samples[k])))
        marks.append(bisect(shown, mid, length))
        times = [first + PHASE]
        for a, b in itertools.pairwise(marks):
            times.append(times[-1] + max(1, round((b - a) / speed)))
        knots = tuple(zip(marks, times, strict=True))
        movers.append(replace(m, knots=knots))
    return movers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("zones.mp4"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    w, h, fps = args.width, args.height, args.fps

    rng = np.random.default_rng(args.seed)
    movers = plan(rng, w, h)
    canvas = background(rng, w, h)
    end_t = max(m.knots[-1][1] for m in movers) + 1.0 + PHASE
    frames = math.ceil(end_t * fps) + 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(args.out), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h)
    )
    if not writer.isOpened():
        print(f"error: OpenCV cannot write {args.out} with the mp4v codec", file=sys.stderr)
        return 1
    truth = []
    try:
        for i in range(frames):
            t = i / fps
            shapes = [m.at(m.distance(t)) for m in movers]
            on = [visible(s, w, h) > 0 for s in shapes]
            boxes = [s.box() for s in shapes]
            for a in range(len(shapes)):
                for b in range(a + 1, len(shapes)):
                    if on[a] and on[b] and _gap(boxes[a], boxes[b]) < 4:
                        print(
                            f"error: objects {a + 1} and {b + 1} meet at {t:.1f} s with seed "
                            f"{args.seed}; pick another seed",
                            file=sys.stderr,
                        )
                        return 1
            writer.write(render([s for s, v in zip(shapes, on, strict=True) if v], canvas))
            objects = []
            for k, s in enumerate(shapes):
                if visible(s, w, h) >= VISIBLE_MIN:
                    box = truth_box(s, w, h)
                    objects.append(
                        {"id": k + 1, "label": s.kind, "box": box, "in_zone": in_zone(box)}
                    )
            truth.append({"index": i, "t": round(t, 3), "objects": objects})
    finally:
        writer.release()

    meta = {
        "clip": args.out.name,
        "generator": "scripts/make_zone_clip.py",
        "seed": args.seed,
        "width": w,
        "height": h,
        "fps": fps,
        "phase": PHASE,
        "box": "x0, y0, x1, y1 normalized to the frame, clipped to 0..1",
        "visible_min": VISIBLE_MIN,
        "zone": {"name": ZONE_NAME, "points": [list(p) for p in ZONE], "min_dwell_s": MIN_DWELL_S},
        "objects": [_summary(k + 1, m) for k, m in enumerate(movers)],
        "frames": [],
    }
    truth_path = args.out.with_suffix(".json")
    head = json.dumps(meta, indent=1)[:-2]  # everything up to the closing "]\n}"
    body = ",\n".join("  " + json.dumps(f, separators=(",", ":")) for f in truth)
    truth_path.write_text(head.replace('"frames": []', '"frames": [\n') + body + "\n ]\n}\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {frames} frames) and {truth_path}")
    return 0


def _summary(ident: int, m: Mover) -> dict[str, object]:
    times = [t for _, t in m.knots]
    zone = times[1:-1]
    return {
        "id": ident,
        "label": m.shape.kind,
        "colour": m.shape.colour,
        "size": round(m.shape.size, 1),
        "enters": times[0],
        "leaves": times[-1],
        "zone_visits": [[zone[i], zone[i + 1]] for i in range(0, len(zone) - 1, 2)],
    }


def _gap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Pixels between two boxes (negative when they overlap)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


if __name__ == "__main__":
    sys.exit(main())
