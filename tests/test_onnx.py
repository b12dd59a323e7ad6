"""ONNX models on ONNX Runtime: the bundled detector and classifier as ``.onnx`` (made from the
``.tflite`` ones by scripts/make_onnx_models.py) give the TFLite models' answers on the test
scenes, through the same Engine, CLI commands and daemon; the input layout, dtype and size come
from the model; a missing onnxruntime or an unusable model is one clear error."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from broker import Broker, Subscriber
from onnx_files import identity_model, quantize_model

from edge.decode import read_image
from edge.engine import Engine
from edge.errors import EX_CONFIG, DelegateError, ModelError, RuntimeUnavailableError
from edge.models import bundled_models, load_spec, resolve
from edge.postprocess import iou_matrix
from edge.preprocess import Preprocessor
from edge.result import Result
from edge.runtime import Interpreter, RuntimeOptions, default_threads, load
from edge.runtime.onnx import op_counts

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "tests" / "data" / "shapes"
TRUTH = json.loads((SHAPES / "truth.json").read_text())
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())
DETECTOR = REPO / "models" / "shapes-detector-onnx"
CLASSIFIER = REPO / "models" / "shapes-classifier-onnx"
SCENES = sorted(n for n in TRUTH if "objects" in TRUTH[n])
SINGLE = sorted(n for n in TRUTH if "label" in TRUTH[n])


def edge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def paired(a: Result, b: Result) -> list[float]:
    """IoU of each of ``a``'s detections with its partner among ``b``'s: pairs of the same
    label taken greedily, most overlapping first, one to one; 0 for one left without."""
    out = [0.0] * len(a.detections)
    if not a.detections or not b.detections:
        return out
    iou = iou_matrix(
        np.array([d.box for d in a.detections]), np.array([d.box for d in b.detections])
    )
    pairs = sorted(
        (
            (float(iou[i, j]), i, j)
            for i, da in enumerate(a.detections)
            for j, db in enumerate(b.detections)
            if da.label == db.label
        ),
        reverse=True,
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    for value, i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out[i] = value
    return out


# -- the same answers as the TFLite models -----------------------------------------------------
@pytest.fixture(scope="module")
def tflite_detector() -> Engine:
    return Engine.load("shapes-detector")


def detector_ious(other: Engine, tflite: Engine) -> list[float]:
    """IoU of each of the TFLite detector's boxes on the test scenes with ``other``'s, after
    checking that both report the same labels on every scene."""
    ious: list[float] = []
    for name in SCENES:
        image = read_image(SHAPES / name)
        want, got = tflite.infer(image), other.infer(image)
        assert sorted(d.label for d in got.detections) == sorted(
            d.label for d in want.detections
        ), name
        ious += paired(want, got)
    assert len(ious) == sum(len(TRUTH[n]["objects"]) for n in SCENES)
    return ious


def test_int8_onnx_detector_gives_the_tflite_detections(tflite_detector: Engine) -> None:
    """The QDQ int8 ONNX detector, which computes on the TFLite model's own int8 grid, reports
    the TFLite model's labels on every test scene and every box with IoU ≥ 0.95 (on these
    scenes the boxes are the same: given the same quantized input, onnxruntime's int8
    arithmetic gives XNNPACK's outputs at the winning cells bit for bit)."""
    ious = detector_ious(Engine.load(DETECTOR / "model-int8.onnx"), tflite_detector)
    assert min(ious) >= 0.95, sorted(ious)


@pytest.mark.parametrize("variant", ["model.onnx", "tflite builtin kernels"])
def test_other_arithmetic_gives_the_tflite_labels_and_near_boxes(
    variant: str, tflite_detector: Engine
) -> None:
    """The float ONNX detector (float activations) and TFLite's builtin kernels (another int8
    rounding than XNNPACK's) report the TFLite model's labels on every test scene, boxes
    overlapping by IoU ≥ 0.95 at the median and ≥ 0.85 at worst. Not every box reaches 0.95:
    the TFLite output is on a grid of 0.77 px of the 192-px input, one step of a box centre
    costs a box under 30 px more than 0.05 of IoU, and scores on a grid of 0.004 let
    neighbouring cells' near-duplicate boxes swap as the NMS winner."""
    if variant.startswith("tflite"):
        other = Engine.load("shapes-detector", RuntimeOptions(delegate="cpu"))
    else:
        other = Engine.load(DETECTOR / variant)
    ious = detector_ious(other, tflite_detector)
    assert float(np.median(ious)) >= 0.95 and min(ious) >= 0.85, sorted(ious)


@pytest.mark.parametrize("name", [*SINGLE, *SCENES])
def test_classifier_top1_equals_the_tflite_one(name: str) -> None:
    """The ONNX classifier's top class is the TFLite classifier's on every test image, and the
    true one on each single-shape image."""
    image = read_image(SHAPES / name)
    got = Engine.load(CLASSIFIER).infer(image)
    want = Engine.load("shapes-classifier").infer(image)
    assert got.classes[0].label == want.classes[0].label
    if "label" in TRUTH[name]:
        assert got.classes[0].label == TRUTH[name]["label"]


# -- the input the model asks for --------------------------------------------------------------
def reference_nchw(image: np.ndarray) -> np.ndarray:
    """The detector's input by hand, independently of edge.preprocess: letterbox to 192×192
    with pad 114, BGR → RGB, 0..1, NCHW."""
    h, w = image.shape[:2]
    s = min(192 / w, 192 / h)
    nw, nh = round(w * s), round(h * s)
    canvas = np.full((192, 192, 3), 114, np.uint8)
    x0, y0 = (192 - nw) // 2, (192 - nh) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(image, (nw, nh))
    rgb = canvas[..., ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def test_nchw_input_is_fed_as_a_plain_session_would_be() -> None:
    """The NCHW detector shows edge an NHWC float input; what edge's preprocessing writes into
    it is, in the session's NCHW buffer, the hand-made reference tensor, and the outputs are a
    plain onnxruntime session's on that tensor."""
    import onnxruntime as ort

    engine = Engine.load(DETECTOR)
    spec = engine.interpreter.inputs[0]
    assert spec.shape == (1, 192, 192, 3) and spec.dtype == np.float32 and not spec.quantized
    image = read_image(SHAPES / "scene_0.jpg")
    engine.infer(image)
    x = reference_nchw(image)
    assert isinstance(engine.interpreter, Interpreter)  # one delegate: no failover wrapper
    fed = engine.interpreter._raw.get_tensor(spec.index)  # NHWC copy of the NCHW buffer
    np.testing.assert_allclose(fed.transpose(0, 3, 1, 2), x, atol=1e-6)
    session = ort.InferenceSession(str(DETECTOR / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    assert engine.interpreter.outputs[0].shape == out.shape == (1, 7, 576)
    np.testing.assert_allclose(engine.interpreter.output(0), out, atol=1e-5)


def test_quantized_input_is_what_quantizelinear_makes_of_the_float_one(tmp_path: Path) -> None:
    """The uint8 value edge gives each pixel for the TFLite detector is what onnxruntime's
    QuantizeLinear (at the same scale) makes of the float value edge feeds the ONNX one, for
    all 256 pixel values, the float32 ties among them included (pixel 23 → 25.5 → 26)."""
    import onnxruntime as ort

    spec = Engine.load("shapes-detector").interpreter.inputs[0]
    config = load_spec("shapes-detector").preprocess
    assert config is not None
    table = Preprocessor(spec, config).lut
    floats = Preprocessor(Engine.load(DETECTOR).interpreter.inputs[0], config).lut
    assert table is not None and floats is not None
    model = quantize_model(tmp_path / "q.onnx", 256, spec.scale, spec.zero_point)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": np.ascontiguousarray(floats[:, 0])})
    np.testing.assert_array_equal(table[:, 0], want)
    assert floats[23, 0] / np.float32(spec.scale) == np.float32(25.5) and table[23, 0] == 26


def test_nhwc_input_is_kept_and_threads_reach_the_session() -> None:
    """The NHWC classifier keeps its layout; ``threads`` become the session's intra-op
    threads, and the load info names onnxruntime and its CPU provider."""
    for threads in (1, 2):
        interp = load(CLASSIFIER / "model.onnx", RuntimeOptions(threads=threads))
        assert interp.inputs[0].shape == (1, 64, 64, 3)
        assert interp._raw.layout == "nhwc"
        options = interp._raw._session.get_session_options()
        assert options.intra_op_num_threads == threads == interp.info.threads
        assert (interp.info.backend, interp.info.delegate) == ("onnxruntime", "cpu")
    assert load(CLASSIFIER / "model.onnx").info.threads == default_threads()


def test_daemon_path_set_input_gives_the_infer_outputs() -> None:
    """Feeding a tensor preprocessed elsewhere (the daemon's capture thread: NHWC, copied in by
    set_input with the transpose) gives the outputs of preprocessing in place; a tensor of
    another shape or dtype is refused."""
    engine = Engine.load(DETECTOR)
    image = read_image(SHAPES / "scene_1.jpg")
    want = engine.infer(image)
    tensor, transform = engine.new_preprocessor().to_array(image)
    raw = engine.run_prepared(tensor)
    got = engine.decode(raw, transform, image.shape, 0.0)
    assert got.detections == want.detections
    with pytest.raises(ValueError, match="takes float32"):
        engine.interpreter.set_input(tensor.transpose(0, 3, 1, 2).copy())
    with pytest.raises(ValueError, match="takes float32"):
        engine.interpreter.set_input(tensor.astype(np.float64))


def test_op_counts_read_the_graph() -> None:
    """The operator counts `edge bench` prints come from the ONNX graph: the QDQ model has
    QuantizeLinear/DequantizeLinear nodes the float one lacks; an unparsable file has none."""
    float_ops = op_counts(DETECTOR / "model.onnx")
    int8_ops = op_counts(DETECTOR / "model-int8.onnx")
    assert float_ops["Conv"] == int8_ops["Conv"] == 16
    assert "DequantizeLinear" not in float_ops and int8_ops["DequantizeLinear"] > 16
    assert load(DETECTOR / "model.onnx").info.op_counts == float_ops


# -- models the backend refuses ----------------------------------------------------------------
def test_symbolic_batch_is_one_and_the_view_transposes(tmp_path: Path) -> None:
    """An NCHW input with a symbolic batch is read as batch 1 and offered as NHWC; values set
    through that view reach the model in NCHW order, and the symbolic output shape is learnt
    from one run. A uint8 input stays uint8. The output, laid out as the input ([1,C,H,W]),
    is offered as NHWC too: the identity gives back what was set."""
    interp = load(identity_model(tmp_path / "m.onnx", ["N", 3, 4, 5], elem_type=2))
    assert interp.inputs[0].shape == (1, 4, 5, 3) and interp.inputs[0].dtype == np.uint8
    assert interp.outputs[0].shape == (1, 4, 5, 3)
    values = np.arange(60, dtype=np.uint8).reshape(1, 4, 5, 3)
    interp.set_input(values)
    interp.invoke()
    np.testing.assert_array_equal(interp.output(0), values)
    view = interp.input_view()
    view[...] = 7
    interp.invoke()
    assert (interp.output(0) == 7).all()
    assert op_counts(tmp_path / "m.onnx") == {"Identity": 1}


def test_an_nchw_segmentation_mask_is_read_as_the_nhwc_one(tmp_path: Path) -> None:
    """A segmentation graph exported channels first (input [1,3,H,W], scores [1,C,H,W], as
    PyTorch exports one) gives, on a real picture, the mask of the same graph channels last:
    its output is read as [1,H,W,C]. Here the graph is the identity, so the mask is each
    pixel's strongest colour channel; every class occurs."""
    image = read_image(SHAPES / "scene_0.jpg")
    masks = []
    layouts: tuple[tuple[str, list[int | str]], ...] = (
        ("nhwc.onnx", [1, 48, 64, 3]),
        ("nchw.onnx", [1, 3, 48, 64]),
    )
    for name, dims in layouts:
        engine = Engine.load(identity_model(tmp_path / name, dims))
        assert engine.task == "segmentation", name
        mask = engine.infer(image).mask
        assert mask is not None and mask.shape == (48, 64)
        masks.append(mask)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert set(np.unique(masks[0]).tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[1, 3, "height", "width"]], "no fixed image size"),
        ([[1, 3, 8, 8], [1, 3, 8, 8]], "has 2 inputs"),
        ([[1, 10]], r"\[1,C,H,W\] \(NCHW\) or \[1,H,W,C\] \(NHWC\)"),
        ([[1, 4, 8, 8]], "1 or 3 channels on axis 1"),
    ],
)
def test_inputs_edge_cannot_feed_are_refused(
    tmp_path: Path, inputs: list[list[int | str]], message: str
) -> None:
    """A model input edge cannot feed one image into is a ModelError that says what to export."""
    with pytest.raises(ModelError, match=message):
        load(identity_model(tmp_path / "m.onnx", *inputs))


@pytest.mark.parametrize(("size", "message"), [(0, "is empty"), (5000, "not a valid ONNX model")])
def test_damaged_files_are_model_errors(tmp_path: Path, size: int, message: str) -> None:
    """An empty or cut-short .onnx file is a ModelError saying so, not a runtime traceback,
    and has no operators to count."""
    path = tmp_path / "m.onnx"
    path.write_bytes((DETECTOR / "model.onnx").read_bytes()[:size])
    with pytest.raises(ModelError, match=message):
        load(path)
    assert op_counts(path) == {}


def test_without_onnxruntime_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With onnxruntime missing, loading an ONNX model raises RuntimeUnavailableError (exit 78)
    naming the extra to install; TFLite models still load."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeUnavailableError, match=re.escape("pip install 'edge[onnx]'")):
        Engine.load(DETECTOR)
    assert Engine.load("shapes-detector").interpreter.info.backend != "onnxruntime"


def test_cli_without_onnxruntime_exits_78_with_one_line() -> None:
    """`edge infer` on an ONNX model without onnxruntime exits 78 with the install hint and
    no traceback."""
    hide = "import sys; sys.modules['onnxruntime'] = None; from edge.cli import main; "
    proc = subprocess.run(
        [sys.executable, "-c", hide + "sys.exit(main())", "infer", str(DETECTOR), "x.png"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert "pip install 'edge[onnx]'" in proc.stderr and "Traceback" not in proc.stderr


def test_edgetpu_cannot_run_onnx_and_falls_back_when_allowed() -> None:
    """`--delegate edgetpu` with an ONNX model is a DelegateError naming the .tflite route, or
    the CPU with fallback "cpu", said in the load info."""
    with pytest.raises(DelegateError, match=r"Edge TPU-compiled \.tflite"):
        Engine.load(DETECTOR, RuntimeOptions(delegate="edgetpu"))
    engine = Engine.load(DETECTOR, RuntimeOptions(delegate="edgetpu", fallback="cpu"))
    assert engine.interpreter.info.delegate == "cpu"
    assert "running on the CPU" in engine.interpreter.info.degraded


# -- finding ONNX models -----------------------------------------------------------------------
def test_model_directories_find_onnx_files(tmp_path: Path) -> None:
    """The ONNX directories are bundled models; a directory holding one .onnx is a model
    directory; one holding a .tflite and an .onnx without a manifest asks which to use."""
    found = bundled_models()
    assert found["shapes-detector-onnx"] == DETECTOR
    assert found["shapes-classifier-onnx"] == CLASSIFIER
    assert resolve("shapes-detector-onnx") == (DETECTOR / "model.onnx", DETECTOR)
    assert load_spec(DETECTOR / "model-int8.onnx").labels == {
        0: "circle",
        1: "square",
        2: "triangle",
    }
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(DETECTOR / "model.onnx", plain)
    assert resolve(plain) == (plain / "model.onnx", plain)
    shutil.copy(REPO / "models" / "shapes-detector" / "model.tflite", plain)
    with pytest.raises(ModelError, match="several model files"):
        resolve(plain)


# -- the commands -------------------------------------------------------------------------------
def test_bench_prints_the_tflite_report_shape() -> None:
    """`edge bench` prints the same table for the ONNX model as for the TFLite one (title,
    column heads, one row per thread count, the note and the operator line) and the same
    JSON keys."""
    runs = ("--threads", "1,2", "--runs", "5", "--warmup", "1")
    tables = [edge("bench", m, *runs) for m in ("shapes-detector", "shapes-detector-onnx")]
    assert all(t.returncode == 0 for t in tables), [t.stderr for t in tables]
    shapes = []
    for t in tables:
        lines = t.stdout.splitlines()
        assert re.fullmatch(r"model \S+   runtime \S+ \S+   delegate \S+", lines[0]), lines[0]
        rows = [re.fullmatch(r" +[12]( +\d+\.\d+){7} +5 +-?\d+\.\dMB", r) for r in lines[2:4]]
        assert all(rows), lines
        assert re.fullmatch(r"ops: \d+ \(.+\); .+", lines[5]), lines[5]
        shapes.append((len(lines), lines[1], lines[4]))
    assert shapes[0] == shapes[1]
    assert "runtime onnxruntime" in tables[1].stdout
    reports = [
        json.loads(edge("bench", m, "--runs", "3", "--json").stdout)
        for m in (
            "shapes-detector",
            "shapes-detector-onnx",
        )
    ]
    assert reports[0][0].keys() == reports[1][0].keys()
    assert reports[1][0]["backend"] == "onnxruntime" and reports[1][0]["runs"] == 3


def test_infer_prints_the_tflite_results() -> None:
    """`edge infer` on the ONNX detector prints one schema-valid result per image with the
    labels the TFLite model finds."""
    images = [str(SHAPES / n) for n in SCENES]
    onnx, tflite = (edge("infer", m, *images) for m in ("shapes-detector-onnx", "shapes-detector"))
    assert onnx.returncode == tflite.returncode == 0, onnx.stderr
    for a, b in zip(onnx.stdout.splitlines(), tflite.stdout.splitlines(), strict=True):
        got, want = json.loads(a), json.loads(b)
        jsonschema.validate(got, SCHEMA)
        assert got["model"]["name"] == "shapes-detector-onnx" and got["source"] == want["source"]
        assert sorted(d["label"] for d in got["detections"]) == sorted(
            d["label"] for d in want["detections"]
        )


def test_batch_writes_the_tflite_records(tmp_path: Path) -> None:
    """`edge batch` with the ONNX classifier writes the records the TFLite classifier does:
    the same fields and top classes for every image, and the same error line for the corrupt
    one."""
    out = {}
    for model in ("shapes-classifier-onnx", "shapes-classifier"):
        path = tmp_path / f"{model}.jsonl"
        proc = edge("batch", str(SHAPES), "--model", model, "--output", str(path))
        assert proc.returncode == 66, proc.stderr  # corrupt.jpg
        out[model] = {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}
    onnx, tflite = out["shapes-classifier-onnx"], out["shapes-classifier"]
    assert onnx.keys() == tflite.keys()
    for key, rec in onnx.items():
        assert rec.keys() == tflite[key].keys()
        if "error" not in rec:
            jsonschema.validate(rec, SCHEMA)
            assert rec["classes"][0]["label"] == tflite[key]["classes"][0]["label"], key


def test_daemon_runs_the_onnx_detector(broker: Broker, tmp_path: Path) -> None:
    """`edge run` with the ONNX detector publishes a result for every frame of the sample clip,
    in order, each with the detections edge's Engine gives for that frame in-process."""
    clip = REPO / "samples" / "shapes.mp4"
    config = tmp_path / "config.toml"
    config.write_text(
        f'device = "onnxdev"\nstate_dir = "{tmp_path / "state"}"\n'
        '[model]\npath = "shapes-detector-onnx"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[[cameras]]\nname = "cam"\nsource = "{clip}"\nrealtime = false\n'
    )
    sub = Subscriber(broker, "edge/onnxdev/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert sub.wait_until(lambda ms: len(sub.payloads("/result")) >= 120, 10)
    got = [json.loads(p) for p in sub.payloads("/result")]
    sub.close()
    assert [r["seq"] for r in got] == list(range(1, 121))
    assert {r["model"]["name"] for r in got} == {"shapes-detector-onnx"}
    engine = Engine.load("shapes-detector-onnx")
    cap = cv2.VideoCapture(str(clip))
    for r in got:
        ok, frame = cap.read()
        assert ok
        want = engine.infer(frame).to_dict()["detections"]
        assert [d["label"] for d in r["detections"]] == [d["label"] for d in want]
        for d, w in zip(r["detections"], want, strict=True):
            np.testing.assert_allclose(d["box"], w["box"], atol=2e-3)
    cap.release()
