"""The Raspberry Pi camera through picamera2 (libcamera), with the ISP doing the resize.

With ``lores`` set, the camera runs two streams: ``main`` at the capture resolution and ``lores``
at the model's input size, scaled by the ISP for free; frames carry the lores image, so the CPU
never resizes. The lores stream is YUV420 because the Pi 4's ISP can only produce YUV there (the
Pi 5 could give RGB, but one format keeps both boards on one code path); it is converted to BGR
in numpy (:func:`i420_to_bgr`: OpenCV's I420 arithmetic, bit for bit, without loading OpenCV),
which is BT.601 limited range, which is why the camera is configured with the matching SMPTE
170M colour space whenever lores is used. Without ``lores`` the main stream is taken as
``RGB888``, which picamera2 lays out as BGR in memory: OpenCV order as is.

Each read takes a whole request (``capture_request``) rather than ``capture_array``: one request
yields the pixels and their metadata (the sensor timestamp) from the same frame.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import numpy as np

from edge.choices import SourceKind
from edge.errors import ConfigError, SourceError
from edge.frame import Frame
from edge.sources.base import BaseSource, Options, SourceSpec

log = logging.getLogger(__name__)

DEFAULT_MAIN = (640, 480)
POLL = 0.1  # seconds between checks for close() while waiting for a frame
# A sensor timestamp older than this at receipt is not trusted as a capture time.
MAX_SENSOR_AGE = 1.0

NOT_INSTALLED = (
    "the picamera2 module is not installed: on Raspberry Pi OS run "
    "'sudo apt install python3-picamera2' and create the virtual environment with "
    "'python3 -m venv --system-site-packages' so it can import it; on other machines use an "
    "opencv, images or synthetic source"
)
NO_CAMERA = (
    "no camera detected (camera {num}): check the ribbon cable is seated the right way round "
    "at both ends, that 'rpicam-hello --list-cameras' lists the camera, and that this user is "
    "in the 'video' group"
)


class Picamera2Source(BaseSource):
    """A Pi camera via picamera2; ``spec.width``/``height`` size the main stream (default
    640x480, grown to cover ``lores``), ``spec.lores`` the stream handed on, ``spec.fps`` the
    sensor frame rate (``FrameRate`` control, so no frames are captured only to be dropped).

    options: ``camera_num`` (default 0), ``timeout`` (seconds without a frame before the camera
    counts as stalled, default 3), ``buffer_count`` (default: picamera2's video default).

    ts_mono is the request's ``SensorTimestamp`` (start of exposure) when it is plausible: the
    kernel stamps camera buffers with CLOCK_MONOTONIC, the clock of ``time.monotonic()`` on
    Linux (libcamera documents CLOCK_BOOTTIME, which differs only by time spent suspended), and
    picamera2 itself compares it with ``time.monotonic_ns()``. A timestamp in the future or more
    than a second old is not used; the receipt time is, and that is logged once.
    """

    kind: ClassVar[SourceKind] = "picamera2"
    HARDWARE_SCALING = True
    OPTIONS: ClassVar[dict[str, type]] = {"camera_num": int, "timeout": float, "buffer_count": int}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        opts = Options(spec, self.OPTIONS)
        self.camera_num = opts.integer("camera_num", 0)
        self.timeout = opts.number("timeout", 3.0)
        self.buffer_count = opts.integer("buffer_count", 0)
        lores = spec.lores
        self.out_size = lores
        self.lores_size: tuple[int, int] | None = None
        if lores is not None:
            # The ISP needs even sizes: ask for one more pixel and crop it off the odd side.
            self.lores_size = (lores[0] + lores[0] % 2, lores[1] + lores[1] % 2)
        if spec.width is not None and spec.height is not None:
            self.main_size = (spec.width, spec.height)
        elif self.lores_size is not None:
            # picamera2 requires lores <= main: grow the default main stream to cover it.
            self.main_size = (
                max(DEFAULT_MAIN[0], self.lores_size[0]),
                max(DEFAULT_MAIN[1], self.lores_size[1]),
            )
        else:
            self.main_size = DEFAULT_MAIN
        lw, lh = self.lores_size or (0, 0)
        if lw > self.main_size[0] or lh > self.main_size[1]:
            raise ConfigError(
                f"source.lores: {lw}x{lh} is larger than the main stream "
                f"{self.main_size[0]}x{self.main_size[1]}; set width/height at least that large"
            )
        self._cam: Any = None
        self._cancelled: type[BaseException] = Exception
        self._stream = "main"
        self._trust_sensor_clock = True

    def _open(self) -> None:
        self._start_camera(self.camera_num, self.spec.fps)

    def _start_camera(self, camera_num: int, fps: float | None) -> None:
        """Open camera ``camera_num``, configure it for ``fps`` (None: its default) and start
        it; raises SourceError saying what to check."""
        try:
            # python3-picamera2 comes from apt on the Pi and is absent elsewhere: import on use.
            import libcamera
            from picamera2 import CancelledError, Picamera2
        except ImportError as exc:
            raise SourceError(NOT_INSTALLED) from exc
        self.camera_num = camera_num
        try:
            cam = Picamera2(camera_num=camera_num)
        except (IndexError, RuntimeError) as exc:
            # IndexError: libcamera lists no camera at that number; RuntimeError: "Camera
            # __init__ sequence did not complete" (camera listed but unusable).
            raise SourceError(NO_CAMERA.format(num=camera_num) + f" ({exc})") from exc
        try:
            self._configure(cam, libcamera, fps)
        except Exception as exc:
            cam.close()
            raise SourceError(
                f"picamera2 rejected the configuration (main {self.main_size}, lores "
                f"{self.lores_size}, fps {fps}): {exc}; try a smaller size or rate"
            ) from exc
        self._cam = cam
        self._cancelled = CancelledError
        self._trust_sensor_clock = True

    def _configure(self, cam: Any, libcamera: Any, fps: float | None) -> None:
        kwargs: dict[str, Any] = {
            "main": {"size": self.main_size, "format": "RGB888"},
            "controls": {"FrameRate": fps} if fps else {},
        }
        if self.lores_size is not None:
            kwargs["lores"] = {"size": self.lores_size, "format": "YUV420"}
            kwargs["colour_space"] = libcamera.ColorSpace.Smpte170m()
        if self.buffer_count:
            kwargs["buffer_count"] = self.buffer_count
        cam.configure(cam.create_video_configuration(**kwargs))
        self._stream = "lores" if self.lores_size is not None else "main"
        actual = cam.camera_config[self._stream]
        cam.start()
        log.info(
            "picamera2 source %r: camera %d (%s) main %s, handing on %s %s (stride %s) at %s fps",
            self.name,
            self.camera_num,
            cam.camera_properties.get("Model", "unknown model"),
            tuple(cam.camera_config["main"]["size"]),
            self._stream,
            tuple(actual["size"]),
            actual.get("stride"),
            f"{fps:g}" if fps else "default",
        )

    def _read(self) -> Frame:
        array, metadata, received = self._capture()
        image = self._to_bgr(array, self._cam.camera_config[self._stream])
        return self._frame(image, ts_mono=self._capture_time(metadata, received))

    def _capture(self) -> tuple[np.ndarray, dict[str, Any], float]:
        """The next request's image (as picamera2 shapes it), its metadata and the
        ``time.monotonic()`` it arrived; SourceError when the camera stalls or is closed."""
        cam = self._cam
        job = cam.capture_request(wait=False)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                request = cam.wait(job, timeout=POLL)
                break
            except TimeoutError:
                if self.closing:
                    raise self._interrupted() from None
                if time.monotonic() > deadline:
                    raise SourceError(
                        f"camera {self.camera_num} delivered no frame for {self.timeout:g} s; "
                        "reopening it (check the ribbon cable and power supply if this repeats)"
                    ) from None
            except self._cancelled:  # close() from another thread cancelled the job
                raise self._interrupted() from None
        received = time.monotonic()
        try:
            array = request.make_array(self._stream)
            metadata = request.get_metadata()
        finally:
            request.release()
        return array, metadata, received

    def _to_bgr(self, array: np.ndarray, config: dict[str, Any]) -> np.ndarray:
        if self._stream == "main":
            return array  # RGB888 is BGR in memory; make_array already copied it out
        width, height = config["size"]
        # The YUV420 array is (height*3/2, stride): convert at stride width, then cut the padding
        # (and the extra pixel of an odd requested size) off the converted image.
        bgr = i420_to_bgr(array)
        out_w, out_h = self.out_size or (width, height)
        if bgr.shape[1] != out_w or bgr.shape[0] != out_h:
            bgr = np.ascontiguousarray(bgr[:out_h, :out_w])
        return bgr

    def _capture_time(self, metadata: dict[str, Any], received: float) -> float:
        stamp = metadata.get("SensorTimestamp")
        if self._trust_sensor_clock and isinstance(stamp, int):
            ts = stamp / 1e9
            if 0.0 <= received - ts <= MAX_SENSOR_AGE:
                return ts
            self._trust_sensor_clock = False
            log.info(
                "picamera2 source %r: SensorTimestamp is %.3f s from time.monotonic(); "
                "stamping frames on receipt instead",
                self.name,
                received - ts,
            )
        return received

    def _release(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        # A read that timed out or was interrupted leaves its job queued; cancel it first.
        for step in (cam.cancel_all_and_flush, cam.stop, cam.close):
            try:
                step()
            except Exception:  # each step in its own try so the camera is always closed
                log.exception("picamera2 source %r: %s failed", self.name, step.__name__)


def i420_to_bgr(array: np.ndarray) -> np.ndarray:
    """BGR image (rows × stride × 3) from a planar YUV420 array of shape (rows * 3/2, stride).

    The same BT.601 limited-range fixed-point arithmetic as OpenCV's ``COLOR_YUV2BGR_I420``
    (bit-identical), in numpy so the Pi camera path runs without loading OpenCV; chroma is
    shared by each 2×2 block of pixels. About 0.3 ms for a 224×224 lores frame.
    """
    rows, stride = array.shape
    h = rows * 2 // 3
    cw, ch = stride // 2, h // 2
    flat = array.reshape(-1)
    u = flat[h * stride : h * stride + ch * cw].reshape(ch, cw).astype(np.int32) - 128
    v = flat[h * stride + ch * cw : h * stride + 2 * ch * cw].reshape(ch, cw).astype(np.int32)
    v -= 128
    half = 1 << (_SHIFT - 1)
    luma = np.maximum(array[:h].astype(np.int32) - 16, 0) * _CY
    out = np.empty((h, stride, 3), np.uint8)
    for channel, chroma in enumerate(
        (half + _CUB * u, half + _CVG * v + _CUG * u, half + _CVR * v)  # B, G, R
    ):
        full = chroma.repeat(2, axis=0).repeat(2, axis=1)
        full += luma
        full >>= _SHIFT
        np.clip(full, 0, 255, out=full)
        out[..., channel] = full
    return out


# BT.601 limited-range YUV → RGB coefficients in 20-bit fixed point, as OpenCV uses them.
_SHIFT = 20
_CY, _CVR, _CVG, _CUG, _CUB = 1220542, 1673527, -852492, -409993, 2116026
