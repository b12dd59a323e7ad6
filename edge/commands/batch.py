"""``edge batch``: one model over files, folders, globs and videos into JSON Lines
(:mod:`edge.batch`). Results keep the model's own threshold, as the daemon's do; ``--threshold``
overrides it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.argtypes import whole
from edge.commands.options import add_results, delegate_chain
from edge.errors import EX_INTERRUPTED, EX_NOINPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, video files, folders (their images) or quoted globs",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a .tflite or .onnx file, a model directory or a bundled name",
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
        help="runtime threads of each interpreter (default 1)",
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
        "--delegate",
        type=delegate_chain(("xnnpack", "cpu")),
        metavar="NAME[,NAME]",
        default=("xnnpack",),
        help="CPU kernels to use: xnnpack (default) or cpu; xnnpack,cpu fails over to the "
        "builtin kernels",
    )
    add_results(parser, all_options=False)


def run(args: argparse.Namespace) -> int:
    """0 when every item was read, 66 when some were errors (they are in the output), 130
    when interrupted; other errors propagate as EdgeError."""
    from edge.batch import BatchSettings, default_workers, format_summary, run_batch
    from edge.engine import Overrides

    settings = BatchSettings(
        inputs=tuple(args.inputs),
        output=args.output,
        model=args.model,
        workers=args.workers or default_workers(),
        threads_per_worker=args.threads_per_worker,
        every=args.every,
        csv=args.csv,
        delegate=args.delegate[0],
        chain=args.delegate[1:],
        overrides=Overrides(task=args.task, threshold=args.threshold),
    )
    summary = run_batch(settings, progress=sys.stderr if sys.stderr.isatty() else None)
    print(format_summary(summary, settings), file=sys.stderr)
    if summary.interrupted:
        return EX_INTERRUPTED
    return EX_NOINPUT if summary.errors else 0
