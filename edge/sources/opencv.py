"""Frames through OpenCV's VideoCapture: USB/V4L2 cameras, RTSP/HTTP streams and video files.

Live sources (cameras, streams) are read continuously and frames that arrive before the next
``fps`` deadline are grabbed but not decoded, so the frame handed on is always the newest one.
Files are read frame by frame: as fast as possible, throttled to ``fps``, or in ``realtime``
(paced at the file's own rate, skipping frames when the reader falls behind, like a camera).
A camera or stream that fails raises SourceError (the capture thread reopens it), with what
really happened: refused at once, no answer within ``read_timeout_s``, or no frame for that
long; a file that is missing or cannot be decoded raises InputError, since retrying cannot help.
Live frames carry the capture time the stream states where it states one (see
:mod:`edge.sources.streamclock`), not the moment OpenCV handed them over.

OpenCV's and FFmpeg's own console lines are silenced at the first open (see
:func:`quiet_opencv`): edge's messages say the same once, in the log.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import numpy as np

from edge.errors import InputError, SourceError
from edge.frame import Frame
from edge.sources.base import BaseSource, Options, Pacer, SourceSpec
from edge.sources.streamclock import Backlog, StreamClock

if TYPE_CHECKING:
    import cv2

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
FALLBACK_FILE_FPS = 25.0  # for realtime playback of files that do not state their rate
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}
# OpenCV's FFmpeg backend takes demuxer options only from this process-wide variable, read
# while a capture opens; RTSP opens hold _OPTIONS_LOCK so no camera sees another's transport.
CAPTURE_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPTIONS_LOCK = threading.Lock()


def classify(target: str) -> str:
    """``device`` (index or /dev path), ``stream`` (URL) or ``file``."""
    if target.isdigit() or target.startswith("/dev/"):
        return "device"
    if target.lower().startswith(STREAM_SCHEMES):
        return "stream"
    return "file"


class OpenCVSource(BaseSource):
    """A VideoCapture on ``spec.target``.

    options: ``fourcc`` (camera pixel format to request, e.g. ``MJPG``, which many USB cameras
    need for full resolution at full rate). Streams take ``spec.read_timeout_s`` as both the
    open and the read timeout, and ``spec.rtsp_transport`` for RTSP.

    Stopping: ``close()`` from another thread never calls into OpenCV concurrently with a read;
    the read returns at the next frame, or after the backend's timeout if the device stalled
    (about 1 s for V4L2 cameras, ``read_timeout_s`` for streams). Until then the reading thread
    is blocked in OpenCV.
    """

    kind = "opencv"
    OPTIONS: ClassVar[dict[str, type]] = {"fourcc": str}

    @classmethod
    def lossless(cls, spec: SourceSpec) -> bool:
        """Video files read faster than real time wait for inference; cameras and streams,
        and files played in ``realtime``, drop what inference cannot take."""
        return classify(spec.target) == "file" and not spec.realtime

    @classmethod
    def missing(cls, spec: SourceSpec) -> str | None:
        if classify(spec.target) == "file" and not os.path.isfile(spec.target):
            return f"video file {spec.target!r} does not exist; check the path"
        return None

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        opts = Options(spec, self.OPTIONS)
        self.fourcc = opts.text("fourcc", "")
        self.timeout = spec.read_timeout_s
        self.mode = classify(spec.target)
        self._cap: cv2.VideoCapture | None = None
        self._pacer = Pacer(spec.fps) if spec.fps else None
        self._clock = StreamClock(spec.name)
        self._backlog = Backlog(spec.name)
        self.file_fps = 0.0
        self._pos = 0  # index of the next file frame
        self._t0 = 0.0  # realtime playback: monotonic time of file frame 0
        self._grabbed = 0  # live frames grabbed since the last open

    @property
    def live(self) -> bool:
        return self.mode != "file"

    # -- open ---------------------------------------------------------------------------------

    def _open(self) -> None:
        quiet_opencv()
        if self.mode == "file":
            self._cap = self._open_file()
        else:
            self._cap = self._open_live()
        if self._pacer is not None:
            self._pacer.reset()
        self._clock.reset()
        self._backlog.reset()
        self._grabbed = 0

    def _open_file(self, level: int = logging.INFO) -> cv2.VideoCapture:
        import cv2  # OpenCV is loaded by the sources that use it, not by every daemon

        path = self.spec.target
        if not os.path.isfile(path):
            raise InputError(f"video file {path!r} does not exist; check the path")
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            cap.release()
            raise InputError(
                f"cannot decode video file {path!r}; check it plays elsewhere and is a format "
                "FFmpeg reads (mp4, avi, mkv), or extract its frames and use an images source"
            )
        self.file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(self.file_fps) or self.file_fps <= 0:
            self.file_fps = 0.0
        self._pos = 0
        self._t0 = time.monotonic()
        log.log(
            level,
            "opencv source %r: file %s, %dx%d, %.3g fps, %d frames%s",
            self.name,
            path,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            self.file_fps,
            int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            ", realtime" if self.spec.realtime else "",
        )
        return cap

    def _open_live(self) -> cv2.VideoCapture:
        import cv2

        target = self.spec.target
        if self.mode == "device":
            # OpenCV waits 10 s (its default) for a frame from a stalled V4L2 camera, and reads
            # this setting once, at the first capture: shorten it unless the user chose a value.
            os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")
            where: int | str = int(target) if target.isdigit() else target
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            cap = cv2.VideoCapture(where, api)
        else:
            ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            rtsp = target.lower().startswith(("rtsp://", "rtsps://"))
            started = time.monotonic()
            if rtsp:
                with _OPTIONS_LOCK, capture_options(self.spec.rtsp_transport):
                    cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            else:
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                cap.release()
                raise SourceError(self._stream_open_failure(time.monotonic() - started))
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_remedy())
        # Keep at most one frame queued in the driver so a slow reader never sees stale frames.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc[:4].ljust(4)))
        if self.spec.width is not None and self.spec.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.spec.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.spec.height)
        if self.spec.fps:
            cap.set(cv2.CAP_PROP_FPS, self.spec.fps)
        log.info(
            "opencv source %r: %s %s via %s%s, delivering %dx%d at %.3g fps (requested %s, %s fps)",
            self.name,
            self.mode,
            _redact(target),
            cap.getBackendName(),
            f" over {self.spec.rtsp_transport.upper()}" if self.spec.rtsp_transport else "",
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
            f"{self.spec.width}x{self.spec.height}" if self.spec.width else "default size",
            f"{self.spec.fps:g}" if self.spec.fps else "default",
        )
        return cap

    def _open_remedy(self) -> str:
        return (
            f"cannot open camera {_redact(self.spec.target)}: check it is connected "
            "(v4l2-ctl --list-devices), that this user is in the 'video' group, and that no "
            "other program is using it"
        )

    def _stream_open_failure(self, elapsed: float) -> str:
        """Why a stream did not open, from how long it took and a plain TCP connect."""
        target = _redact(self.spec.target)
        if elapsed >= 0.9 * self.timeout:
            return (
                f"stream {target} did not open within {self.timeout:g} s (read_timeout_s): "
                "no answer in time; check the camera is reachable (ping it; ffprobe <url>), "
                "or raise read_timeout_s on a slow network"
            )
        took = f"after {_seconds(elapsed)}"
        problem = _connect_problem(self.spec.target, min(1.0, self.timeout))
        if problem is not None:
            what, remedy = problem
            return f"stream {target}: {what} {took}; {remedy}"
        hint = "check the path and the credentials"
        if self.spec.target.lower().startswith(("rtsp://", "rtsps://")):
            hint += (
                f"; the server may not offer RTP over {self.spec.rtsp_transport.upper()}: try "
                f'rtsp_transport = "{"udp" if self.spec.rtsp_transport == "tcp" else "tcp"}"'
                if self.spec.rtsp_transport
                else " (RTP over TCP and over UDP were both tried)"
            )
        return f"stream {target} answered but did not start a stream {took}: {hint}"

    # -- read ---------------------------------------------------------------------------------

    def _read(self) -> Frame | None:
        if self.mode == "file":
            return self._read_file()
        return self._read_live()

    def _read_live(self) -> Frame:
        import cv2

        cap = self._cap
        assert cap is not None
        while True:
            if self.closing:
                raise self._interrupted()
            started = time.monotonic()
            if not cap.grab():
                raise SourceError(self._read_failure(time.monotonic() - started))
            arrival = self.heartbeat = time.monotonic()
            self._grabbed += 1
            # Stamped per grab (cheap) so the stream clock also learns from frames pacing drops.
            ts = self._clock.stamp(cap.get(cv2.CAP_PROP_POS_MSEC), arrival)
            if self._backlog.skip(arrival, timed=self._clock.trusted is True):
                self.stale = self._backlog.skipped
                continue
            # Grabbing without decoding is cheap; only the frame that meets the deadline is decoded.
            if self._pacer is None or self._pacer.due():
                break
        ok, image = cap.retrieve()
        if not ok or image is None:
            raise SourceError(
                f"{self.mode} {_redact(self.spec.target)} delivered a frame that cannot be decoded"
            )
        return self._frame(_as_bgr(image), ts_mono=ts)

    def _read_failure(self, elapsed: float) -> str:
        """What a failed grab means, from how long it blocked and when the last frame came."""
        target = _redact(self.spec.target)
        quiet = _seconds(time.monotonic() - self.heartbeat)
        if self.mode == "device":
            return (
                f"camera {target} delivered no frame for {quiet} (check the cable and the power "
                "if this repeats)"
            )
        if elapsed >= 0.9 * self.timeout:
            return (
                f"stream {target} delivered no frame for {quiet} (read_timeout_s "
                f"{self.timeout:g} s; check the camera and the network if this repeats)"
            )
        return (
            f"stream {target} ended after {self._grabbed} frames: the server closed it "
            f"{quiet} after the last frame"
        )

    def _read_file(self) -> Frame | None:
        if self.spec.realtime:
            if not self._realtime_wait():
                raise self._interrupted()
        elif self._pacer is not None and not self._wait(self._pacer.delay()):
            raise self._interrupted()
        image = self._next_file_frame()
        if image is None:
            return None
        index = self._pos
        self._pos += 1
        return self._frame(_as_bgr(image), index=index, path=self.spec.target)

    def _next_file_frame(self) -> np.ndarray | None:
        cap = self._cap
        assert cap is not None
        ok, image = cap.read()
        if ok and image is not None:
            return image
        if not self.spec.loop or self._pos == 0:  # a file without a single frame must not spin
            return None
        # Seeking to 0 is unreliable for some codecs; reopening a file is cheap and exact.
        cap.release()
        self._cap = cap = self._open_file(logging.DEBUG)
        ok, image = cap.read()
        return image if ok else None

    def _realtime_wait(self) -> bool:
        """Wait until file frame ``_pos`` is due, or skip frames if reading fell behind."""
        rate = self.spec.fps or self.file_fps or FALLBACK_FILE_FPS
        due = self._t0 + self._pos / rate
        now = time.monotonic()
        if now < due:
            return self._wait(due - now)
        behind = int((now - self._t0) * rate) - self._pos
        cap = self._cap
        assert cap is not None
        for _ in range(behind):
            if not cap.grab():
                break  # the end is handled by the read that follows
            self._pos += 1
        return not self.closing

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@functools.cache  # once per process; a second concurrent first call only repeats the same settings
def quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own console lines, once per process, before the first open.

    Both write straight to stderr (``[ WARN:0@3.2] global cap.cpp:212 open VIDEOIO(FFMPEG):
    backend is generally available but can't be used to capture by name``, ``[tcp @ 0x…]
    Connection to tcp://… failed: Connection refused``) on every failed open or read, and neither
    can be routed into Python's logging: OpenCV has no log callback in its Python API and FFmpeg's
    callback is C-only. So they are turned off (OpenCV's level to ERROR through
    ``cv2.utils.logging``, which works whenever cv2 was imported; FFmpeg's through
    ``OPENCV_FFMPEG_LOGLEVEL``, which OpenCV reads at its first FFmpeg capture) and edge's own
    SourceError messages say what happened instead. With DEBUG logging, or where the user set
    ``OPENCV_LOG_LEVEL`` / ``OPENCV_FFMPEG_LOGLEVEL`` themselves, nothing is changed.
    """
    if log.isEnabledFor(logging.DEBUG):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@contextmanager
def capture_options(transport: str | None) -> Iterator[None]:
    """``OPENCV_FFMPEG_CAPTURE_OPTIONS`` with ``rtsp_transport`` set, for one open; hold
    ``_OPTIONS_LOCK``. Options the user set in the variable are kept (other than the RTSP
    transport), and the variable is put back as it was afterwards.

    Without a transport the variable is left alone: when it is unset, OpenCV asks FFmpeg for TCP
    first and UDP when the server refuses TCP (``rtsp_flags`` ``prefer_tcp``).
    """
    if not transport:
        yield
        return
    before = os.environ.get(CAPTURE_OPTIONS)
    kept = [
        pair
        for pair in (before or "").split("|")
        if pair and pair.split(";", 1)[0] not in ("rtsp_transport", "rtsp_flags")
    ]
    os.environ[CAPTURE_OPTIONS] = "|".join([*kept, f"rtsp_transport;{transport}"])
    try:
        yield
    finally:
        if before is None:
            del os.environ[CAPTURE_OPTIONS]
        else:
            os.environ[CAPTURE_OPTIONS] = before


def _connect_problem(url: str, timeout: float) -> tuple[str, str] | None:
    """(what happened, what to do) when a plain TCP connection to the URL's host and port
    fails; None if it connects or the URL names no TCP endpoint (udp://)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not host or port is None:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return (
            f"connection refused by {host}:{port}",
            "nothing listens on that port: check the address and port, and that the camera's "
            "stream server is on",
        )
    except socket.gaierror as exc:
        return (
            f"host {host!r} not found ({exc.strerror})",
            "check the host name, or use the camera's IP address",
        )
    except OSError as exc:
        return (
            f"cannot connect to {host}:{port} ({exc.strerror or exc})",
            "check the address and the network between here and the camera",
        )
    return None


def _seconds(value: float) -> str:
    """A duration for messages: 1 ms, 120 ms, 5.0 s."""
    return f"{max(1, round(value * 1000))} ms" if value < 1 else f"{value:.1f} s"


def _as_bgr(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _redact(target: str) -> str:
    """A URL without its password, for logs and error messages."""
    scheme, sep, rest = target.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return target
    creds, _, host = rest.partition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
