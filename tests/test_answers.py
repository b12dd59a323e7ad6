"""Right answers from models whose outputs edge used to misread, on the fixture models of
``tests/data/answers`` (made by scripts/make_answer_fixtures.py) and real image files: sigmoid
segmenters, tasks that do not fit the outputs, labels files shifted by a background class,
labels to report that the model lacks, and feature extractors."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.config import validate
from edge.decode import read_image
from edge.engine import Engine, Overrides
from edge.errors import EX_CONFIG, ModelError
from edge.runtime.backends import load_backend
from edge.tflite_metadata import output_producers

REPO = Path(__file__).resolve().parent.parent
ANSWERS = REPO / "tests" / "data" / "answers"
SHAPES = REPO / "tests" / "data" / "shapes"
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())
GREY = np.full((48, 64, 3), 128, np.uint8)


def red_probability(image: np.ndarray) -> np.ndarray:
    """What the segmenters compute, by hand: sigmoid(10·(R − (G+B)/2) − 2) per pixel of the
    32×32 stretched RGB 0..1 input."""
    rgb = cv2.resize(image, (32, 32))[..., ::-1].astype(np.float64) / 255.0
    z = 10.0 * (rgb[..., 0] - (rgb[..., 1] + rgb[..., 2]) / 2) - 2.0
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


def copy_model(name: str, tmp_path: Path, **manifest: object) -> Path:
    """A copy of fixture ``name`` whose manifest gets ``manifest``'s keys."""
    d = tmp_path / name
    shutil.copytree(ANSWERS / name, d)
    data = json.loads((d / "manifest.json").read_text())
    data.update(manifest)
    (d / "manifest.json").write_text(json.dumps(data))
    return d


def edge_infer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "infer", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- 1. single-channel sigmoid segmentation ------------------------------------------------
@pytest.mark.parametrize("model", ["segment-float", "segment-int8"])
@pytest.mark.parametrize("image", ["red_circle.png", "red_square.png", "blue_circle.png"])
def test_sigmoid_segmenter_reports_foreground_and_background(model: str, image: str) -> None:
    """A [1,H,W,1] sigmoid output is thresholded at 0.5 (after dequantizing the int8 one):
    the foreground fraction is the share of pixels with P(red) ≥ 0.5, named by labels.txt,
    and the background the rest, both always reported."""
    frame = read_image(SHAPES / image)
    engine = Engine.load(ANSWERS / model)
    result = engine.infer(frame)
    jsonschema.validate(result.to_dict(), SCHEMA)
    assert result.task == "segmentation"
    fractions = {(s.label, s.class_id): s.fraction for s in result.segments}
    assert set(fractions) == {("red", 1), ("background", 0)}
    want = float((red_probability(frame) >= 0.5).mean())
    # int8 steps of 1/256 may flip a pixel or two sitting at 0.5.
    assert fractions["red", 1] == pytest.approx(want, abs=2 / 1024 if "int8" in model else 1e-9)
    assert fractions["red", 1] + fractions["background", 0] == pytest.approx(1.0)
    if image.startswith("red"):
        assert 0.05 < fractions["red", 1] < 0.2  # the shape, not the grey around it
    else:
        assert fractions["red", 1] == 0.0
    assert result.mask is not None and result.mask.shape == (32, 32)
    assert set(np.unique(result.mask)) <= {0, 1}


@pytest.mark.parametrize("model", ["segment-float", "segment-int8"])
def test_segmentation_threshold_is_configurable(model: str) -> None:
    """segmentation_threshold from [model] (via Overrides.from_settings) moves the cut: at 0.2
    more pixels are foreground than at 0.9, each matching the hand-computed share."""
    frame = read_image(SHAPES / "scene_0.jpg")
    p = red_probability(frame)
    got = {}
    for t in (0.2, 0.9):
        settings = validate(
            {"model": {"segmentation_threshold": t}, "cameras": [{"source": "synthetic"}]}
        ).model
        engine = Engine.load(ANSWERS / model, overrides=Overrides.from_settings(settings))
        assert engine.postprocess_config.segmentation_threshold == t
        segs = {s.label: s.fraction for s in engine.infer(frame).segments}
        assert segs["red"] == pytest.approx(float((p >= t).mean()), abs=4 / 1024)
        got[t] = segs["red"]
    assert got[0.2] > got[0.9] > 0


def test_segmentation_threshold_from_the_manifest(tmp_path: Path) -> None:
    """postprocess.segmentation_threshold in a manifest sets the cut as well."""
    frame = read_image(SHAPES / "scene_0.jpg")
    d = copy_model("segment-float", tmp_path, postprocess={"segmentation_threshold": 0.9})
    segs = {s.label: s.fraction for s in Engine.load(d).infer(frame).segments}
    assert segs["red"] == pytest.approx(float((red_probability(frame) >= 0.9).mean()))


def test_segmenter_without_labels_names_foreground(tmp_path: Path) -> None:
    """Without a labels file the two classes are called background and foreground."""
    d = copy_model("segment-int8", tmp_path)
    (d / "labels.txt").unlink()
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["labels"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    result = Engine.load(d).infer(read_image(SHAPES / "red_circle.png"))
    assert {s.label for s in result.segments} == {"background", "foreground"}


# -- 2. a task that does not fit the outputs ------------------------------------------------
SSD_OUTPUTS = (
    "'TFLite_Detection_PostProcess' [1,10,4] float32",
    "'TFLite_Detection_PostProcess:1' [1,10] float32",
    "'TFLite_Detection_PostProcess:2' [1,10] float32",
    "'TFLite_Detection_PostProcess:3' [1] float32",
)


@pytest.mark.parametrize(
    ("model", "task", "outputs", "fits"),
    [
        (str(ANSWERS / "ssd"), "classification", SSD_OUTPUTS, "They fit task detection"),
        (str(ANSWERS / "ssd"), "segmentation", SSD_OUTPUTS, "They fit task detection"),
        (
            str(ANSWERS / "blazeface"),
            "segmentation",
            ("'classificators' [1,896,1] float32", "'regressors' [1,896,16] float32"),
            "They fit no task edge decodes, only raw",
        ),
        (
            "shapes-classifier",
            "segmentation",
            ("'StatefulPartitionedCall_1:0' [1,12] uint8",),
            "They fit task classification",
        ),
        (
            str(ANSWERS / "embedding-pool"),
            "segmentation",
            ("'StatefulPartitionedCall_1:0' [1,16] float32",),
            "They fit task raw",
        ),
    ],
)
def test_forced_task_that_does_not_fit_exits_78(
    model: str, task: str, outputs: tuple[str, ...], fits: str
) -> None:
    """`edge infer --task T` on outputs T cannot decode exits 78 with one line saying what T
    needs, which outputs the model has (name, shape, dtype) and which task fits; no
    traceback, nothing on stdout."""
    proc = edge_infer(model, str(SHAPES / "red_circle.png"), "--task", task)
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert f"--task {task} (or [model] task) does not fit the model's outputs" in proc.stderr
    assert f"{task} needs one output" in proc.stderr
    for o in outputs:
        assert o in proc.stderr
    assert fits in proc.stderr


def test_manifest_task_that_does_not_fit_names_the_manifest(tmp_path: Path) -> None:
    """A manifest task the outputs do not fit is refused at load, naming the manifest."""
    d = copy_model("ssd", tmp_path, task="classification")
    with pytest.raises(ModelError) as err:
        Engine.load(d)
    msg = str(err.value)
    assert f"the task 'classification' in {d / 'manifest.json'} does not fit" in msg
    assert 'remove "task" from' in msg and "They fit task detection" in msg


def test_ssd_with_postprocess_op_still_detects() -> None:
    """Left to itself edge reads the real TFLite_Detection_PostProcess outputs as SSD boxes:
    the red square's grid cells, labelled red (the op's class ids start after the
    background)."""
    result = Engine.load(ANSWERS / "ssd").infer(read_image(SHAPES / "red_square.png"))
    assert result.task == "detection" and result.detections
    assert {d.label for d in result.detections} == {"red"}
    assert output_producers(ANSWERS / "ssd" / "model.tflite") == {
        i: "TFLite_Detection_PostProcess" for i in (14, 15, 16, 17)
    }


# -- 3. labels shifted by a background class ------------------------------------------------
def test_labels_one_short_are_shifted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """1000 labels on a 1001-class model: class 0 is background and class i is line i-1,
    with a WARNING saying so; the red circle is "red", not the next line's "green"."""
    with caplog.at_level(logging.WARNING, logger="edge.engine"):
        engine = Engine.load(ANSWERS / "classifier-1001")
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "has 1000 labels for the model's 1001 classes" in warning
    assert "labels_offset -1" in warning
    assert engine.postprocess_config.labels_offset == -1
    top = engine.infer(read_image(SHAPES / "red_circle.png")).classes[0]
    assert (top.label, top.class_id) == ("red", 1)
    assert engine.infer(read_image(SHAPES / "blue_square.png")).classes[0].label == "blue"
    top = engine.infer(GREY).classes[0]
    assert (top.label, top.class_id) == ("background", 0)


def test_labels_with_background_line_fit_silently(caplog: pytest.LogCaptureFixture) -> None:
    """1001 labels starting with `background` on the same model fit as written: no warning,
    the same answers."""
    with caplog.at_level(logging.WARNING, logger="edge.engine"):
        engine = Engine.load(ANSWERS / "classifier-1001-background")
    assert caplog.records == []
    assert engine.postprocess_config.labels_offset == 0
    assert engine.infer(read_image(SHAPES / "red_circle.png")).classes[0].label == "red"
    assert engine.infer(GREY).classes[0].label == "background"


def test_labels_offset_setting_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """labels_offset set in the manifest or as an override is used as given, without a
    warning: -1 in the manifest confirms the shift, 0 from [model] reads the file as written
    (the old answer, "green")."""
    frame = read_image(SHAPES / "red_circle.png")
    d = copy_model("classifier-1001", tmp_path, postprocess={"labels_offset": -1})
    with caplog.at_level(logging.WARNING, logger="edge.engine"):
        confirmed = Engine.load(d)
        settings = validate(
            {"model": {"labels_offset": 0}, "cameras": [{"source": "synthetic"}]}
        ).model
        as_written = Engine.load(
            ANSWERS / "classifier-1001", overrides=Overrides.from_settings(settings)
        )
    assert caplog.records == []
    assert confirmed.infer(frame).classes[0].label == "red"
    assert as_written.infer(frame).classes[0].label == "green"


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (["red", "green", *[f"unused {i}" for i in range(3, 999)]], "998 labels"),
        (["background", *[f"unused {i}" for i in range(1, 1000)]], "starts with 'background'"),
        ([f"class {i}" for i in range(1002)], "no background entry"),
    ],
)
def test_ambiguous_labels_are_refused(tmp_path: Path, lines: list[str], says: str) -> None:
    """Labels whose count no single shift explains (two short; one short but starting with a
    background line; one over without one) stop the load with a ModelError naming the file,
    the counts and the labels_offset setting."""
    d = copy_model("classifier-1001", tmp_path)
    (d / "labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ModelError) as err:
        Engine.load(d)
    msg = str(err.value)
    assert str(d / "labels.txt") in msg and "the model has 1001 classes" in msg
    assert says in msg and "labels_offset" in msg


def test_ssd_labelmap_starting_with_unknown_skips_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An SSD labelmap whose first line is `???` (TF's SSD examples) is shifted by one with a
    WARNING, since the post-process op's class ids leave out the background."""
    d = copy_model("ssd", tmp_path)
    (d / "labels.txt").write_text("???\nred\ngreen\nblue\nyellow\n")
    with caplog.at_level(logging.WARNING, logger="edge.engine"):
        engine = Engine.load(d)
    assert any("starts with '???'" in r.getMessage() for r in caplog.records)
    result = engine.infer(read_image(SHAPES / "red_square.png"))
    assert {det.label for det in result.detections} == {"red"}


# -- 4. labels to report that the model lacks -----------------------------------------------
def test_unknown_allowed_label_is_refused_listing_the_labels() -> None:
    """--labels naming a class the model lacks is a ModelError listing the model's labels,
    with a close match as a hint; known labels load."""
    with pytest.raises(ModelError) as err:
        Engine.load("shapes-classifier", overrides=Overrides(allow=frozenset({"red cirle"})))
    msg = str(err.value)
    assert "'red cirle', which shapes-classifier does not have" in msg
    assert "did you mean 'red circle'?" in msg
    assert "red circle, green circle, blue circle" in msg and "yellow triangle" in msg
    engine = Engine.load("shapes-classifier", overrides=Overrides(allow=frozenset({"red circle"})))
    assert [c.label for c in engine.infer(read_image(SHAPES / "red_circle.png")).classes] == [
        "red circle"
    ]


def test_unknown_allowed_label_exits_78() -> None:
    """`edge infer --labels zebra` on the detector exits 78 naming its three labels."""
    proc = edge_infer("shapes-detector", str(SHAPES / "scene_0.jpg"), "--labels", "circle,zebra")
    assert proc.returncode == EX_CONFIG and proc.stdout == ""
    assert "'zebra', which shapes-detector does not have" in proc.stderr
    assert "circle, square, triangle" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_label_from_config_on_a_long_label_list() -> None:
    """[model] labels is checked the same way; a 1001-label list is cut short in the
    message, which says how many there are and where."""
    settings = validate(
        {"model": {"labels": ["red", "tabby"]}, "cameras": [{"source": "synthetic"}]}
    ).model
    with pytest.raises(ModelError) as err:
        Engine.load(
            ANSWERS / "classifier-1001-background", overrides=Overrides.from_settings(settings)
        )
    msg = str(err.value)
    assert "'tabby', which classifier-1001-background does not have" in msg
    assert "'red'" not in msg.split("does not have", maxsplit=1)[0]
    assert "background, red, green, blue, unused 4" in msg and "1001 in all" in msg


def test_allowed_labels_on_a_raw_task_are_refused() -> None:
    """A labels filter on a model reported as raw cannot match anything: refused."""
    with pytest.raises(ModelError, match="which has no labels"):
        Engine.load(ANSWERS / "embedding-mean", overrides=Overrides(allow=frozenset({"cat"})))


# -- 5. feature extractors ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "shape", "op"),
    [("embedding-mean", [1, 1, 1, 16], "MEAN"), ("embedding-pool", [1, 16], "AVERAGE_POOL_2D")],
)
def test_embedding_is_reported_raw(
    model: str, shape: list[int], op: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An output computed by a pool or MEAN, without labels, is a feature vector: task raw
    with its name, shape, dtype and the statistics of the interpreter's own output (no
    softmax), and an INFO line saying why."""
    frame = read_image(SHAPES / "red_circle.png")
    with caplog.at_level(logging.INFO, logger="edge.engine"):
        engine = Engine.load(ANSWERS / model)
    assert any(f"computed by {op}" in r.getMessage() for r in caplog.records)
    out = engine.infer(frame).to_dict()
    jsonschema.validate(out, SCHEMA)
    assert out["task"] == "raw"
    (summary,) = out["outputs"]
    assert summary["shape"] == shape and summary["dtype"] == "float32"
    interp = load_backend().module.Interpreter(model_path=str(ANSWERS / model / "model.tflite"))
    interp.allocate_tensors()
    x = cv2.resize(frame, (32, 32))[..., ::-1].astype(np.float32)[None] / 255.0
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    ref = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert summary["min"] == pytest.approx(float(ref.min()), abs=1e-5)
    assert summary["max"] == pytest.approx(float(ref.max()), abs=1e-5)
    assert summary["mean"] == pytest.approx(float(ref.mean()), abs=1e-5)
    forced = Engine.load(ANSWERS / model, overrides=Overrides(task="classification"))
    assert forced.task == "classification"  # asked for explicitly: still allowed


@pytest.mark.parametrize("name", ["shapes-classifier", "mobilenet-v2-bench"])
def test_bundled_classifiers_are_classifiers_without_their_manifest(
    name: str, tmp_path: Path
) -> None:
    """The bundled classifiers end in SOFTMAX: their bare .tflite (no manifest, no labels) is
    still read as classification."""
    bare = tmp_path / "model.tflite"
    shutil.copy(REPO / "models" / name / "model.tflite", bare)
    assert Engine.load(bare).task == "classification"
    assert Engine.load(name).task == "classification"


def test_daemon_config_and_infer_flags_reach_the_postprocessing() -> None:
    """[model] segmentation_threshold / labels_offset reach the daemon's engines, and `edge
    infer --segmentation-threshold` changes the answer."""
    config = validate(
        {
            "model": {"segmentation_threshold": 0.9, "labels_offset": -1},
            "cameras": [{"source": "synthetic"}],
        }
    )
    o = Overrides.from_settings(config.model)
    assert (o.segmentation_threshold, o.labels_offset) == (0.9, -1)
    low = edge_infer(
        str(ANSWERS / "segment-float"), str(SHAPES / "red_circle.png"),
        "--segmentation-threshold", "0.01",
    )  # fmt: skip
    high = edge_infer(
        str(ANSWERS / "segment-float"), str(SHAPES / "red_circle.png"),
        "--segmentation-threshold", "0.99",
    )  # fmt: skip
    assert low.returncode == high.returncode == 0, low.stderr + high.stderr

    def foreground(out: str) -> float:
        segs = json.loads(out)["segments"]
        return float(sum(s["fraction"] for s in segs if s["label"] != "background"))

    assert foreground(low.stdout) > foreground(high.stdout)
