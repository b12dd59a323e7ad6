"""What of each result reaches the sink, and when: the ``every``, ``change`` (with heartbeat) and
``interval`` publish policies, the suppressed count, and annotated snapshots at most once per
``snapshot_interval`` per camera and only when something was detected. Results come from the
bundled detector on real scenes; the publisher's clock is a fake one, so the tests wait for
nothing but the snapshot thread."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from broker import wait_for
from fakes.sink import MemorySink

import edge.sinks.publisher
from edge.config import MqttConfig
from edge.engine import Engine
from edge.frame import Frame
from edge.output import ResultEvent, payload
from edge.result import Result
from edge.scene import MovingScene, background
from edge.sinks.publisher import Publisher


class Clock:
    """Stands in for the ``time`` module inside edge.sinks.publisher: ``monotonic()`` returns
    ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(edge.sinks.publisher, "time", c)
    return c


class Scenes:
    """Frames and the detector's real results for them: two scenes with different label sets
    and an empty background."""

    def __init__(self) -> None:
        engine = Engine.load("shapes-detector")
        self.frames: dict[str, np.ndarray] = {
            "two": MovingScene(320, 240, count=3, seed=0).frame(0.0)[0],
            "three": MovingScene(320, 240, count=3, seed=3).frame(0.0)[0],
            "none": background(np.random.default_rng(0), 320, 240),
        }
        self.results = {k: engine.infer(img) for k, img in self.frames.items()}
        labels = {k: r.labels() for k, r in self.results.items()}
        # The tests rely on these label sets differing (checked here, not assumed).
        assert labels["two"] == {"circle", "triangle"}, labels
        assert labels["three"] == {"circle", "square", "triangle"}, labels
        assert labels["none"] == frozenset(), labels


@pytest.fixture(scope="module")
def scenes() -> Scenes:
    return Scenes()


@pytest.fixture
def publishers() -> Iterator[list[Publisher]]:
    made: list[Publisher] = []
    yield made
    for p in made:
        p.close()


class Feed:
    """Sends results through a Publisher as the pipeline would, numbering them per camera."""

    def __init__(self, publisher: Publisher, scenes: Scenes) -> None:
        self.publisher = publisher
        self.scenes = scenes
        self.seqs: dict[str, int] = {}
        self.sent: list[ResultEvent] = []

    def send(self, kind: str, camera: str = "cam") -> None:
        seq = self.seqs[camera] = self.seqs.get(camera, 0) + 1
        image = self.scenes.frames[kind]
        frame = Frame(image, seq, 0.0, 0.0, camera, seq)
        result: Result = self.scenes.results[kind]
        event = ResultEvent("dev", camera, seq, "boot", frame, result, 0.01)
        self.sent.append(event)
        self.publisher.on_result(event)


def feed(publishers: list[Publisher], scenes: Scenes, **settings: Any) -> tuple[Feed, MemorySink]:
    sink = MemorySink()
    publisher = Publisher(sink, MqttConfig(**settings))
    publishers.append(publisher)
    return Feed(publisher, scenes), sink


def published(sink: MemorySink, camera: str = "cam") -> list[int]:
    """The seq of every result published for ``camera``, in order."""
    return [json.loads(p)["seq"] for c, p in sink.results if c == camera]


def test_every_publishes_each_result_as_compact_json(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """publish = every: each result goes out, in order, as its payload (compact JSON); nothing
    is suppressed."""
    f, sink = feed(publishers, scenes, publish="every")
    for kind in ("two", "two", "three", "none", "none"):
        f.send(kind)
        clock.now += 0.01
    assert published(sink) == [1, 2, 3, 4, 5]
    first = sink.results[0][1]
    assert b" " not in first  # separators without spaces
    assert json.loads(first)["detections"] == scenes.results["two"].to_dict()["detections"]
    assert [p for _, p in sink.results] == [payload(e) for e in f.sent]
    assert f.publisher.suppressed == 0


def test_change_publishes_only_when_the_label_set_changes(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """publish = change with publish_interval 0: the first result and each one whose label set
    differs from the previous result's go out; repeats are suppressed (and counted) however
    long they last."""
    f, sink = feed(publishers, scenes, publish="change", publish_interval=0.0)
    for kind in ("two", "two", "three", "three", "two", "none", "none", "none"):
        f.send(kind)
        clock.now += 100.0  # no heartbeat with interval 0
    assert published(sink) == [1, 3, 5, 6]
    assert f.publisher.suppressed == 4


def test_change_resends_an_unchanged_result_as_a_heartbeat(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """publish = change with publish_interval 5: an unchanged result is re-sent once 5 s have
    passed since the last one sent; a change resets that clock."""
    f, sink = feed(publishers, scenes, publish="change", publish_interval=5.0)
    timeline = [
        (0.0, "two"),  # 1 first: sent
        (1.0, "two"),  # 2
        (4.9, "two"),  # 3 4.9 s since the last sent
        (5.0, "two"),  # 4 heartbeat: sent
        (6.0, "two"),  # 5
        (7.0, "three"),  # 6 change: sent
        (11.0, "three"),  # 7 4 s since the change
        (12.0, "three"),  # 8 heartbeat: sent
    ]
    start = clock.now
    for at, kind in timeline:
        clock.now = start + at
        f.send(kind)
    assert published(sink) == [1, 4, 6, 8]
    assert f.publisher.suppressed == 4


def test_interval_publishes_at_most_once_per_interval_even_on_change(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """publish = interval: at most one result per publish_interval, whatever changes in
    between; the first is sent at once."""
    f, sink = feed(publishers, scenes, publish="interval", publish_interval=1.0)
    start = clock.now
    for at, kind in [(0.0, "two"), (0.5, "three"), (0.99, "none"), (1.0, "none"), (1.2, "two")]:
        clock.now = start + at
        f.send(kind)
    clock.now = start + 2.5
    f.send("two")
    assert published(sink) == [1, 4, 6]
    assert f.publisher.suppressed == 3


@pytest.mark.parametrize("policy", ["change", "interval"])
def test_policies_keep_their_state_per_camera(
    scenes: Scenes, clock: Clock, publishers: list[Publisher], policy: str
) -> None:
    """A camera's first result is sent even when another camera just sent the same labels, and
    one camera's results never suppress another's."""
    f, sink = feed(publishers, scenes, publish=policy, publish_interval=10.0)
    f.send("two", "a")
    f.send("two", "b")
    f.send("two", "a")  # suppressed for a only
    f.send("two", "c")
    assert sink.results and [c for c, _ in sink.results] == ["a", "b", "c"]
    assert f.publisher.suppressed == 1


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def test_snapshots_at_most_once_per_interval_and_only_with_detections(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """snapshot = true: a result with detections sends an annotated JPEG of its frame, then no
    other for snapshot_interval seconds on that camera; a result without detections sends none
    even when one is due; another camera has its own interval."""
    f, sink = feed(publishers, scenes, snapshot=True, snapshot_interval=10.0)
    start = clock.now

    def at(t: float, kind: str, camera: str = "cam") -> None:
        clock.now = start + t
        f.send(kind, camera)
        # Until the snapshot thread has taken any job queued, so that a wrongly queued one would
        # be published (and counted) instead of replaced by the next (newest wins).
        assert wait_for(lambda: not f.publisher.pending_snapshot(), 10)

    at(0.0, "two")
    assert sink.wait_until(lambda s: len(s.snapshots) == 1)
    at(5.0, "three")  # within 10 s: none
    at(12.0, "none")  # due, but nothing detected: none
    at(13.0, "three", "other")  # another camera: its first
    assert sink.wait_until(lambda s: len(s.snapshots) == 2)
    at(14.0, "three")  # due (14 s after the first), something detected
    assert sink.wait_until(lambda s: len(s.snapshots) == 3)
    f.publisher.close()  # joins the thread: anything taken has been published
    assert [c for c, _ in sink.snapshots] == ["cam", "other", "cam"]
    assert len(sink.results) == 5  # snapshots do not replace results (publish = every)
    first = decode(sink.snapshots[0][1])
    assert first.shape == scenes.frames["two"].shape
    # Annotated: boxes and text drawn over the frame, not the bare frame.
    changed = np.abs(first.astype(np.int16) - scenes.frames["two"]).max(axis=2) > 60
    assert 0.002 < float(changed.mean()) < 0.5


def test_no_snapshot_thread_or_snapshot_when_off(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """snapshot = false (the default): no snapshot thread is started and none is published."""
    f, sink = feed(publishers, scenes)
    assert f.publisher._snap_thread is None
    f.send("three")
    f.publisher.close()
    assert sink.snapshots == [] and published(sink) == [1]


def test_a_failed_snapshot_is_logged_and_the_next_still_goes_out(
    scenes: Scenes, clock: Clock, publishers: list[Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot whose publish raises is logged with the camera; the snapshot thread carries on
    and sends the next one."""
    f, sink = feed(publishers, scenes, snapshot=True, snapshot_interval=1.0)
    sink.fail_snapshots = 1
    with caplog.at_level(logging.ERROR, logger="edge.sinks.publisher"):
        f.send("two")
        assert sink.wait_until(lambda s: s.fail_snapshots == 0)
        clock.now += 2.0
        f.send("two")
        assert sink.wait_until(lambda s: len(s.snapshots) == 1)
    assert "snapshot for cam failed" in caplog.text


def test_close_ends_the_snapshot_thread(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """close() stops the snapshot thread promptly, and a second close is harmless."""
    f, _ = feed(publishers, scenes, snapshot=True)
    thread = f.publisher._snap_thread
    assert thread is not None and thread.is_alive()
    f.publisher.close()
    assert not thread.is_alive()
    f.publisher.close()


class HeldSink(MemorySink):
    """A MemorySink whose snapshot publish waits for ``release`` (a slow JPEG path), telling
    through ``holding`` that one is being held."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        self.holding.set()
        assert self.release.wait(10), "the test never released the snapshot"
        super().publish_snapshot(camera, jpeg)


def test_snapshot_jobs_due_while_one_is_encoded_are_replaced_by_the_newest(
    scenes: Scenes, clock: Clock, publishers: list[Publisher]
) -> None:
    """While the snapshot thread is busy, snapshot jobs do not queue: of those due meanwhile
    (on any camera) only the newest is encoded once it is free."""
    sink = HeldSink()
    publisher = Publisher(sink, MqttConfig(snapshot=True, snapshot_interval=10.0))
    publishers.append(publisher)
    f = Feed(publisher, scenes)
    f.send("two", "a")
    assert sink.holding.wait(10)  # a's snapshot is being published
    f.send("three", "b")
    f.send("three", "c")  # replaces b's job, never taken
    assert publisher.pending_snapshot()
    sink.release.set()
    assert sink.wait_until(lambda s: len(s.snapshots) == 2)
    assert wait_for(lambda: not publisher.pending_snapshot(), 10)
    publisher.close()
    assert [c for c, _ in sink.snapshots] == ["a", "c"]
