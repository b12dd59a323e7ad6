"""``edge batch``: run one model over a pile of files (folders, globs, images, videos) on several
interpreters at once, writing one JSON line per image or video frame, resumably.

Output: JSON Lines in completion order. Each line is the core's result (``Result.to_dict()``)
with two keys in front: ``path`` (the file) and ``frame_index`` (the video frame number from 0;
0 for a still image). ``(path, frame_index)`` is the line's key. A file that cannot be read is
a line ``{"path", "frame_index", "error"}`` (``frame_index`` null when a whole input could not
be opened). Every line is written with one ``write`` as soon as its item finishes, so a crash
loses at most the items in flight; a rerun with the same output reads the keys already there
(ignoring a torn last line), skips them, and appends the rest. Error lines count as done too.

Modules: ``runner`` (planning, threads, the run), ``output`` (records, resume, CSV),
``progress`` (the progress line). Importing this package loads no model runtime, numpy or
OpenCV: they are imported when a batch runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge.argtypes import number, whole
from edge.batch.output import read_done, write_csv
from edge.batch.progress import Progress
from edge.batch.runner import BatchSettings, Summary, format_summary, run_batch
from edge.errors import EX_NOINPUT

__all__ = [
    "BatchSettings",
    "Progress",
    "Summary",
    "add_arguments",
    "format_summary",
    "read_done",
    "run",
    "run_batch",
    "write_csv",
]


def default_workers() -> int:
    """One worker per core available to this process."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``edge batch``'s options to its sub-parser (imports nothing heavy)."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, video files, folders (their images) or quoted globs",
    )
    parser.add_argument(
        "--model", required=True, help="a .tflite file, a model directory or a bundled name"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        help="JSON Lines output; rerunning with the same file resumes where it stopped",
    )
    parser.add_argument(
        "--workers",
        type=whole(1),
        default=None,
        help="interpreters run in parallel, one thread each (default: one per core)",
    )
    parser.add_argument(
        "--threads-per-worker",
        type=whole(1),
        default=1,
        metavar="T",
        help="TFLite threads of each interpreter (default 1)",
    )
    parser.add_argument(
        "--every",
        type=whole(1),
        default=1,
        metavar="N",
        help="videos: infer frames 0, N, 2N, … (default 1: every frame)",
    )
    parser.add_argument(
        "--csv",
        action="store_true",
        help="also write OUTPUT with a .csv suffix: one row per detection, class or error",
    )
    parser.add_argument(
        "--delegate", choices=("xnnpack", "cpu"), default="xnnpack", help="CPU kernels to use"
    )
    parser.add_argument(
        "--task",
        choices=("classification", "detection", "segmentation", "raw"),
        help="override the task edge infers",
    )
    parser.add_argument("--threshold", type=number(0.0, 1.0), help="minimum score, 0..1")


def run(args: argparse.Namespace) -> int:
    """Run ``edge batch``: 0 when every item was read, 66 when some were errors (they are in
    the output), 130 when interrupted; other errors propagate as EdgeError."""
    from edge.engine import Overrides

    settings = BatchSettings(
        inputs=tuple(args.inputs),
        output=args.output,
        model=args.model,
        workers=args.workers or default_workers(),
        threads_per_worker=args.threads_per_worker,
        every=args.every,
        csv=args.csv,
        delegate=args.delegate,
        overrides=Overrides(task=args.task, threshold=args.threshold),
    )
    summary = run_batch(settings, progress=sys.stderr if sys.stderr.isatty() else None)
    print(format_summary(summary, settings), file=sys.stderr)
    if summary.interrupted:
        return 130
    return EX_NOINPUT if summary.errors else 0
