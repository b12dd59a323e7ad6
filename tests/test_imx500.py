"""The AI Camera (IMX500): network files read without the camera, the sensor model the engine
declares from them, config refusals, and the imx500 source against picamera2's test double,
whose sensor runs the bundled shapes-detector on the frames the fake camera renders (and, on a
Pi with an AI Camera, the real thing)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from fakes.activate import fake_picamera2
from rpk_files import DETECTOR_INTRINSICS, SHAPES_LABELS, write_rpk

from edge.config import validate
from edge.engine import Engine, Invocation, Overrides
from edge.errors import ConfigError, ModelError, SourceError
from edge.frame import Frame
from edge.preprocess import Transform
from edge.result import Detection, Result
from edge.rpk import read_network
from edge.sources import SourceSpec, open_source, parse_source
from edge.sources.imx500 import IMX500Source, probe

ROOT = Path(__file__).resolve().parent.parent
DETECTOR = ROOT / "models" / "shapes-detector"
# The fake sensor scales with OpenCV, edge's preprocessing with its own bilinear resize: the
# same model on slightly different pixels.
MATCH_IOU = 0.85
STOCK = "/usr/share/imx500-models/imx500_network_ssd_mobilenetv2_fpnlite_320x320_pp.rpk"


@pytest.fixture
def camera(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """picamera2's test double with an AI Camera attached whose sensor runs the shapes
    detector; the picamera2 module is yielded, its IMX500 is ``imx500_class(module)``."""
    with fake_picamera2() as module:
        monkeypatch.setattr(module.Picamera2, "fake_model", "imx500")
        monkeypatch.setattr(module.Picamera2, "fake_sensors", {})
        imx = imx500_class()
        monkeypatch.setattr(imx, "fake_model", str(DETECTOR / "model.tflite"))
        monkeypatch.setattr(imx, "fake_first_tensor", 0)
        monkeypatch.setattr(imx, "fake_tensor_every", 1)
        yield module


def imx500_class() -> Any:
    from picamera2.devices.imx500 import IMX500

    return IMX500


def opened(network: Path, **fields: Any) -> IMX500Source:
    source = open_source(SourceSpec(kind="imx500", target=str(network), fps=60.0, **fields))
    assert isinstance(source, IMX500Source)
    source.open()
    return source


def decode(engine: Engine, frame: Frame) -> Result:
    """What the pipeline's result thread makes of a frame that carries the sensor's outputs."""
    assert frame.sensor is not None
    raw = Invocation.from_sensor(frame.sensor)
    return engine.decode(raw, frame.sensor.transform, frame.image.shape, 0.0, "cam", frame.index)


def iou(a: Detection, b: Detection) -> float:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    w = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    h = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = w * h
    return inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)


def assert_same(got: tuple[Detection, ...], want: tuple[Detection, ...]) -> None:
    """Same labels, and each box overlapping its counterpart (IoU >= MATCH_IOU)."""
    assert sorted(d.label for d in got) == sorted(d.label for d in want), (got, want)
    for w in want:
        best = max(iou(g, w) for g in got if g.label == w.label)
        assert best >= MATCH_IOU, (w, got)


# -- network files and the sensor model --------------------------------------------------------


def test_network_file_gives_intrinsics_and_input_size(tmp_path: Path) -> None:
    """The intrinsics and input size come out of the archive after the firmware blocks (one of
    them with the device-lock flag, which shifts the archive by 32 bytes)."""
    net = read_network(write_rpk(tmp_path / "n.rpk", input_size=(320, 240), blocks=3))
    assert net.intrinsics == DETECTOR_INTRINSICS
    assert net.input_size == (320, 240)
    bare = read_network(write_rpk(tmp_path / "bare.rpk", intrinsics=None))
    assert bare.intrinsics == {} and bare.input_size == (192, 192)


def test_files_that_are_not_networks_are_model_errors(tmp_path: Path) -> None:
    """A .tflite renamed .rpk and a network cut short are refused, saying what to do."""
    fake = tmp_path / "model.rpk"
    fake.write_bytes((DETECTOR / "model.tflite").read_bytes())
    with pytest.raises(ModelError, match=r"not an IMX500 network.*imx500-package"):
        Engine.load(str(fake))
    whole = write_rpk(tmp_path / "whole.rpk").read_bytes()
    (tmp_path / "cut.rpk").write_bytes(whole[:300])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        Engine.load(str(tmp_path / "cut.rpk"))
    with pytest.raises(ModelError, match=r"IMX500 network not found.*imx500-all"):
        Engine.load(str(tmp_path / "absent.rpk"))


def test_engine_declares_the_sensor_model_from_the_intrinsics(tmp_path: Path) -> None:
    """A detection network loads as the SSD layout with the intrinsics' labels, runs on the
    sensor (backend and delegate imx500) and refuses a host invoke."""
    engine = Engine.load(str(write_rpk(tmp_path / "n.rpk")))
    assert engine.on_sensor and engine.task == "detection"
    assert engine.postprocessor.layout == "ssd"
    assert engine.postprocessor.known_labels() == frozenset(SHAPES_LABELS)
    assert (engine.interpreter.info.backend, engine.interpreter.info.delegate) == ("imx500",) * 2
    with pytest.raises(ModelError, match="runs on the AI Camera's sensor"):
        engine.interpreter.invoke()
    with pytest.raises(ModelError, match=r"'dog'.*does not have"):
        Engine.load(str(tmp_path / "n.rpk"), overrides=Overrides(allow=frozenset({"dog"})))


def test_dash_labels_are_left_out_before_class_ids_index_them(tmp_path: Path) -> None:
    """With ignore_undefined, '-' entries are dropped first, as picamera2's examples do."""
    intrinsics = {"classes": {"labels": ["-", "person", "-", "car"], "ignore_undefined": True}}
    engine = Engine.load(str(write_rpk(tmp_path / "n.rpk", intrinsics=intrinsics)))
    assert (engine.postprocessor.label(0), engine.postprocessor.label(1)) == ("person", "car")


@pytest.mark.parametrize(
    ("intrinsics", "message"),
    [
        ({"task": "pose estimation"}, "pose estimation network"),
        ({"task": "segmentation"}, "segmentation network"),
        ({"task": "object detection", "cpu": {"post_processing": "nanodet"}}, "'nanodet'"),
        ({"task": "classification"}, "without labels"),
    ],
)
def test_networks_edge_cannot_decode_are_refused(
    tmp_path: Path, intrinsics: dict[str, Any], message: str
) -> None:
    """Pose, CPU-post-processed and unlabelled classification networks are ModelErrors."""
    with pytest.raises(ModelError, match=message):
        Engine.load(str(write_rpk(tmp_path / "n.rpk", intrinsics=intrinsics)))


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ({"source": "imx500"}, "network: source imx500 needs the network"),
        ({"source": "imx500", "network": "net.tflite"}, "is not an .rpk file"),
        ({"source": "synthetic", "network": "n.rpk"}, "only an AI Camera"),
        ({"source": "imx500", "network": "n.rpk", "model": "m"}, "model: an AI Camera"),
        ({"source": "imx500", "network": "n.rpk", "rotate": 90}, "rotate/flip: not available"),
    ],
)
def test_config_refuses_what_an_ai_camera_cannot_run(camera: dict[str, Any], message: str) -> None:
    """Each inconsistent AI Camera table is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=message):
        validate({"cameras": [camera]})


def test_the_network_is_the_cameras_model() -> None:
    """An AI Camera's model reference is its network; the command line cannot name one."""
    cfg = validate({"cameras": [{"source": "imx500", "network": "/x/n.rpk"}]})
    assert cfg.camera_model(cfg.cameras[0]) == "/x/n.rpk"
    with pytest.raises(ConfigError, match="configure it in a"):
        parse_source("imx500")


# -- the source against the test double ---------------------------------------------------------


def test_sensor_outputs_decode_like_the_tflite_model_on_the_same_frames(
    camera: ModuleType, tmp_path: Path
) -> None:
    """On a moving scene, every frame's sensor outputs decode, through edge's postprocessing,
    to the detections the TFLite path finds on that very frame (same labels, IoU >= 0.85); the
    KPI metadata becomes the invoke time."""
    engine = Engine.load(str(write_rpk(tmp_path / "n.rpk")))
    # The sensor sees the whole image scaled to the input: stretch, not the manifest's letterbox.
    host = Engine.load(DETECTOR, overrides=Overrides(resize="stretch"))
    source = opened(tmp_path / "n.rpk", width=640, height=480)
    try:
        frames = [source.read() for _ in range(8)]
    finally:
        source.close()
    found = 0
    for frame in frames:
        assert frame is not None and frame.sensor is not None
        result = decode(engine, frame)
        assert result.timings.invoke_ms == pytest.approx(8.2)
        assert_same(result.detections, host.infer(frame.image).detections)
        found += len(result.detections)
    assert found >= 8  # the scene's shapes are found, not merely nothing on both sides


def test_xy_order_and_pixel_boxes_are_undone(camera: ModuleType, tmp_path: Path) -> None:
    """A network giving x-first boxes in input pixels decodes to the same detections as one
    giving normalized y-first boxes."""
    plain = write_rpk(tmp_path / "plain.rpk")
    odd = write_rpk(
        tmp_path / "odd.rpk",
        intrinsics={**DETECTOR_INTRINSICS, "cpu": {"bbox_order": "xy", "bbox_normalization": True}},
        input_size=(192, 192),
    )
    detections = []
    for network in (plain, odd):
        engine = Engine.load(str(network))
        source = opened(network)
        try:
            frame = source.read()
        finally:
            source.close()
        assert frame is not None
        detections.append(decode(engine, frame).detections)
    plain_dets, odd_dets = detections
    assert plain_dets and [d.label for d in plain_dets] == [d.label for d in odd_dets]
    assert np.allclose([d.box for d in plain_dets], [d.box for d in odd_dets], atol=1e-5)


def test_a_classification_network_decodes_its_scores(
    camera: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier's score vector from the frame's metadata decodes to its top label, with
    the softmax its intrinsics ask for."""
    from picamera2.devices.imx500.imx500 import fake_tensor_metadata

    intrinsics = {
        "task": "classification",
        "cpu": {"softmax": True},
        "classes": {"labels": ["cat", "dog", "fox"]},
    }
    network = write_rpk(tmp_path / "cls.rpk", intrinsics=intrinsics, input_size=(224, 224))
    engine = Engine.load(str(network))
    assert engine.task == "classification" and engine.postprocess_config.logits is True
    monkeypatch.setattr(imx500_class(), "fake_first_tensor", 10**9)  # the sensor runs no model
    source = opened(network)
    try:
        frame = source.read()
        assert frame is not None and frame.sensor is None
        metadata = {
            **fake_tensor_metadata([np.array([0.5, 3.0, 1.0], np.float32)]),
            "ScalerCrop": (0, 0, 4056, 3040),
        }
        sensor = source._sensor_output(metadata)
    finally:
        source.close()
    assert sensor is not None and sensor.values[0].shape == (1, 3)
    scores = np.exp([0.5, 3.0, 1.0]) / np.exp([0.5, 3.0, 1.0]).sum()
    result = decode(engine, replace(frame, sensor=sensor))
    assert [c.label for c in result.classes] == ["dog"]  # the others are under threshold 0.4
    assert result.classes[0].score == pytest.approx(scores[1], rel=1e-5)


def test_a_model_directory_overrides_the_networks_labels_and_threshold(
    camera: ModuleType, tmp_path: Path
) -> None:
    """The .rpk in a directory with a manifest and labels.txt takes their labels and
    threshold, as a .tflite model directory does."""
    model = tmp_path / "shapes-ai"
    model.mkdir()
    write_rpk(model / "net.rpk")
    (model / "labels.txt").write_text("ring\nbox\nwedge\n")
    (model / "manifest.json").write_text(
        json.dumps({"model": "net.rpk", "postprocess": {"threshold": 0.93}})
    )
    engine = Engine.load(str(model))
    assert engine.postprocess_config.threshold == 0.93
    plain = Engine.load(str(write_rpk(tmp_path / "plain.rpk")))
    source = opened(model / "net.rpk")
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame is not None
    strict, loose = decode(engine, frame).detections, decode(plain, frame).detections
    renamed = dict(zip(SHAPES_LABELS, ["ring", "box", "wedge"], strict=True))
    assert len(strict) < len(loose)  # the scene has shapes scored between 0.4 and 0.93
    assert [(d.label, d.box) for d in strict] == [
        (renamed[d.label], d.box) for d in loose if d.score >= 0.93
    ]


def test_frames_without_a_tensor_carry_no_outputs(
    camera: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the firmware loads, and then off the network's rhythm, frames carry nothing."""
    monkeypatch.setattr(imx500_class(), "fake_first_tensor", 3)
    monkeypatch.setattr(imx500_class(), "fake_tensor_every", 2)
    source = opened(write_rpk(tmp_path / "n.rpk"))
    try:
        frames = [source.read() for _ in range(9)]
    finally:
        source.close()
    carried = [f is not None and f.sensor is not None for f in frames]
    assert carried == [False, False, False, True, False, True, False, True, False]


def test_without_kpi_metadata_the_invoke_time_is_zero(
    camera: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame without the sensor's KPI figures reports no network time, and decodes with 0."""
    monkeypatch.setattr(imx500_class(), "fake_kpi_us", None)
    network = write_rpk(tmp_path / "n.rpk")
    source = opened(network)
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame is not None and frame.sensor is not None
    assert (frame.sensor.dnn_ms, frame.sensor.dsp_ms) == (None, None)
    assert decode(Engine.load(str(network)), frame).timings.invoke_ms == 0.0


def test_a_zoomed_crop_maps_sensor_boxes_onto_the_frame(camera: ModuleType, tmp_path: Path) -> None:
    """With a 2x centre ScalerCrop the middle half of the sensor fills the frame: the
    transform from convert_inference_coords is x' = 2x - 0.5 (and the same for y)."""
    source = opened(write_rpk(tmp_path / "n.rpk"))
    try:
        full = source._frame_transform({"ScalerCrop": (0, 0, 4056, 3040)})
        zoom = source._frame_transform({"ScalerCrop": (1014, 760, 2028, 1520)})
    finally:
        source.close()
    assert full == Transform()
    assert (zoom.sx, zoom.sy, zoom.ox, zoom.oy) == pytest.approx((2.0, 2.0, -0.5, -0.5))
    box = zoom.boxes_to_source(np.array([[0.3, 0.4, 0.6, 0.7]], np.float32))
    assert box[0] == pytest.approx([0.1, 0.3, 0.7, 0.9])


def test_no_ai_camera_is_a_source_error_with_what_to_check(
    camera: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Camera Module 3 where the AI Camera should be: picamera2's RuntimeError, reworded."""
    monkeypatch.setattr(camera.Picamera2, "fake_model", "imx708")
    with pytest.raises(SourceError, match=r"no AI Camera found.*rpicam-hello --list-cameras"):
        opened(write_rpk(tmp_path / "n.rpk"))


def test_without_picamera2_opening_says_what_to_install(tmp_path: Path) -> None:
    """Where picamera2 cannot be imported the source says what to install."""
    if "picamera2" in sys.modules or os.environ.get("EDGE_HARDWARE") == "1":
        pytest.skip("picamera2 is importable here")
    with pytest.raises(SourceError, match="sudo apt install imx500-all python3-picamera2"):
        opened(write_rpk(tmp_path / "n.rpk"))


def test_probe_reports_without_raising(camera: ModuleType) -> None:
    """probe() names the AI Camera libcamera lists and, without installed networks here, says
    what to install; it never raises."""
    info = probe()
    assert info["name"] == "imx500"
    assert info["devices"] == ["camera 0: /base/axi/pcie@120000/rp1/i2c@88000/imx500@1a"]
    if not info["networks"]:
        assert info["found"] is False and "sudo apt install imx500-all" in str(info["problem"])


def test_probe_without_picamera2_is_not_found() -> None:
    """Without picamera2 the probe says not found, and why."""
    if "picamera2" in sys.modules or os.environ.get("EDGE_HARDWARE") == "1":
        pytest.skip("picamera2 is importable here")
    info = probe()
    assert info["found"] is False and "imx500-all" in str(info["problem"])


@pytest.mark.hardware
def test_real_ai_camera_runs_the_stock_detector() -> None:
    """On a Pi with an AI Camera and imx500-all: the stock SSD network loads onto the sensor,
    tensors arrive within 60 s (the first upload is slow) and decode to results."""
    engine = Engine.load(STOCK)
    source = open_source(SourceSpec(kind="imx500", target=STOCK))
    source.open()
    try:
        for _ in range(1800):
            frame = source.read()
            if frame is not None and frame.sensor is not None:
                break
        else:
            pytest.fail("no frame carried the network's outputs")
    finally:
        source.close()
    result = decode(engine, frame)
    assert result.timings.invoke_ms > 0
    assert all(0 <= v <= 1 for d in result.detections for v in d.box)
