"""``edge check-config``: check a configuration file the way ``edge run`` would use it (exit 0;
78 listing every problem; 66 when a file source is missing), or print the configuration
reference. Beyond validating the file it opens what the daemon opens: models (with labels and
manifest), the MQTT password, TLS files, the state directory and file sources."""

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
    from edge import preflight  # loads the models: only once the file itself is valid

    checked = preflight.check(config)
    cams = ", ".join(f"{c.name} ({c.source})" for c in config.cameras)
    models = ", ".join(f"{e.name} ({e.task})" for e in checked.engines.values())
    print(
        f"{args.file}: OK: device {config.device}, cameras {cams}, models {models}, broker "
        f"{config.mqtt.host}:{config.mqtt.port}"
    )
    return 0
