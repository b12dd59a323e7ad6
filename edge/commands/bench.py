"""``edge bench``: a model's speed and memory here, one row per thread count (the measuring
is :mod:`edge.bench`)."""

from __future__ import annotations

import argparse
import json

from edge.argtypes import number, whole
from edge.commands.options import add_model, add_runtime, runtime_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_runtime(p, thread_list=True, device_alias=True)
    p.add_argument("--runs", type=whole(1), default=100, help="steady-state runs (default 100)")
    p.add_argument(
        "--warmup", type=whole(0), default=10, help="warm-up runs, not counted (default 10)"
    )
    p.add_argument(
        "--min-seconds",
        type=number(0.0),
        default=0.0,
        help="keep running until at least this long has passed",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from edge.bench import bench, format_table
    from edge.runtime import default_threads

    reports = [
        bench(
            args.model,
            runtime_options(args, t),
            runs=args.runs,
            warmup=args.warmup,
            min_seconds=args.min_seconds,
        )
        for t in (args.threads or [default_threads()])
    ]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print(format_table(reports))
    return 0
