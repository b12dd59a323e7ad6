"""The ``edge`` command line: the parser over the subcommands of :mod:`edge.commands`, logging
set-up, and the one ``main`` that turns every EdgeError into its exit code and a one-line
message (never a traceback).

Exit codes, the same on every subcommand: 0 done; 2 a usage error (unknown option, bad value,
missing argument); 66 an input file cannot be read; 78 a configuration or model error (also a
missing runtime package); 130 Ctrl-C; 1 anything else. ``edge quantize`` adds its quality gate.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from edge import __version__
from edge.choices import LOG_LEVELS
from edge.commands import COMMANDS, execute
from edge.commands.options import warn_deprecated
from edge.errors import EX_USAGE
from edge.system import pause_collector, resume_collector

DEFAULT_LOG_LEVEL = "warning"


class _JournalFormatter(logging.Formatter):
    """Under systemd, prefix ``<N>`` syslog priorities (journald parses them) and drop the
    timestamp journald adds itself."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {super().format(record)}"


def setup_logging(level: str) -> None:
    """Log to stderr: journald-friendly under systemd, timestamped otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that imports its command module, and adds its options, only when
    it is used: ``edge run`` then loads nothing of the other commands (``edge demo``'s options
    alone bring asyncio and the listener: about 1 MiB and 50 ms of the daemon's start)."""

    def __init__(self, *args: Any, module: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def _load(self) -> None:
        if self._module:
            module = importlib.import_module(f"edge.commands.{self._module}")
            self._module = ""
            module.add_arguments(self)
            self.set_defaults(run=module.run)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._load()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._load()
        return super().format_usage()

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """edge's parser; with ``only``, the name of a command, the sub-parser of that command
    alone (what ``main`` builds when the command line names one: building all fourteen takes
    about 4 ms, one about 1 ms)."""
    parser = argparse.ArgumentParser(
        prog="edge", description="Camera frames → quantized TFLite or ONNX model → results on MQTT."
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    log_help = (
        f"stderr log level (default: {DEFAULT_LOG_LEVEL}; `edge run` uses its configuration's "
        "log_level, info unless set; $EDGE_LOG_LEVEL sets it for every command)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help=log_help)
    # Also accepted after the subcommand, where people type it.
    common = _CommandParser(add_help=False)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for command in COMMANDS:
        if only is not None and command.name != only:
            continue
        sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            parents=[common],
            module=command.module,
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # numpy's BLAS never does edge's heavy lifting (the TFLite runtime does), but OpenBLAS starts
    # a worker thread per extra core when numpy is imported, and it spins for a while: on a
    # two-core board that takes a core from the imports and the model load (about 0.1 s of CPU
    # before the daemon's first result here). Before any command imports numpy; an explicit
    # setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # No collection while the command imports and builds what it lives on: `edge run` resumes
    # the collector once the daemon has started (Daemon.run), every other command now.
    pause_collector()
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    finally:
        resume_collector()


def _main(args_list: list[str]) -> int:
    named = command_named(args_list)
    parser = build_parser(named)
    args = parser.parse_args(args_list)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    if named != "run":
        resume_collector()
    env_level = os.environ.get("EDGE_LOG_LEVEL") or None
    if args.log_level is None and env_level is not None:
        if env_level.lower() not in LOG_LEVELS:
            parser.error(f"EDGE_LOG_LEVEL={env_level!r}: use one of {', '.join(LOG_LEVELS)}")
        args.log_level = env_level.lower()
    # args.log_level stays None when nobody chose a level: `edge run` then takes its config's.
    setup_logging(args.log_level or DEFAULT_LOG_LEVEL)
    warn_deprecated(args)
    return execute(args.run, args, prog="edge")


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs when it names one (after the top-level ``--log-level``), else
    None (help, ``--version``, an unknown or missing command: those get the whole parser)."""
    names = {c.name for c in COMMANDS}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--log-level":
            i += 2
        elif arg.startswith("--log-level="):
            i += 1
        else:
            return arg if arg in names else None
    return None
