"""Multi-object tracking for one camera: detections of successive frames become tracks with
stable ids.

Each track carries a constant-velocity model of its box centre (an alpha-beta filter, the
steady state of a Kalman filter for that model) that predicts where the box is at the next
frame's timestamp; :mod:`edge.association` matches a frame's detections to those predictions
(IoU, then centre distance, greedily), confirmed tracks first and tentative ones among the
detections they left (DeepSORT's matching cascade, by confirmation rather than age).

A track is tentative until it has been matched in ``min_hits`` consecutive frames with a median
detection score of at least ``min_score``, and a tentative track dies at its first miss, so a
false positive of one or two frames, or a weak one, never becomes an object. A confirmed track
survives misses (occlusion, a missed detection) for ``max_age_s`` seconds of frame time, then
ends. Ids count from ``first_id`` (1) per tracker, in the order tracks are confirmed. Times
are the frames' ``ts_mono`` seconds, never frame counts, so a camera whose frame rate drops
keeps the same timeouts.

Label rule: a track's label is the one with the largest sum of detection scores over its
frames (a score-weighted majority vote); a tie keeps the current label. A detection left
unmatched that overlaps a track matched in the same frame by ``DUPLICATE_IOU`` is the same
object under another class (class-aware NMS keeps both): it adds its score to that track's
vote instead of starting a second track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge.association import Box, associate, box_iou
from edge.config import TrackingSettings
from edge.result import Detection

__all__ = ["Box", "Track", "Tracker", "TrackerUpdate", "TrackingSettings", "box_iou"]

# An unmatched detection overlapping a track matched in the same frame by at least this IoU
# is that object seen as another class (NMS removes same-class overlaps above its own IoU).
DUPLICATE_IOU = 0.7
# Alpha-beta gains (position, velocity) for frames a few tenths of a second apart: beta =
# alpha² / (2 − alpha), the critically damped choice. Sizes are smoothed with alpha, no rate.
ALPHA = 0.6
BETA = ALPHA * ALPHA / (2 - ALPHA)
SCORE_HISTORY = 10  # detection scores a tentative track keeps for its median


@dataclass(frozen=True, slots=True)
class Track:
    """One confirmed track as of one frame.

    box, score: the track's latest matched detection (kept while it goes undetected).
    top_score, top_box, top_ts, top_index: its best detection so far and the frame that had it
    (``top_index`` is the ``index`` given to :meth:`Tracker.update`). first_ts, last_ts: frame
    times (``ts_mono`` seconds) of its first detection, before it was confirmed, and of its
    latest match. hits: frames it was matched in. seen: matched in this frame (False while it
    goes undetected).
    """

    id: int
    label: str
    score: float
    box: Box
    top_score: float
    top_box: Box
    top_ts: float
    top_index: int | None
    first_ts: float
    last_ts: float
    hits: int
    seen: bool


@dataclass(frozen=True, slots=True)
class TrackerUpdate:
    """What one frame did to the tracks.

    tracks: the confirmed tracks alive after this frame, in the order of their first detection
    (ids follow the order of confirmation). new: ids confirmed in this frame (they are in
    ``tracks``). ended: tracks that ended in this frame, as last seen (not in ``tracks``).
    improved: ids whose top score rose in this frame, so this frame is now their best one (a
    snapshot stage keeps it). index: the frame's ``index`` as given to :meth:`Tracker.update`.
    """

    ts_mono: float
    index: int | None
    tracks: tuple[Track, ...]
    new: tuple[int, ...]
    ended: tuple[Track, ...]
    improved: tuple[int, ...]


class _State:
    """A live track's mutable state; only :class:`Tracker` touches it."""

    __slots__ = (
        "box",
        "class_id",
        "cx",
        "cy",
        "first_ts",
        "h",
        "hits",
        "id",
        "label",
        "last_ts",
        "score",
        "scores",
        "seen",
        "top_box",
        "top_index",
        "top_score",
        "top_ts",
        "votes",
        "vx",
        "vy",
        "w",
    )

    def __init__(self, det: Detection, ts: float, index: int | None) -> None:
        x0, y0, x1, y1 = det.box
        self.id = 0  # given at confirmation
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.w, self.h = x1 - x0, y1 - y0
        self.vx = self.vy = 0.0
        self.label, self.class_id = det.label, det.class_id
        self.votes = {det.label: det.score}
        self.score, self.box = det.score, det.box
        self.top_score, self.top_box, self.top_ts, self.top_index = det.score, det.box, ts, index
        self.first_ts = self.last_ts = ts
        self.hits = 1
        self.seen = True
        self.scores: list[float] | None = [det.score]  # while tentative: the latest scores

    def predict(self, ts: float) -> Box:
        dt = ts - self.last_ts
        cx, cy = self.cx + self.vx * dt, self.cy + self.vy * dt
        hw, hh = self.w / 2, self.h / 2
        return (cx - hw, cy - hh, cx + hw, cy + hh)

    def hit(self, det: Detection, ts: float, index: int | None) -> bool:
        """Take a matched detection; True when it is the track's best so far."""
        x0, y0, x1, y1 = det.box
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        dt = ts - self.last_ts
        if dt > 0:
            if self.hits == 1:
                # Two positions give the first velocity; filtering from zero would lag.
                self.vx, self.vy = (mx - self.cx) / dt, (my - self.cy) / dt
                self.cx, self.cy = mx, my
            else:
                px, py = self.cx + self.vx * dt, self.cy + self.vy * dt
                rx, ry = mx - px, my - py
                self.cx, self.cy = px + ALPHA * rx, py + ALPHA * ry
                self.vx += BETA * rx / dt
                self.vy += BETA * ry / dt
        else:  # a second detection at the same instant: take its position, keep the rate
            self.cx, self.cy = mx, my
        self.w += ALPHA * (x1 - x0 - self.w)
        self.h += ALPHA * (y1 - y0 - self.h)
        self.vote(det)
        if self.scores is not None:
            self.scores.append(det.score)
            if len(self.scores) > SCORE_HISTORY:
                del self.scores[0]
        self.score, self.box = det.score, det.box
        self.last_ts = ts
        self.hits += 1
        self.seen = True
        if det.score > self.top_score:
            self.top_score, self.top_box, self.top_ts, self.top_index = (
                det.score,
                det.box,
                ts,
                index,
            )
            return True
        return False

    def confirmable(self, min_hits: int, min_score: float) -> bool:
        """Whether a tentative track has earned an id (and forgets its score history then)."""
        scores = self.scores
        if self.hits < min_hits or scores is None:
            return False
        ranked = sorted(scores)
        n = len(ranked)
        median = ranked[n // 2] if n % 2 else (ranked[n // 2 - 1] + ranked[n // 2]) / 2
        if median < min_score:
            return False
        self.scores = None
        return True

    def vote(self, det: Detection) -> None:
        votes = self.votes
        votes[det.label] = total = votes.get(det.label, 0.0) + det.score
        if det.label != self.label and total > votes[self.label]:
            self.label, self.class_id = det.label, det.class_id

    def snapshot(self) -> Track:
        return Track(
            self.id,
            self.label,
            self.score,
            self.box,
            self.top_score,
            self.top_box,
            self.top_ts,
            self.top_index,
            self.first_ts,
            self.last_ts,
            self.hits,
            self.seen,
        )


class Tracker:
    """Tracks one camera's detections across frames (see the module docstring).

    Thread affinity: one thread calls :meth:`update` (the thread that has the results).
    """

    def __init__(self, settings: TrackingSettings | None = None, first_id: int = 1) -> None:
        self.settings = settings or TrackingSettings()
        problems = self.settings.problems()
        if problems:
            raise ValueError("invalid tracking settings: " + "; ".join(problems))
        self._live: list[_State] = []
        self._next_id = first_id
        self._ts: float | None = None

    def update(
        self, detections: Sequence[Detection], ts_mono: float, index: int | None = None
    ) -> TrackerUpdate:
        """Match one frame's detections (boxes normalized to the frame) taken at ``ts_mono``
        seconds; ``index`` is kept with each track's best frame.

        A frame with no detections (or a call without a frame, to time tracks out while a
        camera delivers nothing) is ``update((), now)``. Raises ValueError when ``ts_mono``
        is earlier than the previous frame's.
        """
        if self._ts is not None and ts_mono < self._ts:
            raise ValueError(
                f"frame time went back from {self._ts:.3f} to {ts_mono:.3f} s; "
                "pass each camera's frames in capture order"
            )
        self._ts = ts_mono
        s = self.settings
        live = self._live
        for t in live:
            t.seen = False
        matched_det: set[int] = set()
        improved: list[_State] = []
        # Confirmed tracks choose first, tentative ones among what they left (the matching
        # cascade of DeepSORT): a tentative copy of an object under another class, started
        # beside its track, cannot take the object's detection from its confirmed track.
        for group in ([t for t in live if t.id], [t for t in live if not t.id]):
            free = [i for i in range(len(detections)) if i not in matched_det]
            if not group or not free:
                continue
            pairs = associate(
                [t.predict(ts_mono) for t in group],
                [t.class_id for t in group],
                [detections[i] for i in free],
                s.iou_threshold,
                s.max_centre_distance,
            )
            for r, c in pairs:
                matched_det.add(free[c])
                if group[r].hit(detections[free[c]], ts_mono, index):
                    improved.append(group[r])
        new: list[int] = []
        ended: list[Track] = []
        keep: list[_State] = []
        for t in live:
            if t.seen:
                if t.id == 0 and t.confirmable(s.min_hits, s.min_score):
                    t.id = self._next_id
                    self._next_id += 1
                    new.append(t.id)
                keep.append(t)
            elif t.id and ts_mono - t.last_ts <= s.max_age_s:
                keep.append(t)
            elif t.id:
                ended.append(t.snapshot())
            # else: a tentative track missed a frame and is dropped
        if len(matched_det) < len(detections):
            # Strongest first, so a weaker copy of the same object under another class
            # votes for the stronger one's track instead of starting its own.
            seen_now = [t for t in keep if t.seen]
            rest = [d for i, d in enumerate(detections) if i not in matched_det]
            for det in sorted(rest, key=lambda d: -d.score):
                owner = max(seen_now, key=lambda t: box_iou(det.box, t.box), default=None)
                if owner is not None and box_iou(det.box, owner.box) >= DUPLICATE_IOU:
                    owner.vote(det)
                    continue
                fresh = _State(det, ts_mono, index)
                if fresh.confirmable(s.min_hits, s.min_score):
                    fresh.id = self._next_id
                    self._next_id += 1
                    new.append(fresh.id)
                keep.append(fresh)
                seen_now.append(fresh)
        self._live = keep
        return TrackerUpdate(
            ts_mono,
            index,
            tuple(t.snapshot() for t in keep if t.id),
            tuple(new),
            tuple(ended),
            tuple(t.id for t in improved if t.id),
        )

    @property
    def next_id(self) -> int:
        """The id the next confirmed track gets (a tracker replacing this one for the same
        camera starts there, so ids are not reused)."""
        return self._next_id

    def close(self, ts_mono: float) -> tuple[Track, ...]:
        """End every confirmed track now (the camera is stopping or is removed) and return
        them as last seen."""
        for t in self._live:
            t.seen = False
        ended = tuple(t.snapshot() for t in self._live if t.id)
        self._live = []
        self._ts = ts_mono if self._ts is None else max(self._ts, ts_mono)
        return ended
