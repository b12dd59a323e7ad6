"""Models that normalize their own input (a Keras ``Rescaling`` layer) are fed raw pixels, not
normalized twice; a float model that does not see its images is called out; and the quality
gate is on by default, with its own exit code and an explicit way to turn it off."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from quantize_models import (
    RESCALINGS,
    raw_pixels,
    rescaling_classifier,
    run_edge,
    shape_frame,
    tensorflow,
    training_data,
    write_images,
)

from edge.engine import Engine, Overrides
from edge.errors import EX_CONFIG, EX_NOINPUT, EX_QUALITY, EX_SOFTWARE, EX_USAGE
from edge.preprocess import PreprocessConfig
from edge.quantize import main
from edge.quantize.cli import DEFAULT_MAX_DROP, max_drop
from edge.quantize.convert import quiet
from edge.quantize.normalization import (
    InputNormalization,
    read_keras,
    read_saved_model,
    read_tflite,
)
from edge.quantize.preprocessing import DEFAULT_PREPROCESS, choose, seen_range
from edge.quantize.tool import Request
from edge.quantize.variation import SPREAD_MIN
from edge.runtime import RuntimeOptions

RAW = PreprocessConfig(mean=(0.0,), std=(1.0,))


@dataclass(frozen=True)
class Shapes:
    """Square shape frames: training tensors (raw pixels), calibration and held-out folders,
    and the held-out frames with their true classes."""

    x: np.ndarray
    y: np.ndarray
    calibration: Path
    holdout: Path
    holdout_images: list[np.ndarray]
    holdout_labels: list[int]
    root: Path


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Shapes:
    """2,400 training frames, 40 calibration frames and 200 held-out frames (another seed)."""
    root = tmp_path_factory.mktemp("rescaling")
    x, y = training_data()
    rng = np.random.default_rng(2)
    cal = [shape_frame(rng, square=True)[0] for _ in range(40)]
    hold_rng = np.random.default_rng(99)
    hold = [shape_frame(hold_rng, square=True) for _ in range(200)]
    return Shapes(
        x=x,
        y=y,
        calibration=write_images(root / "cal", cal),
        holdout=write_images(root / "hold", [image for image, _ in hold]),
        holdout_images=[image for image, _ in hold],
        holdout_labels=[k for _, k in hold],
        root=root,
    )


@pytest.fixture(scope="session")
def models(shapes: Shapes) -> dict[str, Path]:
    """The two Rescaling classifiers (``1/255`` and ``1/127.5-1``), each trained once."""
    tf = tensorflow()
    out = {}
    with quiet():
        for name, (scale, offset) in RESCALINGS.items():
            path = shapes.root / name.replace("/", "_") / "shapes.keras"
            out[name] = rescaling_classifier(tf, shapes.x, shapes.y, scale, offset, path)
    return out


def quantize_in_process(
    capsys: pytest.CaptureFixture[str], *args: str | Path
) -> tuple[int, dict[str, Any], str]:
    """``edge quantize ARGS --json`` in this process: (exit code, JSON report, stderr)."""
    code = main([*map(str, args), "--json", "--bench-runs", "0", "--no-edgetpu"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


@pytest.mark.parametrize("rescaling", list(RESCALINGS))
def test_rescaling_model_is_fed_raw_pixels(
    rescaling: str,
    models: dict[str, Path],
    shapes: Shapes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With no preprocessing flags, a Keras model with a Rescaling input layer is fed raw
    pixels: its int8 model agrees with the float Keras model on at least 95 % of held-out
    frames, and classifies at least 90 % of them right."""
    tf = tensorflow()
    out = tmp_path / "out"
    code, report, _ = quantize_in_process(
        capsys,
        models[rescaling],
        "--calibration",
        shapes.calibration,
        "--holdout",
        shapes.holdout,
        "--out",
        out,
    )
    assert code == 0
    assert report["preprocess"]["mean"] == [0.0] and report["preprocess"]["std"] == [1.0]
    assert report["preprocess_origin"] == "model"
    assert "Rescaling layer" in report["in_model_normalization"]
    assert report["alerts"] == [] and report["max_drop"] == DEFAULT_MAX_DROP
    assert report["float_output_spread"] > 10 * SPREAD_MIN
    assert report["agreement"]["top1_agreement"] >= 95.0
    # An independent check: the Keras model itself on raw pixels against the int8 model.
    with quiet():
        keras_model = tf.keras.models.load_model(models[rescaling], compile=False)
    x = raw_pixels(shapes.holdout_images)
    want = keras_model.predict(x, verbose=0).argmax(axis=1)
    engine = Engine.load(out, RuntimeOptions(threads=1), Overrides(threshold=0.0))
    got = np.array([engine.infer(image).classes[0].class_id for image in shapes.holdout_images])
    assert np.mean(got == want) >= 0.95
    assert np.mean(got == np.array(shapes.holdout_labels)) >= 0.90
    assert json.loads((out / "manifest.json").read_text())["preprocess"]["std"] == [1.0]


def test_forced_double_normalization_is_called_out(
    models: dict[str, Path],
    shapes: Shapes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--mean 0 --std 255 on a Rescaling(1/255) model divides twice: the tool warns, on
    stderr and in the report, that the input is normalized again and that the float model's
    outputs barely vary across the calibration images."""
    caplog.set_level(logging.WARNING, logger="edge.quantize")
    code, report, _ = quantize_in_process(
        capsys,
        models["1/255"],
        "--calibration",
        shapes.calibration,
        "--holdout",
        shapes.holdout,
        "--out",
        tmp_path / "out",
        "--mean",
        "0",
        "--std",
        "255",
    )
    assert code in (0, EX_QUALITY)  # the gate judges int8 against a float model that is blind
    assert report["preprocess_origin"] == "flags" and report["preprocess"]["std"] == [255.0]
    assert report["float_output_spread"] < SPREAD_MIN
    alerts = " ".join(report["alerts"])
    assert "normalizes it again" in alerts and "0..0.003922 instead of 0..1" in alerts
    assert "outputs barely vary across 32 calibration images" in alerts
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("barely vary" in m for m in logged)


def black_frames(tmp_path: Path) -> Path:
    """Twelve all-black frames: a calibration set that wrecks the input range."""
    return write_images(tmp_path / "black", [np.zeros((64, 64, 3), np.uint8)] * 12)


def test_default_gate_fails_with_its_exit_code(
    models: dict[str, Path], shapes: Shapes, tmp_path: Path
) -> None:
    """Without --max-drop the 5 % gate applies: a model calibrated on black frames exits
    EX_QUALITY (65) with a message naming the drop, the default limit, what to check and how
    to accept the model anyway; the model is still written."""
    out = tmp_path / "out"
    proc = run_edge(
        models["1/255"],
        "--calibration",
        black_frames(tmp_path),
        "--holdout",
        shapes.holdout,
        "--out",
        out,
        "--bench-runs",
        "0",
        "--no-edgetpu",
    )
    assert proc.returncode == EX_QUALITY, proc.stdout + proc.stderr
    assert "max allowed 5 %: FAIL" in proc.stdout
    error = proc.stderr.splitlines()[-1]
    assert error.startswith("edge: error: quantization cost ")
    assert "more than --max-drop 5 % (the default)" in error
    for needle in ("do not deploy it", "--mean/--std", "--calibration images", "--max-drop none"):
        assert needle in error
    assert "Traceback" not in proc.stderr
    assert (out / "model.tflite").is_file()


def test_gate_off_exits_zero_with_a_warning(
    models: dict[str, Path],
    shapes: Shapes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--max-drop none accepts the same broken model (exit 0) but warns that the gate is off
    and the drop exceeds the default limit, and that the black calibration frames are alike."""
    code, report, _ = quantize_in_process(
        capsys,
        models["1/255"],
        "--calibration",
        black_frames(tmp_path),
        "--holdout",
        shapes.holdout,
        "--out",
        tmp_path / "out",
        "--max-drop",
        "none",
    )
    assert code == 0
    assert report["max_drop"] is None and report["passed"] is True
    assert report["agreement"]["drop"] > DEFAULT_MAX_DROP
    assert any("quality gate is off (--max-drop none)" in a for a in report["alerts"])
    assert any("because the images themselves hardly differ" in a for a in report["alerts"])


# -- reading the model's own normalization ---------------------------------------------------
def test_keras_reader_composes_nested_layers() -> None:
    """Augmentation in a nested Sequential is looked through; Rescaling then Normalization
    compose into one per-channel map; a model without them gives None."""
    tf = tensorflow()
    layers = tf.keras.layers
    augment = tf.keras.Sequential([layers.RandomFlip(), layers.RandomRotation(0.1)])
    inp = tf.keras.Input((8, 8, 3))
    h = augment(inp)
    h = layers.Rescaling(1 / 255)(h)
    h = layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.01])(h)
    model = tf.keras.Model(inp, layers.Conv2D(2, 3)(h))
    found = read_keras(model)
    assert found is not None and len(found.steps) == 2
    assert found.scale == pytest.approx((1 / 255 / 0.2, 1 / 255 / 0.3, 1 / 255 / 0.1))
    assert found.offset == pytest.approx((-2.5, -0.4 / 0.3, -3.0))
    assert found.takes_pixels()
    plain = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), layers.Conv2D(2, 3)])
    assert read_keras(plain) is None


def test_saved_model_and_tflite_readers(tmp_path: Path) -> None:
    """A SavedModel exported from a Rescaling(1/127.5, offset=-1) model, and its float
    .tflite (where the offset before a zero-padded convolution keeps the ops visible), both
    read as x / 127.5 - 1."""
    tf = tensorflow()
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 3)),
            layers.Rescaling(1 / 127.5, offset=-1),
            layers.Conv2D(2, 3, padding="same"),
        ]
    )
    with quiet():
        model.export(str(tmp_path / "saved"), verbose=False)
        flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        readings = [read_saved_model(str(tmp_path / "saved"), tf), read_tflite(flat)]
    for found in readings:
        assert found is not None
        assert found.scale == pytest.approx((1 / 127.5,)) and found.offset == pytest.approx((-1,))


# -- choosing the preprocessing (no TensorFlow needed) ---------------------------------------
PIXELS_TO_UNIT = InputNormalization((1 / 255,), (0.0,), ("Rescaling layer 'r' (x * 0.00392157)",))


def test_choose_raw_pixels_for_a_self_normalizing_model() -> None:
    """Nothing given + a model that rescales itself → mean 0, std 1, without alerts; nothing
    given + no such layer → the 0..1 default, with a note saying it was assumed."""
    choice = choose(given=None, manifest=None, overrides={}, in_model=PIXELS_TO_UNIT)
    assert (choice.config.mean, choice.config.std, choice.origin) == ((0.0,), (1.0,), "model")
    assert choice.alerts == () and choice.notes == ()
    default = choose(given=None, manifest=None, overrides={}, in_model=None)
    assert default.config == DEFAULT_PREPROCESS and default.origin == "default"
    assert "assumed stretch resize, RGB, inputs scaled to 0..1" in default.notes[0]


def test_choose_keeps_explicit_normalization_but_alerts() -> None:
    """A manifest's or the flags' mean/std wins over the model's own, with an alert when it
    normalizes again; a resize flag alone leaves the model's raw pixels in place."""
    manifest = PreprocessConfig(mean=(0.0,), std=(255.0,))
    choice = choose(given=None, manifest=manifest, overrides={}, in_model=PIXELS_TO_UNIT)
    assert choice.config.std == (255.0,) and choice.origin == "manifest"
    assert "the manifest's preprocess (mean 0, std 255) normalizes it again" in choice.alerts[0]
    flags = choose(given=None, manifest=None, overrides={"std": (255.0,)}, in_model=PIXELS_TO_UNIT)
    assert flags.origin == "flags" and "--mean/--std" in flags.alerts[0]
    resize = choose(
        given=None, manifest=None, overrides={"resize": "crop"}, in_model=PIXELS_TO_UNIT
    )
    assert resize.config == PreprocessConfig(resize="crop", mean=(0.0,), std=(1.0,))
    assert resize.alerts == ()


def test_a_rescaling_that_is_no_normalization_is_not_relied_on() -> None:
    """Rescaling(255) (a model that wants 0..1 and scales up) does not make edge feed raw
    pixels: the default stays, with a note naming the layer."""
    up = InputNormalization((255.0,), (0.0,), ("Rescaling layer 'up' (x * 255)",))
    assert not up.takes_pixels()
    choice = choose(given=None, manifest=None, overrides={}, in_model=up)
    assert choice.origin == "default" and "not a normalized range" in choice.notes[1]


def test_seen_range_golden() -> None:
    """What the first real layer sees for 0..255 pixels, per edge's mean/std and the model."""
    assert seen_range(RAW, PIXELS_TO_UNIT) == pytest.approx((0.0, 1.0))
    assert seen_range(DEFAULT_PREPROCESS, PIXELS_TO_UNIT) == pytest.approx((0.0, 1 / 255))
    both = PreprocessConfig(mean=(127.5,), std=(127.5,))
    assert seen_range(both, None) == pytest.approx((-1.0, 1.0))


# -- the gate's settings ---------------------------------------------------------------------
def test_max_drop_values_and_exit_code() -> None:
    """--max-drop takes a percentage or none/off; the gate's exit code is its own; the Python
    API gates by default like the command."""
    assert max_drop("2.5") == 2.5 and max_drop("none") is None and max_drop("OFF") is None
    with pytest.raises(argparse.ArgumentTypeError, match="at most 100, got 150; or 'none'"):
        max_drop("150")
    assert EX_QUALITY == 65
    assert EX_QUALITY not in (0, EX_SOFTWARE, EX_USAGE, EX_NOINPUT, EX_CONFIG)
    assert Request(model=Path("m"), out=Path("o"), calibration=()).max_drop == DEFAULT_MAX_DROP
