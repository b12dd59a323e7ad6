"""Frame sources: where frames come from, one backend per file, one line each in ``REGISTRY``.

``parse_source`` turns what a user types (``/dev/video0``, ``clip.mp4``, ``imgs/*.jpg``,
``picamera2`` …) into a :class:`SourceSpec`, ``from_camera`` a configured camera;
``open_source`` builds the backend for a spec. What a backend knows about a spec before it is
opened (``lossless``, ``missing``) is asked of its class through the registry, so no caller
branches on kinds. Backends are imported here but touch no hardware until ``open()``:
picamera2 itself is only imported when a picamera2 source opens.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from edge.errors import ConfigError
from edge.sources.base import BaseSource, Source, SourceSpec
from edge.sources.images import EXTENSIONS as IMAGE_EXTENSIONS
from edge.sources.images import GLOB_CHARS, ImagesSource
from edge.sources.imx500 import IMX500Source
from edge.sources.opencv import STREAM_SCHEMES, OpenCVSource
from edge.sources.picamera2 import Picamera2Source
from edge.sources.synthetic import SyntheticSource

if TYPE_CHECKING:
    from edge.choices import SourceKind
    from edge.config import CameraSettings

__all__ = [
    "REGISTRY",
    "Source",
    "SourceSpec",
    "from_camera",
    "lossless",
    "missing",
    "open_source",
    "parse_source",
]

REGISTRY: dict[SourceKind, type[BaseSource]] = {
    "opencv": OpenCVSource,
    "images": ImagesSource,
    "synthetic": SyntheticSource,
    "picamera2": Picamera2Source,
    "imx500": IMX500Source,
}

SYNTHETIC_FPS = 30.0  # what "synthetic" means on the command line: a camera-like rate


def open_source(spec: SourceSpec) -> Source:
    """The backend object for ``spec``, not yet opened (call ``open()``; nothing is touched here).

    Raises ConfigError for backend options the backend does not accept.
    """
    return REGISTRY[spec.kind](spec)


def parse_source(text: str, *, name: str = "camera") -> SourceSpec:
    """A spec from a command-line source string; change other fields with ``dataclasses.replace``.

    ``synthetic`` (paced at 30 fps), ``picamera2`` or ``picamera2:N`` (camera number),
    a camera
    index (``0``) or device (``/dev/video0``), a stream URL (``rtsp://``, ``http://`` …), a glob
    (``imgs/*.jpg``), a folder (trailing ``/``, or an existing directory), an image file (by
    extension) or a video file (anything else). Only the directory case looks at the disk.
    """
    text = text.strip()
    if not text:
        raise ConfigError("source: empty; give a camera, URL, file, folder or 'synthetic'")
    lowered = text.lower()
    if lowered == "synthetic":
        return SourceSpec(kind="synthetic", name=name, fps=SYNTHETIC_FPS)
    if lowered == "picamera2" or lowered.startswith("picamera2:"):
        num = lowered.partition(":")[2]
        if num and not num.isdigit():
            raise ConfigError(f"source: {text!r}: the camera number after ':' must be 0, 1, …")
        options = {"camera_num": int(num)} if num else {}
        return SourceSpec(kind="picamera2", name=name, options=options)
    if lowered == "imx500":
        raise ConfigError(
            "source: imx500 runs a network on the sensor: configure it in a [[cameras]] table "
            '(source = "imx500", network = "/usr/share/imx500-models/….rpk") and use '
            "`edge run --config`"
        )
    if text.isdigit() or text.startswith("/dev/") or lowered.startswith(STREAM_SCHEMES):
        return SourceSpec(kind="opencv", target=text, name=name)
    if GLOB_CHARS & set(text) or text.endswith(("/", os.sep)):
        return SourceSpec(kind="images", target=text, name=name)
    if lowered.endswith(IMAGE_EXTENSIONS) or os.path.isdir(text):
        return SourceSpec(kind="images", target=text, name=name)
    return SourceSpec(kind="opencv", target=text, name=name)


def from_camera(camera: CameraSettings, lores: tuple[int, int] | None = None) -> SourceSpec:
    """The spec of a configured ``[[cameras]]`` table.

    lores: the model's input size, for backends whose camera scales frames itself (picamera2's
    ISP); the others are not given it. An unset ``fps`` keeps the source's own rate; for
    ``synthetic`` it means unpaced (as fast as inference takes frames, for benchmarks), where
    the command line's ``synthetic`` is paced at 30 fps.
    """
    if camera.source.strip().lower() == "imx500":
        base = SourceSpec(kind="imx500", name=camera.name, target=camera.network or "")
    else:
        base = parse_source(camera.source, name=camera.name)
    return replace(
        base,
        fps=camera.fps,
        width=camera.width,
        height=camera.height,
        rotate=camera.rotate,
        flip=camera.flip,
        loop=camera.loop,
        realtime=camera.realtime,
        lores=lores if REGISTRY[base.kind].HARDWARE_SCALING else None,
        read_timeout_s=camera.read_timeout_s,
        rtsp_transport=camera.rtsp_transport,
    )


def lossless(spec: SourceSpec) -> bool:
    """Whether frames from ``spec`` wait for inference instead of being dropped (see
    :meth:`BaseSource.lossless`)."""
    return REGISTRY[spec.kind].lossless(spec)


def missing(spec: SourceSpec) -> str | None:
    """Why the files ``spec`` reads do not exist now, or None (see :meth:`BaseSource.missing`)."""
    return REGISTRY[spec.kind].missing(spec)
