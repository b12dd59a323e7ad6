"""Bilinear resizing of uint8 frames in numpy, equal bit for bit to OpenCV's ``INTER_LINEAR``.

Loading OpenCV costs a process about 18 MiB of resident memory (its shared libraries) and a
tenth of a second, which a daemon that only scales frames to the model's input size need not
pay. :class:`LinearResize` computes what ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``
computes for 8-bit images on its generic (x86 and most ARM) path:

- per axis, the source position of destination pixel ``d`` is ``(d + 0.5) * scale - 0.5``
  (``scale = 1 / (dst / src)`` in double precision, then rounded to float32), split into a
  whole pixel and a fraction; the two weights ``1 - f`` and ``f`` are each rounded to 11 bits
  (so they need not add up to 2048), and columns outside the image are clamped to its edge;
- a horizontal pass gives ``h = p0 * wx0 + p1 * wx1`` in integers;
- a vertical pass gives ``((h0 >> 4) * wy0 >> 16) + ((h1 >> 4) * wy1 >> 16)``, then
  ``(v + 2) >> 2``: the rounding of OpenCV's vector kernel, which also serves the exact 2×
  reduction it turns into an area average.

It is about eight times slower than OpenCV (≈ 1.4 ms against 0.2 ms for 640×480 → 224×224 here),
which is why :mod:`edge.preprocess` uses it only when OpenCV is not loaded already; the work is
proportional to the output size, and runs on the capture thread, beside ``invoke()``.
"""

from __future__ import annotations

import numpy as np

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
BLOCK_ROWS = 32  # output rows per pass: keeps the integer buffers small (≈ 0.5 MiB at 224 wide)


def axis_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``dst`` output positions along an axis of ``src`` pixels: the two source
    indices and their 11-bit weights (int32), computed as OpenCV computes them."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f)
    f = f - first
    i0 = first.astype(np.int64)
    outside = (i0 < 0) | (i0 >= src - 1)  # OpenCV takes the edge pixel alone there
    f[outside] = 0.0
    i0 = np.clip(i0, 0, src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    one = np.float32(1 << COEF_BITS)
    w0 = np.rint((np.float32(1.0) - f) * one).astype(np.int32)
    w1 = np.rint(f * one).astype(np.int32)
    return i0, i1, w0, w1


class LinearResize:
    """Resizes uint8 frames of one shape (H×W×C or H×W) to ``size`` (width, height).

    Index tables, weights and buffers are made once; each call allocates nothing. Thread
    affinity: one thread at a time (the buffers are reused).
    """

    def __init__(self, shape: tuple[int, ...], size: tuple[int, int]) -> None:
        h, w = shape[0], shape[1]
        cn = shape[2] if len(shape) == 3 else 1
        out_w, out_h = size
        self.shape = tuple(shape)
        self.size = size
        self._out_shape = (out_h, out_w, cn) if len(shape) == 3 else (out_h, out_w)
        x0, x1, wx0, wx1 = axis_taps(w, out_w)
        # The x weights were computed for rows (as OpenCV does), but only columns are clamped:
        # rows outside the image keep their weights and both taps read the edge row.
        y0, y1, wy0, wy1 = _row_taps(h, out_h)
        chan = np.arange(cn)
        # One gather fetches both horizontal taps of every output value (channels interleaved).
        self._cols = np.concatenate(
            [(x0[:, None] * cn + chan).ravel(), (x1[:, None] * cn + chan).ravel()]
        )
        self._wx0 = np.repeat(wx0, cn)
        self._wx1 = np.repeat(wx1, cn)
        self._blocks = []
        for r in range(0, out_h, BLOCK_ROWS):
            s = slice(r, min(r + BLOCK_ROWS, out_h))
            rows = np.concatenate([y0[s], y1[s]])
            self._blocks.append((s, rows, wy0[s, None], wy1[s, None]))
        n = min(BLOCK_ROWS, out_h)
        width = out_w * cn
        self._rows = np.empty((2 * n, w * cn), np.uint8)
        self._taps = np.empty((2 * n, 2 * width), np.uint8)
        self._acc = np.empty((2 * n, width), np.int32)
        self._tmp = np.empty((2 * n, width), np.int32)
        self._width = width

    def __call__(self, image: np.ndarray, out: np.ndarray) -> None:
        """Resize ``image`` (of this object's shape) into ``out`` (any strides, uint8)."""
        src = image.reshape(image.shape[0], -1)  # a view unless the rows are not contiguous
        dst = out.reshape(out.shape[0], -1) if out.flags.c_contiguous else None
        width = self._width
        for s, rows, wy0, wy1 in self._blocks:
            k = len(rows)
            n = k // 2
            r, taps, acc, tmp = self._rows[:k], self._taps[:k], self._acc[:k], self._tmp[:k]
            np.take(src, rows, axis=0, out=r)
            np.take(r, self._cols, axis=1, out=taps)
            acc[...] = taps[:, :width]
            acc *= self._wx0
            tmp[...] = taps[:, width:]
            tmp *= self._wx1
            acc += tmp
            acc >>= 4
            top, bottom = acc[:n], acc[n:]
            top *= wy0
            bottom *= wy1
            acc >>= 16
            top += bottom
            top += 2
            top >>= 2
            if dst is not None:
                dst[s] = top
            else:
                out[s] = top.reshape((n, *self._out_shape[1:]))


def _row_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`axis_taps` for rows, where OpenCV clamps the indices but not the weights."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f)
    f = f - first
    i0 = first.astype(np.int64)
    one = np.float32(1 << COEF_BITS)
    w0 = np.rint((np.float32(1.0) - f) * one).astype(np.int32)
    w1 = np.rint(f * one).astype(np.int32)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1
