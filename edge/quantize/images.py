"""Image folders for calibration and held-out comparison, decoded with edge's own image reader.

Files are taken in name order (or shuffled with a seed) and decoded lazily until enough images
are in hand, so ``--count 200`` on a folder of 50,000 photos decodes about 200 of them. Files
that do not decode are skipped and counted; too few usable images is a ConfigError naming the
folder and the minimum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.decode import read_image
from edge.errors import ConfigError, InputError

log = logging.getLogger(__name__)

MIN_CALIBRATION = 10


@dataclass(frozen=True, slots=True)
class ImageSet:
    """Decoded BGR uint8 images with their file names; ``skipped`` lists the files (name and
    reason) that could not be decoded."""

    images: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.images)


def load_folder(
    folder: str | Path,
    *,
    option: str,
    count: int,
    minimum: int,
    shuffle: bool = False,
    seed: int = 0,
) -> ImageSet:
    """Decode up to ``count`` images from ``folder`` (not recursive; hidden files ignored).

    option: the command-line option the folder came from, for error messages.
    Raises ConfigError when the folder is missing, empty, or yields fewer than ``minimum``
    decodable images.
    """
    path = Path(folder)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise ConfigError(
            f"{option}: {path} {what}; give a folder of representative images (PNG, JPEG, ...)"
        )
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(
            f"{option}: folder {path} is empty; put at least {minimum} representative images "
            "(frames like the ones the model will see) in it"
        )
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(files))
        files = [files[i] for i in order]
    images: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for f in files:
        if len(images) >= count:
            break
        try:
            image = read_image(f)
        except InputError as exc:
            skipped.append((f.name, str(exc)))
            log.debug("skipping %s: %s", f, exc)
            continue
        images.append(image)
        names.append(f.name)
    if skipped:
        log.warning(
            "%s: skipped %d file(s) that are not decodable images (first: %s)",
            option,
            len(skipped),
            skipped[0][0],
        )
    if len(images) < minimum:
        bad = f" ({len(skipped)} file(s) could not be decoded as images)" if skipped else ""
        raise ConfigError(
            f"{option}: folder {path} gave {len(images)} usable image(s){bad}; at least "
            f"{minimum} are needed. Add more representative images (PNG, JPEG, ...) to it."
        )
    return ImageSet(tuple(images), tuple(names), tuple(skipped))
