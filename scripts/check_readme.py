#!/usr/bin/env python3
"""Rerun the commands whose output the README shows, and fail when the README disagrees.

A fenced block is checked when the line just before it is a marker comment:

- ``<!-- readme-check -->``: the block is a terminal session. Each line starting with ``$ `` is
  a command; the lines after it, up to the next command, are what it prints (stdout and stderr
  together, as on a terminal).
- ``<!-- readme-check: COMMAND -->``: the whole block is what COMMAND prints (for a command
  shown in a block of its own just above).

Add ``decimals`` before the colon (``<!-- readme-check decimals -->``) to also ignore every
decimal number, for tables of timings without units (``edge bench``).

Commands run through ``bash`` one after another in one scratch directory that links the
repository's ``tests``, ``samples`` and ``models``, with ``edge`` meaning this interpreter's
``python -m edge`` on this checkout. Before comparing, both sides are masked: durations and
rates with units, the ``timings_ms`` of results, memory sizes, clock times, dates and TCP
ports, and runs of spaces inside a line shrink to one (table padding). Only mark blocks whose
output is otherwise deterministic.

    python scripts/check_readme.py            # exit 0, or 1 with a diff per disagreeing block
    python scripts/check_readme.py --update   # rewrite the marked blocks with fresh output
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINKED = ("tests", "samples", "models")
TIMEOUT_S = 120.0

MARKER = re.compile(
    r"^<!--\s*readme-check(?P<flags>(?:\s+[a-z-]+)*)\s*(?::\s*(?P<cmd>.*?))?\s*-->$"
)
FENCE = re.compile(r"^(```+|~~~+)")
FLAGS = ("decimals",)


def _sub(pattern: str, repl: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)
    return lambda text: compiled.sub(repl, text)


# Order matters: whole JSON objects first, then dates before clock times, times before numbers.
MASKS: tuple[Callable[[str], str], ...] = (
    _sub(r'"timings_ms":\{[^}]*\}', '"timings_ms":{…}'),
    _sub(r'"(latency_ms|e2e_ms|captured_at|ts)":\s*[^,}]+', r'"\1":…'),
    _sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?", "<date>"),
    _sub(r"\b\d\d:\d\d:\d\d(\.\d+)?\b", "<time>"),
    _sub(r"\b(\d{1,3}(\.\d{1,3}){3}|localhost|\[[0-9a-f:]+\]):\d+\b", r"\1:<port>"),
    _sub(r"\b\d+(\.\d+)?\s?(items/s|images/s|results/s|fps)", r"<rate> \2"),
    _sub(r"\b\d+(\.\d+)?\s?(ms|s|µs|min)\b", r"<time> \2"),
    _sub(r"\b\d+(\.\d+)?\s?(KiB|MiB|GiB|kB|MB|GB)\b", r"<size> \2"),
    _sub(r"\b(rss|RSS|CPU|cpu) \d+(\.\d+)?", r"\1 <n>"),
)
INNER_SPACE = re.compile(r"(?<=\S)[ \t]+")
DECIMALS = _sub(r"(?<![\d.])\d+\.\d+(?![\d.])", "<n>")


@dataclass(frozen=True, slots=True)
class Step:
    """One command and the lines the README says it prints."""

    command: str
    expected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Block:
    """A marked fenced block: its body's line span in the README (0-based, end exclusive) and
    its steps."""

    start: int
    end: int
    steps: tuple[Step, ...]
    decimals: bool
    session: bool  # ``$ `` lines in the block (else one command from the marker)


def find_blocks(lines: Sequence[str]) -> list[Block]:
    """Every marked block; raises ValueError for a marker not followed by a fenced block or a
    session block without commands."""
    blocks = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if not m:
            continue
        flags = m.group("flags").split()
        unknown = [f for f in flags if f not in FLAGS]
        if unknown:
            raise ValueError(f"line {i + 1}: unknown readme-check flag {unknown[0]!r}")
        if i + 1 >= len(lines) or not FENCE.match(lines[i + 1]):
            raise ValueError(f"line {i + 1}: a readme-check marker must precede a fenced block")
        fence = FENCE.match(lines[i + 1])
        assert fence is not None
        end = next(
            (j for j in range(i + 2, len(lines)) if lines[j].startswith(fence.group(1))), None
        )
        if end is None:
            raise ValueError(f"line {i + 2}: the fenced block is not closed")
        body = list(lines[i + 2 : end])
        if m.group("cmd"):
            steps = [Step(m.group("cmd"), tuple(body))]
        else:
            steps = _session(body, i + 3)
        blocks.append(Block(i + 2, end, tuple(steps), "decimals" in flags, not m.group("cmd")))
    return blocks


def _session(body: list[str], first_line: int) -> list[Step]:
    steps: list[Step] = []
    command: str | None = None
    expected: list[str] = []
    for n, line in enumerate(body):
        if line.startswith("$ "):
            if command is not None:
                steps.append(Step(command, tuple(expected)))
            command, expected = line[2:], []
        elif command is None:
            raise ValueError(f"line {first_line + n}: output before the first `$ ` command")
        else:
            expected.append(line)
    if command is None:
        raise ValueError(f"line {first_line}: a readme-check session block has no `$ ` command")
    steps.append(Step(command, tuple(expected)))
    return steps


def mask(lines: Sequence[str], decimals: bool) -> list[str]:
    out = []
    for line in lines:
        text = line
        for m in MASKS:
            text = m(text)
        if decimals:
            text = DECIMALS(text)
        # Column padding follows the width of the masked numbers (a 9.5 ms run vs a 12.1 ms one).
        out.append(INNER_SPACE.sub(" ", text).rstrip())
    while out and not out[-1]:
        out.pop()
    return out


class Runner:
    """Runs README commands in one scratch directory with ``edge`` on PATH."""

    def __init__(self, workdir: Path, python: str) -> None:
        self.workdir = workdir
        for name in LINKED:
            (workdir / name).symlink_to(REPO / name)
        bindir = workdir / ".bin"
        bindir.mkdir()
        shim = bindir / "edge"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} -m edge "$@"\n')
        shim.chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")},
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",  # stdout and stderr interleave as on a terminal
            "COLUMNS": "100",
        }

    def __call__(self, command: str) -> list[str]:
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        return proc.stdout.splitlines()


def check(readme: Path, python: str, update: bool = False) -> list[str]:
    """The disagreements, one unified diff per step; with ``update``, rewrite ``readme``'s
    marked blocks with what the commands printed instead."""
    lines = readme.read_text().splitlines()
    blocks = find_blocks(lines)
    problems: list[str] = []
    replacements: list[tuple[Block, list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="readme-check-") as tmp:
        run = Runner(Path(tmp), python)
        for block in blocks:
            fresh: list[str] = []
            for step in block.steps:
                actual = run(step.command)
                if block.session:
                    fresh.append(f"$ {step.command}")
                fresh.extend(actual)
                want, got = mask(step.expected, block.decimals), mask(actual, block.decimals)
                if want != got:
                    diff = difflib.unified_diff(
                        want, got, "README (masked)", "actual (masked)", lineterm=""
                    )
                    problems.append(
                        f"{readme.name}:{block.start}: `{step.command}` printed something "
                        "else:\n" + "\n".join(diff)
                    )
            replacements.append((block, fresh))
    if update:
        for block, fresh in reversed(replacements):
            lines[block.start : block.end] = fresh
        readme.write_text("\n".join(lines) + "\n")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument(
        "--update", action="store_true", help="rewrite the marked blocks with fresh output"
    )
    args = parser.parse_args(argv)
    try:
        problems = check(args.readme, sys.executable, update=args.update)
    except ValueError as exc:
        print(f"check_readme: {args.readme}: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    if problems and not args.update:
        print(
            f"check_readme: {len(problems)} README output(s) disagree with the commands; "
            "fix the code or rerun with --update and review the diff",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
