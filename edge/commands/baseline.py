"""``edge baseline``: run a model on representative images and record the class distribution
and score deciles of its results as the ``baseline`` in its manifest.json, which the daemon's
drift watch (``[drift]``) compares its recent results with. The model must be a model
directory (a bare ``.tflite`` has no manifest to write into)."""

from __future__ import annotations

import argparse
import json
import sys

from edge.commands.options import add_model, add_results, add_runtime, runtime_options
from edge.errors import ModelError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument(
        "images", nargs="+", help="image files, folders or globs: what the camera will see"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the baseline without writing the manifest"
    )
    add_runtime(p)
    add_results(p, all_options=False)


def run(args: argparse.Namespace) -> int:
    """0 once the baseline is written (and printed as JSON on stdout)."""
    from edge.baseline import measure, record
    from edge.decode import read_image
    from edge.engine import Engine, Overrides
    from edge.sources.images import list_images

    paths = [p for target in args.images for p in list_images(target)]
    engine = Engine.load(
        args.model,
        runtime_options(args, args.threads),
        Overrides(task=args.task, threshold=args.threshold),
    )
    directory = engine.spec.directory
    if directory is None and not args.dry_run:
        raise ModelError(
            f"{args.model} is a bare model file: put it in a model directory (the file, "
            "labels.txt, manifest.json) so the baseline has a manifest to go in, or pass --dry-run"
        )
    baseline = measure(engine, (read_image(p) for p in paths))
    if directory is not None and not args.dry_run:
        made = f"edge baseline on {len(paths)} images"
        print(f"edge: wrote the baseline into {record(directory, baseline, made)}", file=sys.stderr)
    print(json.dumps(baseline.to_dict(), separators=(",", ":")))
    return 0
