"""Track events and camera state: the new/update/end rules and counts on synthetic tracks,
every object validated against its JSON Schema, and end to end on a rendered clip through the
bundled detector."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.engine import Engine
from edge.result import Detection
from edge.sources import open_source, parse_source
from edge.trackevents import CameraState, TrackEvents, iso_time
from edge.tracking import Tracker, TrackerUpdate, TrackingSettings, box_iou
from edge.zones import Zone

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "edge" / "schema"
EVENT_SCHEMA = json.loads((SCHEMAS / "event.schema.json").read_text())
STATE_SCHEMA = json.loads((SCHEMAS / "state.schema.json").read_text())
CLIP_SCRIPT = ROOT / "scripts" / "make_zone_clip.py"
WALL0 = 1_700_000_000.0  # the wall clock at frame time 0
LEFT = Zone("left", ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
CARPORT = Zone("carport", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), frozenset({"car"}))


def valid_event(event: dict[str, Any]) -> dict[str, Any]:
    jsonschema.validate(event, EVENT_SCHEMA)
    return event


def valid_state(state: dict[str, Any]) -> dict[str, Any]:
    jsonschema.validate(state, STATE_SCHEMA)
    return state


def det(label: str, x: float, score: float = 0.9, y: float = 0.5) -> Detection:
    """A 0.1-wide detection with its bottom centre at (x, y)."""
    return Detection(
        label, {"person": 0, "car": 1, "dog": 2}[label], score, (x - 0.05, y - 0.2, x + 0.05, y)
    )


class Camera:
    """A tracker and its events fed synthetic frames at 10 fps; every event and state is
    schema-checked."""

    def __init__(self, zones: tuple[Zone, ...] = (LEFT,), **settings: Any) -> None:
        s = TrackingSettings(**{"min_hits": 2, "max_age_s": 0.5, **settings})
        self.tracker = Tracker(s)
        self.events = TrackEvents("porch", "pi", zones, s, labels=("person",))
        self.t = 0.0
        self.log: list[dict[str, Any]] = []
        self.last: TrackerUpdate | None = None

    def frame(self, *dets: Detection, dt: float = 0.1) -> list[dict[str, Any]]:
        update = self.last = self.tracker.update(list(dets), self.t)
        out = [valid_event(e) for e in self.events.step(update, WALL0 + self.t)]
        valid_state(self.events.state.to_dict())
        self.log.extend(out)
        self.t = round(self.t + dt, 6)
        return out

    def kinds(self) -> list[tuple[str, int]]:
        return [(e["type"], e["id"]) for e in self.log]


def test_a_track_has_one_new_and_one_end_with_its_whole_state() -> None:
    """An object seen for a while then gone gives exactly one new (at confirmation) and one
    end (after max_age_s), both with the fields of the schema and wall-clock times."""
    cam = Camera(update_interval_s=10.0)  # no top-score update before the end
    for i in range(10):
        cam.frame(det("person", 0.2 + 0.01 * i, score=0.89 if i == 5 else 0.8))
    for _ in range(7):
        cam.frame()
    assert cam.kinds() == [("new", 1), ("end", 1)]
    new, end = cam.log
    assert new["label"] == "person" and new["zones"] == ["left"]
    assert new["first_seen"] == iso_time(WALL0) == "2023-11-14T22:13:20.000Z"
    assert new["last_seen"] == iso_time(WALL0 + 0.1)
    assert end["last_seen"] == iso_time(WALL0 + 0.9) and end["first_seen"] == new["first_seen"]
    assert end["top_score"] == pytest.approx(0.89) and end["zones"] == ["left"]
    assert (end["camera"], end["device"]) == ("porch", "pi")


def test_false_positives_produce_no_event() -> None:
    """Detections too short-lived to be confirmed produce neither events nor counts."""
    cam = Camera(min_hits=3)
    for i in range(20):
        if i % 3 == 0:
            cam.frame(det("dog", 0.1 + 0.04 * i))
        else:
            cam.frame()
    assert cam.log == []
    assert cam.events.state.to_dict() == {"person": 0, "zones": {"left": {"person": 0}}}


def test_zone_entry_and_exit_are_sent_at_once() -> None:
    """Entering and leaving a zone are each an update in the frame they happen, even right
    after the previous event (no rate limit), with the zones the object is in."""
    cam = Camera(update_interval_s=10.0)
    xs = [0.53, 0.53, 0.47, 0.53, 0.47]  # new outside, in, out, in
    zones = []
    for x in xs:
        for e in cam.frame(det("person", x)):
            zones.append((e["type"], e["zones"]))
    assert zones == [("new", []), ("update", ["left"]), ("update", []), ("update", ["left"])]


def test_the_dwell_debounces_zone_entry() -> None:
    """With a zone's min_dwell_s, a brief visit produces no update; a longer stay produces one
    entry update after the dwell."""
    zone = Zone("left", LEFT.points, min_dwell_s=0.5)
    cam = Camera((zone,))
    for x in [0.53, 0.53, 0.47, 0.47, 0.53, 0.53] + [0.47] * 8:
        cam.frame(det("person", x))
    updates = [e for e in cam.log if e["type"] == "update"]
    assert [e["zones"] for e in updates] == [["left"]]
    assert updates[0]["last_seen"] == iso_time(WALL0 + 1.1)  # entered at 0.6 s, + 0.5 s


def test_top_score_updates_need_the_margin_and_respect_the_interval() -> None:
    """A top score improving by less than score_margin sends nothing; a bigger improvement
    sends one update, no sooner than update_interval_s after the track's previous event."""
    cam = Camera((), update_interval_s=1.0, score_margin=0.05)
    scores = [0.70, 0.71, 0.72, 0.73, 0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87]
    for s in scores + [0.87] * 10:
        cam.frame(det("person", 0.3, score=s))
    new, *updates = cam.log
    assert new["type"] == "new" and new["top_score"] == pytest.approx(0.71)
    # new at 0.1 s; the 0.80 at 0.4 s waits for 1.1 s and is sent with the top score then
    assert [(e["last_seen"], e["top_score"]) for e in updates] == [
        (iso_time(WALL0 + 1.1), pytest.approx(0.87))
    ]


def test_a_label_flip_that_flips_back_is_merged_away() -> None:
    """A label change undone within update_interval_s sends no update; a lasting change sends
    one, update_interval_s after the previous event."""
    cam = Camera((), update_interval_s=1.0)
    # person 1.4 | dog 0.9 | dog 1.8 leads | person 2.3 leads again | dog for good
    seq = [("person", 0.7)] * 2 + [("dog", 0.9)] * 2 + [("person", 0.9)] + [("dog", 0.9)] * 12
    labels = []
    for label, score in seq:
        cam.frame(det(label, 0.3, score=score))
        assert cam.last is not None
        labels.append(cam.last.tracks[0].label if cam.last.tracks else None)
    assert labels[:6] == [None, "person", "person", "dog", "person", "dog"]
    kinds = [(e["type"], e["label"]) for e in cam.log]
    assert kinds == [("new", "person"), ("update", "dog")]
    flip_at = datetime.fromisoformat(cam.log[1]["last_seen"]).timestamp() - WALL0
    assert flip_at >= 1.1 - 1e-6


def test_state_counts_labels_and_zones_and_flags_changes() -> None:
    """The state counts tracked objects per label and per zone and label, keeps a label at 0
    once known, lists a filtered zone's labels, and changed() is True only when it changed."""
    cam = Camera((LEFT, CARPORT))
    state = cam.events.state
    cam.frame(det("person", 0.2), det("car", 0.8))
    assert state.changed()  # the first update always counts
    assert state.to_dict() == {
        "person": 0,
        "zones": {"left": {"person": 0}, "carport": {"car": 0}},
    }
    cam.frame(det("person", 0.2), det("car", 0.8))
    assert state.changed()
    assert state.to_dict() == {
        "person": 1,
        "car": 1,
        "zones": {"left": {"person": 1, "car": 0}, "carport": {"car": 1}},
    }
    cam.frame(det("person", 0.2), det("car", 0.8))
    assert not state.changed()
    cam.frame(det("person", 0.2))  # the car goes undetected: still counted
    assert not state.changed()
    for _ in range(6):
        cam.frame(det("person", 0.2))
    assert state.to_dict() == {
        "person": 1,
        "car": 0,
        "zones": {"left": {"person": 1, "car": 0}, "carport": {"car": 0}},
    }


def test_the_state_before_any_frame_lists_the_known_labels_at_zero() -> None:
    """Before the first frame the state already has every given label and zone at 0, and
    the first update counts as a change even when it finds nothing."""
    state = CameraState((LEFT, CARPORT), labels=("person", "car"))
    empty = {
        "person": 0,
        "car": 0,
        "zones": {"left": {"person": 0, "car": 0}, "carport": {"car": 0}},
    }
    assert valid_state(state.to_dict()) == empty
    assert state.update(()) and state.to_dict() == empty
    assert not state.update(())


def test_a_label_named_zones_cannot_be_counted() -> None:
    """A state cannot list a label called 'zones' (that key holds the zone counts)."""
    with pytest.raises(ValueError, match="rename the label"):
        CameraState((), labels=("person", "zones"))


def test_stamp_adds_the_output_fields() -> None:
    """The stamp hook sees every event before it is returned, so the output stage can add
    seq and boot_id; the stamped events validate too."""
    seq = iter(range(1, 100))

    def stamp(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "seq": next(seq), "boot_id": "0123456789ab"}

    tracker = Tracker(TrackingSettings(min_hits=1, max_age_s=0.2))
    events = TrackEvents("porch", "pi", stamp=stamp)
    out = events.step(tracker.update([det("dog", 0.5)], 0.0), WALL0)
    out += events.step(tracker.update([], 0.5), WALL0 + 0.5)
    assert [(e["type"], e["seq"]) for e in out] == [("new", 1), ("end", 2)]
    for e in out:
        valid_event(e)


def test_wall_times_come_from_frame_times_so_a_clock_step_moves_no_interval() -> None:
    """first_seen stays what it was at new when the wall clock steps (NTP sync), and
    last_seen is the frame time of the last detection on the current wall clock."""
    tracker = Tracker(TrackingSettings(min_hits=1, max_age_s=0.3))
    events = TrackEvents("porch", "pi")
    (new,) = events.step(tracker.update([det("dog", 0.5)], 10.0), WALL0)
    events.step(tracker.update([det("dog", 0.5)], 10.1), WALL0 + 3600.1)  # clock stepped
    (end,) = events.step(tracker.update([], 10.5), WALL0 + 3600.5)
    assert end["first_seen"] == new["first_seen"] == iso_time(WALL0)
    assert end["last_seen"] == iso_time(WALL0 + 3600.1)


def test_close_ends_every_track_and_clears_the_state() -> None:
    """Closing a camera sends an end per tracked object and recounts to nothing."""
    cam = Camera()
    cam.frame(det("person", 0.2), det("dog", 0.7))
    cam.frame(det("person", 0.2), det("dog", 0.7))
    ended = cam.tracker.close(cam.t)
    out = [valid_event(e) for e in cam.events.close(ended, cam.t, WALL0 + cam.t)]
    assert sorted((e["type"], e["label"]) for e in out) == [("end", "dog"), ("end", "person")]
    assert cam.events.state.changed()
    assert valid_state(cam.events.state.to_dict()) == {
        "person": 0,
        "dog": 0,
        "zones": {"left": {"person": 0, "dog": 0}},
    }


# -- end to end: the zone clip through the bundled detector --------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The zone clip and its truth, rendered by scripts/make_zone_clip.py (seed 0)."""
    out = tmp_path_factory.mktemp("clip") / "zones.mp4"
    subprocess.run(
        [sys.executable, str(CLIP_SCRIPT), "--out", str(out), "--seed", "0"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out, json.loads(out.with_suffix(".json").read_text())


def run_clip(path: Path, truth: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every event of the clip, and per frame (tracker update, state after it). Frame times
    are the clip's own (index / fps), as a camera paced at that rate stamps them."""
    z = truth["zone"]
    zone = Zone(z["name"], tuple(tuple(p) for p in z["points"]), min_dwell_s=z["min_dwell_s"])
    settings = TrackingSettings(min_hits=3, max_age_s=0.5)
    tracker = Tracker(settings)
    labels = ("circle", "square", "triangle")
    events = TrackEvents("yard", "pi", (zone,), settings, labels=labels)
    engine = Engine.load("shapes-detector")
    source = open_source(parse_source(str(path), name="yard"))
    source.open()
    log: list[dict[str, Any]] = []
    frames: list[tuple[TrackerUpdate, dict[str, Any]]] = []
    try:
        while (frame := source.read()) is not None:
            ts = frame.index / truth["fps"]
            result = engine.infer(frame.image, index=frame.index)
            update = tracker.update(result.detections, ts, frame.index)
            log.extend(valid_event(e) for e in events.step(update, WALL0 + ts))
            frames.append((update, valid_state(events.state.to_dict())))
    finally:
        source.close()
    assert len(frames) == len(truth["frames"])
    return log, frames


def test_clip_objects_give_one_new_one_end_zone_updates_and_true_counts(
    clip: tuple[Path, dict[str, Any]],
) -> None:
    """On the zone clip the real detector and the tracker give each object exactly one new
    and one end under one stable id with its true label, an update entering and one leaving
    the zone for every zone visit (and no other zone change), and state counts per label and
    per zone equal to the truth at every whole second."""
    path, truth = clip
    fps, phase = truth["fps"], truth["phase"]
    for obj in truth["objects"]:  # the clip's premise: changes only at whole seconds + phase
        for t in [obj["enters"], obj["leaves"], *(t for v in obj["zone_visits"] for t in v)]:
            assert t - phase == pytest.approx(round(t - phase), abs=1e-9)
    log, frames = run_clip(path, truth)

    by_track: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in log:
        by_track[e["id"]].append(e)
    assert len(by_track) == len(truth["objects"])
    # Which truth object each track is: the one its boxes overlap most over its life.
    owner: dict[int, int] = {}
    for tid in by_track:
        votes: dict[int, float] = defaultdict(float)
        for update, _ in frames:
            for t in update.tracks:
                if t.id == tid and t.seen:
                    for o in truth["frames"][update.index]["objects"]:
                        votes[o["id"]] += box_iou(t.box, tuple(o["box"]))
        owner[tid] = max(votes, key=lambda k: votes[k])
    assert sorted(owner.values()) == [o["id"] for o in truth["objects"]]  # one track each

    objects = {o["id"]: o for o in truth["objects"]}
    for tid, events in by_track.items():
        obj = objects[owner[tid]]
        kinds = [e["type"] for e in events]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == 1, kinds
        assert kinds.count("end") == 1
        assert events[-1]["label"] == obj["label"]
        # zone changes: one entry and one exit per visit, near when the truth has them
        changes = []
        zones: list[str] = events[0]["zones"]
        for e in events[1:]:
            if e["zones"] != zones:
                seen = datetime.fromisoformat(e["last_seen"]).timestamp() - WALL0
                changes.append((e["type"], e["zones"], seen))
                zones = e["zones"]
        assert [(k, z) for k, z, _ in changes] == [
            ("update", [truth["zone"]["name"]]) if i % 2 == 0 else ("update", [])
            for i in range(2 * len(obj["zone_visits"]))
        ], changes
        edges: list[float] = [t for visit in obj["zone_visits"] for t in visit]
        dwell = truth["zone"]["min_dwell_s"]
        for i, (_, _, seen) in enumerate(changes):
            expected = edges[i] + (dwell if i % 2 == 0 else 0.0)
            assert expected - 0.1 <= seen <= expected + 0.35, (tid, i, seen, expected)

    labels = ("circle", "square", "triangle")
    zone = truth["zone"]["name"]
    seconds = 0
    for i in range(0, len(frames), round(fps)):
        _, state = frames[i]
        counts = dict.fromkeys(labels, 0)
        in_zone = dict.fromkeys(labels, 0)
        for o in truth["frames"][i]["objects"]:
            counts[o["label"]] += 1
            in_zone[o["label"]] += o["in_zone"]
        assert state == {**counts, "zones": {zone: in_zone}}, (i / fps, state)
        seconds += 1
    assert seconds == len(frames) // round(fps) + 1
