"""Helpers for the failover tests: the bundled models they run, the chain of the native test
delegate in front of XNNPACK, and comparisons of outputs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edge.models import load_spec
from edge.runtime import Interpreter, RuntimeOptions, failover
from edge.runtime.chain import Link, chain
from edge.runtime.failover import FailoverInterpreter

CLASSIFIER = load_spec("shapes-classifier").path
DETECTOR = load_spec("shapes-detector").path
BENCH = load_spec("mobilenet-v2-bench").path
ONE_THREAD = RuntimeOptions(threads=1)  # the tests share two cores


def native(library: Path, control: Path) -> Link:
    """The native delegate built at ``library``, commanded through ``control``."""
    return Link(
        "native",
        RuntimeOptions(
            threads=1, library=str(library), library_options=(("control", str(control)),)
        ),
    )


def chain_of(library: Path, control: Path) -> tuple[Link, ...]:
    """The native delegate, then XNNPACK."""
    return (native(library, control), *chain(["xnnpack"], ONE_THREAD))


def open_chain(
    opened: list[FailoverInterpreter],
    links: tuple[Link, ...],
    path: Path = CLASSIFIER,
    invoke_timeout_ms: float = 2000.0,
    reprobe_s: float = 0.0,
) -> FailoverInterpreter:
    """Load ``path`` on ``links``, recorded in ``opened`` to be closed after the test."""
    interp = failover.load(path, links, invoke_timeout_ms, reprobe_s)
    opened.append(interp)
    return interp


def inputs(interp: FailoverInterpreter | Interpreter, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random uint8 inputs of the model's input shape."""
    spec = interp.inputs[0]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=spec.shape, dtype=np.uint8) for _ in range(n)]


def answers(interp: FailoverInterpreter | Interpreter, values: np.ndarray) -> list[np.ndarray]:
    """Every output for one input."""
    interp.set_input(values)
    interp.invoke()
    return [interp.output(i) for i in range(len(interp.outputs))]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def invoke_threads(name: str) -> int:
    """How many live threads have this name."""
    return sum(t.name == name and t.is_alive() for t in threading.enumerate())
