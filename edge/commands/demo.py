"""``edge demo``: the daemon on the bundled sample clip, its results shown as they arrive
(:mod:`edge.demo`, which owns the options)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge.demo import add_arguments as demo_arguments

    demo_arguments(p)


def run(args: argparse.Namespace) -> int:
    from edge.demo import run as demo

    return demo(args)
