"""The Raspberry Pi AI Camera (Sony IMX500) through picamera2: the network runs on the sensor.

Opening follows picamera2's order: ``IMX500(network)`` first (it finds the sensor's V4L2
subdevice and hands it the network firmware), then ``Picamera2(imx500.camera_num)``, configured
at the network's ``inference_rate`` unless ``fps`` is set. Every request's metadata may carry
the network's outputs for that frame: ``imx500.get_outputs(metadata, add_batch=True)``, None on
frames without (while the firmware uploads, or when the network runs slower than the camera);
those frames are handed on without outputs, and the pipeline counts them (``no_tensor``).

Boxes: the sensor reports them normalized to the sensor's image, and picamera2's
``convert_inference_coords(box, metadata, picam2)`` maps one box to main-stream pixels through
the frame's ``ScalerCrop``. That mapping is affine, so it is taken once per crop from one
reference box, as the :class:`~edge.preprocess.Transform` the postprocessing already applies to
every box it keeps: decoding runs on the result thread, which does not own the camera, and the
boxes it keeps are only known there. The sensor's ``bbox_order`` (``xy``) and
``bbox_normalization`` (pixels of the input tensor) are undone here, per axis, so the SSD
decoder reads normalized ``y0, x0, y1, x1`` as it does from TFLite's post-process op.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge.choices import SourceKind
from edge.errors import ConfigError, SourceError
from edge.frame import Frame, SensorOutput
from edge.preprocess import Transform
from edge.sources.base import Options, SourceSpec
from edge.sources.picamera2 import Picamera2Source

log = logging.getLogger(__name__)

NETWORK_DIR = Path("/usr/share/imx500-models")  # where apt's imx500-models puts the networks
# y0, x0, y1, x1 of the box whose mapping gives the Transform: the middle of the sensor, so it
# stays inside any crop short of a 2x zoom.
REFERENCE_BOX = (0.25, 0.25, 0.75, 0.75)

NOT_INSTALLED = (
    "picamera2's AI Camera support (picamera2.devices.imx500) cannot be imported ({exc}): on "
    "Raspberry Pi OS run 'sudo apt install imx500-all python3-picamera2' and create the "
    "virtual environment with 'python3 -m venv --system-site-packages' so it can import it"
)
NO_SENSOR = (
    "no AI Camera found ({exc}): check the ribbon cable is seated the right way round at both "
    "ends, that 'rpicam-hello --list-cameras' lists an imx500, and that this user is in the "
    "'video' group"
)


class IMX500Source(Picamera2Source):
    """An AI Camera; ``spec.target`` is the network (.rpk) to run, ``spec.width``/``height``
    size the main stream handed on (default 640x480), ``spec.fps`` the frame rate (default: the
    network's inference rate). Frames carry the network's outputs (``Frame.sensor``) in the
    order :class:`edge.runtime.sensor.SensorModel` declares them.

    options: ``camera_id`` (picamera2's: part of the sensor's device-tree id, to choose one of
    two AI Cameras; default the first), ``timeout`` and ``buffer_count`` as for picamera2.
    """

    kind: ClassVar[SourceKind] = "imx500"
    HARDWARE_SCALING = False  # the network sees the sensor; the frame is the main stream
    OPTIONS: ClassVar[dict[str, type]] = {"camera_id": str, "timeout": float, "buffer_count": int}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.camera_id = Options(spec, self.OPTIONS).text("camera_id", "")
        if spec.rotate or spec.flip is not None:
            raise ConfigError(
                "source.rotate/flip: not available with imx500 (the network's boxes refer to "
                "the sensor's image)"
            )
        self._imx500: Any = None
        self._detection = True
        self._xy = False
        self._scale = np.ones(4, np.float32)  # divides pixel boxes into normalized ones
        self._crop: object = None
        self._transform = Transform()

    def _open(self) -> None:
        try:
            # picamera2 and its IMX500 helpers come from apt on the Pi: import on use.
            from picamera2.devices.imx500 import IMX500, NetworkIntrinsics
        except ImportError as exc:
            raise SourceError(NOT_INSTALLED.format(exc=exc)) from exc
        log.info(
            "imx500 source %r: loading network %s onto the sensor", self.name, self.spec.target
        )
        try:
            imx500 = IMX500(self.spec.target, camera_id=self.camera_id)
        except (RuntimeError, OSError, StopIteration) as exc:
            raise SourceError(NO_SENSOR.format(exc=exc)) from exc
        intrinsics = imx500.network_intrinsics
        if not intrinsics:  # as picamera2's examples: a network without them detects objects
            intrinsics = NetworkIntrinsics()
            intrinsics.task = "object detection"
        intrinsics.update_with_defaults()
        self._detection = intrinsics.task != "classification"
        self._xy = intrinsics.bbox_order == "xy"
        if intrinsics.bbox_normalization:
            w, h = imx500.get_input_size()
            self._scale = np.array([h, w, h, w], np.float32)  # y0, x0, y1, x1 after the swap
        self._crop = None
        self._start_camera(imx500.camera_num, self.spec.fps or intrinsics.inference_rate)
        if intrinsics.preserve_aspect_ratio:
            imx500.set_auto_aspect_ratio()
        self._imx500 = imx500

    def _read(self) -> Frame:
        array, metadata, received = self._capture()
        image = self._to_bgr(array, self._cam.camera_config[self._stream])
        return self._frame(
            image,
            ts_mono=self._capture_time(metadata, received),
            sensor=self._sensor_output(metadata),
        )

    def _sensor_output(self, metadata: dict[str, Any]) -> SensorOutput | None:
        """The frame's network outputs in the declared order, or None when it has none."""
        imx500 = self._imx500
        outputs = imx500.get_outputs(metadata, add_batch=True)
        if outputs is None:
            return None
        kpi = imx500.get_kpi_info(metadata)
        dnn_ms, dsp_ms = (float(kpi[0]), float(kpi[1])) if kpi is not None else (None, None)
        if not self._detection:
            values: tuple[np.ndarray, ...] = (np.asarray(outputs[0], np.float32).reshape(1, -1),)
        else:
            if len(outputs) < 3:
                raise SourceError(
                    f"imx500 source {self.name!r}: the network gave {len(outputs)} output(s), "
                    "not the boxes, scores and classes of a detection network; check the "
                    "camera's network"
                )
            boxes = np.asarray(outputs[0][0], np.float32).reshape(-1, 4)
            if self._xy:
                boxes = boxes[:, [1, 0, 3, 2]]
            boxes = boxes / self._scale
            scores = np.asarray(outputs[1], np.float32).reshape(1, -1)
            classes = np.asarray(outputs[2], np.float32).reshape(1, -1)
            # Every row is scored: rows past the sensor's own count carry score 0.
            count = np.array([len(boxes)], np.float32)
            values = (boxes[None], classes, scores, count)
        return SensorOutput(values, self._frame_transform(metadata), dnn_ms, dsp_ms)

    def _frame_transform(self, metadata: dict[str, Any]) -> Transform:
        """Sensor-normalized → frame-normalized coordinates for this frame's crop (computed
        again only when the crop changes)."""
        crop = metadata.get("ScalerCrop")
        if crop == self._crop and self._crop is not None:
            return self._transform
        y0, x0, y1, x1 = REFERENCE_BOX
        x, y, w, h = self._imx500.convert_inference_coords(REFERENCE_BOX, metadata, self._cam)
        width, height = self._cam.camera_config["main"]["size"]
        if w <= 0 or h <= 0:
            log.warning(
                "imx500 source %r: the crop %s leaves out the middle of the sensor; boxes are "
                "taken as normalized to the frame",
                self.name,
                crop,
            )
            transform = Transform()
        else:
            sx = w / width / (x1 - x0)
            sy = h / height / (y1 - y0)
            transform = Transform(sx, sy, x / width - x0 * sx, y / height - y0 * sy)
        self._crop, self._transform = crop, transform
        return transform

    def _release(self) -> None:
        super()._release()
        self._imx500 = None  # picamera2 closes the sensor's device when the object goes


def probe() -> dict[str, object]:
    """What ``edge info`` shows of the AI Camera: ``found`` when picamera2's IMX500 module
    imports and networks are installed; ``devices``: the AI Cameras libcamera lists;
    ``networks``: the installed .rpk files; ``problem``: why not found. Never raises."""
    out: dict[str, object] = {
        "name": "imx500",
        "found": False,
        "version": "",
        "devices": [],
        "networks": [],
        "problem": "",
    }
    try:
        import importlib.metadata

        try:
            import picamera2.devices.imx500
            from picamera2 import Picamera2
        except ImportError as exc:
            out["problem"] = NOT_INSTALLED.format(exc=exc)
            return out
        try:
            out["version"] = importlib.metadata.version("picamera2")
        except importlib.metadata.PackageNotFoundError:
            out["version"] = str(getattr(picamera2, "__version__", ""))
        networks = sorted(str(p) for p in NETWORK_DIR.glob("*.rpk"))
        out["networks"] = networks
        out["devices"] = [
            f"camera {c.get('Num')}: {c.get('Id')}"
            for c in Picamera2.global_camera_info()
            if c.get("Model") == "imx500"
        ]
        out["found"] = bool(networks)
        if not networks:
            out["problem"] = (
                f"no networks in {NETWORK_DIR}: sudo apt install imx500-all (or give a "
                "network's path in the camera's network key)"
            )
        elif not out["devices"]:
            out["problem"] = "no AI Camera attached (libcamera lists no imx500)"
    except Exception as exc:  # a probe reports, it never stops `edge info`
        out["problem"] = f"probing the AI Camera failed: {exc}"
    return out
