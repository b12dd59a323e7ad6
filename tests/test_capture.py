"""The capture thread, delivering into the daemon's hand-off (FrameSlots): streaming,
reconnection with backoff, stalls, end, failures and stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from broker import wait_for

from edge.capture import CaptureThread
from edge.errors import InputError, SourceError
from edge.frame import Frame
from edge.preprocess import Transform
from edge.slots import FrameSlots, Job
from edge.sources import SourceSpec
from edge.sources.base import BaseSource
from edge.sources.opencv import OpenCVSource
from edge.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parent.parent


class Handoff:
    """The capture thread's ``on_frame`` as the daemon wires it, minus preprocessing: each frame
    goes into its camera's FrameSlots slot, replacing one not yet taken (counted in
    ``dropped``); ``get`` takes the next frame as the inference thread does."""

    TENSOR = np.zeros((1, 2, 2, 3), np.uint8)

    def __init__(self) -> None:
        self.slots = FrameSlots()
        self.delivered = 0
        self.dropped = 0

    def __call__(self, frame: Frame) -> None:
        self.delivered += 1
        if self.slots.put(frame.source, Job(frame, self.TENSOR, Transform(), 0.0)) is not None:
            self.dropped += 1

    def get(self, timeout: float) -> Frame | None:
        """The waiting frame (the newest delivered), or None after ``timeout`` seconds."""
        job = self.slots.take(timeout)
        if job is None:
            return None
        self.slots.done()
        return job.frame


def synthetic(fps: float | None = None, name: str = "cam") -> SyntheticSource:
    return SyntheticSource(SourceSpec(kind="synthetic", name=name, fps=fps, width=64, height=48))


class FlakySource:
    """A real synthetic source behind the Source interface that fails on command.

    open_failures: how many opens fail before one succeeds. fail_after_reads: after this many
    reads on one opening, the next read raises SourceError (like a camera that stops).
    """

    def __init__(self, open_failures: int = 0, fail_after_reads: int | None = None) -> None:
        self.inner = synthetic()
        self.name = self.inner.name
        self.open_failures = open_failures
        self.fail_after_reads = fail_after_reads
        self.open_times: list[float] = []
        self._reads = 0

    def open(self) -> None:
        self.open_times.append(time.monotonic())
        if self.open_failures > 0:
            self.open_failures -= 1
            raise SourceError("camera unplugged; plug it back in")
        self._reads = 0
        self.inner.open()

    def read(self) -> Frame | None:
        if self.fail_after_reads is not None and self._reads >= self.fail_after_reads:
            raise SourceError("camera stopped delivering frames")
        self._reads += 1
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


# -- CaptureThread ------------------------------------------------------------------------------


def test_capture_thread_streams_into_the_handoff() -> None:
    """The thread is named after the camera, delivers frames and reports streaming; once it
    has stopped, every frame its status counts was delivered."""
    slot = Handoff()
    cap = CaptureThread(synthetic(fps=100, name="door"), slot)
    assert cap.name == "capture-door"
    cap.start()
    try:
        first = slot.get(timeout=5)
        assert first is not None and first.source == "door"
        assert cap.wait_for_state("streaming", timeout=5)
        second = slot.get(timeout=5)
        assert second is not None and second.seq > first.seq
    finally:
        cap.stop()
        cap.join(2)
    status = cap.status()
    frames = status["frames"]
    assert isinstance(frames, int)
    assert status["state"] == "stopped" and frames >= 2 and status["reopens"] == 0
    assert not cap.is_alive() and slot.delivered == frames


def test_capture_thread_reopens_with_exponential_backoff() -> None:
    """Failed opens are retried after 1x, 2x, 4x the backoff; then the thread streams again."""
    source = FlakySource(open_failures=3)
    frames: list[Frame] = []
    cap = CaptureThread(source, on_frame=frames.append, backoff=0.05)
    cap.start()
    try:
        assert cap.wait_for_state("streaming", timeout=5)
    finally:
        cap.stop()
        cap.join(2)
    gaps = np.diff(source.open_times)
    assert len(gaps) == 3
    for gap, want in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert gap >= want * 0.95
    assert cap.history[:3] == ["starting", "reconnecting", "streaming"]
    stats = cap.stats()
    assert stats.reopens == 3 and stats.last_error == "camera unplugged; plug it back in"
    assert frames and cap.fatal_error() is None


def test_capture_thread_backoff_is_capped() -> None:
    """The reopen delay stops doubling at backoff_max."""
    source = FlakySource(open_failures=5)
    cap = CaptureThread(source, on_frame=lambda f: None, backoff=0.05, backoff_max=0.1)
    cap.start()
    try:
        assert cap.wait_for_state("streaming", timeout=5)
    finally:
        cap.stop()
        cap.join(2)
    gaps = np.diff(source.open_times)
    assert len(gaps) == 5 and gaps[-1] < 0.3  # uncapped it would be 0.8 s


def test_capture_thread_recovers_a_source_that_stops_mid_stream() -> None:
    """A read failure closes and reopens the source; seq keeps increasing across the reopen."""
    source = FlakySource(fail_after_reads=3)
    frames: list[Frame] = []
    done = threading.Event()

    def collect(f: Frame) -> None:
        frames.append(f)
        if len(frames) == 7:
            done.set()

    cap = CaptureThread(source, on_frame=collect, backoff=0.01)
    cap.start()
    try:
        assert done.wait(5)
    finally:
        cap.stop()
        cap.join(2)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))
    assert cap.stats().reopens >= 2
    assert cap.history[:4] == ["starting", "streaming", "reconnecting", "streaming"]


def test_capture_thread_ends_with_a_finite_source(tmp_path: Path) -> None:
    """At the end of a file the state is ended, every frame was delivered, the thread ends."""
    frames: list[Frame] = []
    spec = SourceSpec(kind="opencv", target=str(ROOT / "samples" / "shapes.mp4"))
    cap = CaptureThread(spec, on_frame=frames.append)
    cap.start()
    cap.join(10)
    assert not cap.is_alive() and cap.status()["state"] == "ended"
    assert [f.index for f in frames] == list(range(120))
    slot = Handoff()
    images = tmp_path / "one.png"
    cv2.imwrite(str(images), np.zeros((8, 8, 3), np.uint8))
    cap = CaptureThread(SourceSpec(kind="images", target=str(images)), slot)
    cap.start()
    cap.join(5)
    assert cap.status()["state"] == "ended" and not cap.is_alive()
    assert slot.get(0) is not None and slot.get(0) is None


def test_capture_thread_fails_on_an_input_error(tmp_path: Path) -> None:
    """A missing file fails capture for good and keeps the InputError for the daemon."""
    slot = Handoff()
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(tmp_path / "gone.mp4")))
    cap = CaptureThread(source, slot)
    cap.start()
    cap.join(5)
    err = cap.fatal_error()
    assert cap.status()["state"] == "failed" and isinstance(err, InputError)
    assert err.exit_code == 66
    assert "gone.mp4" in str(cap.status()["last_error"])
    assert not cap.is_alive() and slot.delivered == 0


def test_capture_thread_fails_on_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    """A bug in a source (not a SourceError) stops capture as failed, with a traceback logged."""

    class Broken(FlakySource):
        def read(self) -> Frame | None:
            raise ZeroDivisionError("bug")

    cap = CaptureThread(Broken(), on_frame=lambda f: None)
    cap.start()
    cap.join(5)
    assert cap.status()["state"] == "failed"
    assert isinstance(cap.fatal_error(), ZeroDivisionError) and "Traceback" in caplog.text


def test_stop_returns_quickly_while_a_read_is_blocked() -> None:
    """stop() during a read waiting 2 s for its frame lets join finish well within a second."""
    slot = Handoff()
    cap = CaptureThread(synthetic(fps=0.5), slot)
    cap.start()
    assert slot.get(timeout=5) is not None  # the next frame is due in 2 s
    start = time.monotonic()
    cap.stop()
    cap.join(1.0)
    assert not cap.is_alive() and time.monotonic() - start < 0.5
    assert cap.status()["state"] == "stopped"


def test_stop_during_backoff_is_immediate() -> None:
    """stop() while waiting to reopen ends the thread at once, not after the delay."""
    cap = CaptureThread(FlakySource(open_failures=100), on_frame=lambda f: None, backoff=30)
    cap.start()
    assert cap.wait_for_state("reconnecting", timeout=5)
    start = time.monotonic()
    cap.stop()
    cap.join(1.0)
    assert not cap.is_alive() and time.monotonic() - start < 0.5


def test_shared_stop_event_and_a_required_consumer() -> None:
    """A shared stop event stops the thread; a capture thread cannot be made without
    ``on_frame``, the consumer of its frames."""
    stop = threading.Event()
    cap = CaptureThread(synthetic(fps=50), on_frame=lambda f: None, stop=stop)
    cap.start()
    assert cap.wait_for_state("streaming", timeout=5)
    stop.set()
    cap.join(1.0)
    assert not cap.is_alive()
    with pytest.raises(TypeError, match="on_frame"):
        CaptureThread(synthetic())  # type: ignore[call-arg]


class GatedCamera(BaseSource):
    """A live source of real synthetic frames that delivers only while ``gate`` is set, like a
    camera that hangs and comes back; ``age`` makes its frames that many seconds old."""

    kind = "synthetic"

    def __init__(self) -> None:
        super().__init__(SourceSpec(kind="synthetic", name="gated"))
        self.inner = synthetic(fps=50.0)
        self.gate = threading.Event()
        self.gate.set()
        self.age = 0.0

    @property
    def live(self) -> bool:
        return True

    def _open(self) -> None:
        self.inner.open()

    def _read(self) -> Frame:
        while not self.gate.wait(0.05):
            if self.closing:
                raise self._interrupted()
        frame = self.inner.read()
        assert frame is not None
        return self._frame(frame.image, ts_mono=time.monotonic() - self.age)

    def _release(self) -> None:
        self.inner.close()


def test_a_live_source_without_frames_is_stalled_until_frames_come_again() -> None:
    """No frame for stall_after seconds → state `stalled` (the status says so, nothing is
    delivered); the next frame → `streaming` again, without a reopen."""
    camera = GatedCamera()
    handoff = Handoff()
    t = CaptureThread(camera, handoff, stall_after=0.3)
    t.start()
    try:
        assert t.wait_for_state("streaming", timeout=5)
        camera.gate.clear()
        assert t.wait_for_state("stalled", timeout=2)
        assert t.status()["state"] == "stalled"
        handoff.get(0)  # empty the slot: nothing new may arrive while stalled
        assert handoff.get(timeout=0.3) is None
        camera.gate.set()
        assert t.wait_for_state("streaming", timeout=2)
        assert handoff.get(timeout=2) is not None
    finally:
        t.stop()
        t.join(5)
    assert t.history[:4] == ["starting", "streaming", "stalled", "streaming"]
    assert t.stats().reopens == 0


def test_frames_older_than_stall_after_are_dropped_as_stale() -> None:
    """A live frame captured longer than stall_after before it arrives (the backlog of a
    stall) is counted as stale and not delivered; fresh frames are."""
    camera = GatedCamera()
    camera.age = 1.0
    delivered: list[Frame] = []
    t = CaptureThread(camera, on_frame=delivered.append, stall_after=0.5)
    t.start()
    try:
        assert wait_for(lambda: t.stats().stale >= 5, 5)
        assert not delivered
        camera.age = 0.0
        assert t.wait_for_state("streaming", timeout=2)
    finally:
        t.stop()
        t.join(5)
    assert delivered and all(time.monotonic() - f.ts_mono < 5 for f in delivered)


def test_a_file_waiting_for_a_slow_consumer_never_stalls() -> None:
    """A file is not live: a consumer that takes longer than stall_after per frame leaves it
    streaming, and every frame is delivered (none counted stale)."""
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(ROOT / "samples" / "shapes.mp4")))
    assert source.live is False
    delivered: list[Frame] = []
    four = threading.Event()

    def slow(frame: Frame) -> None:
        delivered.append(frame)
        if len(delivered) == 4:
            four.set()
        time.sleep(0.25)  # the slow consumer being simulated

    t = CaptureThread(source, on_frame=slow, stall_after=0.1)
    t.start()
    try:
        assert four.wait(5)
    finally:
        t.stop()
        t.join(5)
    assert "stalled" not in t.history and t.stats().stale == 0
    assert [f.index for f in delivered[:4]] == [0, 1, 2, 3]
