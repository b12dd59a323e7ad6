"""What the quantize tests share: shape frames drawn by edge.scene, image folders, the tool run
as a subprocess, TensorFlow or a skip, and a small Keras classifier that normalizes its own
input (a ``Rescaling`` layer), trained in a few seconds.

The frames and the classifier come from ``scripts/make_rescaling_classifier.py``, so the model
the tests train is the one anyone can make and try ``edge quantize`` on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.quantize.convert import quiet

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "quantize_model.py"
sys.path.insert(0, str(ROOT / "scripts"))

from make_rescaling_classifier import (  # noqa: E402  (a script, found through sys.path)
    RESCALINGS,
    raw_pixels,
    rescaling_classifier,
    shape_frame,
    training_data,
    write_images,
)

__all__ = [
    "RESCALINGS",
    "env",
    "raw_pixels",
    "rescaling_classifier",
    "run_edge",
    "run_script",
    "shape_frame",
    "tensorflow",
    "training_data",
    "write_images",
]


def tensorflow() -> Any:
    """TensorFlow, or skip the test: it is an optional extra (``edge[quantize]``), installed in
    CI, so these tests run there."""
    with quiet():
        return pytest.importorskip(
            "tensorflow", reason="TensorFlow (the edge[quantize] extra) is not installed"
        )


def env() -> dict[str, str]:
    """The environment for subprocesses: this checkout importable, TensorFlow kept quiet."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return e


def run_script(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """scripts/quantize_model.py with ``args``."""
    return run([str(SCRIPT), *map(str, args)], timeout)


def run_edge(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m edge quantize`` with ``args``: the command users type."""
    return run(["-m", "edge", "quantize", *map(str, args)], timeout)


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        check=False,
    )
