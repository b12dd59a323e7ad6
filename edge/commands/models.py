"""``edge models FOLDER``: a model repository's versions and their states, checked as the
daemon checks them when it starts (the version it would serve is verified in a child process
and loaded, and shows as ``serving``), without a daemon or a broker."""

from __future__ import annotations

import argparse

from edge.commands.options import add_runtime, runtime_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a repository: a folder of numbered versions (1/, 2/, ...)")
    p.add_argument(
        "--version",
        type=int,
        dest="pinned",
        metavar="N",
        help="check as if [model] version = N pinned it",
    )
    p.add_argument("--json", action="store_true", help="print the daemon's models topic entry")
    add_runtime(p)


def run(args: argparse.Namespace) -> int:
    """0 when a version would serve, 78 (with each version's reason) when none would."""
    import json
    import logging
    from pathlib import Path

    from edge.engine import Overrides
    from edge.errors import ModelError
    from edge.modelrepo.scan import is_repository, no_valid_version
    from edge.modelrepo.watch import choose

    path = Path(args.folder)
    if not is_repository(path):
        raise ModelError(
            f"{path} is not a model repository: it should hold numbered version folders (1/, "
            "2/, ...), each a model directory, and no model file of its own."
        )
    options = runtime_options(args, args.threads)
    # Each failed version is in the listing below: not also logged as the daemon logs it.
    logging.getLogger("edge.modelrepo.watch").setLevel(logging.ERROR)
    engine, repo, failed = choose(str(path), options, Overrides(), args.pinned)
    if engine is not None:
        engine.close()
    if args.json:
        print(json.dumps({repo.name: repo.as_json()}, indent=2))
    else:
        pin = f", pinned to version {args.pinned}" if args.pinned is not None else ""
        print(f"{repo.name} ({path}{pin}): serving {repo.serving or 'nothing'}")
        for s in repo.status():
            print(f"  {s.number:>4}  {s.state:<9}  {s.reason}".rstrip())
    if engine is None:
        raise no_valid_version(path, args.pinned, failed)
    return 0
