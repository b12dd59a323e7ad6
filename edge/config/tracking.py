"""The tables of tracking: ``[tracking]`` (how detections become tracked objects) and
``[[cameras.zones]]`` (named areas of a camera's frame), with the polygon check of a zone's
corners. Plain validated data like the rest of the schema; ``edge.tracking`` and
``edge.zones`` use them.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any

from edge.config.fields import Points, key
from edge.config.names import topic_name_problem

MAX_POINTS = 100  # corners of one zone: more only slows every check (and the crossing test)


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """[tracking]: how detections become tracked objects and how often a track reports.

    Times are seconds of frame time (``Frame.ts_mono``); distances are in the frame's
    normalized coordinates.
    """

    enabled: bool | None = key(
        None,
        "Track objects, publish their events and the camera's state; unset = on for cameras "
        "running a detection model, off for the others (classification and segmentation "
        "models have no objects to track; true with one of them is refused).",
    )
    min_hits: int = key(
        3,
        "Frames in a row an object must be detected in before it is tracked (and reported "
        "new); 1 = at once.",
        min=1,
        max=100,
    )
    min_score: float = key(
        0.6,
        "A new track is confirmed only once the median score of its detections (the last 10) "
        "reaches this: an object detected steadily but weakly is more often a false positive.",
        min=0.0,
        max=1.0,
    )
    max_age_s: float = key(
        1.0,
        "Seconds a tracked object may go undetected (hidden, missed) before its track ends.",
        min=0.0,
        max=3600.0,
    )
    iou_threshold: float = key(
        0.3,
        "Least overlap (IoU) between a track's predicted box and a detection for them to match.",
        min=0.01,
        max=1.0,
    )
    max_centre_distance: float = key(
        0.5,
        "Fallback match for detections below iou_threshold: the most distance between box "
        "centres, in diagonals of the predicted box; 0 = IoU only.",
        min=0.0,
        max=10.0,
    )
    update_interval_s: float = key(
        1.0,
        "Label and top-score updates of one track are sent at most this often (zone entry and "
        "exit are sent at once).",
        min=0.0,
        max=3600.0,
    )
    score_margin: float = key(
        0.05,
        "A track's top score must beat the one last reported by this much to be worth an update.",
        min=0.0,
        max=1.0,
    )

    def problems(self) -> list[str]:
        """What is wrong with these values, as ``name: problem`` lines (empty when valid);
        the bounds are the ones declared with each field."""
        out = []
        for f in fields(self):
            value, lo, hi = getattr(self, f.name), f.metadata["min"], f.metadata["max"]
            if lo is not None and hi is not None and not lo <= value <= hi:
                out.append(f"{f.name}: must be within {lo:g}..{hi:g}, got {value}")
        return out


def _points_problem(value: Any) -> str | None:
    problems = points_problems(value)
    return "; ".join(problems) if problems else None


@dataclass(frozen=True, slots=True)
class ZoneSettings:
    """[[cameras.zones]]: one zone of a camera, as configured."""

    name: str = key(
        MISSING,
        "Zone name, unique per camera: a key in the state and events (and a topic level).",
        check=topic_name_problem,
    )
    points: Points = key(
        MISSING,
        "Corners [[x, y], ...] in order around the zone, normalized to the frame (0..1, y "
        "down): at least 3, edges not crossing. An object is in the zone by its box's bottom "
        "centre.",
        check=_points_problem,
    )
    labels: tuple[str, ...] = key((), "Only objects with these labels count; empty = all.")
    min_dwell_s: float = key(
        0.0,
        "Seconds an object must stay inside before it counts as in the zone; leaving counts "
        "at once.",
        min=0.0,
        max=3600.0,
    )

    def problems(self) -> list[str]:
        """Every problem with this zone, as ``key: problem`` lines (empty when valid)."""
        out = []
        name = topic_name_problem(self.name)
        if name:
            out.append(f"name: {name} (got {self.name!r})")
        out.extend(f"points: {p}" for p in points_problems(self.points))
        if not isinstance(self.labels, tuple | list) or not all(
            isinstance(label, str) and label for label in self.labels
        ):
            out.append(f"labels: must be a list of label names, got {self.labels!r}")
        dwell = self.min_dwell_s
        if isinstance(dwell, bool) or not isinstance(dwell, int | float):
            out.append(f"min_dwell_s: must be a number, got {dwell!r}")
        elif not 0.0 <= dwell <= 3600.0:
            out.append(f"min_dwell_s: must be within 0..3600 seconds, got {dwell}")
        return out


def points_problems(points: Any) -> list[str]:
    """What makes ``points`` unusable as a zone polygon (empty when usable): fewer than 3
    corners, a corner that is not an [x, y] pair of numbers within 0..1, two corners in a row
    at the same place, no enclosed area, or two edges that cross or touch."""
    if not isinstance(points, list | tuple):
        return [f"must be a list of [x, y] corners, got {points!r}"]
    if len(points) < 3:
        return [f"needs at least 3 corners [[x, y], ...], got {len(points)}"]
    if len(points) > MAX_POINTS:
        return [f"has {len(points)} corners; use at most {MAX_POINTS}"]
    out = []
    for i, p in enumerate(points):
        if (
            not isinstance(p, list | tuple)
            or len(p) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        ):
            out.append(f"corner {i} must be an [x, y] pair of numbers, got {p!r}")
        elif not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in p):
            out.append(
                f"corner {i} {list(p)} is outside the frame: x and y are fractions of its "
                "width and height, 0..1"
            )
    if out:
        return out
    pts = [(float(x), float(y)) for x, y in points]
    n = len(pts)
    for i in range(n):
        if pts[i] == pts[(i + 1) % n]:
            out.append(f"corners {i} and {(i + 1) % n} are the same point {list(pts[i])}")
    if out:
        return out
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a corner
            if _segments_meet(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n]):
                out.append(
                    f"edges {i}-{(i + 1) % n} and {j}-{(j + 1) % n} cross: list the corners "
                    "in order around the zone"
                )
    if not out and abs(_area(pts)) < 1e-9:
        out.append("encloses no area (the corners lie on one line)")
    return out


def _area(pts: list[tuple[float, float]]) -> float:
    n = len(pts)
    return 0.5 * sum(
        pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1] for i in range(n)
    )


def _segments_meet(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    """Whether segments ab and cd share a point (crossing, touching or overlapping)."""

    def turn(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def within(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(
            p[1], q[1]
        )

    d1, d2, d3, d4 = turn(c, d, a), turn(c, d, b), turn(a, b, c), turn(a, b, d)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and within(c, d, a))
        or (d2 == 0 and within(c, d, b))
        or (d3 == 0 and within(a, b, c))
        or (d4 == 0 and within(a, b, d))
    )
