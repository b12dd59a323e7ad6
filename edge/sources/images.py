"""Still images as a frame source: a folder, a glob pattern or a single file, in sorted order.

Meant for batch runs and for replaying captured stills. A file that cannot be decoded, or whose
header claims more pixels than :data:`MAX_PIXELS`, is logged and skipped (counted in ``skipped``)
rather than ending the run: one bad file in a folder of thousands should not stop the batch.
"""

from __future__ import annotations

import glob
import logging
import os
import struct
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from edge.errors import InputError
from edge.frame import Frame
from edge.sources.base import BaseSource, Options, Pacer, SourceSpec

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
# 8192 × 8192 × 3 bytes = 192 MiB decoded: more than a Pi should allocate for one input frame.
MAX_PIXELS = 8192 * 8192
GLOB_CHARS = frozenset("*?[")


class ImagesSource(BaseSource):
    """Decodes one image per ``read()``; frames carry ``path`` and ``index`` (position in the list).

    ``spec.target`` is a folder (its image files, not recursive), a glob (``imgs/*.jpg``) or one
    file. ``fps`` paces reads; ``loop`` restarts at the first image. ``skipped`` counts files that
    could not be used, on every pass.
    """

    kind = "images"
    OPTIONS: ClassVar[dict[str, type]] = {"max_pixels": int}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.max_pixels = Options(spec, self.OPTIONS).integer("max_pixels", MAX_PIXELS)
        self._pacer = Pacer(spec.fps) if spec.fps else None
        self.paths: list[str] = []
        self.skipped = 0
        self._next = 0

    def _open(self) -> None:
        self.paths = list_images(self.spec.target)
        self._next = 0
        if self._pacer is not None:
            self._pacer.reset()
        log.info("images source %r: %d files from %s", self.name, len(self.paths), self.spec.target)

    def _read(self) -> Frame | None:
        tried = 0
        while tried < len(self.paths):
            if self._next >= len(self.paths):
                if not self.spec.loop:
                    return None
                self._next = 0
            index = self._next
            self._next += 1
            tried += 1
            image = self._decode(self.paths[index])
            if image is None:
                continue
            if self._pacer is not None and not self._wait(self._pacer.delay()):
                raise self._interrupted()
            return self._frame(image, index=index, path=self.paths[index])
        if self.spec.loop:
            log.error("images source %r: none of %d files could be read", self.name, tried)
        return None

    def _release(self) -> None:
        """Nothing is held open between reads."""

    def _decode(self, path: str) -> np.ndarray | None:
        """The image as BGR uint8, or None (logged, counted in ``skipped``) if it cannot be used."""
        image, problem = self._load(path)
        if problem is not None:
            self.skipped += 1
            log.warning("skipping %s: it %s; fix or remove the file", path, problem)
            return None
        return image

    def _load(self, path: str) -> tuple[np.ndarray | None, str | None]:
        try:
            data = np.fromfile(path, dtype=np.uint8)  # unlike imread, copes with any file name
        except OSError as exc:
            return None, f"cannot be read ({exc.strerror or exc})"
        size = header_size(data[:65536].tobytes())
        if size is None or size[0] * size[1] <= self.max_pixels:
            try:
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
            except cv2.error as exc:
                return None, f"cannot be decoded ({exc.err})"
            if image is None:
                return None, "is not a readable image (truncated, or not an image format)"
            size = (image.shape[1], image.shape[0])
        if size[0] * size[1] > self.max_pixels:
            return None, f"is {size[0]}x{size[1]}, above the {self.max_pixels} pixel cap"
        return image, None


def list_images(target: str) -> list[str]:
    """Sorted image files named by a folder, glob or file; InputError if there are none."""
    if GLOB_CHARS & set(target):
        paths = sorted(p for p in glob.glob(target) if os.path.isfile(p))
        if not paths:
            raise InputError(f"no files match {target!r}; check the pattern and the folder")
        return paths
    path = Path(target)
    if path.is_dir():
        paths = sorted(
            str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        if not paths:
            raise InputError(
                f"no images in folder {target!r}; expected files ending in {', '.join(EXTENSIONS)}"
            )
        return paths
    if path.is_file():
        return [target]
    raise InputError(f"image file or folder {target!r} does not exist; check the path")


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
