"""Frames through OpenCV's VideoCapture: USB/V4L2 cameras, RTSP/HTTP streams and video files.

Live sources (cameras, streams) are read continuously and frames that arrive before the next
``fps`` deadline are grabbed but not decoded, so the frame handed on is always the newest one.
Files are read frame by frame: as fast as possible, throttled to ``fps``, or in ``realtime``
(paced at the file's own rate, skipping frames when the reader falls behind, like a camera).
A camera or stream that fails raises SourceError (the capture thread reopens it); a file that is
missing or cannot be decoded raises InputError, since retrying cannot help.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edge.errors import InputError, SourceError
from edge.frame import Frame
from edge.sources.base import BaseSource, Options, Pacer, SourceSpec

if TYPE_CHECKING:
    import cv2

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
FALLBACK_FILE_FPS = 25.0  # for realtime playback of files that do not state their rate


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
    need for full resolution at full rate), ``timeout`` (seconds a stream may take to open or
    to deliver a frame before it counts as failed; default 5).

    Stopping: ``close()`` from another thread never calls into OpenCV concurrently with a read;
    the read returns at the next frame, or after the backend's timeout if the device stalled
    (about 1 s for V4L2 cameras, ``timeout`` for streams). Until then the reading thread is
    blocked in OpenCV.
    """

    kind = "opencv"
    OPTIONS: ClassVar[dict[str, type]] = {"fourcc": str, "timeout": float}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        opts = Options(spec, self.OPTIONS)
        self.fourcc = opts.text("fourcc", "")
        self.timeout = opts.number("timeout", 5.0)
        self.mode = classify(spec.target)
        self._cap: cv2.VideoCapture | None = None
        self._pacer = Pacer(spec.fps) if spec.fps else None
        self.file_fps = 0.0
        self._pos = 0  # index of the next file frame
        self._t0 = 0.0  # realtime playback: monotonic time of file frame 0

    # -- open ---------------------------------------------------------------------------------

    def _open(self) -> None:
        if self.mode == "file":
            self._cap = self._open_file()
        else:
            self._cap = self._open_live()
        if self._pacer is not None:
            self._pacer.reset()

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
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
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
            "opencv source %r: %s %s via %s, delivering %dx%d at %.3g fps (requested %s, %s fps)",
            self.name,
            self.mode,
            _redact(target),
            cap.getBackendName(),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
            f"{self.spec.width}x{self.spec.height}" if self.spec.width else "default size",
            f"{self.spec.fps:g}" if self.spec.fps else "default",
        )
        return cap

    def _open_remedy(self) -> str:
        target = _redact(self.spec.target)
        if self.mode == "device":
            return (
                f"cannot open camera {target}: check it is connected (v4l2-ctl --list-devices), "
                "that this user is in the 'video' group, and that no other program is using it"
            )
        return (
            f"cannot open stream {target} within {self.timeout:g} s: check the URL, credentials "
            "and that the camera is reachable (try: ffprobe <url>)"
        )

    # -- read ---------------------------------------------------------------------------------

    def _read(self) -> Frame | None:
        if self.mode == "file":
            return self._read_file()
        return self._read_live()

    def _read_live(self) -> Frame:
        cap = self._cap
        assert cap is not None
        while True:
            if self.closing:
                raise self._interrupted()
            if not cap.grab():
                raise SourceError(
                    f"{self.mode} {_redact(self.spec.target)} stopped delivering frames; "
                    "reconnecting (check the cable, power or network if this repeats)"
                )
            # Grabbing without decoding is cheap; only the frame that meets the deadline is decoded.
            if self._pacer is None or self._pacer.due():
                break
        ok, image = cap.retrieve()
        if not ok or image is None:
            raise SourceError(
                f"{self.mode} {_redact(self.spec.target)} delivered a frame that cannot be decoded"
            )
        return self._frame(_as_bgr(image))

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
