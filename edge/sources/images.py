"""Still images as a frame source: a folder, a glob pattern or a single file, in sorted order.

Meant for batch runs and for replaying captured stills. A file that cannot be decoded, or whose
header claims more pixels than :data:`MAX_PIXELS`, is logged and skipped (counted in ``skipped``)
rather than ending the run: one bad file in a folder of thousands should not stop the batch.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from edge.decode import MAX_PIXELS, decode_image
from edge.errors import InputError
from edge.frame import Frame
from edge.sources.base import BaseSource, Options, Pacer, SourceSpec

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
GLOB_CHARS = frozenset("*?[")


class ImagesSource(BaseSource):
    """Decodes one image per ``read()``; frames carry ``path`` and ``index`` (position in the list).

    ``spec.target`` is a folder (its image files, not recursive), a glob (``imgs/*.jpg``) or one
    file. ``fps`` paces reads; ``loop`` restarts at the first image. ``skipped`` counts files that
    could not be used, on every pass.
    """

    kind = "images"
    OPTIONS: ClassVar[dict[str, type]] = {"max_pixels": int}

    @classmethod
    def lossless(cls, spec: SourceSpec) -> bool:
        """Files wait for inference unless played in ``realtime``."""
        return not spec.realtime

    @classmethod
    def missing(cls, spec: SourceSpec) -> str | None:
        target = spec.target
        if GLOB_CHARS & set(target):
            return None if glob.glob(target) else f"no file matches {target!r}; check the pattern"
        if not os.path.isdir(target) and not os.path.isfile(target):
            return f"{target!r} does not exist; check the path"
        return None

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
            log.warning("skipping an image: %s", problem)
            return None
        return image

    def _load(self, path: str) -> tuple[np.ndarray | None, str | None]:
        try:
            return decode_image(
                np.fromfile(path, dtype=np.uint8), path, max_pixels=self.max_pixels
            ), None
        except OSError as exc:
            return None, f"cannot read {path}: {exc.strerror or exc}"
        except InputError as exc:
            return None, str(exc)


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
