"""``edge preview``: the daemon's pipeline with a preview listener (:mod:`edge.preview`). It
takes the same camera, model and runtime options as ``edge run``, from the same group."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.argtypes import number, whole
from edge.commands.options import add_pipeline, require_source
from edge.preview import SNAPSHOT_TIMEOUT_S


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_pipeline(p, "preview")
    g = p.add_argument_group("preview")
    g.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes the unauthenticated "
        "stream to the network)",
    )
    g.add_argument(
        "--port",
        type=whole(0, 65535),
        default=8080,
        help="HTTP port (default 8080; 0 = any free port)",
    )
    g.add_argument(
        "--preview-fps",
        type=number(0.0, above=True),
        default=15.0,
        help="most annotated frames per second sent to browsers (default 15)",
    )
    g.add_argument(
        "--quality", type=whole(1, 100), default=80, help="JPEG quality of the stream, 1..100"
    )
    g.add_argument(
        "--snapshot",
        type=_snapshot_path,
        metavar="FILE",
        help="write the first annotated frame to FILE (.jpg or .png) and exit",
    )
    g.add_argument("--no-terminal", action="store_true", help="no live view on the terminal")
    p.add_argument(
        "--snapshot-timeout",
        type=number(0.0, above=True),
        default=SNAPSHOT_TIMEOUT_S,
        metavar="S",
        help="with --snapshot: fail (exit 1) when no frame was inferred within S seconds, "
        f"e.g. because the camera cannot be opened (default {SNAPSHOT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--duration",
        type=number(0.0, above=True),
        help="stop after this many seconds (otherwise the page stays up, after the end of a "
        "file or photo too, until Ctrl-C)",
    )
    p.add_argument(
        "--mqtt",
        action="store_true",
        help="also publish results to MQTT like edge run ([mqtt] of --config; default "
        "localhost:1883)",
    )


def run(args: argparse.Namespace) -> int:
    from edge import preview

    require_source(args)
    return preview.run(args)


def _snapshot_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise argparse.ArgumentTypeError(f"{text!r}: name a .jpg or .png file")
    return path
