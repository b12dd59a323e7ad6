"""Track events and camera state: what a tracked camera tells the world, built from each
frame's :class:`~edge.tracking.TrackerUpdate`.

Events (``edge/schema/event.schema.json``), one dict each, in this order within a frame:
``end`` for every track that ended, ``new`` for every track confirmed, then ``update`` for
tracks with a meaningful change. The update rule, per track:

- entering or leaving a zone is sent at once (``min_dwell_s`` of the zone is what debounces
  it), and is never merged away: each zone change is a fact automations act on;
- a label change, or a top score beating the last reported one by ``score_margin``, is sent at
  most once per ``update_interval_s`` since the track's last event; a change arriving sooner
  waits, and is sent with the track's state at that time, or not at all if it went back (a
  label flipping and flipping back);
- every event carries the track's whole current state.

``first_seen`` and ``last_seen`` are wall-clock times (ISO 8601 UTC, milliseconds) derived
from the monotonic frame times with the current frame's wall clock, so a clock step (NTP
sync) moves no interval. ``seq`` and ``boot_id`` are the output stage's: it passes a ``stamp``
function, which sees (and may extend) every event before it is returned.

State (``edge/schema/state.schema.json``): counts of the camera's tracked objects per label
and per zone and label, ``{"person": 1, "car": 0, "zones": {"driveway": {"car": 2}}}``. A
track counts from its ``new`` to its ``end``, also while it goes undetected, so counts do not
flicker through a missed detection. Labels are listed once known (given at construction, or
once seen) and then stay, at 0 when none is present, so a consumer never sees a key vanish;
each zone lists its ``labels`` when it has a filter, else every known label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.tracking import Track, TrackerUpdate, TrackingSettings
from edge.zones import Zone, ZoneOccupancy

log = logging.getLogger(__name__)

Stamp = Callable[[dict[str, Any]], dict[str, Any]]
# The state's key for zone counts; a model label of that name cannot be counted beside it.
ZONES_KEY = "zones"


@dataclass(frozen=True, slots=True)
class Overlay:
    """What a tracked camera adds to its annotated frame: its zones, and its confirmed tracks
    as of its latest frame (boxes normalized to the frame)."""

    zones: tuple[Zone, ...]
    tracks: tuple[Track, ...]


def iso_time(ts_wall: float) -> str:
    """``time.time()`` seconds as ISO 8601 UTC with milliseconds (``...T12:00:00.123Z``)."""
    return datetime.fromtimestamp(ts_wall, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class _Reported:
    """What the last event of one track said."""

    __slots__ = ("first_wall", "label", "sent_ts", "top_score", "zones")

    def __init__(
        self, label: str, zones: tuple[str, ...], top_score: float, sent_ts: float, first: float
    ) -> None:
        self.label, self.zones, self.top_score = label, zones, top_score
        self.sent_ts, self.first_wall = sent_ts, first


class CameraState:
    """One camera's counts per label and per zone (see the module docstring).

    :meth:`update` recounts; :meth:`changed` says whether that changed :meth:`to_dict`, so
    the output stage publishes (retained) only on change. The first update always counts as
    a change.
    """

    def __init__(self, zones: Sequence[Zone] = (), labels: Sequence[str] = ()) -> None:
        if ZONES_KEY in labels:
            raise ValueError(
                f"a label named {ZONES_KEY!r} cannot be counted in the state: that key holds "
                "the zone counts; rename the label in the model's labels file"
            )
        self.zones = tuple(zones)
        self._labels: dict[str, None] = dict.fromkeys(labels)
        self._last: dict[str, Any] | None = None
        self._changed = False
        self._warned = False

    def update(self, objects: Iterable[tuple[str, tuple[str, ...]]]) -> bool:
        """Recount from the (label, zone names) of every tracked object; True on a change."""
        state = self._count(objects)
        self._changed = state != self._last
        self._last = state
        return self._changed

    def changed(self) -> bool:
        """Whether the latest :meth:`update` changed the state."""
        return self._changed

    def to_dict(self) -> dict[str, Any]:
        """The state as of the latest update (of no objects before any), as a new dict."""
        if self._last is None:
            return self._count(())
        out = dict(self._last)
        out[ZONES_KEY] = {name: dict(c) for name, c in self._last[ZONES_KEY].items()}
        return out

    def _count(self, objects: Iterable[tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
        counts: dict[str, int] = dict.fromkeys(self._labels, 0)
        in_zone: dict[str, dict[str, int]] = {z.name: {} for z in self.zones}
        for label, zones in objects:
            if label == ZONES_KEY:
                if not self._warned:
                    log.warning(
                        "objects labelled %r are not counted in the state (that key holds the "
                        "zone counts); rename the label in the model's labels file",
                        ZONES_KEY,
                    )
                    self._warned = True
                continue
            if label not in self._labels:
                self._labels[label] = None
            counts[label] = counts.get(label, 0) + 1
            for name in zones:
                per = in_zone[name]
                per[label] = per.get(label, 0) + 1
        state: dict[str, Any] = counts
        state[ZONES_KEY] = {
            z.name: {
                label: in_zone[z.name].get(label, 0)
                for label in (sorted(z.labels) if z.labels else self._labels)
            }
            for z in self.zones
        }
        return state


class TrackEvents:
    """One camera's track events and state, from its tracker's updates.

    Thread affinity: the thread that runs the camera's tracker.
    """

    def __init__(
        self,
        camera: str,
        device: str,
        zones: Sequence[Zone] = (),
        settings: TrackingSettings | None = None,
        *,
        labels: Sequence[str] = (),
        stamp: Stamp | None = None,
    ) -> None:
        self.camera = camera
        self.device = device
        self.settings = settings or TrackingSettings()
        self.occupancy = ZoneOccupancy(zones)
        self.state = CameraState(zones, labels)
        self._stamp = stamp
        self._reported: dict[int, _Reported] = {}

    def step(self, update: TrackerUpdate, ts_wall: float) -> list[dict[str, Any]]:
        """The events of one frame's tracker update, ``ts_wall`` being that frame's
        ``time.time()``; also recounts :attr:`state` (see its ``changed()``)."""
        s = self.settings
        now = update.ts_mono
        offset = ts_wall - now  # wall = mono + offset, for this frame
        occupancy = self.occupancy
        events = [self._end(t, offset) for t in update.ended]
        new = set(update.new)
        updates = []
        objects = []
        for t in update.tracks:
            if t.seen:
                zones = occupancy.update(t.id, t.label, t.box, now)
            else:
                zones = occupancy.current(t.id)
            objects.append((t.label, zones))
            rep = self._reported.get(t.id)
            if t.id in new or rep is None:  # None: confirmed before this object was made
                first = t.first_ts + offset
                self._reported[t.id] = _Reported(t.label, zones, t.top_score, now, first)
                events.append(self._event("new", t, zones, first, offset))
                continue
            if zones != rep.zones or (
                now - rep.sent_ts >= s.update_interval_s
                and (t.label != rep.label or t.top_score >= rep.top_score + s.score_margin)
            ):
                rep.label, rep.zones, rep.top_score, rep.sent_ts = t.label, zones, t.top_score, now
                updates.append(self._event("update", t, zones, rep.first_wall, offset))
        events.extend(updates)
        self.state.update(objects)
        return self._stamped(events)

    def close(self, ended: Sequence[Track], ts_mono: float, ts_wall: float) -> list[dict[str, Any]]:
        """``end`` events for the tracks :meth:`Tracker.close` returned (a stopping or
        removed camera), and the state recounted to nothing."""
        offset = ts_wall - ts_mono
        events = [self._end(t, offset) for t in ended]
        self.state.update(())
        return self._stamped(events)

    def _stamped(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stamp applied in the order the events are returned (so a ``seq`` it adds
        follows that order)."""
        stamp = self._stamp
        return events if stamp is None else [stamp(e) for e in events]

    def _end(self, t: Track, offset: float) -> dict[str, Any]:
        zones = self.occupancy.current(t.id)
        self.occupancy.forget(t.id)
        rep = self._reported.pop(t.id, None)
        first = rep.first_wall if rep is not None else t.first_ts + offset
        return self._event("end", t, zones, first, offset)

    def _event(
        self, kind: str, t: Track, zones: tuple[str, ...], first_wall: float, offset: float
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": kind,
            "id": t.id,
            "label": t.label,
            "score": round(t.score, 4),
            "top_score": round(t.top_score, 4),
            "box": [round(v, 4) for v in t.box],
            "zones": list(zones),
            "first_seen": iso_time(first_wall),
            "last_seen": iso_time(t.last_ts + offset),
            "camera": self.camera,
            "device": self.device,
        }
        return event
