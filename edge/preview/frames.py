"""From results to JPEGs without touching the inference thread: the pipeline listener that keeps
only the newest result per camera, the encoder thread that draws and compresses it at a capped
rate while someone watches, and the hub where HTTP clients pick up the newest JPEG.

Cost on the result thread per result: one small object and a condition notify. Annotating
and encoding (a few milliseconds per frame) run on ``preview-encoder``, only for cameras that
have a connected stream client, at most ``fps`` times per second; a slow client skips frames
instead of queueing them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from edge.annotate import annotate, encode_jpeg
from edge.frame import Frame
from edge.pipeline import CameraState
from edge.result import Result
from edge.stats import LatencyWindow, RateMeter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest result of one camera.

    e2e_ms: capture to result, milliseconds. version: per camera, +1 for every result.
    done_mono: ``time.monotonic()`` when the result was handed to the preview.
    """

    camera: CameraState
    frame: Frame
    result: Result
    e2e_ms: float
    version: int
    done_mono: float


class LatestResults:
    """The preview's pipeline listener: keeps a reference to the newest (frame, result) per
    camera and drops the older one. ``first`` is set at the first result of any camera."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: dict[str, Latest] = {}
        self.first = threading.Event()

    def on_result(
        self, camera: CameraState, frame: Frame, result: Result, payload: dict[str, Any]
    ) -> None:
        """Called on a result thread: stores a reference, never copies or encodes."""
        now = time.monotonic()
        with self._cond:
            prev = self._latest.get(camera.name)
            self._latest[camera.name] = Latest(
                camera,
                frame,
                result,
                float(payload.get("latency_ms", (now - frame.ts_mono) * 1000)),
                prev.version + 1 if prev is not None else 1,
                now,
            )
            self._cond.notify_all()
        self.first.set()

    def get(self, camera: str) -> Latest | None:
        with self._cond:
            return self._latest.get(camera)

    def all(self) -> dict[str, Latest]:
        with self._cond:
            return dict(self._latest)

    def wait_newer(self, seen: dict[str, int], timeout: float) -> bool:
        """Block until some camera has a version above ``seen[camera]``; False on timeout."""

        def newer() -> bool:
            return any(item.version > seen.get(name, 0) for name, item in self._latest.items())

        with self._cond:
            return self._cond.wait_for(newer, timeout)


def figures(item: Latest) -> str:
    """The line of live figures drawn on the frame: output fps, this frame's invoke time and
    its capture-to-result latency."""
    fps = item.camera.fps_out.rate()
    return (
        f"{item.camera.name} {fps:.1f} fps | infer {item.result.timings.invoke_ms:.1f} ms"
        f" | e2e {item.e2e_ms:.0f} ms"
    )


def render(item: Latest, quality: int = 80) -> bytes:
    """The annotated frame of ``item`` as JPEG bytes (a few ms: call off the inference thread)."""
    return encode_jpeg(annotate(item.frame.image, item.result, figures(item)), quality)


@dataclass(frozen=True, slots=True)
class Jpeg:
    """One encoded frame. seq: per camera, +1 per JPEG; version: the result's version;
    frame_index: the frame's index in its source (video frame number, image number)."""

    data: bytes
    seq: int
    version: int
    frame_index: int


class Streams:
    """The newest JPEG per camera and the number of stream clients watching each.

    Written by the encoder, read by HTTP handler threads; every method is thread-safe.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jpegs: dict[str, Jpeg] = {}
        self._clients: dict[str, int] = {}
        self._closed = False

    def attach(self, camera: str) -> None:
        with self._cond:
            self._clients[camera] = self._clients.get(camera, 0) + 1
            self._cond.notify_all()

    def detach(self, camera: str) -> None:
        with self._cond:
            self._clients[camera] -= 1

    def clients(self) -> dict[str, int]:
        """Connected stream clients per camera (cameras nobody watches are absent)."""
        with self._cond:
            return {k: v for k, v in self._clients.items() if v > 0}

    def wait_for_clients(self, timeout: float) -> bool:
        """Block until some camera has a client; False on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or any(v > 0 for v in self._clients.values()), timeout
            )
            return not self._closed and any(v > 0 for v in self._clients.values())

    def publish(self, camera: str, data: bytes, version: int, frame_index: int) -> None:
        with self._cond:
            prev = self._jpegs.get(camera)
            seq = prev.seq + 1 if prev is not None else 1
            self._jpegs[camera] = Jpeg(data, seq, version, frame_index)
            self._cond.notify_all()

    def wait(self, camera: str, after: int, timeout: float) -> Jpeg | None:
        """The newest JPEG of ``camera`` with ``seq`` above ``after``; None on timeout or close."""

        def ready() -> bool:
            j = self._jpegs.get(camera)
            return self._closed or (j is not None and j.seq > after)

        with self._cond:
            if not self._cond.wait_for(ready, timeout) or self._closed:
                return None
            return self._jpegs[camera]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiting client and the encoder; they return None/False from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Encoder(threading.Thread):
    """``preview-encoder``: annotates and encodes the newest result of each watched camera,
    at most ``fps`` times per second, only while a stream client is connected.

    ``encode_ms`` holds the time per frame (annotate + JPEG), ``rate`` the JPEGs per second.
    Stops when ``stop`` is set or ``streams`` is closed.
    """

    def __init__(
        self,
        latest: LatestResults,
        streams: Streams,
        fps: float,
        stop: threading.Event,
        quality: int = 80,
    ) -> None:
        super().__init__(name="preview-encoder", daemon=True)
        self.latest = latest
        self.streams = streams
        self.period = 1.0 / fps
        self.quality = quality
        self.stop_event = stop
        self.encode_ms = LatencyWindow(128)
        self.rate = RateMeter()
        self.encoded = 0

    def run(self) -> None:
        seen: dict[str, int] = {}
        while not self.stop_event.is_set() and not self.streams.closed:
            if not self.streams.wait_for_clients(0.5):
                continue
            if not self.latest.wait_newer(seen, 0.5):
                continue
            started = time.monotonic()
            watched = self.streams.clients()
            for name, item in self.latest.all().items():
                if name not in watched or item.version <= seen.get(name, 0):
                    continue
                seen[name] = item.version
                t0 = time.perf_counter()
                try:
                    data = render(item, self.quality)
                except Exception:  # one bad frame must not end the preview
                    log.exception("encoding a preview frame of %s failed", name)
                    continue
                self.encode_ms.add((time.perf_counter() - t0) * 1000)
                self.rate.tick()
                self.encoded += 1
                self.streams.publish(name, data, item.version, item.frame.index)
            # The cap: the next pass starts one period after this one started.
            self.stop_event.wait(max(0.0, started + self.period - time.monotonic()))
