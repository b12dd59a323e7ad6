"""``edge check-config``: validate a configuration file (exit 0, or 78 listing every problem),
or print the configuration reference."""

from __future__ import annotations

import argparse

from edge.commands import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="the TOML file to check")
    p.add_argument(
        "--reference",
        action="store_true",
        help="print the configuration reference (Markdown) instead",
    )


def run(args: argparse.Namespace) -> int:
    from edge import config as cfg

    if args.reference:
        print(cfg.reference())
        return 0
    if not args.file:
        raise UsageError("give a configuration file to check, or --reference")
    config = cfg.load(args.file)
    cams = ", ".join(f"{c.name} ({c.source})" for c in config.cameras)
    print(
        f"{args.file}: OK: device {config.device}, cameras {cams}, broker "
        f"{config.mqtt.host}:{config.mqtt.port}"
    )
    return 0
