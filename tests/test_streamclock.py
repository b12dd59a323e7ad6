"""Stream timestamps onto the monotonic clock: bursts keep their own times, frames are never
stamped after they arrived, clocks that number frames instead of timing them are not used."""

from __future__ import annotations

import pytest

from edge.sources.streamclock import Backlog, StreamClock


def test_a_real_clock_is_trusted_and_a_burst_keeps_its_own_times() -> None:
    """After a second of frames arriving in step with their timestamps, a burst of frames
    that piled up during a stall is stamped with their stream times, not their arrival."""
    clock = StreamClock("cam")
    origin = 100.0  # monotonic time of stream time 0, plus 20 ms of network delay below
    for i in range(15):  # 10 fps, 1.4 s
        t = origin + i * 0.1
        assert clock.stamp(i * 100.0, t + 0.02) == pytest.approx(t + 0.02)
    assert clock.trusted is True
    # frozen from frame 15 to 34: those frames all arrive at once when it thaws
    thaw = origin + 3.5
    stamps = [clock.stamp(i * 100.0, thaw) for i in range(15, 35)]
    assert stamps == pytest.approx([origin + i * 0.1 + 0.02 for i in range(15, 35)])
    assert max(stamps) <= thaw


def test_the_buffered_start_of_an_rtsp_stream_does_not_look_like_a_fast_clock() -> None:
    """Twenty frames handed over at once when the stream opens, then live ones: the check
    starts after the burst, the clock is trusted, and live frames keep their times."""
    clock = StreamClock("cam")
    opened = 50.0
    for i in range(20):
        assert clock.stamp(i * 100.0, opened) == opened  # not checked yet: arrival
    for i in range(20, 40):
        clock.stamp(i * 100.0, opened + (i - 19) * 0.1)
    assert clock.trusted is True
    assert clock.stamp(4000.0, opened + 2.5) == pytest.approx(opened + 2.1)


def test_a_clock_that_numbers_frames_is_rejected_and_frames_use_arrival() -> None:
    """MJPEG over HTTP: FFmpeg counts 40 ms a frame while frames come every 100 ms; after the
    check period every frame is stamped at arrival, never drifting into the past."""
    clock = StreamClock("cam", give_up_s=3.0)
    stamps = [(clock.stamp(i * 40.0, 10.0 + i * 0.1), 10.0 + i * 0.1) for i in range(60)]
    assert clock.trusted is False
    assert all(stamp == arrival for stamp, arrival in stamps)


def test_time_going_back_re_anchors_and_missing_times_use_arrival() -> None:
    """A stream whose time restarts is checked again from there; a frame without a usable
    timestamp (NaN, or the same as the last) is stamped at arrival."""
    clock = StreamClock("cam")
    for i in range(15):
        clock.stamp(5000.0 + i * 100.0, 1.0 + i * 0.1)
    assert clock.trusted is True
    assert clock.stamp(0.0, 3.0) == 3.0
    assert clock.trusted is None
    assert clock.stamp(float("nan"), 3.1) == 3.1
    assert clock.stamp(0.0, 3.2) == 3.2


def test_the_burst_after_a_pause_is_skipped_until_frames_come_at_their_pace() -> None:
    """10 fps, then 3 s without frames, then 30 frames 2 ms apart and the usual pace again:
    the burst is skipped, the first frame at the usual pace is not; trusted timestamps and
    short gaps skip nothing."""
    backlog = Backlog("cam")
    t = 0.0
    for _ in range(20):
        t += 0.1
        assert not backlog.skip(t, timed=False)
    t += 3.0
    skipped = [backlog.skip(t + i * 0.002, timed=False) for i in range(30)]
    assert all(skipped) and backlog.skipped == 30
    t += 0.058 + 0.1
    assert not backlog.skip(t, timed=False)
    assert not backlog.skip(t + 0.1, timed=False)
    assert not backlog.skip(t + 3.5, timed=True)  # its timestamps tell its age instead
    assert not backlog.skip(t + 3.6, timed=False)
