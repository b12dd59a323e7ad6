"""The runtime interface on real models: loading, options, and every bad-model error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.engine import Engine
from edge.errors import EX_CONFIG, DelegateError, ModelError
from edge.models import resolve
from edge.result import Detection
from edge.runtime import RuntimeOptions, load
from edge.runtime.backends import load_backend
from edge.scene import MovingScene

REPO = Path(__file__).resolve().parent.parent
EXPECTED_BACKEND = os.environ.get("EDGE_RUNTIME", "ai-edge-litert")


@pytest.fixture(scope="module")
def classifier() -> Path:
    return resolve("shapes-classifier")[0]


@pytest.fixture(scope="module")
def bench_model() -> Path:
    return resolve("mobilenet-v2-bench")[0]


def test_backend_is_the_expected_one() -> None:
    """The preferred installed runtime is used and reports its version."""
    backend = load_backend()
    assert backend.name == EXPECTED_BACKEND
    assert backend.version not in ("", "unknown")


def test_load_reports_specs_and_runs(classifier: Path) -> None:
    """A loaded model exposes input/output specs and produces outputs of those shapes."""
    interp = load(classifier, RuntimeOptions(threads=1))
    assert interp.info.backend == EXPECTED_BACKEND and interp.info.threads == 1
    inp = interp.inputs[0]
    assert len(inp.shape) == 4 and inp.shape[0] == 1
    view = interp.input_view()
    view[...] = 0
    del view
    interp.invoke()
    out = interp.output(0)
    assert out.shape == interp.outputs[0].shape


def test_xnnpack_on_and_off_agree() -> None:
    """XNNPACK on and off (the builtin kernels, no delegate) give (nearly) the same int8 outputs
    for a real model on a real scene, and the same detections; only speed differs."""
    image, _ = MovingScene(320, 240, count=3, seed=4).frame(0.0)
    raw = []
    found = []
    for d in ("xnnpack", "cpu"):
        engine = Engine.load("shapes-detector", RuntimeOptions(threads=1, delegate=d))
        interp = engine.interpreter
        assert interp.info.delegate == d
        if d == "cpu":
            assert interp.info.delegate_partitions == 0  # really the path without XNNPACK
        result = engine.infer(image)
        raw.append(interp.outputs[0].dequantize(interp.output(0)))
        found.append(result.detections)
    xnnpack, cpu = raw
    # Outputs that vary (boxes and class scores): agreement on them is not agreement on zeros.
    assert float(np.ptp(cpu)) > 0.5
    # The int8 kernels round differently and the differences add up layer by layer: most
    # values agree to one quantization step, none is far off.
    steps = np.abs(xnnpack - cpu) / engine.interpreter.outputs[0].scale
    assert float((steps > 1.5).mean()) < 0.1
    assert float(steps.max()) < 20
    assert len(found[1]) == 3

    def ordered(dets: tuple[Detection, ...]) -> list[Detection]:
        return sorted(dets, key=lambda d: (d.label, d.box))  # equal scores may swap places

    a, b = ordered(found[0]), ordered(found[1])
    assert [d.label for d in a] == [d.label for d in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.box, y.box, atol=0.01)


def test_xnnpack_partition_is_reported(bench_model: Path) -> None:
    """With XNNPACK the runtime reports delegate partitions and the op mix."""
    interp = load(bench_model, RuntimeOptions(threads=1))
    if EXPECTED_BACKEND == "tflite-runtime":
        return  # tflite-runtime 2.14 never hands int8 models to XNNPACK (see FACTS)
    assert interp.info.delegate_partitions >= 1
    assert interp.info.op_counts.get("CONV_2D", 0) > 10


def test_missing_file(tmp_path: Path) -> None:
    """A missing model names the path and how to list bundled models."""
    with pytest.raises(ModelError, match=r"not found.*edge info"):
        load(tmp_path / "nope.tflite")


def test_empty_file(tmp_path: Path) -> None:
    """An empty file is called empty, with the remedy to copy it again."""
    p = tmp_path / "empty.tflite"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty.*copy"):
        load(p)


def test_html_saved_as_tflite(tmp_path: Path) -> None:
    """An HTML page saved as .tflite is recognised as not TFLite."""
    p = tmp_path / "model.tflite"
    p.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    with pytest.raises(ModelError, match=r"not a TFLite model.*TFL3"):
        load(p)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, classifier: Path, fraction: float) -> None:
    """A truncated model is reported as truncated or corrupt, never loaded or crashed on."""
    data = classifier.read_bytes()
    p = tmp_path / "cut.tflite"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load(p)


def test_edgetpu_model_without_delegate() -> None:
    """An Edge TPU-compiled model on the CPU says so and names both remedies."""
    with pytest.raises(ModelError, match=r"compiled for the Coral Edge TPU.*--delegate edgetpu"):
        load(REPO / "tests" / "data" / "edgetpu_op.tflite")


def test_unknown_custom_op() -> None:
    """A custom op the runtime lacks is named, with how to re-export the model."""
    with pytest.raises(ModelError, match=r"custom op \w+.*builtin ops"):
        load(REPO / "tests" / "data" / "custom_op.tflite")


def test_edgetpu_missing_fails_or_falls_back(classifier: Path) -> None:
    """Without libedgetpu the Edge TPU delegate fails clearly, or falls back to the CPU and
    says so when the policy is cpu."""
    with pytest.raises(DelegateError, match="libedgetpu"):
        load(classifier, RuntimeOptions(delegate="edgetpu", fallback="fail"))
    interp = load(classifier, RuntimeOptions(delegate="edgetpu", fallback="cpu"))
    assert interp.info.delegate == "xnnpack"
    assert "Edge TPU unavailable" in interp.info.degraded


def test_invalid_edgetpu_device(classifier: Path) -> None:
    """A malformed Edge TPU device string is rejected before anything loads."""
    with pytest.raises(DelegateError, match="usb, usb:N, pci or pci:N"):
        load(classifier, RuntimeOptions(delegate="edgetpu", device="usb0"))


@pytest.mark.parametrize("bad", ["missing", "html", "truncated"])
def test_cli_exits_78_without_traceback(tmp_path: Path, classifier: Path, bad: str) -> None:
    """`edge infer` on a bad model exits 78 with one line and no traceback."""
    p = tmp_path / "m.tflite"
    if bad == "html":
        p.write_text("<html></html>")
    elif bad == "truncated":
        p.write_bytes(classifier.read_bytes()[:1000])
    image = REPO / "tests" / "data" / "shapes" / "red_circle.png"
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "infer", str(p), str(image)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EX_CONFIG
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("edge: error:") and str(p) in proc.stderr
    assert proc.stdout == ""


def test_copy_of_bundled_model_dir_loads(tmp_path: Path, classifier: Path) -> None:
    """A model directory holding just the .tflite and labels.txt is enough."""
    d = tmp_path / "mymodel"
    d.mkdir()
    shutil.copy(classifier, d / "whatever.tflite")
    shutil.copy(classifier.parent / "labels.txt", d / "labels.txt")
    path, directory = resolve(d)
    assert path == d / "whatever.tflite" and directory == d


def test_loading_beside_other_threads_leaves_their_stderr_alone(
    classifier: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model loaded while other threads run (a reload) does not take over fd 2: what another
    thread writes to stderr meanwhile still reaches stderr, not the runtime's log."""
    import threading

    read_end, write_end = os.pipe()
    saved = os.dup(2)
    os.dup2(write_end, 2)
    stop = threading.Event()
    writes = [0]

    def chatter() -> None:
        while not stop.is_set():
            os.write(2, b"other thread\n")
            writes[0] += 1
            stop.wait(0.001)

    t = threading.Thread(target=chatter)
    t.start()
    try:
        loads = 0
        while (writes[0] < 20 or loads < 3) and loads < 500:  # loads overlapping the writes
            load(classifier)
            loads += 1
    finally:
        stop.set()
        t.join()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
    with os.fdopen(read_end, "rb") as r:
        written = r.read()
    assert written.count(b"other thread") == writes[0] >= 20
    assert not [r for r in caplog.records if "other thread" in r.getMessage()], (
        "another thread's stderr was re-emitted as a runtime log line"
    )
