"""What every frame source shares: the spec it is built from, the ``Source`` protocol, and a small
base class that does the per-source bookkeeping once.

The base class stamps frames (``seq`` strictly increasing across reopenings, monotonic and wall
timestamps), applies rotation and flip, paces reads against ``time.monotonic()`` deadlines, and
makes ``close()`` safe to call from another thread: a close that arrives while ``read()`` is
running only raises a flag and wakes any pacing wait; the reading thread releases the device when
its ``read()`` returns. So no backend library is ever called from two threads at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Protocol

import numpy as np

from edge.choices import RTSP_TRANSPORTS, SOURCE_KINDS, Flip, RtspTransport, SourceKind
from edge.errors import ConfigError, SourceError
from edge.frame import Frame, SensorOutput

log = logging.getLogger(__name__)

# Clockwise rotation in degrees (edge.choices.Rotation) → quarter turns for np.rot90 (which
# turns counter-clockwise).
QUARTER_TURNS = {0: 0, 90: -1, 180: 2, 270: 1}
# Mirroring → the axes to reverse: "h" mirrors left-right, "v" upside-down.
FLIP_AXES: dict[Flip | None, tuple[int, ...]] = {None: (), "h": (1,), "v": (0,), "hv": (0, 1)}


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where frames come from and how to shape them; plain validated data, no I/O.

    kind: ``opencv`` (camera index, /dev/videoN, rtsp/http URL, video file), ``images`` (folder,
        glob or single image), ``synthetic`` (moving shapes), ``picamera2`` (Raspberry Pi camera),
        ``imx500`` (Raspberry Pi AI Camera, the network running on the sensor).
    target: device, URL, file, glob or folder; the network (.rpk) for ``imx500``; empty for
        ``synthetic`` and ``picamera2``.
    name: camera name, used in topics and thread names.
    fps: target rate in frames per second; ``None`` = as fast as the source delivers.
    width, height: requested capture resolution in pixels (cameras; synthetic scene size).
    rotate: clockwise rotation in degrees applied after capture (0, 90, 180, 270).
    flip: mirror applied after capture and before rotation: ``h``, ``v``, ``hv`` or ``None``.
    loop: file sources restart at the end instead of ending the stream.
    realtime: file sources are paced at the file's own rate (or ``fps``) like a live camera,
        skipping frames when reading falls behind.
    lores: picamera2 only, (width, height) of the ISP-scaled stream handed on as the frame.
    read_timeout_s: OpenCV streams: seconds a stream may take to open, or to deliver its next
        frame, before it counts as failed (and is reopened by the capture thread).
    rtsp_transport: OpenCV RTSP streams: ``tcp`` or ``udp`` for RTP; ``None`` = TCP first, UDP
        if the server refuses TCP (OpenCV's own default).
    options: backend-specific extras; each backend rejects keys it does not know.
    """

    kind: SourceKind
    target: str = ""
    name: str = "camera"
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    rotate: int = 0
    flip: Flip | None = None
    loop: bool = False
    realtime: bool = False
    lores: tuple[int, int] | None = None
    read_timeout_s: float = 5.0
    rtsp_transport: RtspTransport | None = None
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in SOURCE_KINDS:
            problems.append(f"source.kind: {self.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
        if self.kind in ("opencv", "images") and not self.target:
            problems.append(f"source.target: a {self.kind} source needs a device, URL or path")
        if self.kind == "imx500" and not self.target:
            problems.append("source.target: an imx500 source needs its network (.rpk file)")
        if not self.name:
            problems.append("source.name: must not be empty")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            problems.append(f"source.fps: {self.fps!r} must be a positive number or unset")
        for key in ("width", "height"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                problems.append(f"source.{key}: {value!r} must be a positive number of pixels")
        if (self.width is None) != (self.height is None):
            problems.append("source.width/height: give both or neither")
        if self.rotate not in QUARTER_TURNS:
            problems.append(f"source.rotate: {self.rotate!r} must be 0, 90, 180 or 270")
        if self.flip not in FLIP_AXES:
            problems.append(f"source.flip: {self.flip!r} must be h, v, hv or unset")
        if self.lores is not None and (len(self.lores) != 2 or min(self.lores) <= 0):
            problems.append(f"source.lores: {self.lores!r} must be (width, height) in pixels")
        if not (math.isfinite(self.read_timeout_s) and self.read_timeout_s > 0):
            problems.append(f"source.read_timeout_s: {self.read_timeout_s!r} must be > 0 seconds")
        if self.rtsp_transport is not None and self.rtsp_transport not in RTSP_TRANSPORTS:
            problems.append(
                f"source.rtsp_transport: {self.rtsp_transport!r} must be tcp, udp or unset"
            )
        if problems:
            raise ConfigError(problems)
        # Freeze the mapping so a spec shared between threads cannot change under them.
        if not isinstance(self.options, MappingProxyType):
            object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


class Source(Protocol):
    """A frame source. All methods run on the thread that owns the source, except ``close()``.

    open(): acquire the device or file; raises SourceError (retryable: camera busy, stream down)
        or InputError (a file is missing or unreadable: retrying cannot help).
    read(): block until the next frame; ``None`` = end of stream (files without ``loop``);
        raises SourceError when the device stops delivering or the source was closed.
    close(): release everything; idempotent, and safe to call from another thread while
        ``read()`` blocks (the read returns promptly or within the backend's own timeout).
    """

    name: str

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class Options:
    """``spec.options`` checked against ``allowed`` (key → accepted types) with typed getters.

    Raises ConfigError naming every unknown key and every value of the wrong type.
    """

    def __init__(self, spec: SourceSpec, allowed: Mapping[str, type]) -> None:
        problems = []
        for key, value in spec.options.items():
            want = allowed.get(key)
            if want is None:
                known = ", ".join(sorted(allowed)) or "none"
                problems.append(f"source.options.{key}: unknown for {spec.kind} (known: {known})")
            # bool is an int subclass; a flag given where a number belongs is a typo to report.
            elif isinstance(value, bool) is not (want is bool) or not isinstance(
                value, (int, float) if want is float else want
            ):
                problems.append(
                    f"source.options.{key}: {value!r} should be of type {want.__name__}"
                )
        if problems:
            raise ConfigError(problems)
        self._values = dict(spec.options)

    def integer(self, key: str, default: int) -> int:
        value = self._values.get(key, default)
        assert isinstance(value, int)
        return value

    def number(self, key: str, default: float) -> float:
        value = self._values.get(key, default)
        assert isinstance(value, (int, float))
        return float(value)

    def text(self, key: str, default: str) -> str:
        value = self._values.get(key, default)
        assert isinstance(value, str)
        return value


def orient(image: np.ndarray, rotate: int, flip: Flip | None) -> np.ndarray:
    """Mirror (``flip``), then rotate clockwise by ``rotate`` degrees; no copy if neither."""
    axes = FLIP_AXES[flip]
    turns = QUARTER_TURNS[rotate]
    if not axes and not turns:
        return image
    if axes:
        image = np.flip(image, axes)
    if turns:
        image = np.rot90(image, turns)
    return np.ascontiguousarray(image)  # one copy, as later stages want contiguous frames


class BaseSource:
    """Bookkeeping shared by every backend; subclasses implement ``_open``, ``_read``, ``_release``.

    ``_read`` runs without the lock, so ``close()`` from another thread never waits for a blocked
    device; it sets ``_closing`` (which interrupts ``_wait``) and leaves the release to the reader.

    What a backend knows about a spec before anything is opened is asked of its class:
    :meth:`lossless`, :meth:`missing` and ``HARDWARE_SCALING``.

    ``live`` sources (cameras, streams) keep ``heartbeat``, the ``time.monotonic()`` of the last
    frame the device delivered (also those dropped by pacing), so the capture thread can tell a
    stalled device from a slow consumer, and ``stale``, the frames the backend skipped as the
    backlog of a stall. Plain numbers, written by the reading thread only.
    """

    kind: ClassVar[SourceKind]
    # Whether the camera itself can scale frames to ``spec.lores`` (picamera2's ISP); the other
    # backends are not given a lores size.
    HARDWARE_SCALING: ClassVar[bool] = False

    @classmethod
    def lossless(cls, spec: SourceSpec) -> bool:
        """Whether frames from ``spec`` should wait for inference instead of being dropped when
        it falls behind: true of sources that are not live (files read faster than real time,
        unpaced synthetic frames); cameras and streams move on without us."""
        return False

    @classmethod
    def missing(cls, spec: SourceSpec) -> str | None:
        """Why the files ``spec`` reads do not exist now (the daemon would exit 66), or None.
        Looks at the disk only. Cameras and streams are only known once opened (and retried
        when they fail), so for them this is None."""
        return None

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self._seq = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._opened = False
        self._busy = False
        self.heartbeat = time.monotonic()
        self.stale = 0  # live frames the backend skipped as the backlog of a stall

    @property
    def live(self) -> bool:
        """Whether frames come from a device or stream in real time (not from files)."""
        return False

    # -- public protocol ---------------------------------------------------------------------

    def open(self) -> None:
        """Acquire the device or file; opening an open source is a no-op."""
        with self._lock:
            if self._opened:
                return
            self._closing.clear()
        self._open()
        with self._lock:
            self._opened = True
            self.heartbeat = time.monotonic()
            raced = self._closing.is_set()
        if raced:  # close() arrived from another thread while the device was being opened
            self.close()
            raise SourceError(f"source {self.name!r} was closed while it was being opened")

    def read(self) -> Frame | None:
        """Next frame, ``None`` at end of stream; SourceError if closed or the device failed."""
        with self._lock:
            if not self._opened or self._closing.is_set():
                raise SourceError(
                    f"source {self.name!r} is not open; call open() (it may have been closed)"
                )
            self._busy = True
        try:
            return self._read()
        finally:
            with self._lock:
                self._busy = False
                release = self._closing.is_set() and self._opened
                if release:
                    self._opened = False
            if release:
                self._safe_release()

    def close(self) -> None:
        """Release the source; idempotent and callable from any thread (see class docstring)."""
        with self._lock:
            self._closing.set()
            if self._busy or not self._opened:
                return
            self._opened = False
        self._safe_release()

    # -- for subclasses ----------------------------------------------------------------------

    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> Frame | None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    @property
    def closing(self) -> bool:
        """True once ``close()`` was called; a blocked ``_read`` should give up."""
        return self._closing.is_set()

    def _interrupted(self) -> SourceError:
        return SourceError(f"source {self.name!r} was closed while reading")

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False if ``close()`` interrupted the sleep."""
        if seconds <= 0:
            return not self._closing.is_set()
        return not self._closing.wait(seconds)

    def _frame(
        self,
        image: np.ndarray,
        *,
        index: int | None = None,
        path: str | None = None,
        ts_mono: float | None = None,
        sensor: SensorOutput | None = None,
    ) -> Frame:
        """Orient ``image`` and stamp it; ``ts_mono`` defaults to now (seconds, monotonic).
        ``sensor``: the outputs of a network the camera ran on it (IMX500)."""
        now = time.monotonic()
        wall = time.time()
        self.heartbeat = now
        if ts_mono is None:
            ts_mono = now
        else:
            wall -= now - ts_mono
        seq = self._seq
        self._seq += 1
        return Frame(
            image=orient(image, self.spec.rotate, self.spec.flip),
            seq=seq,
            ts_mono=ts_mono,
            ts_wall=wall,
            source=self.name,
            index=seq if index is None else index,
            path=path,
            sensor=sensor,
        )

    def _safe_release(self) -> None:
        try:
            self._release()
        except Exception:  # a failing release must not mask the close or stop of the caller
            log.exception("releasing source %r failed", self.name)


class Pacer:
    """Deadline pacing at ``fps`` against ``time.monotonic()``.

    Deadlines advance by exactly one period so the average rate is exact; when the caller falls
    more than one period behind, the schedule restarts from now instead of bursting to catch up.
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = 1.0 / fps
        self._clock = clock
        self._next: float | None = None

    def reset(self) -> None:
        self._next = None

    def delay(self) -> float:
        """Seconds to wait before the next frame is due (0 if due); books that frame's slot."""
        now = self._clock()
        if self._next is None or now - self._next > self.period:
            self._next = now
        wait = self._next - now
        self._next += self.period
        return max(0.0, wait)

    def due(self) -> bool:
        """Non-blocking variant for live sources: True (and books the slot) when a frame arriving
        now should be kept; the caller drops the others.

        A frame up to half a period early counts as due: a camera already running at ``fps``
        delivers with jitter, and a strict deadline would drop every other frame.
        """
        now = self._clock()
        if self._next is None or now - self._next > self.period:
            self._next = now
        if now < self._next - self.period / 2:
            return False
        self._next += self.period
        return True
