"""The real Engine on a real model, with control over its invoke: for pipeline tests that need
a slow model, a model held mid-invoke, or one frame that fails. Everything else (preprocessing
on the capture thread, the interpreter, decoding) is the production code."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge.engine import Engine, Invocation, Overrides
from edge.models import ModelSpec
from edge.runtime import Interpreter, RuntimeOptions


class ControlledEngine(Engine):
    """An Engine whose :meth:`run_prepared` first waits for ``gate`` (set = open), then sleeps
    ``delay_s`` (a stand-in for a slow model, not synchronization), and raises RuntimeError on
    the invokes numbered in ``fail_on`` (1-based). ``invokes`` counts calls; ``invoking`` is set
    once a call has started. Build with :func:`controlled`."""

    def __init__(self, spec: ModelSpec, interpreter: Interpreter, overrides: Overrides) -> None:
        super().__init__(spec, interpreter, overrides)
        self.delay_s = 0.0
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: set[int] = set()
        self.invokes = 0
        self.invoking = threading.Event()

    def run_prepared(self, tensor: np.ndarray) -> Invocation:
        self.invokes += 1
        self.invoking.set()
        if not self.gate.wait(10):
            raise RuntimeError("the test never opened the gate")
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.invokes in self.fail_on:
            raise RuntimeError(f"invoke {self.invokes} fails on purpose")
        return super().run_prepared(tensor)


def controlled(model: str = "shapes-detector", delay_s: float = 0.0) -> ControlledEngine:
    """A ControlledEngine for a bundled model, one interpreter thread (tests share 2 cores)."""
    engine = ControlledEngine.load(model, RuntimeOptions(threads=1))
    assert isinstance(engine, ControlledEngine)
    engine.delay_s = delay_s
    return engine
