"""``edge preview``: watch what the model sees while setting up a camera. It runs the daemon's
pipeline (same sources, preprocessing, runtime and postprocessing, built from the same
configuration) and adds a preview listener: an MJPEG stream of annotated frames with a small
live page in the browser, a live terminal view for SSH sessions, or one annotated snapshot.

Modules: ``frames`` (listener, encoder thread, JPEG hub), ``server`` (HTTP), ``page`` (the
HTML), ``terminal`` (the in-place text view), ``session`` (wiring and lifecycle). This module
only declares the command line and imports the rest when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.argtypes import number, whole

# --snapshot gives up after this long without a frame (a camera that cannot be opened).
SNAPSHOT_TIMEOUT_S = 20.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``edge preview``'s options to its sub-parser (imports nothing heavy)."""
    p.add_argument(
        "--config", help="TOML configuration file, as for edge run; flags below override it"
    )
    p.add_argument(
        "--source",
        help="camera 0's source: picamera2, synthetic, /dev/videoN, a camera index, an "
        "rtsp:// or http:// URL, a video file, an image folder or glob",
    )
    p.add_argument("--model", help="model: .tflite, model directory or bundled name")
    p.add_argument("--camera", help="camera 0's name (default: camera)")
    p.add_argument("--fps", type=float, help="camera 0's target frame rate")
    p.add_argument("--loop", action="store_true", help="restart file sources at their end")
    p.add_argument("--threads", type=int, help="interpreter threads")
    p.add_argument("--delegate", choices=("xnnpack", "cpu", "edgetpu"))
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes the unauthenticated "
        "stream to the network)",
    )
    p.add_argument(
        "--port",
        type=whole(0, 65535),
        default=8080,
        help="HTTP port (default 8080; 0 = any free port)",
    )
    p.add_argument(
        "--preview-fps",
        type=number(0.0, above=True),
        default=15.0,
        help="most annotated frames per second sent to browsers (default 15)",
    )
    p.add_argument(
        "--quality", type=whole(1, 100), default=80, help="JPEG quality of the stream, 1..100"
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        metavar="FILE",
        help="write the first annotated frame to FILE (.jpg or .png) and exit",
    )
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
    p.add_argument("--no-terminal", action="store_true", help="no live view on the terminal")
    p.add_argument(
        "--mqtt",
        action="store_true",
        help="also publish results to MQTT like edge run ([mqtt] of --config; default "
        "localhost:1883)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``edge preview`` with parsed arguments; returns the exit code."""
    from edge import config as cfg
    from edge.cli import run_overrides
    from edge.errors import ConfigError
    from edge.preview.session import SNAPSHOT_SUFFIXES, PreviewSession

    overrides = run_overrides(args)
    if args.config is None and "cameras.0.source" not in overrides:
        raise ConfigError("give --source (e.g. `edge preview --source synthetic`) or --config FILE")
    if args.snapshot is not None and args.snapshot.suffix.lower() not in SNAPSHOT_SUFFIXES:
        raise ConfigError(f"--snapshot {args.snapshot}: name a .jpg or .png file")
    config = cfg.load(args.config, overrides)
    session = PreviewSession(
        config,
        host=args.host,
        port=args.port,
        preview_fps=args.preview_fps,
        quality=args.quality,
        mqtt=args.mqtt,
        snapshot_timeout=args.snapshot_timeout,
    )
    terminal = not args.no_terminal and sys.stdout.isatty()
    return session.run(duration=args.duration, snapshot=args.snapshot, terminal=terminal)
