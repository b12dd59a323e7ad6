"""The fake's "chip": the stand-in HEF it reads and the inference it runs.

No real HEF can be compiled here (the Hailo Dataflow Compiler is not public), so a stand-in
HEF is a real HEF header (``hef_internal.hpp`` ``hef__header_t``, version 1, big-endian) whose
``ProtoHEFHef`` message holds only ``header`` (``hw_arch``, ``sdk_version``, as in
``hef.proto``), followed by a JSON description of the network where a real HEF keeps its
compiled contexts: input and output vstreams, the NMS config, and the TFLite model standing in
for the compiled network with the normalization the Dataflow Compiler would fold into it.
:func:`write` makes one (tests/hailo_files.py calls it).

:class:`Chip` runs that TFLite model on the bound uint8 input and then HailoRT's YOLOv8 NMS
post-process as ``net_flow/ops/yolov8_post_process.hpp`` and ``nms_post_process.cpp`` do it:
every (anchor, class) whose score reaches ``nms_score_th`` is a candidate (a box can be a
candidate for several classes), candidates sorted by score, a lower one of the same class
removed at IoU >= ``nms_iou_th``, at most ``max_proposals_per_class`` kept per class, written
per class as a count followed by that many ``y_min, x_min, y_max, x_max, score``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = 0x01484546
ARCHS = {"HAILO8": 0, "HAILO8P": 1, "HAILO8R": 2, "HAILO8L": 3, "HAILO15M": 4, "HAILO10H": 5}
# device_internal.cpp DeviceBase::is_hef_compatible (the Hailo-8/8L/10H rows).
RUNS_ON = {
    "HAILO8": {"HAILO8P", "HAILO8R", "HAILO8L"},
    "HAILO8L": {"HAILO8L"},
    "HAILO10H": {"HAILO15H", "HAILO15M", "HAILO10H"},
}


def runs_on(target: str, device: str) -> bool:
    return target in RUNS_ON.get(device, set())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write(path: Path, target: str, network: dict[str, Any], sdk: str = "3.31.0") -> Path:
    """A stand-in HEF for ``target`` (``HAILO8L``, ``HAILO8P`` for a Hailo-8 HEF...)."""
    header = _varint(1 << 3) + _varint(ARCHS[target]) + _field(3, sdk.encode())
    proto = _field(1, header)
    body = json.dumps(network).encode()
    head = struct.pack(">III", MAGIC, 1, len(proto)) + struct.pack(">IQI", 0, len(body), 0)
    path.write_bytes(head + proto + body)
    return path


@dataclass
class Network:
    target: str
    group: str
    input_name: str
    input_shape: tuple[int, ...]
    input_type: str
    output_name: str
    output_order: str
    classes: int
    per_class: int
    score_th: float
    iou_th: float
    tflite: str
    mean: list[float]
    std: list[float]

    @classmethod
    def read(cls, source: str | bytes) -> Network:
        """Parse a stand-in HEF (a path or its bytes); ValueError for anything else."""
        data = Path(source).read_bytes() if isinstance(source, str) else source
        if len(data) < 28 or struct.unpack_from(">I", data)[0] != MAGIC:
            raise ValueError("HEF magic does not match")
        version, size = struct.unpack_from(">II", data, 4)
        if version != 1:
            raise ValueError(f"Unsupported hef version {version}")
        proto = data[28 : 28 + size]
        # ProtoHEFHef{header{hw_arch}}: tag, length, tag, value (one byte for the archs here).
        arch = proto[3] if len(proto) > 3 and proto[2] == 0x08 else 0
        names = {v: k for k, v in ARCHS.items()}
        d = json.loads(data[28 + size :])
        return cls(
            target=names[arch],
            group=d["group"],
            input_name=d["input"]["name"],
            input_shape=tuple(d["input"]["shape"]),
            input_type=d["input"].get("type", "UINT8"),
            output_name=d["output"]["name"],
            output_order=d["output"].get("order", "HAILO_NMS_BY_CLASS"),
            classes=d["output"]["classes"],
            per_class=d["output"]["max_bboxes_per_class"],
            score_th=d["output"]["nms_score_th"],
            iou_th=d["output"]["nms_iou_th"],
            tflite=d["network"]["tflite"],
            mean=d["network"]["mean"],
            std=d["network"]["std"],
        )


class Chip:
    """Runs one configured network; one inference at a time (the caller holds a lock)."""

    def __init__(self, net: Network) -> None:
        from ai_edge_litert.interpreter import Interpreter  # the venv's TFLite runtime

        self.net = net
        self._interp = Interpreter(model_path=net.tflite, num_threads=1)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]

    def infer(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Read the uint8 input ``src``, write the NMS-by-class frame into ``dst``."""
        net = self.net
        real = (src.astype(np.float32) - np.float32(net.mean[0])) / np.float32(net.std[0])
        scale, zero = self._in["quantization"]
        info = np.iinfo(self._in["dtype"])
        q = np.clip(np.round(real / scale + zero), info.min, info.max).astype(self._in["dtype"])
        self._interp.set_tensor(self._in["index"], q[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out["index"])[0]
        out_scale, out_zero = self._out["quantization"]
        rows = ((raw.astype(np.float32) - out_zero) * np.float32(out_scale)).T  # [N, 4+C]
        xywh, scores = rows[:, :4], rows[:, 4:]
        boxes = np.stack(
            [
                xywh[:, 1] - xywh[:, 3] / 2,
                xywh[:, 0] - xywh[:, 2] / 2,
                xywh[:, 1] + xywh[:, 3] / 2,
                xywh[:, 0] + xywh[:, 2] / 2,
            ],
            axis=1,
        )
        anchors, classes = np.nonzero(scores >= net.score_th)
        found = [
            (float(scores[a, c]), int(c), boxes[a]) for a, c in zip(anchors, classes, strict=True)
        ]
        found.sort(key=lambda f: -f[0])
        kept: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(net.classes)]
        removed = [False] * len(found)
        for i, (score, c, box) in enumerate(found):
            if removed[i]:
                continue
            kept[c].append((score, box))
            for j in range(i + 1, len(found)):
                if not removed[j] and found[j][1] == c and _iou(box, found[j][2]) >= net.iou_th:
                    removed[j] = True
        offset = 0
        for c in range(net.classes):
            mine = kept[c][: net.per_class]
            dst[offset] = len(mine)
            offset += 1
            for score, box in mine:
                dst[offset : offset + 5] = (*box, score)
                offset += 5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """NmsPostProcessOp::compute_iou on (y_min, x_min, y_max, x_max) boxes."""
    w = min(a[3], b[3]) - max(a[1], b[1])
    h = min(a[2], b[2]) - max(a[0], b[0])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)
