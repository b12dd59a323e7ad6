"""``edge preview``: watch what the model sees while setting up a camera. It runs the daemon's
pipeline (same sources, preprocessing, runtime and postprocessing, built from the same
configuration) and adds a preview listener: an MJPEG stream of annotated frames with a small
live page in the browser, a live terminal view for SSH sessions, or one annotated snapshot.

Modules: ``frames`` (listener, encoder thread, JPEG hub), ``server`` (HTTP), ``page`` (the
HTML), ``terminal`` (the in-place text view), ``session`` (wiring and lifecycle). This module
only runs the command (its options are declared in ``edge.commands.preview``) and imports the
rest when it runs.
"""

from __future__ import annotations

import argparse
import sys

# --snapshot gives up after this long without a frame (a camera that cannot be opened).
SNAPSHOT_TIMEOUT_S = 20.0


def run(args: argparse.Namespace) -> int:
    """Run ``edge preview`` with parsed arguments; returns the exit code."""
    from edge import config as cfg
    from edge.commands.options import pipeline_overrides
    from edge.errors import ConfigError
    from edge.preview.session import SNAPSHOT_SUFFIXES, PreviewSession

    overrides = pipeline_overrides(args)
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
