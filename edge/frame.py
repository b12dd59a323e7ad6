"""The frame that flows from a source to the pipeline, and what a sensor that runs the network
itself (the AI Camera) hands on with it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.preprocess import Transform


@dataclass(frozen=True, slots=True)
class SensorOutput:
    """The output tensors a camera's own accelerator computed for one frame (IMX500).

    values: float32 arrays in the order the model's declared outputs list them (the
        ``SensorModel``'s ``outputs``), batch axis included.
    transform: maps the network's normalized coordinates onto this frame's (the region of the
        sensor the network saw, as the camera's scaler crops and scales it).
    dnn_ms, dsp_ms: the sensor's own timings for the network and its DSP post-processing
        (milliseconds, from the frame's KPI metadata); None when the frame carries none.
    """

    values: tuple[np.ndarray, ...]
    transform: Transform
    dnn_ms: float | None = None
    dsp_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image.

    image: HxWx3 uint8 in BGR order (OpenCV's convention; picamera2's ``RGB888`` is BGR in memory
        too), or HxW uint8 greyscale. The array belongs to the receiver once handed over.
    seq: per-source sequence number, starting at 0 when the source opens and strictly increasing
        across reopenings of the same source object.
    ts_mono: ``time.monotonic()`` seconds at capture; every latency is measured from this.
    ts_wall: ``time.time()`` seconds at capture; only for published payloads.
    source: the source's name (the camera name in the daemon).
    index: position in the underlying media where it has one (video frame number, image index),
        else equal to ``seq``.
    path: the file the frame came from, for file-backed sources; ``None`` for cameras and streams.
    sensor: the network's outputs when the camera ran it on this frame (IMX500), else None.
    """

    image: np.ndarray
    seq: int
    ts_mono: float
    ts_wall: float
    source: str
    index: int = 0
    path: str | None = None
    sensor: SensorOutput | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
