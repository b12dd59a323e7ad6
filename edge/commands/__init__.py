"""The ``edge`` subcommands: one module here per command, each with ``add_arguments(parser)``
and ``run(args) -> int``, plus the one place where errors become exit codes (:func:`execute`).

Shared option groups (model, runtime, results, pipeline) are in :mod:`edge.commands.options`,
so a flag means the same thing, with the same type and message, on every command. Command
modules import nothing heavy at import time: the CLI imports a command's module (and adds its
options) only when that command is used or its help is asked for, and only the command that
runs loads numpy, OpenCV or a TFLite runtime. No command imports ``edge.cli``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from edge.errors import EX_INTERRUPTED, EX_SOFTWARE, EX_USAGE, EdgeError

log = logging.getLogger(__name__)


class UsageError(EdgeError):
    """The command line is incomplete in a way argparse cannot express (e.g. ``edge run``
    without ``--config`` or ``--source``); exits 2 like argparse's own errors."""

    exit_code = EX_USAGE


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name, its one-line help and the module under ``edge.commands``
    that defines it."""

    name: str
    help: str
    module: str


COMMANDS: tuple[Command, ...] = (
    Command("infer", "run a model on image files and print one JSON result per image", "infer"),
    Command("bench", "measure a model's speed and memory here", "bench"),
    Command(
        "info",
        "show runtimes, accelerators (found, versions, devices, what is used) and bundled models",
        "info",
    ),
    Command("models", "show a model repository's versions and their states", "models"),
    Command("run", "run the daemon: cameras → model → MQTT", "run"),
    Command("check-config", "validate a configuration file (exit 0 or 78)", "check_config"),
    Command("listen", "print results and status arriving on the broker", "listen"),
    Command(
        "request", "ask a daemon over MQTT to run its model on images (online inference)", "request"
    ),
    Command(
        "preview",
        "watch annotated frames in a browser or the terminal (the daemon's pipeline)",
        "preview",
    ),
    Command("batch", "run a model over files, folders, globs and videos into JSON Lines", "batch"),
    Command(
        "quantize",
        "float model → full-integer TFLite, with an accuracy report and gate (edge[quantize])",
        "quantize",
    ),
    Command(
        "baseline",
        "record a model's results on representative images in its manifest (drift baseline)",
        "baseline",
    ),
    Command(
        "demo", "run the daemon on the sample clip and show its results (no setup needed)", "demo"
    ),
)

Run = Callable[[argparse.Namespace], int]


def execute(run: Run, args: argparse.Namespace, *, prog: str = "edge") -> int:
    """Run one command and return its exit code: an EdgeError becomes its ``exit_code`` and one
    line on stderr (never a traceback), Ctrl-C 130, a closed stdout (``edge infer ... | head``)
    0; any other exception is a bug: logged with its traceback, exit 1."""
    try:
        return run(args)
    except EdgeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        # Not an error of ours; point stdout at /dev/null so the interpreter's final flush
        # does not raise again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # a bug: keep the traceback, it is what a report needs
        log.exception("unexpected error (please report it with the traceback above)")
        return EX_SOFTWARE
