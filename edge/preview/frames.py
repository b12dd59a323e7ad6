"""From results to JPEGs without touching the inference thread: the pipeline listener that keeps
only the newest result per camera, the encoder thread that draws and compresses it at a capped
rate while someone watches, and the hub where HTTP clients pick up the newest JPEG. Both the
results and the JPEGs are :class:`~edge.slots.Newest` slots: newest wins, nothing queues.

Cost on the result thread per result: a rate tick, one small object and a condition notify.
Annotating and encoding (a few milliseconds per frame) run on ``preview-encoder``, only for
cameras that have a connected stream client, at most ``fps`` times per second; a slow client
skips frames instead of queueing them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from edge.annotate import annotate, encode_jpeg
from edge.output import ResultEvent
from edge.slots import Entry, Newest
from edge.stats import LatencyWindow, RateMeter
from edge.trackevents import Overlay

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest result of one camera. version: per camera, +1 for every result. rate: the
    camera's results per second as the preview receives them (shared by its items)."""

    event: ResultEvent
    version: int
    rate: RateMeter
    tracked: Overlay | None = None  # zones and tracks as of this result, for a tracked camera


class LatestResults:
    """The preview's pipeline listener: keeps a reference to the newest event per camera and
    drops the older one. ``first`` is set at the first result of any camera. ``overlay``: what
    tracking draws on a camera's frame (the tracking listener runs before this one)."""

    def __init__(self, overlay: Callable[[str], Overlay | None] | None = None) -> None:
        self.overlay = overlay
        self._slot: Newest[str, tuple[ResultEvent, Overlay | None]] = Newest()
        self._rates: dict[str, RateMeter] = {}
        self.first = threading.Event()

    def on_result(self, event: ResultEvent) -> None:
        """Called on a result thread: stores a reference, never copies or encodes."""
        rate = self._rates.get(event.camera)
        if rate is None:
            rate = self._rates.setdefault(event.camera, RateMeter())
        rate.tick(event.done_mono)
        tracked = self.overlay(event.camera) if self.overlay is not None else None
        self._slot.put(event.camera, (event, tracked))
        self.first.set()

    def _item(self, camera: str, entry: Entry[tuple[ResultEvent, Overlay | None]]) -> Latest:
        event, tracked = entry.value
        return Latest(event, entry.version, self._rates[camera], tracked)

    def get(self, camera: str) -> Latest | None:
        entry = self._slot.get(camera)
        return None if entry is None else self._item(camera, entry)

    def all(self) -> dict[str, Latest]:
        return {k: self._item(k, e) for k, e in self._slot.entries().items()}

    def newer(self, seen: dict[str, int], timeout: float) -> dict[str, Latest]:
        """The cameras whose version is above ``seen[camera]``, waiting up to ``timeout``
        seconds for one; empty on timeout."""
        return {k: self._item(k, e) for k, e in self._slot.wait(seen, timeout).items()}


def figures(item: Latest) -> str:
    """The line of live figures drawn on the frame: output fps, this frame's invoke time and
    its capture-to-result latency."""
    event = item.event
    return (
        f"{event.camera} {item.rate.rate():.1f} fps | infer "
        f"{event.result.timings.invoke_ms:.1f} ms | e2e {event.e2e_ms:.0f} ms"
    )


def render(item: Latest, quality: int = 80) -> bytes:
    """The annotated frame of ``item`` as JPEG bytes (a few ms: call off the inference thread)."""
    event = item.event
    image = annotate(event.frame.image, event.result, figures(item), item.tracked)
    return encode_jpeg(image, quality)


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
        self._cond = threading.Condition()  # guards the client counts
        self._jpegs: Newest[str, Jpeg] = Newest()  # Jpeg.seq is filled in from the version
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
        self._jpegs.put(camera, Jpeg(data, 0, version, frame_index))

    def wait(self, camera: str, after: int, timeout: float) -> Jpeg | None:
        """The newest JPEG of ``camera`` with ``seq`` above ``after``; None on timeout or close."""
        got = self._jpegs.wait({camera: after}, timeout, keys=(camera,)).get(camera)
        return None if got is None else replace(got.value, seq=got.version)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiting client and the encoder; they return None/False from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._jpegs.close()


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
            newer = self.latest.newer(seen, 0.5)
            if not newer:
                continue
            started = time.monotonic()
            watched = self.streams.clients()
            for name, item in newer.items():
                if name not in watched:
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
                self.streams.publish(name, data, item.version, item.event.frame.index)
            # The cap: the next pass starts one period after this one started.
            self.stop_event.wait(max(0.0, started + self.period - time.monotonic()))
