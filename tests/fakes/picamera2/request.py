"""Completed requests: one frame's buffers and metadata, reference counted like picamera2's."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class CompletedRequest:
    """Holds each configured stream's raw buffer (flat uint8, rows padded to ``stride``).

    The camera can only reuse the buffers once every holder has called ``release()``; using a
    request after its last release raises RuntimeError (the real one would crash or read
    recycled memory).
    """

    def __init__(
        self,
        buffers: dict[str, np.ndarray],
        config: dict[str, Any],
        metadata: dict[str, Any],
        on_free: Any,
    ) -> None:
        self.ref_count = 1
        self.lock = threading.Lock()
        self.config = dict(config)
        self._buffers: dict[str, np.ndarray] | None = buffers
        self._metadata = metadata
        self._on_free = on_free

    def acquire(self) -> None:
        with self.lock:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self) -> None:
        with self.lock:
            self.ref_count -= 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")
            if self.ref_count > 0:
                return
            self._buffers = None
        self._on_free(self)

    def _buffer(self, name: str) -> np.ndarray:
        if self._buffers is None:
            raise RuntimeError("CompletedRequest used after its last release()")
        if self.config.get(name) is None or name not in self._buffers:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self._buffers[name]

    def make_buffer(self, name: str) -> np.ndarray:
        return np.array(self._buffer(name), dtype=np.uint8)

    def get_metadata(self) -> dict[str, Any]:
        if self._buffers is None:
            raise RuntimeError("CompletedRequest used after its last release()")
        return dict(self._metadata)

    def make_array(self, name: str) -> np.ndarray:
        """A copy shaped like picamera2's: (h, w, 3|4) for RGB formats with the row padding
        sliced off, (h*3/2, stride) for YUV420 with the padding left in."""
        buf = self._buffer(name)
        fmt = self.config[name]["format"]
        w, h = self.config[name]["size"]
        stride = self.config[name]["stride"]
        if fmt in ("BGR888", "RGB888"):
            image = buf.reshape((h, stride))[:, : w * 3].reshape((h, w, 3))
        elif fmt in ("XBGR8888", "XRGB8888"):
            image = buf.reshape((h, stride))[:, : w * 4].reshape((h, w, 4))
        elif fmt in ("YUV420", "YVU420"):
            image = buf.reshape((h * 3 // 2, stride))
        else:
            raise RuntimeError("Format " + fmt + " not supported")
        return np.ascontiguousarray(image).copy()
