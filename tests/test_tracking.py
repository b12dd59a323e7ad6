"""The tracker on synthetic detections: stable ids through motion, crossings, jitter and gaps
measured in seconds; confirmation that keeps false positives out; the label and best-score
rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.association import associate
from edge.result import Detection
from edge.tracking import Track, Tracker, TrackerUpdate, TrackingSettings, box_iou

CLASSES = {"person": 0, "car": 1, "dog": 2}


def det(label: str, cx: float, cy: float, size: float = 0.1, score: float = 0.9) -> Detection:
    """A detection of a square box of side ``size`` centred at (cx, cy), clipped to the frame."""
    h = size / 2
    box = (max(cx - h, 0.0), max(cy - h, 0.0), min(cx + h, 1.0), min(cy + h, 1.0))
    return Detection(label, CLASSES[label], score, box)


def run(tracker: Tracker, frames: list[list[Detection]], fps: float = 10.0) -> list[TrackerUpdate]:
    """Feed one list of detections per frame at ``fps``; the updates in order."""
    return [tracker.update(d, i / fps, i) for i, d in enumerate(frames)]


def ids_over(updates: list[TrackerUpdate]) -> set[int]:
    return {t.id for u in updates for t in u.tracks}


def new_ids(updates: list[TrackerUpdate]) -> list[int]:
    return [i for u in updates for i in u.new]


def ended_ids(updates: list[TrackerUpdate]) -> list[int]:
    return [t.id for u in updates for t in u.ended]


def test_a_moving_object_keeps_one_id_and_is_confirmed_after_min_hits() -> None:
    """An object moving across the frame gets one id, reported new on its min_hits-th frame
    and not before, and present in every later update."""
    tracker = Tracker(TrackingSettings(min_hits=3))
    frames = [[det("person", 0.1 + 0.03 * i, 0.5)] for i in range(25)]
    updates = run(tracker, frames)
    assert [u.new for u in updates[:3]] == [(), (), (1,)]
    assert all(u.tracks == () for u in updates[:2])
    assert all([t.id for t in u.tracks] == [1] for u in updates[2:])
    assert ids_over(updates) == {1}


def test_crossing_objects_keep_their_ids() -> None:
    """Two objects crossing each other's path (boxes overlapping in the middle, both
    detected throughout) keep their own ids: the motion model tells them apart."""
    tracker = Tracker(TrackingSettings(min_hits=2))
    frames = []
    for i in range(30):
        a = det("person", 0.1 + 0.028 * i, 0.5)  # left to right
        b = det("person", 0.9 - 0.028 * i, 0.53)  # right to left, slightly lower
        frames.append([a, b] if i % 2 else [b, a])  # detection order must not matter
    updates = run(tracker, frames)
    assert ids_over(updates) == {1, 2}
    first = {t.id: t.box[0] for t in updates[2].tracks}
    last = {t.id: t.box[0] for t in updates[-1].tracks}
    left_starter = min(first, key=lambda k: first[k])
    assert last[left_starter] > 0.8  # the one that started on the left ended on the right
    assert ended_ids(updates) == []


def test_an_object_hidden_while_crossing_keeps_its_id() -> None:
    """An object hidden behind another for 0.4 s at the crossing (no detection of it)
    comes back with its id: the prediction carries it through the gap."""
    tracker = Tracker(TrackingSettings(min_hits=2, max_age_s=1.0))
    frames = []
    for i in range(30):
        front = det("car", 0.1 + 0.028 * i, 0.5, size=0.16)
        back = det("person", 0.9 - 0.028 * i, 0.5)
        frames.append([front] if 12 <= i < 16 else [front, back])
    updates = run(tracker, frames)
    assert ids_over(updates) == {1, 2}
    labels = {t.id: t.label for t in updates[-1].tracks}
    assert sorted(labels.values()) == ["car", "person"]
    person = next(k for k, v in labels.items() if v == "person")
    assert all(person in {t.id for t in u.tracks} for u in updates[2:])
    hidden = [next(t for t in u.tracks if t.id == person) for u in updates[12:16]]
    assert not any(t.seen for t in hidden)


@pytest.mark.parametrize("fps", [5.0, 10.0, 30.0])
def test_a_gap_shorter_than_max_age_keeps_the_id_and_a_longer_one_ends_it(fps: float) -> None:
    """With max_age_s = 1: a 0.8 s gap keeps the id, a 1.4 s gap ends the track at 1 s of
    absence and the object's return is a new id, whatever the frame rate (seconds, not
    frames)."""
    tracker = Tracker(TrackingSettings(min_hits=2, max_age_s=1.0))
    n = round(6 * fps)
    short = (round(1.0 * fps), round(1.8 * fps))  # hidden from 1.0 s to 1.8 s
    long = (round(3.0 * fps), round(4.4 * fps))  # hidden from 3.0 s to 4.4 s
    frames = []
    for i in range(n):
        hidden = short[0] <= i < short[1] or long[0] <= i < long[1]
        frames.append([] if hidden else [det("dog", 0.5 + 0.01 * np.sin(i / fps), 0.5)])
    updates = run(tracker, frames, fps)
    assert new_ids(updates) == [1, 2]
    ends = [(u.ts_mono, t.id, t.last_ts) for u in updates for t in u.ended]
    assert len(ends) == 1
    ts, ident, last = ends[0]
    assert ident == 1
    assert last == pytest.approx((long[0] - 1) / fps)
    assert ts - last > 1.0 and ts - last <= 1.0 + 1 / fps + 1e-9
    assert all(1 in {t.id for t in u.tracks} for u in updates[short[0] : short[1]])


def test_jittery_detections_keep_one_id() -> None:
    """Detections jittering by up to ±1.5 % of the frame in position and ±10 % in size,
    with a few missed frames, stay one track."""
    rng = np.random.default_rng(7)
    tracker = Tracker(TrackingSettings(min_hits=3, max_age_s=0.5))
    frames: list[list[Detection]] = []
    for i in range(100):
        if rng.random() < 0.1:
            frames.append([])
            continue
        cx = 0.2 + 0.006 * i + rng.uniform(-0.015, 0.015)
        cy = 0.5 + rng.uniform(-0.015, 0.015)
        frames.append([det("person", cx, cy, size=0.12 * rng.uniform(0.9, 1.1))])
    updates = run(tracker, frames)
    assert ids_over(updates) == {1}
    assert ended_ids(updates) == []


def test_false_positives_below_min_hits_never_become_tracks() -> None:
    """Confident detections that last one or two frames (fewer than min_hits) at random
    places, a frame apart, never produce a new track, beside a real object that does."""
    rng = np.random.default_rng(3)
    tracker = Tracker(TrackingSettings(min_hits=3))
    frames: list[list[Detection]] = []
    ghost_frames: list[Detection] = []
    for _ in range(200):
        dets = [det("person", 0.5, 0.8)]
        if ghost_frames:
            dets.append(ghost_frames.pop())
            if not ghost_frames:
                frames.append(dets)
                frames.append([det("person", 0.5, 0.8)])  # a frame without the ghost
                continue
        elif rng.random() < 0.5:
            ghost = det("dog", rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.3), score=0.95)
            ghost_frames = [ghost] * int(rng.integers(1, 3))
        frames.append(dets)
    assert sum(len(f) == 2 for f in frames) > 50
    updates = run(tracker, frames)
    assert new_ids(updates) == [1]
    assert {t.label for u in updates for t in u.tracks} == {"person"}


def test_a_steady_but_weak_detection_is_not_confirmed() -> None:
    """A detection present in every frame whose median score stays below min_score never
    becomes a track; once its scores rise it is confirmed."""
    tracker = Tracker(TrackingSettings(min_hits=3, min_score=0.6))
    frames = [[det("dog", 0.5, 0.5, score=0.45)] for _ in range(20)]
    frames += [[det("dog", 0.5, 0.5, score=0.9)] for _ in range(10)]
    updates = run(tracker, frames)
    confirmed_at = [i for i, u in enumerate(updates) if u.new]
    assert len(confirmed_at) == 1 and confirmed_at[0] > 20


def test_min_hits_one_confirms_at_once() -> None:
    """With min_hits = 1 a detection is a track in its first frame."""
    tracker = Tracker(TrackingSettings(min_hits=1))
    update = tracker.update([det("car", 0.3, 0.3)], 0.0)
    assert update.new == (1,) and update.tracks[0].hits == 1


def test_label_is_the_score_weighted_majority() -> None:
    """A track's label is the label with the largest sum of scores: one strong 'dog' does
    not outvote several 'person' detections, and a tie keeps the current label."""
    tracker = Tracker(TrackingSettings(min_hits=1))
    seq = [("person", 0.6), ("dog", 0.95), ("person", 0.6), ("dog", 0.25)]
    labels = []
    for i, (label, score) in enumerate(seq):
        u = tracker.update([det(label, 0.5, 0.5, score=score)], i * 0.1)
        labels.append(u.tracks[0].label)
    # person 0.6 | dog 0.95 > 0.6 | person 1.2 > 0.95 | dog 1.2 = person 1.2: tie keeps person
    assert labels == ["person", "dog", "person", "person"]


def test_a_same_object_seen_as_two_classes_is_one_track() -> None:
    """The same box reported under two classes (class-aware NMS keeps both) is one track,
    and the second class's scores count in its label vote."""
    tracker = Tracker(TrackingSettings(min_hits=2))
    frames = []
    for i in range(10):
        x = 0.3 + 0.01 * i
        frames.append([det("car", x, 0.5, score=0.7), det("dog", x + 0.002, 0.5, score=0.8)])
    updates = run(tracker, frames)
    assert new_ids(updates) == [1]
    assert updates[-1].tracks[0].label == "dog"


def test_a_confirmed_track_keeps_its_object_from_a_copy_under_another_class() -> None:
    """An object leaving the frame is seen, beside its own class, as another class with a box
    overlapping less than DUPLICATE_IOU: that copy starts a tentative track. When only the
    copy is detected, the confirmed track takes it (confirmed tracks choose first), so the
    copy never earns an id of its own."""
    tracker = Tracker(TrackingSettings(min_hits=3))
    frames: list[list[Detection]] = [[det("car", 0.5, 0.5, 0.2)] for _ in range(3)]
    copy = Detection("dog", CLASSES["dog"], 0.9, (0.42, 0.42, 0.58, 0.58))  # IoU 0.64
    frames += [[det("car", 0.5, 0.5, 0.2), copy], [det("car", 0.5, 0.5, 0.2), copy], [copy]]
    frames += [[copy], [copy]]
    updates = run(tracker, frames)
    assert 0.3 < box_iou(copy.box, det("car", 0.5, 0.5, 0.2).box) < 0.7
    assert new_ids(updates) == [1]
    assert all([t.id for t in u.tracks] == [1] for u in updates[2:])
    assert updates[-1].tracks[0].seen


def test_best_score_is_kept_with_its_frame_and_box() -> None:
    """top_score, top_box, top_ts and top_index are those of the best detection so far;
    ``improved`` names the track in exactly the frames that raised it."""
    tracker = Tracker(TrackingSettings(min_hits=2))
    scores = [0.5, 0.7, 0.65, 0.9, 0.8]
    updates = [
        tracker.update([det("person", 0.2 + 0.05 * i, 0.5, score=s)], 0.1 * i, 100 + i)
        for i, s in enumerate(scores)
    ]
    last = updates[-1].tracks[0]
    assert last.top_score == 0.9 and last.top_index == 103
    assert last.top_ts == pytest.approx(0.3)
    assert last.top_box == pytest.approx(det("person", 0.35, 0.5).box)
    assert last.score == 0.8 and last.box == pytest.approx(det("person", 0.4, 0.5).box)
    assert [u.improved for u in updates] == [(), (1,), (), (1,), ()]


def test_a_fast_object_is_followed_by_the_centre_fallback_then_its_velocity() -> None:
    """An object moving more than its own width per frame (consecutive boxes never overlap)
    is lost with IoU matching alone, and is one track with the centre-distance fallback,
    which makes the first step; from then on its velocity predicts where it is."""
    frames = [[det("car", 0.05 + 0.07 * i, 0.5, size=0.06)] for i in range(13)]
    assert box_iou(frames[0][0].box, frames[1][0].box) == 0.0
    iou_only = run(Tracker(TrackingSettings(min_hits=2, max_centre_distance=0.0)), frames)
    assert new_ids(iou_only) == []
    fallback = run(Tracker(TrackingSettings(min_hits=2, max_centre_distance=1.5)), frames)
    assert new_ids(fallback) == [1] and ids_over(fallback) == {1}
    assert all(len(u.tracks) == 1 and u.tracks[0].seen for u in fallback[1:])


def test_the_best_pairs_win_when_detections_compete() -> None:
    """Two tracks side by side each take the detection closest to their prediction, not
    the first one listed."""
    tracker = Tracker(TrackingSettings(min_hits=1))
    first = tracker.update([det("person", 0.40, 0.5), det("person", 0.52, 0.5)], 0.0)
    left = next(t.id for t in first.tracks if t.box[0] < 0.4)
    second = tracker.update([det("person", 0.53, 0.5), det("person", 0.41, 0.5)], 0.1)
    boxes = {t.id: t.box for t in second.tracks}
    assert boxes[left][0] == pytest.approx(0.36)
    assert len(second.tracks) == 2 and second.new == ()


def test_close_ends_every_confirmed_track() -> None:
    """close() returns every confirmed track (not the tentative ones), unseen, and leaves
    none alive."""
    tracker = Tracker(TrackingSettings(min_hits=2))
    run(tracker, [[det("car", 0.2, 0.2), det("dog", 0.7, 0.7)]] * 3 + [[det("car", 0.2, 0.2)]])
    tracker.update([det("car", 0.2, 0.2), det("person", 0.5, 0.9)], 0.4)
    ended = tracker.close(0.5)
    assert sorted(t.label for t in ended) == ["car", "dog"]
    assert not any(t.seen for t in ended)
    assert tracker.update([], 0.6).tracks == ()


def test_time_going_back_is_refused() -> None:
    """A frame older than the previous one raises ValueError naming both times."""
    tracker = Tracker()
    tracker.update([], 5.0)
    with pytest.raises(ValueError, match=r"5\.000 to 4\.000"):
        tracker.update([], 4.0)


def test_invalid_settings_are_refused_with_every_problem() -> None:
    """Out-of-range settings are all named by problems(), and a Tracker refuses them."""
    bad = TrackingSettings(min_hits=0, iou_threshold=1.5)
    problems = bad.problems()
    assert len(problems) == 2
    assert problems[0].startswith("min_hits: must be within 1..100")
    assert problems[1].startswith("iou_threshold:")
    assert TrackingSettings().problems() == []
    with pytest.raises(ValueError, match="min_hits"):
        Tracker(bad)


def test_settings_describe_every_key() -> None:
    """Every tracking setting has a description, and every numeric one bounds, as the
    configuration reference needs."""
    for f in dataclasses.fields(TrackingSettings):
        assert f.metadata["help"], f.name
        if f.name != "enabled":  # on, off, or unset (by the model's task)
            assert f.metadata["min"] is not None, f.name


def test_track_snapshots_are_frozen() -> None:
    """Tracks handed out are immutable snapshots: a later frame does not change them."""
    tracker = Tracker(TrackingSettings(min_hits=1))
    before = tracker.update([det("car", 0.3, 0.3)], 0.0).tracks[0]
    tracker.update([det("car", 0.35, 0.3)], 0.1)
    assert before.box == pytest.approx(det("car", 0.3, 0.3).box)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.label = "dog"  # type: ignore[misc]
    assert isinstance(before, Track)


def test_association_takes_the_best_overlap_and_prefers_the_same_label() -> None:
    """When gates conflict, the higher IoU wins, a same-label detection beats a slightly
    better-overlapping one of another label, and a track left over takes a detection by
    centre distance."""
    track = (0.4, 0.4, 0.6, 0.6)

    def shifted(label: str, dx: float) -> Detection:
        return Detection(label, CLASSES[label], 0.9, (0.4 + dx, 0.4, 0.6 + dx, 0.6))

    assert box_iou(track, shifted("car", 0.05).box) == pytest.approx(0.6)
    assert associate([track], [1], [shifted("car", 0.05), shifted("car", 0.02)], 0.3, 0.0) == [
        (0, 1)
    ]
    other, same = shifted("dog", 0.02), shifted("car", 0.04)
    assert box_iou(track, other.box) > box_iou(track, same.box)
    assert associate([track], [1], [other, same], 0.3, 0.0) == [(0, 1)]
    # Two tracks want the first detection; the closer one gets it, the other the far one.
    tracks = [track, (0.45, 0.4, 0.65, 0.6)]
    dets = [shifted("car", 0.0), shifted("car", 0.2)]
    assert associate(tracks, [1, 1], dets, 0.3, 0.0) == [(0, 0)]
    assert associate(tracks, [1, 1], dets, 0.3, 1.0) == [(0, 0), (1, 1)]
