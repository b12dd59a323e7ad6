"""Hailo models (.hef) through HailoRT's Python API, in-process: on the fake hailo_platform (its
"chip" runs the bundled detector's .tflite on the bound pixels and applies HailoRT's NMS), the
Hailo path gives the TFLite path's detections on the test scenes; a chip that cannot run the
HEF, a driver or firmware of another version, a missing HailoRT and a HEF edge cannot feed are
each one exit-78 message saying what to do. The hardware test runs a real HEF on a Pi. The
commands and the daemon are in test_hailo_cli.py."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import jsonschema
import numpy as np
import pytest
from hailo_files import REPO, edge, hailo_detector

from edge.decode import read_image
from edge.engine import Engine, Overrides
from edge.errors import EX_CONFIG, DelegateError, ModelError, RuntimeUnavailableError
from edge.runtime import RuntimeOptions, load, load_model
from edge.runtime import hailo as backend
from edge.runtime.hef import hef_target

SHAPES = REPO / "tests" / "data" / "shapes"
TRUTH = json.loads((SHAPES / "truth.json").read_text())
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())
SCENES = sorted(n for n in TRUTH if "objects" in TRUTH[n])


def paired_ious(
    a: list[tuple[str, tuple[float, ...]]], b: list[tuple[str, tuple[float, ...]]]
) -> list[float]:
    """IoU of each of ``a``'s (label, box) with its best same-label partner in ``b``."""
    from edge.postprocess import iou_matrix

    out = []
    for label, box in a:
        same = [np.array(bb) for lb, bb in b if lb == label]
        out.append(float(iou_matrix(np.array([box]), np.array(same)).max()) if same else 0.0)
    return out


# -- the same answers as the TFLite model ------------------------------------------------------
def test_detector_gives_the_tflite_detections_on_the_test_scenes(
    hailo: ModuleType, hailo_model: Path
) -> None:
    """On every test scene the Hailo path (edge's preprocessing into the bound uint8 buffer,
    the chip's NMS by class, edge's SSD decoding) reports the TFLite model's labels with
    scores within 0.02, each box overlapping its TFLite partner by IoU ≥ 0.95 at the median
    and ≥ 0.85 at worst: the int8 output gives neighbouring anchors equal scores, and which of
    them survives NMS is a tie HailoRT's unstable sort and edge's NMS may break differently
    (the agreement the ONNX test allows for the same reason). The chip ran once per scene."""
    configured = sys.modules["hailo_platform.pyhailort.pyhailort"].ConfiguredInferModel
    tflite = Engine.load("shapes-detector")
    engine = Engine.load(hailo_model)
    before = configured.runs
    ious: list[float] = []
    try:
        for name in SCENES:
            image = read_image(SHAPES / name)
            want, got = tflite.infer(image).detections, engine.infer(image).detections
            assert sorted(d.label for d in got) == sorted(d.label for d in want), name
            ious += paired_ious([(d.label, d.box) for d in got], [(d.label, d.box) for d in want])
            for g in got:
                assert min(abs(g.score - w.score) for w in want if w.label == g.label) <= 0.02
        assert configured.runs - before == len(SCENES)
    finally:
        engine.close()
    assert len(ious) == sum(len(TRUTH[n]["objects"]) for n in SCENES)
    assert float(np.median(ious)) >= 0.95 and min(ious) >= 0.85, sorted(ious)


def test_load_exposes_the_hef_as_uint8_input_and_ssd_outputs(
    hailo: ModuleType, hailo_model: Path
) -> None:
    """The HEF's input vstream becomes a uint8 [1,192,192,3] input with no quantization (the
    HEF normalizes), its NMS output the four SSD post-process outputs (60 = 3 classes × 20
    boxes); the load info names HailoRT, its version and the chip; two models share one
    VDevice, released with the last, and the chip is identified once."""
    opened = hailo.Device.opened
    a = load(hailo_model / "model.hef", RuntimeOptions())
    b = load(hailo_model / "model.hef", RuntimeOptions())
    assert hailo.VDevice.open_count == 1 and backend._Shared.users == 2
    assert hailo.Device.opened - opened == 1
    spec = a.inputs[0]
    assert spec.shape == (1, 192, 192, 3) and spec.dtype == np.uint8 and not spec.quantized
    assert [o.shape for o in a.outputs] == [(1, 60, 4), (1, 60), (1, 60), (1,)]
    assert (a.info.backend, a.info.backend_version, a.info.delegate) == (
        "hailort",
        "4.23.0",
        "hailo8l",
    )
    view = a.input_view()
    view[...] = 0
    a.invoke()
    assert float(a.output(3)[0]) == 0  # nothing on a black frame
    a.close()
    assert hailo.VDevice.open_count == 1
    b.close()
    assert hailo.VDevice.open_count == 0


def test_set_input_copies_a_prepared_frame_and_refuses_others(
    hailo: ModuleType, hailo_model: Path
) -> None:
    """The daemon path (a tensor preprocessed elsewhere, copied in with set_input) gives the
    detections of preprocessing in place; a float tensor is refused."""
    engine = Engine.load(hailo_model)
    try:
        image = read_image(SHAPES / "scene_1.jpg")
        want = engine.infer(image)
        tensor, transform = engine.new_preprocessor().to_array(image)
        got = engine.decode(engine.run_prepared(tensor), transform, image.shape, 0.0)
        assert got.detections == want.detections and want.detections
        with pytest.raises(ValueError, match="takes uint8"):
            engine.interpreter.set_input(tensor.astype(np.float32))
    finally:
        engine.close()


def test_the_hefs_nms_applies_and_edge_filters_on_top(hailo: ModuleType, hailo_model: Path) -> None:
    """The HEF's compiled NMS (IoU 0.45) decides which boxes overlap too much: on an image
    whose three square boxes overlap by IoU up to 0.43, edge's iou_threshold 0.01 does not
    re-run NMS on them (the same detections), while its threshold and max_detections filter
    what the chip returned."""
    from edge.postprocess import iou_matrix

    image = read_image(SHAPES / "green_square.png")
    engines = [
        Engine.load(hailo_model, overrides=Overrides(**o))
        for o in ({}, {"iou_threshold": 0.01}, {"threshold": 0.6}, {"max_detections": 2})
    ]
    try:
        base, low_iou, strict, two = (e.infer(image).detections for e in engines)
        boxes = np.array([d.box for d in base])
        overlap = iou_matrix(boxes, boxes)[np.triu_indices(len(base), 1)]
        assert len(base) == 3 and 0.3 < overlap.max() < 0.45
        assert low_iou == base
        assert strict == tuple(d for d in base if d.score >= 0.6) and 0 < len(strict) < 3
        assert two == base[:2]
    finally:
        for e in engines:
            e.close()


# -- checks at load ----------------------------------------------------------------------------
def test_hef_target_is_read_from_the_header(tmp_path: Path) -> None:
    """The compiled-for architecture and SDK version come from the HEF header; a file that is
    not a HEF is a ModelError saying so."""
    for target in ("HAILO8L", "HAILO8P", "HAILO10H"):
        assert hef_target(hailo_detector(tmp_path / target, target) / "model.hef") == (
            target,
            "3.31.0",
        )
    bad = tmp_path / "bad.hef"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelError, match="not a Hailo HEF"):
        hef_target(bad)


@pytest.mark.parametrize(
    ("target", "chip", "runs"),
    [
        ("HAILO8L", "HAILO8L", True),
        ("HAILO8L", "HAILO8", True),  # HailoRT runs 8L HEFs on a Hailo-8, slower
        ("HAILO8P", "HAILO8", True),
        ("HAILO8P", "HAILO8L", False),
        ("HAILO8L", "HAILO10H", False),
        ("HAILO10H", "HAILO8L", False),
    ],
)
def test_the_chip_is_checked_against_the_hef_target(
    hailo: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    target: str,
    chip: str,
    runs: bool,
) -> None:
    """A HEF loads on the chips HailoRT runs it on (a Hailo-8L HEF on a Hailo-8 with a warning
    that it runs slower); on another chip loading is a DelegateError (exit 78) naming both and
    the HEF to use, raised before the device is configured."""
    monkeypatch.setenv("HAILO_FAKE_ARCH", chip)
    path = hailo_detector(tmp_path / "m", target) / "model.hef"
    if runs:
        with caplog.at_level(logging.WARNING, "edge.runtime.hef"):
            load(path, RuntimeOptions()).close()
        slower = "runs on this Hailo-8 at Hailo-8L speed" in caplog.text
        assert slower == (target == "HAILO8L" and chip == "HAILO8")
        return
    with pytest.raises(DelegateError) as err:
        load(path, RuntimeOptions())
    text = str(err.value)
    assert f"device here is a {chip}" in text and "/usr/share/hailo-models" in text, text
    assert f"--hw-arch {chip.lower()}" in text and err.value.exit_code == EX_CONFIG


def test_a_driver_of_another_version_is_named_with_the_library(
    hailo: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hailo_model: Path
) -> None:
    """A loaded driver whose version differs from HailoRT's is refused before the device is
    opened, naming both versions and the apt package that aligns them; without a readable
    module version, HailoRT's own refusal (status 76) becomes the same kind of message."""
    version = tmp_path / "sys-module" / "hailo_pci" / "version"
    version.parent.mkdir(parents=True)
    version.write_text("4.20.0\n")
    monkeypatch.setenv("HAILO_FAKE_DRIVER", "4.20.0")
    with pytest.raises(RuntimeUnavailableError) as err:
        load(hailo_model / "model.hef", RuntimeOptions())
    text = str(err.value)
    assert "hailo_pci 4.20.0" in text and "library (4.23.0)" in text, text
    assert "sudo apt install hailo-all" in text and err.value.exit_code == EX_CONFIG
    version.unlink()
    with pytest.raises(RuntimeUnavailableError, match=r"HailoRT 4\.23\.0 refuses .*dmesg"):
        load(hailo_model / "model.hef", RuntimeOptions())


def test_firmware_of_another_version_is_named_with_the_library(
    hailo: ModuleType, monkeypatch: pytest.MonkeyPatch, hailo_model: Path
) -> None:
    """Firmware of another major.minor than the library is an exit-78 error naming both."""
    monkeypatch.setenv("HAILO_FAKE_FIRMWARE", "4.20.0")
    with pytest.raises(
        RuntimeUnavailableError, match=r"firmware \(4\.20\.0\) does not match .*4\.23\.0"
    ):
        load(hailo_model / "model.hef", RuntimeOptions())


def test_no_device_says_how_to_check_the_hat(
    hailo: ModuleType, monkeypatch: pytest.MonkeyPatch, hailo_model: Path
) -> None:
    """HailoRT installed but no chip found is a DelegateError pointing at the HAT and
    `hailortcli fw-control identify`."""
    monkeypatch.setenv("HAILO_FAKE_DEVICES", "0")
    with pytest.raises(DelegateError, match="hailortcli fw-control identify"):
        load(hailo_model / "model.hef", RuntimeOptions())


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ({"input_type": "FLOAT32"}, "edge feeds HEFs uint8 NHWC images"),
        ({"input_type": "UINT16"}, "edge feeds HEFs uint8 NHWC images"),
        ({"order": "NHWC"}, "HailoRT's NMS post-process"),
    ],
)
def test_a_hef_edge_cannot_feed_or_decode_is_refused(
    hailo: ModuleType, tmp_path: Path, kind: dict[str, str], message: str
) -> None:
    """A HEF whose input is not uint8, or that has no NMS output, is a ModelError saying how
    to compile it; the device is released again."""
    path = hailo_detector(tmp_path / "m", **kind) / "model.hef"
    with pytest.raises(ModelError, match=re.escape(message)):
        load(path, RuntimeOptions())
    assert hailo.VDevice.open_count == 0


def test_a_hef_hailort_cannot_read_is_a_model_error(hailo: ModuleType, tmp_path: Path) -> None:
    """A HEF whose header is sound but whose body HailoRT cannot parse (cut short) is a
    ModelError saying to copy it again, not a device problem."""
    path = hailo_detector(tmp_path / "m") / "model.hef"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ModelError, match=r"cannot read .*copy the HEF again") as err:
        load(path, RuntimeOptions())
    assert not isinstance(err.value, DelegateError)
    assert hailo.VDevice.open_count == 0


def test_tflite_delegate_settings_do_not_apply(hailo: ModuleType, hailo_model: Path) -> None:
    """A delegate chain or the Edge TPU delegate for a HEF is an exit-78 error."""
    with pytest.raises(ModelError, match="runs on the Hailo device"):
        load_model(hailo_model / "model.hef", RuntimeOptions(chain=("xnnpack",)))
    with pytest.raises(DelegateError, match="do not apply"):
        load(hailo_model / "model.hef", RuntimeOptions(delegate="edgetpu"))


def test_without_hailort_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, hailo_model: Path
) -> None:
    """Without hailo_platform, loading a HEF raises RuntimeUnavailableError naming the apt
    package and the venv flag; the CLI exits 78 with that line and no traceback."""
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    with pytest.raises(RuntimeUnavailableError) as err:
        Engine.load(hailo_model)
    assert "sudo apt install hailo-all" in str(err.value)
    assert "--system-site-packages" in str(err.value)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = edge(
        "infer", str(hailo_model), str(SHAPES / "scene_0.jpg"), env={**env, "PYTHONPATH": str(REPO)}
    )
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert "sudo apt install hailo-all" in proc.stderr and "Traceback" not in proc.stderr


def test_probe_reports_without_raising(
    hailo: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """probe() lists HailoRT's version and the chips found; a version mismatch or a missing
    HailoRT is a problem string, never an exception."""
    assert backend.probe() == {
        "name": "hailo",
        "found": True,
        "version": "4.23.0",
        "devices": ["HAILO8L"],
        "problem": "",
    }
    monkeypatch.setenv("HAILO_FAKE_DRIVER", "4.22.0")
    report = backend.probe()
    assert report["found"] is False and "HAILO_INVALID_DRIVER_VERSION" in str(report["problem"])
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    report = backend.probe()
    assert report["found"] is False and report["version"] == ""
    assert "sudo apt install hailo-all" in str(report["problem"])


# -- on the device -----------------------------------------------------------------------------
@pytest.mark.hardware
def test_real_hef_runs_on_the_hailo_chip() -> None:
    """On a Pi with the AI HAT+/AI Kit and `hailo-all`, the HEF in $EDGE_HAILO_HEF (default
    the hailo-models package's yolov8s_h8l.hef) loads with the version and architecture
    checks passing, and a test scene gives a schema-valid result whose boxes lie in the
    frame; `edge bench` times it."""
    hef = Path(os.environ.get("EDGE_HAILO_HEF", "/usr/share/hailo-models/yolov8s_h8l.hef"))
    engine = Engine.load(hef)
    try:
        assert engine.interpreter.info.backend == "hailort"
        assert engine.interpreter.info.delegate in ("hailo8l", "hailo8", "hailo10h")
        result = engine.infer(read_image(SHAPES / "scene_0.jpg"))
        jsonschema.validate(result.to_dict(), SCHEMA)
        assert all(0.0 <= v <= 1.0 for d in result.detections for v in d.box)
    finally:
        engine.close()
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "bench", str(hef), "--runs", "20"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0 and "runtime hailort" in proc.stdout, proc.stderr
