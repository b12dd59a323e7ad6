"""Live streams served on loopback (ffmpeg MJPEG over HTTP, GStreamer RTSP): a frozen server
gives a `stalled` state and no results, the backlog it sends when it thaws is dropped, frames
carry the stream's own capture times, RTSP transports, and failure messages that say what
happened."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from streams import ROOT, Server, free_port, mjpeg_server, rtsp_server

from edge import config as cfg
from edge.capture import CaptureThread
from edge.choices import RtspTransport
from edge.errors import ConfigError, SourceError
from edge.frame import Frame
from edge.output import ResultEvent, payload
from edge.pipeline import Pipeline
from edge.sources import SourceSpec
from edge.sources.opencv import CAPTURE_OPTIONS, OpenCVSource, capture_options


class Frames:
    """Collects delivered frames with their arrival time; ``wait(n)`` blocks for n more."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[tuple[float, Frame]] = []

    def __call__(self, frame: Frame) -> None:
        with self._cond:
            self.items.append((time.monotonic(), frame))
            self._cond.notify_all()

    def wait(self, more: int, timeout: float = 10.0) -> None:
        with self._cond:
            want = len(self.items) + more
            assert self._cond.wait_for(lambda: len(self.items) >= want, timeout), (
                f"{want - len(self.items)} of {more} frames missing"
            )

    def count(self) -> int:
        with self._cond:
            return len(self.items)


class Results:
    """A pipeline listener keeping (time received, captured_at as epoch seconds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[tuple[float, float]] = []

    def on_result(self, event: ResultEvent) -> None:
        published = json.loads(payload(event))
        captured = datetime.fromisoformat(published["captured_at"].replace("Z", "+00:00"))
        with self._cond:
            self.items.append((time.time(), captured.timestamp()))
            self._cond.notify_all()

    def wait(self, more: int, timeout: float = 10.0) -> None:
        with self._cond:
            want = len(self.items) + more
            assert self._cond.wait_for(lambda: len(self.items) >= want, timeout)


@pytest.fixture
def mjpeg(tmp_path: Path) -> Iterator[Server]:
    server = mjpeg_server(tmp_path)
    try:
        yield server
    finally:
        server.kill()


def test_frozen_mjpeg_server_is_stalled_without_results_then_recovers(mjpeg: Server) -> None:
    """SIGSTOP on the HTTP server: within stall_after_s the camera's source_state is `stalled`
    and no result comes while it is frozen; after SIGCONT the burst ffmpeg sends to catch up
    (frames MJPEG gives no time for) is skipped, and results resume at the stream's own rate on
    the same connection, none with a capture time inside the freeze."""
    url = f"http://127.0.0.1:{mjpeg.port}/"
    config = cfg.validate(
        {
            "model": {"path": "shapes-detector"},
            "cameras": [{"source": url, "read_timeout_s": 8.0, "stall_after_s": 0.5}],
        }
    )
    results = Results()
    pipeline = Pipeline(config, [results])
    pipeline.start()
    try:
        results.wait(5)
        mjpeg.freeze()
        frozen = time.time()
        capture = pipeline.cameras["camera"].capture
        assert capture is not None
        assert capture.wait_for_state("stalled", timeout=3)
        assert pipeline.stats()["cameras"]["camera"]["source_state"] == "stalled"
        seen = len(results.items)
        time.sleep(1.0)  # the freeze itself: results must not come during it
        assert len(results.items) <= seen + 1  # at most one frame was still being inferred
        mjpeg.thaw()
        thawed = time.time()
        assert capture.wait_for_state("streaming", timeout=5)
        results.wait(12)
        history = capture.history
    finally:
        pipeline.stop()
    inside = [c for _, c in results.items if frozen + 0.3 < c < thawed]
    assert not inside, f"results captured while the server was frozen: {inside}"
    # 10 fps: about 10 results in the second after the thaw, not the 10 fps x 1 s backlog too
    assert len([r for r, _ in results.items if thawed < r < thawed + 1.0]) <= 12
    assert capture.stats().stale >= 5
    assert history[-3:] == ["streaming", "stalled", "streaming"]
    assert capture.stats().reopens == 0


def test_backlog_of_a_frozen_rtsp_server_is_dropped(tmp_path: Path) -> None:
    """RTSP frames carry the server's timestamps: when the frozen server thaws and sends what
    piled up, frames older than stall_after are dropped (counted as stale), and those kept carry
    their own capture time, earlier than their arrival, not a fresh one."""
    server, url = rtsp_server(tmp_path)
    frames = Frames()
    capture = CaptureThread(
        SourceSpec(kind="opencv", target=url, read_timeout_s=8.0), on_frame=frames, stall_after=0.5
    )
    capture.start()
    try:
        assert capture.wait_for_state("streaming", timeout=10)
        frames.wait(40)  # the buffered start, then 2 s of live frames: the clock is checked
        source = capture.source
        assert isinstance(source, OpenCVSource) and source._clock.trusted is True
        server.freeze()
        frozen = time.monotonic()
        assert capture.wait_for_state("stalled", timeout=3)
        time.sleep(1.5)  # the freeze itself
        before = frames.count()
        server.thaw()
        thawed = time.monotonic()
        assert capture.wait_for_state("streaming", timeout=5)
        frames.wait(5)
    finally:
        capture.stop()
        capture.join(10)
        server.kill()
    assert capture.stats().stale >= 5
    after = frames.items[before:]
    assert all(arrival - f.ts_mono <= 0.5 for arrival, f in after)
    assert not [f.ts_mono for _, f in after if frozen + 0.2 < f.ts_mono < thawed - 0.6]
    first_arrival, first = after[0]
    assert first_arrival - first.ts_mono > 0.1  # its own time, from the stream's timestamps


def test_rtsp_transport_on_a_udp_only_server(tmp_path: Path) -> None:
    """A server offering RTP over UDP only opens with rtsp_transport "udp" and with the default
    (TCP, then UDP), and fails at once with "tcp", saying to try "udp"."""
    server, url = rtsp_server(tmp_path, "udp")
    try:
        transports: tuple[RtspTransport | None, ...] = ("udp", None)
        for transport in transports:
            source = OpenCVSource(
                SourceSpec(kind="opencv", target=url, read_timeout_s=5.0, rtsp_transport=transport)
            )
            source.open()
            try:
                frame = source.read()
                assert frame is not None and frame.image.shape == (240, 320, 3)
            finally:
                source.close()
        started = time.monotonic()
        tcp = OpenCVSource(
            SourceSpec(kind="opencv", target=url, read_timeout_s=5.0, rtsp_transport="tcp")
        )
        with pytest.raises(SourceError, match='try rtsp_transport = "udp"') as info:
            tcp.open()
        assert time.monotonic() - started < 2.5
        assert "answered but did not start a stream after" in str(info.value)
    finally:
        server.kill()
    assert os.environ.get(CAPTURE_OPTIONS) is None


def test_capture_options_set_the_transport_only_around_the_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The RTSP transport goes into OPENCV_FFMPEG_CAPTURE_OPTIONS for the open only, next to
    options the user set there (an earlier transport replaced), which come back afterwards."""
    monkeypatch.setenv(CAPTURE_OPTIONS, "stimeout;1000|rtsp_transport;tcp")
    with capture_options("udp"):
        assert os.environ[CAPTURE_OPTIONS] == "stimeout;1000|rtsp_transport;udp"
    assert os.environ[CAPTURE_OPTIONS] == "stimeout;1000|rtsp_transport;tcp"
    monkeypatch.delenv(CAPTURE_OPTIONS)
    with capture_options("tcp"):
        assert os.environ[CAPTURE_OPTIONS] == "rtsp_transport;tcp"
    assert CAPTURE_OPTIONS not in os.environ
    with capture_options(""):
        assert CAPTURE_OPTIONS not in os.environ


def test_open_failures_say_what_happened() -> None:
    """A closed port is "connection refused" in milliseconds; a server that never answers is
    "did not open within" the read timeout, after that long."""
    port = free_port()
    started = time.monotonic()
    with pytest.raises(SourceError) as refused:
        OpenCVSource(SourceSpec(kind="opencv", target=f"rtsp://127.0.0.1:{port}/x")).open()
    assert time.monotonic() - started < 1.0
    assert f"connection refused by 127.0.0.1:{port} after " in str(refused.value)
    assert " ms; nothing listens on that port" in str(refused.value)
    with socket.socket() as mute:  # accepts connections (the kernel does) but never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        url = f"rtsp://127.0.0.1:{mute.getsockname()[1]}/x"
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"did not open within 1\.5 s \(read_timeout_s\)"):
            OpenCVSource(SourceSpec(kind="opencv", target=url, read_timeout_s=1.5)).open()
        assert 1.4 < time.monotonic() - started < 3.0


def test_read_failures_say_what_happened(mjpeg: Server) -> None:
    """A frozen server is "no frame for" the read timeout; a server that goes away is "ended
    after N frames"."""
    url = f"http://127.0.0.1:{mjpeg.port}/"
    source = OpenCVSource(SourceSpec(kind="opencv", target=url, read_timeout_s=1.0))
    source.open()
    try:
        for _ in range(3):
            assert source.read() is not None
        mjpeg.freeze()
        with pytest.raises(
            SourceError, match=r"delivered no frame for 1\.\d s \(read_timeout_s 1 s;"
        ):
            while True:
                source.read()
    finally:
        source.close()
        mjpeg.kill()
    replacement = mjpeg_server(Path(mjpeg.log_path).parent)
    url = f"http://127.0.0.1:{replacement.port}/"
    source = OpenCVSource(SourceSpec(kind="opencv", target=url, read_timeout_s=5.0))
    source.open()
    try:
        assert source.read() is not None
        replacement.kill()
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"ended after \d+ frames: the server closed it"):
            while True:
                source.read()
        assert time.monotonic() - started < 3.0
    finally:
        source.close()


def test_opencv_and_ffmpeg_console_lines_are_silenced(tmp_path: Path) -> None:
    """Retrying a refused stream prints edge's message and none of OpenCV's `[ WARN:…]` or
    FFmpeg's `[tcp @ …] Connection … failed` lines."""
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from edge.capture import CaptureThread\n"
        "from edge.sources import SourceSpec\n"
        f"t = CaptureThread(SourceSpec(kind='opencv', target='rtsp://127.0.0.1:{free_port()}/x'),"
        " on_frame=print, backoff=0.05)\n"
        "t.start(); t._status.wait_for('reconnecting'); import time; time.sleep(0.3); t.stop()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert proc.stderr.count("connection refused by 127.0.0.1") >= 2, proc.stderr
    assert "[ WARN" not in proc.stderr and "@ 0x" not in proc.stderr, proc.stderr


def test_camera_settings_reach_the_source_and_the_capture_thread() -> None:
    """rtsp_transport, read_timeout_s, stall_after_s and the reconnect timing from [[cameras]]
    are what the source and the capture thread use; reconnect_min_s above the max is refused."""
    config = cfg.validate(
        {
            "model": {"path": "shapes-detector"},
            "cameras": [
                {
                    "source": "rtsp://127.0.0.1:9/x",
                    "rtsp_transport": "udp",
                    "read_timeout_s": 2.5,
                    "stall_after_s": 0.7,
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 4,
                }
            ],
        }
    )
    capture = Pipeline(config).cameras["camera"].capture
    assert capture is not None and isinstance(capture.source, OpenCVSource)
    spec = capture.source.spec
    assert (spec.rtsp_transport, spec.read_timeout_s) == ("udp", 2.5)
    assert (capture.backoff, capture.backoff_max, capture.stall_after) == (0.2, 4, 0.7)
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.reconnect_min_s: 5 is above"):
        cfg.validate({"cameras": [{"source": "0", "reconnect_min_s": 5, "reconnect_max_s": 2}]})
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.rtsp_transport"):
        cfg.validate({"cameras": [{"source": "0", "rtsp_transport": "sctp"}]})
