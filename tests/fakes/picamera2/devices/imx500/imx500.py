"""A test double of picamera2's ``IMX500`` and ``NetworkIntrinsics`` for machines without an
AI Camera, after ``picamera2/devices/imx500/imx500.py`` (raspberrypi/picamera2): the same class
and method names, signatures, metadata keys (``CnnOutputTensor``, ``CnnOutputTensorInfo`` as
the ``CnnOutputTensorInfoExported`` struct, ``CnnKpiInfo``), return shapes (``get_outputs``
reshapes each tensor in Fortran order, None without a tensor; ``get_kpi_info`` in ms;
``convert_inference_coords`` gives main-stream ``(x, y, w, h)`` pixels through the frame's
``ScalerCrop``) and errors (``RuntimeError`` for a missing camera or network file).

What the sensor does is simulated with real pixels and a real model: on each frame the fake
camera renders, the "sensor" runs the ``.tflite`` named by ``IMX500.fake_model`` (a YOLOv8-layout
detector such as the bundled shapes-detector; pixels / 255 in, as its manifest says), keeps the
best boxes with class-aware NMS as a ``*_pp`` network's on-sensor post-processing does, and
writes boxes [N,4], scores [N], classes [N] and count [1] in the network's own conventions
(``bbox_order``, ``bbox_normalization`` from its intrinsics). Frames before
``fake_first_tensor`` and off the ``fake_tensor_every`` rhythm carry no tensor, as while the
firmware uploads or when the network runs slower than the camera.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from edge.rpk import read_network
from picamera2 import Picamera2

NETWORK_NAME_LEN = 64
MAX_NUM_TENSORS = 16
MAX_NUM_DIMENSIONS = 16
FULL_SENSOR = (4056, 3040)
TASKS = ("classification", "object detection", "pose estimation", "segmentation")


class OutputTensorInfo(ctypes.LittleEndianStructure):
    _fields_ = [
        ("tensor_data_num", ctypes.c_uint32),
        ("num_dimensions", ctypes.c_uint32),
        ("size", ctypes.c_uint16 * MAX_NUM_DIMENSIONS),
    ]


class CnnOutputTensorInfoExported(ctypes.LittleEndianStructure):
    _fields_ = [
        ("network_name", ctypes.c_char * NETWORK_NAME_LEN),
        ("num_tensors", ctypes.c_uint32),
        ("info", OutputTensorInfo * MAX_NUM_TENSORS),
        ("frameCount", ctypes.c_uint8),
    ]


class NetworkIntrinsics:
    """The network's intrinsics dict with picamera2's property accessors and defaults."""

    def __init__(self, val: dict[str, Any] | None = None) -> None:
        if val is not None:
            _check(val)
        self._intrinsics: dict[str, Any] | None = val
        self._defaults = {"inference_rate": 30.0}

    @property
    def intrinsics(self) -> dict[str, Any] | None:
        return self._intrinsics

    def __repr__(self) -> str:
        return json.dumps(self._intrinsics) if self._intrinsics else ""

    def update_with_defaults(self) -> None:
        self._intrinsics = self._defaults | (self._intrinsics or {})

    def _get(self, key: str, default: Any = None) -> Any:
        return self._intrinsics.get(key, default) if self._intrinsics else default

    def _set(self, key: str, val: Any) -> None:
        _check({key: val})
        self._intrinsics = (self._intrinsics or {}) | {key: val}

    def _cpu(self, key: str) -> Any:
        return (self._get("cpu") or {}).get(key)

    def _set_cpu(self, key: str, val: Any) -> None:
        self._intrinsics = (self._intrinsics or {}) | {"cpu": (self._get("cpu") or {}) | {key: val}}

    @property
    def task(self) -> Any:
        return self._get("task")

    @task.setter
    def task(self, val: str) -> None:
        self._set("task", val)

    @property
    def inference_rate(self) -> Any:
        return self._get("inference_rate")

    @inference_rate.setter
    def inference_rate(self, val: float) -> None:
        self._set("inference_rate", val)

    @property
    def bbox_normalization(self) -> Any:
        return self._cpu("bbox_normalization")

    @bbox_normalization.setter
    def bbox_normalization(self, val: bool) -> None:
        self._set_cpu("bbox_normalization", val)

    @property
    def bbox_order(self) -> Any:
        return self._cpu("bbox_order")

    @bbox_order.setter
    def bbox_order(self, val: str) -> None:
        if val not in ("xy", "yx"):
            raise ValueError("bbox_order must be either 'xy' or 'yx'")
        self._set_cpu("bbox_order", val)

    @property
    def softmax(self) -> Any:
        return self._cpu("softmax")

    @property
    def postprocess(self) -> Any:
        return self._cpu("post_processing")

    @property
    def preserve_aspect_ratio(self) -> Any:
        ar = self._get("input_aspect_ratio")
        return None if ar is None else ar["width"] == ar["height"]

    @property
    def labels(self) -> Any:
        return (self._get("classes") or {}).get("labels")

    @labels.setter
    def labels(self, val: list[str]) -> None:
        self._intrinsics = (self._intrinsics or {}) | {
            "classes": (self._get("classes") or {}) | {"labels": val}
        }

    @property
    def ignore_dash_labels(self) -> Any:
        return (self._get("classes") or {}).get("ignore_undefined")


def _check(val: dict[str, Any]) -> None:
    """The part of picamera2's JSON schema check that a test can trip (jsonschema raises a
    ValidationError, a ValueError here)."""
    if "task" in val and val["task"] not in TASKS:
        raise ValueError(f"{val['task']!r} is not one of {list(TASKS)}")


# -- libcamera Rectangle arithmetic, as convert_inference_coords uses it -----------------------
Rect = tuple[int, int, int, int]


def _scaled(r: Rect, num: tuple[int, int], den: tuple[int, int]) -> Rect:
    x, y, w, h = r
    return (x * num[0] // den[0], y * num[1] // den[1], w * num[0] // den[0], h * num[1] // den[1])


def _bounded(r: Rect, b: Rect) -> Rect:
    x0, y0 = max(r[0], b[0]), max(r[1], b[1])
    x1, y1 = min(r[0] + r[2], b[0] + b[2]), min(r[1] + r[3], b[1] + b[3])
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


class IMX500:
    # -- simulation knobs (not in the real class; $FAKE_IMX500_* set them in a child process) ---
    fake_model: ClassVar[str | None] = os.environ.get("FAKE_IMX500_MODEL")  # the sensor's .tflite
    # Frames before the firmware is loaded (no tensor), then a tensor on every n-th frame.
    fake_first_tensor: ClassVar[int] = int(os.environ.get("FAKE_IMX500_FIRST_TENSOR", "0"))
    fake_tensor_every: ClassVar[int] = int(os.environ.get("FAKE_IMX500_TENSOR_EVERY", "1"))
    fake_kpi_us: ClassVar[tuple[int, int] | None] = (8200, 1100)  # CnnKpiInfo: DNN, DSP µs
    fake_boxes: ClassVar[int] = 16  # rows of the post-processed output (N)
    fake_floor: ClassVar[float] = 0.05  # scores below this are not kept on the sensor
    fake_iou: ClassVar[float] = 0.45

    def __init__(
        self, network_file: str, camera_id: str = "", tensor_injection: bool = False
    ) -> None:
        self.device_fd = None
        self.__cfg: dict[str, Any] = {"network_file": network_file, "input_tensor": {}}
        found = [
            c
            for c in Picamera2.global_camera_info()
            if c["Model"] == "imx500" and (camera_id == "" or camera_id in c["Id"])
        ]
        if not found:
            raise RuntimeError("IMX500: Requested camera dev-node not found")
        self.__camera_num = int(found[0]["Num"])
        if network_file != "":
            path = os.path.abspath(network_file)
            if not os.path.isfile(path):
                raise RuntimeError(f"Firmware file {path} does not exist.")
            network = read_network(Path(path))
            if network.intrinsics:
                self.__cfg["intrinsics"] = NetworkIntrinsics(network.intrinsics)
            if network.input_size is not None:
                w, h = network.input_size
                self.__cfg["input_tensor"].update(width=w, height=h)
                self.__cfg["input_tensor_size"] = (w, h)
        self.set_inference_roi_abs((0, 0, *FULL_SENSOR))
        self._interpreter: Any = None
        Picamera2.fake_sensors[self.__camera_num] = self._fake_metadata

    @property
    def camera_num(self) -> int:
        return self.__camera_num

    @property
    def config(self) -> dict[str, Any]:
        return self.__cfg

    @property
    def network_intrinsics(self) -> NetworkIntrinsics | None:
        return self.__cfg.get("intrinsics", None)

    def get_input_size(self) -> tuple[int, int]:
        """Get the model input tensor size as (width, height)."""
        size: tuple[int, int] = self.__cfg["input_tensor_size"]
        return size

    def show_network_fw_progress_bar(self) -> None:
        """The real one draws a tqdm bar from debugfs; nothing to show here."""

    def set_inference_roi_abs(self, roi: tuple[int, int, int, int]) -> None:
        self.__cfg["roi"] = _bounded(tuple(roi), (0, 0, *FULL_SENSOR))  # type: ignore[arg-type]

    def set_inference_aspect_ratio(self, aspect_ratio: tuple[int, int]) -> None:
        fw, fh = FULL_SENSOR
        w = min(fw, fh * aspect_ratio[0] // aspect_ratio[1])
        h = min(fh, fw * aspect_ratio[1] // aspect_ratio[0])
        self.set_inference_roi_abs(((fw - w) // 2, (fh - h) // 2, w, h))

    def set_auto_aspect_ratio(self) -> None:
        self.set_inference_aspect_ratio(self.__cfg["input_tensor_size"])

    def convert_inference_coords(
        self,
        coords: tuple[float, float, float, float],
        metadata: dict[str, Any],
        picam2: Any,
        stream: str = "main",
    ) -> tuple[int, int, int, int]:
        """Convert relative inference coordinates into the output image coordinates space."""
        isp = tuple(picam2.camera_configuration()[stream]["size"])
        sensor_out = tuple(picam2.camera_configuration()["raw"]["size"])
        y0, x0, y1, x1 = coords
        fw, fh = FULL_SENSOR
        ox, oy, ow, oh = (
            int(v) for v in np.maximum([x0 * fw, y0 * fh, (x1 - x0) * fw, (y1 - y0) * fh], 0)
        )
        obj: Rect = (ox, oy, ow, oh)
        crop = _scaled(tuple(metadata["ScalerCrop"]), sensor_out, FULL_SENSOR)
        if self.__cfg["roi"] != (0, 0, 0, 0):
            obj = _bounded(obj, self.__cfg["roi"])
        on_sensor = _bounded(_scaled(obj, sensor_out, FULL_SENSOR), crop)
        moved = (on_sensor[0] - crop[0], on_sensor[1] - crop[1], on_sensor[2], on_sensor[3])
        return _scaled(moved, isp, (crop[2], crop[3]))

    def get_outputs(
        self, metadata: dict[str, Any], add_batch: bool = False
    ) -> list[np.ndarray] | None:
        """Get the model outputs."""
        output_tensor = metadata.get("CnnOutputTensor")
        if not output_tensor:
            return None
        flat = np.fromiter(output_tensor, dtype=np.float32)
        outputs, offset = [], 0
        for shape in self.get_output_shapes(metadata):
            size = int(np.prod(shape))
            tensor = flat[offset : offset + size].reshape(shape, order="F")
            outputs.append(np.expand_dims(tensor, 0) if add_batch else tensor)
            offset += size
        return outputs

    def get_output_shapes(self, metadata: dict[str, Any]) -> list[list[int]]:
        """Get the model output shapes if no output return empty list."""
        info = metadata.get("CnnOutputTensorInfo")
        if not info:
            return []
        parsed = CnnOutputTensorInfoExported.from_buffer_copy(bytes(info))
        return [list(t.size)[: t.num_dimensions] for t in parsed.info[: parsed.num_tensors]]

    @staticmethod
    def get_kpi_info(metadata: dict[str, Any]) -> tuple[float, float] | None:
        """Return the KPI parameters in the form (dnn_runtime, dsp_runtime) in milliseconds."""
        kpi = metadata.get("CnnKpiInfo")
        if kpi is None:
            return None
        return kpi[0] / 1000, kpi[1] / 1000

    # -- the simulated sensor -------------------------------------------------------------------

    def _fake_metadata(self, bgr: np.ndarray, frame: int) -> dict[str, Any]:
        """What the driver adds to the request of ``frame`` (the camera's BGR pixels)."""
        late = frame - IMX500.fake_first_tensor
        if late < 0 or late % IMX500.fake_tensor_every:
            return {}
        boxes, scores, classes = self._fake_detect(bgr)
        intrinsics = self.network_intrinsics
        if intrinsics is not None and intrinsics.bbox_order == "xy":
            boxes = boxes[:, [1, 0, 3, 2]]
        if intrinsics is not None and intrinsics.bbox_normalization:
            w, h = self.get_input_size()
            scale = [w, h, w, h] if intrinsics.bbox_order == "xy" else [h, w, h, w]
            boxes = boxes * np.array(scale, np.float32)
        n = IMX500.fake_boxes
        tensors = [boxes, scores, classes, np.array([float(len(scores))], np.float32)]
        padded = [np.zeros((n, 4), np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)]
        for dst, src in zip(padded, tensors, strict=False):
            dst[: len(src)] = src
        padded.append(tensors[3])
        return fake_tensor_metadata(padded)

    def _fake_detect(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the model on the whole image: normalized y0,x0,y1,x1 boxes, scores, classes,
        best first, after class-aware NMS."""
        if IMX500.fake_model is None:
            raise RuntimeError("IMX500.fake_model: set the .tflite the fake sensor runs")
        if self._interpreter is None:
            from edge.runtime import load

            self._interpreter = load(Path(IMX500.fake_model))
        interp = self._interpreter
        spec = interp.inputs[0]
        _, h, w, _ = spec.shape
        rgb = cv2.cvtColor(
            cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
        )
        real = rgb.astype(np.float32) / 255.0
        q = np.clip(np.round(real / spec.scale + spec.zero_point), 0, 255).astype(spec.dtype)
        interp.set_input(q[None])
        interp.invoke()
        out = interp.outputs[0].dequantize(interp.output(0))[0].T  # [N, 4 + C]
        cls = out[:, 4:]
        ids = cls.argmax(axis=1)
        scores = cls[np.arange(len(cls)), ids]
        keep = scores >= IMX500.fake_floor
        xywh, scores, ids = out[keep, :4], scores[keep], ids[keep]
        if len(xywh) and float(np.abs(xywh).max()) > 2.0:
            xywh = xywh / np.array([w, h, w, h], np.float32)
        yx = np.stack(
            [
                xywh[:, 1] - xywh[:, 3] / 2,
                xywh[:, 0] - xywh[:, 2] / 2,
                xywh[:, 1] + xywh[:, 3] / 2,
                xywh[:, 0] + xywh[:, 2] / 2,
            ],
            axis=1,
        )
        chosen: list[int] = []
        for i in np.argsort(-scores, kind="stable"):
            if len(chosen) == IMX500.fake_boxes:
                break
            if all(ids[j] != ids[i] or _iou(yx[i], yx[j]) <= IMX500.fake_iou for j in chosen):
                chosen.append(int(i))
        return yx[chosen].astype(np.float32), scores[chosen], ids[chosen].astype(np.float32)


def fake_tensor_metadata(tensors: list[np.ndarray]) -> dict[str, Any]:
    """The metadata keys a frame carrying ``tensors`` has: ``CnnOutputTensor`` (every tensor
    flattened in Fortran order, as get_outputs reshapes them), ``CnnOutputTensorInfo`` (the
    struct's bytes) and, unless ``IMX500.fake_kpi_us`` is None, ``CnnKpiInfo``."""
    info = CnnOutputTensorInfoExported()
    info.network_name = b"fake_network"
    info.num_tensors = len(tensors)
    for i, t in enumerate(tensors):
        info.info[i].tensor_data_num = t.size
        info.info[i].num_dimensions = t.ndim
        for d, size in enumerate(t.shape):
            info.info[i].size[d] = size
    metadata: dict[str, Any] = {
        "CnnOutputTensor": np.concatenate(
            [np.asarray(t, np.float32).flatten(order="F") for t in tensors]
        ).tolist(),
        "CnnOutputTensorInfo": bytes(info),
    }
    if IMX500.fake_kpi_us is not None:
        metadata["CnnKpiInfo"] = list(IMX500.fake_kpi_us)
    return metadata


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
