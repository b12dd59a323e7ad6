"""A Picamera2 that runs without a camera: same signatures, same config dictionaries, same
validation errors, and a background "camera loop" thread that completes requests at the
configured frame rate with real pixels (an ``edge.scene`` clip) in the real memory layouts.

Simulation knobs are class attributes whose names start with ``fake_``; tests set them with
``monkeypatch.setattr`` (the camera model also from the environment, for child processes).
Everything else mirrors picamera2's public behaviour as used by edge.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import cv2
import libcamera
import numpy as np

from edge.scene import MovingScene

from .job import Job
from .request import CompletedRequest

_EMPTY: Mapping[str, Any] = MappingProxyType({})
YUV_FORMATS = {"NV21", "NV12", "YUV420", "YVU420", "YVYU", "YUYV", "UYVY", "VYUY"}
RGB_FORMATS = {"BGR888", "RGB888", "XBGR8888", "XRGB8888"}
RAW_FORMAT = "SRGGB10_CSI2P"
KNOWN_CONTROLS = {
    "FrameRate",
    "FrameDurationLimits",
    "NoiseReductionMode",
    "ExposureTime",
    "AnalogueGain",
    "AeEnable",
    "AwbEnable",
    "Brightness",
    "Contrast",
    "ScalerCrop",
}


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class Picamera2:
    # -- simulation knobs (not in the real class) ---------------------------------------------
    fake_cameras: ClassVar[int] = 1  # cameras libcamera lists; 0 = nothing plugged in
    fake_init_fails: ClassVar[bool] = False  # camera listed but cannot be opened
    fake_stall_after: ClassVar[int | None] = None  # stop delivering after this many frames
    fake_platform: ClassVar[str] = "vc4"  # "vc4" (Pi 4: lores must be YUV) or "pisp" (Pi 5)
    fake_seed: ClassVar[int] = 3  # scene: MovingScene(main size, count=3, seed=fake_seed)
    fake_speed: ClassVar[float | None] = None  # shape speed in px/s; 0 = a still scene
    # The sensor: "imx708" (Camera Module 3) or "imx500" (AI Camera); $FAKE_PICAMERA2_MODEL
    # sets it for a daemon run in a child process.
    fake_model: ClassVar[str] = os.environ.get("FAKE_PICAMERA2_MODEL", "imx708")
    # Per camera number: adds metadata to each request from the frame's BGR pixels and number
    # (what the IMX500 driver and libcamera do for the AI Camera; set by the fake IMX500).
    fake_sensors: ClassVar[dict[int, Callable[[np.ndarray, int], dict[str, Any]]]] = {}

    sensor_format = RAW_FORMAT
    SENSORS: ClassVar[dict[str, tuple[tuple[int, int], tuple[int, int]]]] = {
        # model: (full resolution, the binned mode picamera2 picks for video-sized streams)
        "imx708": ((4608, 2592), (2304, 1296)),
        "imx500": ((4056, 3040), (2028, 1520)),
    }

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        """One dict per attached camera: Model, Location, Rotation, Id, Num."""
        model = Picamera2.fake_model
        return [
            {
                "Model": model,
                "Location": 2,
                "Rotation": 180 if model == "imx708" else 0,
                "Id": f"/base/axi/pcie@120000/rp1/i2c@88000/{model}@{0x1A + i:x}",
                "Num": i,
            }
            for i in range(Picamera2.fake_cameras)
        ]

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: Any = None,
        tuning: Any = None,
        allocator: Any = None,
    ) -> None:
        self._preview = None
        self.is_open = False
        self.started = False
        self.camera: object | None = None
        # Like the real one: an empty camera list makes this an IndexError.
        self.camera_idx = self.global_camera_info()[camera_num]["Num"]
        if Picamera2.fake_init_fails:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera = object()
        self.is_open = True
        self.model = Picamera2.fake_model
        self.sensor_resolution, self._sensor_mode = self.SENSORS[self.model]
        self.camera_properties: dict[str, Any] = {
            "Model": self.model,
            "PixelArraySize": self.sensor_resolution,
            "ColorFilterArrangement": 0,
        }
        self.camera_config: dict[str, Any] = {}
        # Re-entrant: a job releasing a request runs under the lock and the release takes it too.
        self.lock = threading.RLock()
        self.completed_requests: list[CompletedRequest] = []
        self._job_list: list[Job] = []
        self._max_queue_len = 1
        self._in_flight = 0  # requests handed out and not yet released
        self._controls: dict[str, Any] = {}
        self._scene: MovingScene | None = None
        self._loop: threading.Thread | None = None
        self._loop_stop = threading.Event()
        self.frames = 0

    def __enter__(self) -> Picamera2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configurations -----------------------------------------------------------------------

    @staticmethod
    def _make_initial_stream_config(
        stream_config: dict[str, Any], updates: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        if updates is None:
            return None
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in updates.items():
            if key not in valid:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
            stream_config[key] = value
        return stream_config

    @staticmethod
    def align_stream(stream_config: dict[str, Any], optimal: bool = True) -> None:
        align = (32 if Picamera2.fake_platform == "vc4" else 64) if optimal else 2
        w, h = stream_config["size"]
        stream_config["size"] = (w - w % align, h - h % 2)

    def create_video_configuration(
        self,
        main: Mapping[str, Any] = _EMPTY,
        lores: Mapping[str, Any] | None = None,
        raw: Mapping[str, Any] | None = _EMPTY,
        transform: libcamera.Transform | None = None,
        colour_space: libcamera.ColorSpace | None = None,
        buffer_count: int = 6,
        controls: Mapping[str, Any] = _EMPTY,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: Mapping[str, Any] | None = _EMPTY,
        use_case: str = "video",
    ) -> dict[str, Any]:
        """Same keys and defaults as picamera2's video configuration."""
        if self.camera is None:
            raise RuntimeError("Camera not opened")
        main_cfg = self._make_initial_stream_config(
            {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main
        )
        assert main_cfg is not None
        self.align_stream(main_cfg, optimal=False)
        lores_cfg = self._make_initial_stream_config(
            {"format": "YUV420", "size": main_cfg["size"], "preserve_ar": False}, lores
        )
        if lores_cfg is not None:
            self.align_stream(lores_cfg, optimal=False)
        raw_cfg = self._make_initial_stream_config(
            {"format": self.sensor_format, "size": main_cfg["size"]}, raw
        )
        if colour_space is None:
            small = main_cfg["size"][0] < 1280 or main_cfg["size"][1] < 720
            colour_space = (
                libcamera.ColorSpace.Smpte170m() if small else libcamera.ColorSpace.Rec709()
            )
        config: dict[str, Any] = {
            "use_case": use_case,
            "transform": transform if transform is not None else libcamera.Transform(),
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": raw_cfg,
            "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)}
            | dict(controls),
            "sensor": dict(sensor) if sensor is not None else None,
        }
        for key, stream in (("display", display), ("encode", encode)):
            if stream is not None and config.get(stream) is None:
                raise RuntimeError(f"{key.capitalize()} stream {stream} was not defined")
            config[key] = stream
        return config

    def create_preview_configuration(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("buffer_count", 4)
        kwargs.setdefault("main", {"format": "XBGR8888", "size": (640, 480)})
        kwargs.setdefault("colour_space", libcamera.ColorSpace.Sycc())
        config = self.create_video_configuration(**kwargs)
        config["use_case"] = "preview"
        return config

    def check_stream_config(self, stream_config: Any, name: str) -> None:
        if type(stream_config) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        if "format" not in stream_config:
            raise RuntimeError("format not found in " + name + " stream")
        if "size" not in stream_config:
            raise RuntimeError("size not found in " + name + " stream")
        fmt = stream_config["format"]
        if type(fmt) is not str:
            raise RuntimeError("format in " + name + " stream should be a string")
        if name == "raw":
            if fmt != RAW_FORMAT:
                raise RuntimeError("Unrecognised raw format " + fmt)
        elif fmt not in YUV_FORMATS and fmt not in RGB_FORMATS:
            raise RuntimeError("Bad format " + fmt + " in stream " + name)
        size = stream_config["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def check_camera_config(self, camera_config: dict[str, Any]) -> None:
        for name in ("colour_space", "transform", "main", "lores", "raw"):
            if name not in camera_config:
                raise RuntimeError(f"{name!r} key expected in camera configuration")
        if not isinstance(camera_config["colour_space"], libcamera.ColorSpace):
            raise RuntimeError("Colour space has incorrect type")
        if not isinstance(camera_config["transform"], libcamera.Transform):
            raise RuntimeError("Transform has incorrect type")
        self.check_stream_config(camera_config["main"], "main")
        if camera_config["lores"] is not None:
            self.check_stream_config(camera_config["lores"], "lores")
            main_w, main_h = camera_config["main"]["size"]
            lores_w, lores_h = camera_config["lores"]["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if Picamera2.fake_platform == "vc4" and camera_config["lores"]["format"] not in (
                YUV_FORMATS
            ):
                raise RuntimeError("lores stream must be YUV")
        if camera_config["raw"] is not None:
            self.check_stream_config(camera_config["raw"], "raw")

    def configure(self, camera_config: Any = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None or camera_config == "preview":
            camera_config = self.create_preview_configuration()
        elif camera_config == "video":
            camera_config = self.create_video_configuration()
        elif not isinstance(camera_config, dict):
            raise TypeError("Invalid type for `camera_config` given")
        config: dict[str, Any] = {
            k: (dict(v) if isinstance(v, dict) else v) for k, v in camera_config.items()
        }
        if config["raw"] is not None and config["raw"].get("size") is None:
            config["raw"]["size"] = config["main"]["size"]
        if config["raw"] is not None and self.model == "imx500":
            config["raw"]["size"] = self._sensor_mode  # the IMX500 has two modes; video: binned
        self.camera_config = {}
        self.check_camera_config(config)
        for name in ("main", "lores"):
            stream = config[name]
            if stream is None:
                continue
            # What libcamera fills in: rows padded like the ISP pads them.
            w, h = stream["size"]
            if stream["format"] in ("YUV420", "YVU420"):
                stream["stride"] = _align(w, 64)
                stream["framesize"] = stream["stride"] * h * 3 // 2
            else:
                bpp = 3 if stream["format"] in ("RGB888", "BGR888") else 4
                stream["stride"] = _align(w * bpp, 64)
                stream["framesize"] = stream["stride"] * h
        controls = dict(config["controls"])
        unknown = set(controls) - KNOWN_CONTROLS
        if unknown:
            raise RuntimeError(f"Control {sorted(unknown)[0]} is not advertised by libcamera")
        if "FrameRate" in controls:
            rate = controls.pop("FrameRate")
            period = int(1_000_000 / rate)
            controls["FrameDurationLimits"] = (period, period)
        self._controls = controls
        self._max_queue_len = 1 if config["queue"] and config["buffer_count"] > 1 else 0
        w, h = config["main"]["size"]
        self._scene = MovingScene(
            w, h, count=3, seed=Picamera2.fake_seed, speed=Picamera2.fake_speed
        )
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        return dict(self.camera_config[name])

    # -- running ------------------------------------------------------------------------------

    def start(self, config: Any = None, show_preview: bool | None = False) -> None:
        if not self.camera_config and config is None:
            config = "preview"
        if config is not None:
            self.configure(config)
        if self.started:
            return
        self.started = True
        self._loop_stop.clear()
        self._loop = threading.Thread(target=self._run_loop, name="fake-picamera2", daemon=True)
        self._loop.start()

    def stop(self) -> None:
        if not self.started:
            return
        self._loop_stop.set()
        if self._loop is not None:
            self._loop.join()
        self._loop = None
        self.started = False
        with self.lock:
            pending, self.completed_requests = self.completed_requests, []
        for request in pending:
            request.release()

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera = None
        self.camera_config = {}

    def cancel_all_and_flush(self) -> None:
        with self.lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    def _frame_period(self) -> float:
        return float(self._controls.get("FrameDurationLimits", (33333, 33333))[1]) / 1e6

    def _run_loop(self) -> None:
        period = self._frame_period()
        next_due = time.monotonic() + period
        while not self._loop_stop.wait(max(0.0, next_due - time.monotonic())):
            next_due += period
            stalled = (
                Picamera2.fake_stall_after is not None and self.frames >= Picamera2.fake_stall_after
            )
            # A camera whose buffers are all held by the application cannot deliver any more.
            if stalled or self._in_flight >= self.camera_config["buffer_count"]:
                continue
            self._complete(self._make_request())

    def _make_request(self) -> CompletedRequest:
        assert self._scene is not None
        period = self._frame_period()
        bgr, _ = self._scene.frame(self.frames * period)
        buffers = {"main": _encode(bgr, self.camera_config["main"])}
        lores = self.camera_config["lores"]
        if lores is not None:
            # The ISP scales the full field of view into the lores size (preserve_ar False).
            small = cv2.resize(bgr, lores["size"], interpolation=cv2.INTER_AREA)
            buffers["lores"] = _encode(small, lores)
        exposure_us = int(min(period * 0.5, 0.02) * 1e6)
        now_ns = time.monotonic_ns()
        metadata = {
            "SensorTimestamp": now_ns - exposure_us * 1000 - 5_000_000,
            "ExposureTime": exposure_us,
            "FrameDuration": int(period * 1e6),
            "AnalogueGain": 1.0,
            "DigitalGain": 1.0,
            "ColourTemperature": 5000,
            "Lux": 400.0,
            "ScalerCrop": (0, 0, *self.sensor_resolution),
        }
        sensor = Picamera2.fake_sensors.get(self.camera_idx)
        if sensor is not None:
            metadata.update(sensor(bgr, self.frames))
        self.frames += 1
        with self.lock:
            self._in_flight += 1
        return CompletedRequest(buffers, self.camera_config, metadata, self._request_freed)

    def _request_freed(self, _request: CompletedRequest) -> None:
        with self.lock:
            self._in_flight -= 1

    def _complete(self, request: CompletedRequest) -> None:
        finished = []
        with self.lock:
            self.completed_requests.append(request)
            while self._job_list and self._job_list[0].execute():
                finished.append(self._job_list.pop(0))
            surplus = []
            while len(self.completed_requests) > self._max_queue_len:
                surplus.append(self.completed_requests.pop(0))
        for old in surplus:
            old.release()
        for job in finished:
            job.signal()

    # -- captures (each is a job completed by the camera loop) ---------------------------------

    def dispatch_functions(
        self,
        functions: list[Callable[[], tuple[bool, Any]]],
        wait: bool | float | None,
        signal_function: Any = None,
        immediate: bool = False,
    ) -> Any:
        if wait is None:
            wait = signal_function is None
        timeout = None if wait is True else wait
        job = Job(functions, signal_function)
        done = False
        with self.lock:
            self._job_list.append(job)
            # A request already waiting satisfies the job at once, as the real event loop does.
            if len(self._job_list) == 1 and self.completed_requests and job.execute():
                self._job_list.pop(0)
                done = True
        if done:
            job.signal()
        return job.get_result(timeout=timeout) if wait else job

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        return job.get_result(timeout=timeout)

    def _pop_request(self) -> tuple[bool, Any]:
        if not self.completed_requests:
            return (False, None)
        return (True, self.completed_requests.pop(0))

    def capture_request(
        self, wait: bool | float | None = None, signal_function: Any = None, flush: Any = None
    ) -> Any:
        """The next completed request; the caller must ``release()`` it."""
        return self.dispatch_functions([self._pop_request], wait, signal_function)

    def capture_array(
        self, name: str = "main", wait: bool | float | None = None, signal_function: Any = None
    ) -> Any:
        def take() -> tuple[bool, Any]:
            if not self.completed_requests:
                return (False, None)
            request = self.completed_requests.pop(0)
            try:
                return (True, request.make_array(name))
            finally:
                request.release()

        return self.dispatch_functions([take], wait, signal_function)


def _encode(bgr: np.ndarray, stream: dict[str, Any]) -> np.ndarray:
    """The flat buffer the ISP would write for ``bgr`` in ``stream``'s format and stride."""
    fmt, stride = stream["format"], stream["stride"]
    h, w = bgr.shape[:2]
    if fmt in ("YUV420", "YVU420"):
        flat = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
        y = flat[: w * h].reshape(h, w)
        u = flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
        v = flat[w * h * 5 // 4 :].reshape(h // 2, w // 2)
        if fmt == "YVU420":
            u, v = v, u
        out = np.zeros(stride * h * 3 // 2, np.uint8)
        out[: stride * h].reshape(h, stride)[:, :w] = y
        half = stride // 2
        chroma = out[stride * h :]
        chroma[: half * h // 2].reshape(h // 2, half)[:, : w // 2] = u
        chroma[half * h // 2 :].reshape(h // 2, half)[:, : w // 2] = v
        return out
    if fmt == "RGB888":  # BGR in memory
        pixels = bgr
    elif fmt == "BGR888":  # RGB in memory
        pixels = bgr[:, :, ::-1]
    elif fmt == "XBGR8888":  # R, G, B, X in memory
        pixels = np.dstack([bgr[:, :, ::-1], np.full((h, w), 255, np.uint8)])
    elif fmt == "XRGB8888":  # B, G, R, X in memory
        pixels = np.dstack([bgr, np.full((h, w), 255, np.uint8)])
    else:
        raise RuntimeError("Format " + fmt + " not supported")
    out = np.zeros((h, stride), np.uint8)
    out[:, : pixels.shape[1] * pixels.shape[2]] = pixels.reshape(h, -1)
    return out.reshape(-1)
