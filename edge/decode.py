"""Reading still images from disk for ``edge infer``, batch mode and the images source.

Decoding is capped (``MAX_PIXELS``) so a decompression bomb is refused instead of exhausting the
memory budget; the cap is checked from the file header before the pixels are decoded.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edge.errors import InputError

# 64 Mpx: any real camera's stills fit; a decompression bomb does not.
MAX_PIXELS = 8192 * 8192


def read_image(path: str | Path, grayscale: bool = False) -> np.ndarray:
    """Decode ``path`` to BGR uint8 (or greyscale). Raises InputError saying what is wrong."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise InputError(f"image not found: {p}. Check the path.") from exc
    except IsADirectoryError as exc:
        raise InputError(
            f"{p} is a directory; give image files (or use `edge batch` for folders)"
        ) from exc
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror}") from exc
    return decode_image(data, str(p), grayscale)


def decode_image(
    data: np.ndarray, name: str, grayscale: bool = False, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, BMP, WebP, …) held in a uint8 array.

    PNG, JPEG and BMP above ``max_pixels`` are refused from their header, before the decoder
    allocates anything; other formats are checked after decoding.
    """
    if data.size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    size = header_size(data[:65536].tobytes())
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_large(name, size, max_pixels)
    import cv2  # loaded by the first decode, not by every importer of this module

    flags = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:
        raise InputError(f"{name} could not be decoded: {exc}") from exc
    if image is None:
        raise InputError(
            f"{name} is not an image OpenCV can decode (corrupt, truncated, or an unsupported "
            "format). Use PNG, JPEG, BMP, TIFF or WebP."
        )
    if image.shape[0] * image.shape[1] > max_pixels:
        raise _too_large(name, (image.shape[1], image.shape[0]), max_pixels)
    return image


def _too_large(name: str, size: tuple[int, int], max_pixels: int) -> InputError:
    return InputError(
        f"{name} is too large to decode safely ({size[0]}x{size[1]} pixels; the limit is "
        f"{max_pixels} pixels). Downscale it first."
    )


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding; None if not recognised.

    Lets an oversized image be refused before the decoder allocates its pixels; other formats
    are checked after decoding.
    """
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(int(w)), abs(int(h))
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    # Walk the marker segments to the first start-of-frame (SOF0..SOF15 except DHT/JPG/DAC).
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", head[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None
