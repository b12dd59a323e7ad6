"""``edge quantize``: float model → full-integer TFLite model directory (:mod:`edge.quantize`,
which also owns the options: ``scripts/quantize_model.py`` takes the same ones)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge.quantize.cli import add_arguments as quantize_arguments

    quantize_arguments(p)


def run(args: argparse.Namespace) -> int:
    from edge.quantize.cli import run as quantize

    return quantize(args)
