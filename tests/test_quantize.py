"""The quantize tool end to end (a small Keras classifier trained here on edge.scene drawings),
its gate, its error handling, the metrics it reports and its Edge TPU log parsing."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from quantize_models import env, run_script, shape_frame, tensorflow, write_images

from edge.baseline import measure
from edge.engine import Engine, Overrides
from edge.errors import EX_QUALITY, ConfigError
from edge.models import load_spec
from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec
from edge.quantize import main
from edge.quantize.compiler import HOW_TO_GET, compile_model, parse_log
from edge.quantize.convert import quiet
from edge.quantize.images import load_folder
from edge.quantize.metrics import Boxes, box_agreement, match, mean_average_precision
from edge.runtime import RuntimeOptions
from edge.scene import SHAPES

SIZE = 32
PREPROCESS = PreprocessConfig(resize="stretch", color="rgb", mean=(0.0,), std=(255.0,))


@dataclass(frozen=True)
class Fixture:
    keras: Path
    calibration: Path
    holdout: Path
    holdout_images: list[np.ndarray]
    root: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    """A tiny float Keras classifier (3 shapes) trained for a few seconds on frames that went
    through edge's Preprocessor, saved with a manifest and labels beside it."""
    tf = tensorflow()
    with quiet():
        root = tmp_path_factory.mktemp("quantize")
        tf.keras.utils.set_random_seed(1)
        rng = np.random.default_rng(1)
        pre = Preprocessor(TensorSpec(0, "x", (1, SIZE, SIZE, 3), np.dtype(np.float32)), PREPROCESS)
        pairs = [shape_frame(rng) for _ in range(1200)]
        x = np.concatenate([pre.to_array(img)[0] for img, _ in pairs])
        y = np.array([k for _, k in pairs])
        layers = tf.keras.layers
        model = tf.keras.Sequential(
            [
                tf.keras.Input((SIZE, SIZE, 3)),
                layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(len(SHAPES), activation="softmax"),
            ]
        )
        model.compile(
            optimizer=tf.keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy"
        )
        model.fit(x, y, batch_size=32, epochs=6, verbose=0)
        keras_path = root / "model" / "shapes.keras"
        keras_path.parent.mkdir()
        model.save(keras_path)
    (keras_path.parent / "labels.txt").write_text("\n".join(SHAPES) + "\n")
    (keras_path.parent / "manifest.json").write_text(
        json.dumps(
            {
                "name": "tiny-shapes",
                "task": "classification",
                "preprocess": {"resize": "stretch", "color": "rgb", "mean": [0], "std": [255]},
                "postprocess": {"top_k": 3, "threshold": 0.0},
            }
        )
    )
    cal = [shape_frame(rng)[0] for _ in range(40)]
    hold_rng = np.random.default_rng(99)
    hold = [shape_frame(hold_rng)[0] for _ in range(60)]
    return Fixture(
        keras=keras_path,
        calibration=write_images(root / "cal", cal),
        holdout=write_images(root / "hold", hold),
        holdout_images=hold,
        root=root,
    )


@pytest.fixture(scope="session")
def quantized(trained: Fixture) -> tuple[Path, dict[str, Any]]:
    """The tool run once through scripts/quantize_model.py: (output dir, JSON report)."""
    out = trained.root / "out"
    proc = run_script(
        trained.keras,
        "--calibration",
        trained.calibration,
        "--holdout",
        trained.holdout,
        "--out",
        out,
        "--max-drop",
        "15",
        "--bench-runs",
        "5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_quantized_model_is_full_integer_and_reported(quantized: tuple[Path, Any]) -> None:
    """The report states sizes, agreement, latency and the preprocessing read from the
    manifest beside the Keras file; the model has uint8 input and output."""
    out, report = quantized
    assert report["task"] == "classification"
    assert report["io"] == "uint8"
    assert report["preprocess"]["std"] == [255.0]
    assert report["calibration_images"] == 40
    assert report["holdout_images"] == 60 and report["holdout_from"] == "holdout"
    assert report["int8_bytes"] < report["float_bytes"]
    assert report["agreement"]["top1_agreement"] >= 85.0
    assert 0.0 <= report["agreement"]["mean_score_error"] < 0.1
    assert report["passed"] is True
    assert report["float_latency"]["p50_ms"] > 0 and report["int8_latency"]["p50_ms"] > 0
    engine = Engine.load(out, RuntimeOptions(threads=1))
    assert engine.interpreter.inputs[0].dtype == np.uint8
    assert engine.interpreter.outputs[0].dtype == np.uint8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == "labels.txt" and manifest["name"] == "tiny-shapes"
    assert manifest["metrics"]["quantization"]["images"] == 60


def test_quantize_records_the_drift_baseline(trained: Fixture, quantized: tuple[Path, Any]) -> None:
    """The manifest's baseline is the int8 model's results on the 60 holdout images at its own
    settings: measuring them again gives the same class shares and score deciles."""
    out, _ = quantized
    spec = load_spec(out)
    assert spec.baseline is not None
    assert spec.baseline.results == 60 and spec.baseline.threshold == 0.0
    made = json.loads((out / "manifest.json").read_text())["baseline"]["made"]
    assert made == "edge quantize on 60 holdout images"
    again = measure(Engine.load(out, RuntimeOptions(threads=1)), trained.holdout_images)
    assert set(again.classes) == set(spec.baseline.classes) == set(SHAPES)
    for k, share in again.classes.items():
        assert spec.baseline.classes[k] == pytest.approx(share, abs=1e-5)
    assert spec.baseline.score_deciles == pytest.approx(again.score_deciles, abs=1e-5)


def test_int8_agrees_with_float_through_edge(trained: Fixture, quantized: tuple[Path, Any]) -> None:
    """On held-out frames the int8 model picks the same class as the float Keras model on
    at least 85 % of frames, both fed by edge's Preprocessor."""
    tf = tensorflow()

    out, _ = quantized
    with quiet():
        model = tf.keras.models.load_model(trained.keras, compile=False)
    pre = Preprocessor(TensorSpec(0, "x", (1, SIZE, SIZE, 3), np.dtype(np.float32)), PREPROCESS)
    engine = Engine.load(out, RuntimeOptions(threads=1), Overrides(threshold=0.0))
    same = 0
    for image in trained.holdout_images:
        want = int(model(pre.to_array(image)[0]).numpy().argmax())
        same += engine.infer(image).classes[0].class_id == want
    assert same / len(trained.holdout_images) >= 0.85


def test_edge_infer_runs_the_result(trained: Fixture, quantized: tuple[Path, Any]) -> None:
    """`python -m edge infer OUT image.png` prints a classification with the shipped labels."""
    out, _ = quantized
    image = trained.holdout / "000.png"
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "infer", str(out), str(image)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[0])
    assert result["task"] == "classification"
    assert result["classes"][0]["label"] in SHAPES


def test_max_drop_gate_fails_on_damaged_calibration(trained: Fixture, tmp_path: Path) -> None:
    """Calibrating on all-black frames wrecks the input range; with --max-drop 0 the tool
    exits with EX_QUALITY (65) and says why, after writing the model for inspection."""
    black = write_images(tmp_path / "black", [np.zeros((64, 64, 3), np.uint8)] * 12)
    out = tmp_path / "out"
    proc = run_script(
        trained.keras,
        "--calibration",
        black,
        "--holdout",
        trained.holdout,
        "--out",
        out,
        "--max-drop",
        "0",
        "--bench-runs",
        "0",
    )
    assert proc.returncode == EX_QUALITY, proc.stdout + proc.stderr
    assert "--max-drop 0 %" in proc.stderr and "Traceback" not in proc.stderr
    assert "FAIL" in proc.stdout
    assert (out / "model.tflite").is_file()


def test_float_tflite_is_quantized_with_int8_io(trained: Fixture, tmp_path: Path) -> None:
    """A float .tflite (with a signature) is quantized by ai-edge-quantizer to int8 I/O that
    edge runs and that agrees with the float model; uint8 I/O is refused with a reason."""
    tf = tensorflow()

    with quiet():
        model = tf.keras.models.load_model(trained.keras, compile=False)
        flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    src = tmp_path / "float" / "model.tflite"
    src.parent.mkdir()
    src.write_bytes(flat)
    common = ["--calibration", str(trained.calibration), "--mean", "0", "--std", "255"]
    assert main([str(src), *common, "--out", str(tmp_path / "u8"), "--io", "uint8"]) == 78
    args = [str(src), *common, "--holdout", str(trained.holdout), "--out", str(tmp_path / "q")]
    code = main([*args, "--max-drop", "15", "--bench-runs", "0", "--json"])
    assert code == 0
    engine = Engine.load(tmp_path / "q", RuntimeOptions(threads=1))
    assert engine.interpreter.inputs[0].dtype == np.int8
    assert engine.task == "classification"


# -- bad inputs: one clear message, exit 78, no traceback ------------------------------------
def assert_config_exit(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_missing_model(tmp_path: Path) -> None:
    """A model path that does not exist is named, with the formats accepted."""
    cal = write_images(tmp_path / "cal", [np.zeros((8, 8, 3), np.uint8)] * 10)
    proc = run_script(tmp_path / "nope.keras", "--calibration", cal, "--out", tmp_path / "o")
    assert_config_exit(proc, "model not found", "nope.keras", "SavedModel")


def test_unsupported_format(tmp_path: Path) -> None:
    """An ONNX file is refused with a conversion hint."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    cal = write_images(tmp_path / "cal", [np.zeros((8, 8, 3), np.uint8)] * 10)
    proc = run_script(model, "--calibration", cal, "--out", tmp_path / "o")
    assert_config_exit(proc, "not a model format", "onnx2tf")


def stand_in_model(tmp_path: Path) -> Path:
    """A file named like a Keras model: the checks before TensorFlow loads it only look at
    the name, so these tests run without TensorFlow too."""
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04")
    return path


def test_empty_calibration_folder(tmp_path: Path) -> None:
    """An empty calibration folder says how many images are needed."""
    (tmp_path / "empty").mkdir()
    model = stand_in_model(tmp_path)
    proc = run_script(model, "--calibration", tmp_path / "empty", "--out", tmp_path / "o")
    assert_config_exit(proc, "--calibration", "is empty", "at least 10")


def test_undecodable_calibration_images(tmp_path: Path) -> None:
    """Files that are not images are skipped and counted; too few left is an error."""
    folder = write_images(tmp_path / "cal", [np.zeros((8, 8, 3), np.uint8)] * 4)
    for i in range(8):
        (folder / f"broken{i}.png").write_bytes(b"not a png")
    model = stand_in_model(tmp_path)
    proc = run_script(model, "--calibration", folder, "--out", tmp_path / "o")
    assert_config_exit(proc, "4 usable image(s)", "8 file(s) could not be decoded", "at least 10")


def test_undecodable_images_are_skipped(tmp_path: Path) -> None:
    """With enough good images left, broken files are skipped and listed."""
    folder = write_images(tmp_path / "cal", [np.full((8, 8, 3), i, np.uint8) for i in range(12)])
    (folder / "zz.jpg").write_bytes(b"\xff\xd8garbage")
    images = load_folder(folder, option="--calibration", count=100, minimum=10)
    assert len(images) == 12
    assert [name for name, _ in images.skipped] == ["zz.jpg"]


def test_count_and_shuffle_pick_a_seeded_subset(tmp_path: Path) -> None:
    """--count takes the first N by name; --shuffle takes N at random, repeatably per seed."""
    folder = write_images(tmp_path / "cal", [np.full((4, 4, 3), i, np.uint8) for i in range(30)])
    first = load_folder(folder, option="--calibration", count=10, minimum=10)
    assert first.names == tuple(f"{i:03d}.png" for i in range(10))
    a = load_folder(folder, option="--calibration", count=10, minimum=10, shuffle=True, seed=3)
    b = load_folder(folder, option="--calibration", count=10, minimum=10, shuffle=True, seed=3)
    assert a.names == b.names != first.names
    with pytest.raises(ConfigError, match="at least 40"):
        load_folder(folder, option="--calibration", count=50, minimum=40)


def test_input_shape_edge_cannot_feed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model with a vector input, and one without a fixed image size, are refused with
    what edge needs instead."""
    tf = tensorflow()

    cal = write_images(tmp_path / "cal", [np.zeros((8, 8, 3), np.uint8)] * 10)
    with quiet():
        vector = tf.keras.Sequential([tf.keras.Input((16,)), tf.keras.layers.Dense(2)])
        vector.save(tmp_path / "vector.keras")
        dynamic = tf.keras.Sequential(
            [tf.keras.Input((None, None, 3)), tf.keras.layers.GlobalAveragePooling2D()]
        )
        dynamic.save(tmp_path / "dynamic.keras")
    out = str(tmp_path / "out")
    assert main([str(tmp_path / "vector.keras"), "--calibration", str(cal), "--out", out]) == 78
    assert "[1, height, width, channels]" in capsys.readouterr().err
    assert main([str(tmp_path / "dynamic.keras"), "--calibration", str(cal), "--out", out]) == 78
    assert "fixed image size" in capsys.readouterr().err
    assert not Path(out).exists()  # nothing is written for a model that cannot be used


def test_already_quantized_tflite(quantized: tuple[Path, Any], tmp_path: Path) -> None:
    """An int8 .tflite is not quantized again."""
    out, _ = quantized
    cal = write_images(tmp_path / "cal", [np.zeros((8, 8, 3), np.uint8)] * 10)
    proc = run_script(out / "model.tflite", "--calibration", cal, "--out", tmp_path / "o")
    assert_config_exit(proc, "already has a uint8 input", "needs the float model")


def test_missing_tensorflow_names_the_extra(tmp_path: Path) -> None:
    """Without TensorFlow the tool says what is missing and how to install it, exit 78."""
    cal = write_images(tmp_path / "cal", [np.zeros((8, 8, 3), np.uint8)] * 10)
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from edge.quantize import main\n"
        f"sys.exit(main([{str(stand_in_model(tmp_path))!r}, '--calibration', "
        f"{str(cal)!r}, '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=False
    )
    assert_config_exit(proc, "needs TensorFlow", "pip install 'edge[quantize]'")


# -- metrics ---------------------------------------------------------------------------------
def test_match_is_greedy_by_score_and_class_aware() -> None:
    """The best-scoring prediction takes the truth box; same-class only; IoU ≥ 0.5."""
    truth = Boxes.truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    pred = Boxes(
        np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50.0]]),
        np.array([0, 0, 0, 1]),
        np.array([0.6, 0.9, 0.8, 0.7]),
    )
    pairs = match(pred, truth)
    assert [(p, t) for p, t, _ in pairs] == [(1, 0)]
    assert pairs[0][2] == pytest.approx(81 / 100)


def test_map_perfect_partial_and_missing() -> None:
    """Perfect predictions give AP 1; a false positive ranked above the true one gives AP 0.5
    (precision 1/2 at recall 1); a class never predicted gives AP 0."""
    truths = [Boxes.truth([[0, 0, 10, 10]], [0]), Boxes.truth([[0, 0, 10, 10]], [1])]
    perfect = [Boxes.truth([[0, 0, 10, 10]], [0]), Boxes.truth([[0, 0, 10, 10]], [1])]
    assert mean_average_precision(perfect, truths, 2) == (1.0, [1.0, 1.0])
    fp_first = [
        Boxes(
            np.array([[50, 50, 60, 60], [0, 0, 10, 10.0]]), np.array([0, 0]), np.array([0.9, 0.8])
        ),
        Boxes(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)),
    ]
    m, per_class = mean_average_precision(fp_first, truths, 2)
    assert per_class == [pytest.approx(0.5), 0.0]
    assert m == pytest.approx(0.25)


def test_box_agreement_counts_recall_and_extras() -> None:
    """Recall is over the reference boxes; unmatched candidate boxes are extras."""
    ref = [Boxes.truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    cand = [Boxes(np.array([[0, 0, 10, 11.0], [60, 60, 70, 70]]), np.array([0, 0]), np.ones(2))]
    agg = box_agreement(ref, cand)
    assert agg.recall == 0.5 and agg.extra == 1 and agg.matched == 1
    assert agg.mean_iou == pytest.approx(100 / 110)


# -- Edge TPU compiler -----------------------------------------------------------------------
UNMAPPED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
COMPILER_OUTPUT = f"""Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1040 ms.

Input model: model.tflite
Input size: 70.22KiB
Output model: model_edgetpu.tflite
Output size: 190.34KiB
On-chip memory used for caching model parameters: 65.50KiB
On-chip memory remaining for caching model parameters: 7.85MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: model_edgetpu.log

Operator                       Count      Status

CONV_2D                        4          Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
QUANTIZE                       2          {UNMAPPED}
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_parse_compiler_log() -> None:
    """Summary fields and the operation table are read from the compiler's output."""
    fields, rows = parse_log(COMPILER_OUTPUT)
    assert fields["version"] == "16.0.384591198"
    assert fields["Total number of operations"] == "9"
    assert [(r.op, r.count, r.mapped) for r in rows][-1] == ("QUANTIZE", 2, False)
    assert sum(r.count for r in rows if r.mapped) == 7


@pytest.fixture
def fake_compiler(tmp_path: Path) -> Iterator[Path]:
    """A stand-in edgetpu_compiler (the real one is x86_64 Debian only and not installable
    here) that prints the real compiler's output format and writes the compiled file."""
    script = tmp_path / "bin" / "edgetpu_compiler"
    script.parent.mkdir()
    (tmp_path / "bin" / "output.txt").write_text(COMPILER_OUTPUT)
    script.write_text(
        "#!/bin/sh\n"
        'out="$3"; model="$4"; base=$(basename "$model" .tflite)\n'
        'cp "$model" "$out/${base}_edgetpu.tflite"\n'
        f'cat "{tmp_path / "bin" / "output.txt"}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    yield script


def test_compile_reports_mapped_ops(fake_compiler: Path, tmp_path: Path) -> None:
    """With a compiler present, the compiled file is named and 7 of 9 ops are reported on
    the TPU, with the unmapped op listed."""
    model = tmp_path / "model.tflite"
    model.write_bytes(b"\x00" * 16)
    report = compile_model(model, tmp_path, compiler=str(fake_compiler))
    assert report.compiled and report.model_file == "model_edgetpu.tflite"
    assert (report.ops_mapped, report.ops_total, report.subgraphs) == (7, 9, 1)
    assert report.message == "7 of 9 operations run on the Edge TPU"
    assert (tmp_path / "model_edgetpu.tflite").is_file()


def test_compile_without_compiler_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without edgetpu_compiler on PATH nothing is compiled and the report says how to get it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    report = compile_model(tmp_path / "model.tflite", tmp_path)
    assert not report.compiled and report.message == HOW_TO_GET
    assert "x86_64 Debian/Ubuntu" in report.message
