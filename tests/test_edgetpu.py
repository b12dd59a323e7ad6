"""The real Coral Edge TPU path. Runs only on a device with a Coral (EDGE_HARDWARE=1) and an
Edge TPU-compiled model given by EDGE_EDGETPU_MODEL (for example the output of `edge quantize`
with edgetpu_compiler installed, or Coral's mobilenet_v2_1.0_224_quant_edgetpu.tflite)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edge.runtime import RuntimeOptions, edgetpu, load


@pytest.mark.hardware
def test_edgetpu_model_runs_on_the_coral() -> None:
    """An Edge TPU model loads with the delegate on the first Coral found, reports the
    edgetpu delegate (not a fallback) and produces outputs of the declared shapes."""
    model = os.environ.get("EDGE_EDGETPU_MODEL")
    assert model, "set EDGE_EDGETPU_MODEL to an Edge TPU-compiled .tflite"
    assert edgetpu.present_devices(), "no Coral found (lsusb: 1a6e:089a or 18d1:9302)"
    interp = load(Path(model), RuntimeOptions(delegate="edgetpu", fallback="fail"))
    assert interp.info.delegate == "edgetpu" and not interp.info.degraded
    spec = interp.inputs[0]
    interp.set_input(np.zeros(spec.shape, spec.dtype))
    interp.invoke()
    for i, out in enumerate(interp.outputs):
        assert interp.output(i).shape == out.shape


@pytest.mark.hardware
def test_unplugged_coral_falls_back_to_cpu_when_allowed(tmp_path: Path) -> None:
    """With fallback cpu, asking for a device that is not there runs on the CPU and says why."""
    model = os.environ.get("EDGE_CPU_MODEL", "")
    if not model:
        from edge.models import resolve

        model = str(resolve("shapes-classifier")[0])
    interp = load(Path(model), RuntimeOptions(delegate="edgetpu", device="usb:9", fallback="cpu"))
    assert interp.info.delegate == "xnnpack" and "Edge TPU unavailable" in interp.info.degraded


@pytest.mark.hardware
def test_the_installed_libedgetpu_is_read_and_matches_the_runtime() -> None:
    """The installed libedgetpu reports a RuntimeVersion, the TensorFlow it was built against is
    known (from its build label or its package), and the runtime in use is not a pair the
    lock-step check refuses."""
    from edge.runtime import libedgetpu, lockstep
    from edge.runtime.backends import load_backend

    lib = libedgetpu.read(edgetpu.library_name())
    assert lib.found and lib.runtime_version > 0, lib.problem
    assert lib.tensorflow, lib.problem
    backend = load_backend()
    verdict = lockstep.check(lib, backend.name, backend.version)
    assert verdict.level != "refuse", verdict.message
