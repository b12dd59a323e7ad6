"""The engine on the bundled models and real image files: golden comparisons against a plain
interpreter fed by a textbook numpy pipeline, known labels and boxes, and the `edge infer`
output contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.decode import read_image
from edge.engine import Engine
from edge.errors import EX_NOINPUT
from edge.models import load_spec
from edge.postprocess import iou_matrix
from edge.runtime import Interpreter
from edge.runtime.backends import load_backend

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "tests" / "data" / "shapes"
TRUTH = json.loads((SHAPES / "truth.json").read_text())
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())


def reference_input(image: np.ndarray, model: str) -> tuple[np.ndarray, object]:
    """The model input built by hand from the manifest, independently of edge.preprocess."""
    spec = load_spec(model)
    assert spec.preprocess is not None
    pre = spec.preprocess
    interp = load_backend().module.Interpreter(model_path=str(spec.path), num_threads=1)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    _, h, w, _ = d["shape"]
    ih, iw = image.shape[:2]
    if pre.resize == "letterbox":
        s = min(w / iw, h / ih)
        nw, nh = round(iw * s), round(ih * s)
        canvas = np.full((h, w, 3), pre.pad, np.uint8)
        x0, y0 = (w - nw) // 2, (h - nh) // 2
        canvas[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(image, (nw, nh))
        rgb = canvas[..., ::-1]
    else:
        rgb = cv2.resize(image, (w, h))[..., ::-1]
    real = (rgb.astype(np.float64) - np.array(pre.mean)) / np.array(pre.std)
    scale, zp = d["quantization"]
    if scale:
        info = np.iinfo(d["dtype"])
        # As ONNX QuantizeLinear defines it: x / scale in float32, rounded half to even.
        q = np.round(real.astype(np.float32) / np.float32(scale)) + zp
        x = np.clip(q, info.min, info.max).astype(d["dtype"])
    else:
        x = real.astype(np.float32)
    return x[None], interp


@pytest.mark.parametrize("model", ["shapes-classifier", "shapes-detector", "mobilenet-v2-bench"])
def test_engine_matches_plain_interpreter(model: str) -> None:
    """edge's preprocessing + invoke gives exactly the tensors and outputs of a plain
    interpreter fed by a hand-written numpy pipeline."""
    image = read_image(SHAPES / "scene_0.jpg")
    engine = Engine.load(model)
    engine.infer(image)
    x, interp = reference_input(image, model)
    assert isinstance(engine.interpreter, Interpreter)  # one delegate: no failover wrapper
    got_input = engine.interpreter._raw.get_tensor(engine.interpreter.inputs[0].index)
    diff = np.abs(got_input.astype(np.int32) - x.astype(np.int32))
    # Rounding of exact .5 values may differ by one step between float paths.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    interp.set_tensor(interp.get_input_details()[0]["index"], got_input)  # type: ignore[attr-defined]
    interp.invoke()  # type: ignore[attr-defined]
    for i, out in enumerate(interp.get_output_details()):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(engine.interpreter.output(i), interp.get_tensor(out["index"]))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(n for n in TRUTH if "label" in TRUTH[n]))
def test_classifier_on_real_files(name: str) -> None:
    """Each single-shape PNG is classified as its colour and shape."""
    engine = Engine.load("shapes-classifier")
    result = engine.infer(read_image(SHAPES / name), source=name)
    assert result.classes[0].label == TRUTH[name]["label"]
    jsonschema.validate(result.to_dict(), SCHEMA)


@pytest.mark.parametrize("name", sorted(n for n in TRUTH if "objects" in TRUTH[n]))
def test_detector_on_real_files(name: str) -> None:
    """Every shape in a scene (PNG and JPEG, several frame sizes) is found with its label and a
    box overlapping the truth by IoU ≥ 0.7, in source-frame coordinates."""
    engine = Engine.load("shapes-detector")
    result = engine.infer(read_image(SHAPES / name), source=name)
    truth = TRUTH[name]["objects"]
    assert sorted(d.label for d in result.detections) == sorted(o["label"] for o in truth)
    iou = iou_matrix(
        np.array([d.box for d in result.detections]), np.array([o["box"] for o in truth])
    )
    for i, det in enumerate(result.detections):
        j = int(iou[i].argmax())
        assert iou[i, j] >= 0.7 and truth[j]["label"] == det.label
    jsonschema.validate(result.to_dict(), SCHEMA)


def test_task_override_raw() -> None:
    """--task raw reports every output tensor's summary instead of decoding it."""
    from edge.engine import Overrides

    engine = Engine.load("shapes-detector", overrides=Overrides(task="raw"))
    result = engine.infer(read_image(SHAPES / "scene_2.png"))
    out = result.to_dict()
    jsonschema.validate(out, SCHEMA)
    assert out["task"] == "raw" and out["outputs"][0]["shape"] == [1, 7, 576]


def test_cli_infer_prints_one_valid_object_per_image_and_reports_bad_files() -> None:
    """`edge infer` prints one schema-valid JSON line per readable image, names the unreadable
    one on stderr, and exits 66 because of it."""
    images = [SHAPES / "red_square.png", SHAPES / "corrupt.jpg", SHAPES / "scene_1.jpg"]
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "infer", "shapes-detector", *map(str, images)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EX_NOINPUT
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, [images[0], images[2]], strict=True):
        obj = json.loads(line)
        jsonschema.validate(obj, SCHEMA)
        assert obj["source"] == str(image)
        assert all(obj["timings_ms"][k] >= 0 for k in ("preprocess", "invoke", "postprocess"))
    assert "corrupt.jpg" in proc.stderr and "Traceback" not in proc.stderr
