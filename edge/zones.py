"""Zones: named areas of one camera's frame, and which tracked objects are in each.

An object is in a zone by its box's bottom centre, ((x0 + x1) / 2, y1): the point where a
person's feet or a car's wheels meet the ground, so a zone drawn on the ground (a driveway, a
path) holds the objects standing on it whatever their height, and not those merely in front of
it. Zone corners are normalized to the frame like detection boxes: x to the right, y down, both
0..1. The anchor is clamped just inside the frame, so a zone drawn up to the frame's edge holds
objects cut off by that edge (their box ends at 1.0). A point exactly on a zone's boundary may
fall on either side.

A zone may count only some labels, and may ask an object to stay inside for ``min_dwell_s``
before it counts as in the zone (objects passing by a corner then never enter it); leaving
counts at once. Zones are checked on detections only: a track that goes undetected keeps the
zones it was last seen in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.association import Box
from edge.config import ZoneSettings, points_problems
from edge.errors import ConfigError

__all__ = ["Zone", "ZoneOccupancy", "ZoneSettings", "anchor", "build_zones", "points_problems"]

_EDGE = 1.0 - 1e-9  # the anchor's largest coordinate: just inside the frame


@dataclass(frozen=True, slots=True)
class Zone:
    """A validated zone, ready for containment checks (build with :meth:`from_settings`).

    points: corners (x, y) normalized to the frame. labels: the labels it counts, empty = all.
    min_dwell_s: seconds inside before an object counts as in it.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    labels: frozenset[str] = frozenset()
    min_dwell_s: float = 0.0
    _edges: tuple[tuple[float, float, float, float], ...] = field(
        init=False, repr=False, compare=False
    )
    _bounds: tuple[float, float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = ZoneSettings(
            self.name, self.points, tuple(self.labels), self.min_dwell_s
        ).problems()
        if problems:
            raise ConfigError([f"zone {self.name!r}: {p}" for p in problems])
        pts = self.points
        edges = tuple(
            (*pts[i], *pts[(i + 1) % len(pts)])
            for i in range(len(pts))
            if pts[i][1] != pts[(i + 1) % len(pts)][1]  # horizontal edges never cross a ray
        )
        object.__setattr__(self, "_edges", edges)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        object.__setattr__(self, "_bounds", (min(xs), min(ys), max(xs), max(ys)))

    @classmethod
    def from_settings(cls, s: ZoneSettings) -> Zone:
        """The zone ``s`` describes; raises ConfigError listing every problem with it."""
        points = s.points
        if not points_problems(points):
            points = tuple((float(x), float(y)) for x, y in points)
        return cls(s.name, points, frozenset(s.labels), float(s.min_dwell_s))

    def counts(self, label: str) -> bool:
        """Whether objects with ``label`` can be in this zone."""
        return not self.labels or label in self.labels

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (x, y), normalized to the frame, is inside (even-odd rule)."""
        x_lo, y_lo, x_hi, y_hi = self._bounds
        if x < x_lo or x > x_hi or y < y_lo or y > y_hi:
            return False
        inside = False
        for x0, y0, x1, y1 in self._edges:
            if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                inside = not inside
        return inside

    def holds(self, box: Box) -> bool:
        """Whether a box (x0, y0, x1, y1 normalized) is in the zone by its bottom centre."""
        return self.contains(*anchor(box))


def anchor(box: Box) -> tuple[float, float]:
    """The point of a box that decides its zones: the bottom centre, clamped just inside the
    frame."""
    x = (box[0] + box[2]) / 2
    y = box[3]
    return (
        0.0 if x < 0.0 else _EDGE if x > _EDGE else x,
        0.0 if y < 0.0 else _EDGE if y > _EDGE else y,
    )


def build_zones(settings: Sequence[ZoneSettings], path: str = "zones") -> tuple[Zone, ...]:
    """One camera's zones; raises ConfigError listing every problem, each with its path
    (``zones[1].points: ...``), including names used twice."""
    problems: list[str] = []
    for i, s in enumerate(settings):
        problems.extend(f"{path}[{i}].{p}" for p in s.problems())
    names = [s.name for s in settings]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{path}: zone name {n!r} is used more than once; names must be unique")
    if problems:
        raise ConfigError(problems)
    return tuple(Zone.from_settings(s) for s in settings)


class ZoneOccupancy:
    """Which zones each track is in, with every zone's ``min_dwell_s`` applied.

    Thread affinity: one thread (the one that runs the tracker).
    """

    def __init__(self, zones: Sequence[Zone]) -> None:
        self.zones = tuple(zones)
        self._since: dict[int, list[float | None]] = {}  # per zone: anchor inside since ts
        self._current: dict[int, tuple[str, ...]] = {}

    def update(self, track_id: int, label: str, box: Box, ts_mono: float) -> tuple[str, ...]:
        """The names of the zones (in configuration order) holding ``track_id`` after a
        detection of it with ``label`` and ``box`` at ``ts_mono`` seconds."""
        if not self.zones:
            return ()
        since = self._since.get(track_id)
        if since is None:
            since = self._since[track_id] = [None] * len(self.zones)
        x, y = anchor(box)
        names = []
        for k, z in enumerate(self.zones):
            if (not z.labels or label in z.labels) and z.contains(x, y):
                start = since[k]
                if start is None:
                    start = since[k] = ts_mono
                if ts_mono - start >= z.min_dwell_s:
                    names.append(z.name)
            else:
                since[k] = None
        current = self._current[track_id] = tuple(names)
        return current

    def current(self, track_id: int) -> tuple[str, ...]:
        """The zones ``track_id`` was in at its latest :meth:`update` (none before one)."""
        return self._current.get(track_id, ())

    def forget(self, track_id: int) -> None:
        """Drop an ended track's timers."""
        self._since.pop(track_id, None)
        self._current.pop(track_id, None)
