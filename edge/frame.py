"""The frame that flows from a source to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """

    image: np.ndarray
    seq: int
    ts_mono: float
    ts_wall: float
    source: str
    index: int = 0
    path: str | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
