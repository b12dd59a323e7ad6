"""The bundled models, checked the way edge uses them: loaded from their model directories and
run through Engine on synthetic frames drawn here with seeds the training scripts never used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.engine import Engine, Overrides
from edge.models import load_spec
from edge.quantize.metrics import Boxes, match, mean_average_precision
from edge.runtime import RuntimeOptions
from edge.scene import (
    CLASSIFIER_LABELS,
    COLOURS,
    SHAPES,
    MovingScene,
    Shape,
    background,
    draw,
    random_shapes,
)

MODELS = Path(__file__).resolve().parent.parent / "models"
BUNDLED = ("shapes-classifier", "shapes-detector", "mobilenet-v2-bench")
SEED = 777_000  # far from the scripts' seeds (0, 1000, 2000)


def truth_of(shapes: list[Shape], w: int, h: int) -> Boxes:
    boxes = np.array([s.box() for s in shapes], np.float64).reshape(-1, 4) / [w, h, w, h]
    return Boxes.truth(np.clip(boxes, 0, 1).tolist(), [SHAPES.index(s.kind) for s in shapes])


@pytest.mark.parametrize("name", BUNDLED)
def test_model_directory_is_complete(name: str) -> None:
    """Each bundled directory has a small model, a valid manifest saying how it was made and
    what it scored, and labels that name every class (except the random-weight bench model)."""
    d = MODELS / name
    spec = load_spec(d)
    manifest = json.loads((d / "manifest.json").read_text())
    assert spec.name == name and spec.version
    assert manifest["made_by"].startswith("scripts/make_")
    assert manifest["metrics"]
    assert (d / "model.tflite").stat().st_size < 5 * 1024 * 1024
    engine = Engine.load(d, RuntimeOptions(threads=1))
    out = engine.interpreter.outputs[0]
    assert engine.interpreter.inputs[0].dtype == np.uint8
    if name == "shapes-classifier":
        assert spec.task == "classification"
        assert [spec.labels[i] for i in range(12)] == list(CLASSIFIER_LABELS)
    elif name == "shapes-detector":
        assert spec.task == "detection" and engine.task == "detection"
        assert [spec.labels[i] for i in range(3)] == list(SHAPES)
        assert out.shape[:2] == (1, 4 + len(SHAPES))
    else:
        assert "RANDOM WEIGHTS" in spec.description
        assert not spec.labels
        assert engine.interpreter.inputs[0].shape == (1, 224, 224, 3)
        assert out.shape == (1, 1000)


def test_classifier_top1_on_fresh_frames() -> None:
    """The int8 classifier names colour and shape of 300 fresh single-shape frames (the frame
    shapes it was made for: square, 4:3, 3:4, 16:9) with top-1 of at least 95 %."""
    engine = Engine.load(
        MODELS / "shapes-classifier", RuntimeOptions(threads=1), Overrides(threshold=0.0)
    )
    rng = np.random.default_rng(SEED)
    correct = 0
    n = 300
    for _ in range(n):
        short = int(rng.integers(80, 400))
        aspect = float(rng.choice([1.0, 4 / 3, 3 / 4, 16 / 9]))
        w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        size = float(rng.uniform(0.35, 0.75)) * min(w, h)
        shape = Shape(
            kind=str(rng.choice(SHAPES)),
            colour=str(rng.choice(list(COLOURS))),
            cx=float(rng.uniform(size * 0.6, w - size * 0.6)),
            cy=float(rng.uniform(size * 0.6, h - size * 0.6)),
            size=size,
            angle=float(rng.uniform(0, 360)),
        )
        image = background(rng, w, h)
        draw(image, shape)
        top = engine.infer(image).classes[0]
        correct += top.label == f"{shape.colour} {shape.kind}"
    assert correct / n >= 0.95


def test_detector_map_on_fresh_frames() -> None:
    """mAP@0.5 of the int8 detector on 150 fresh camera-sized frames with 1–5 shapes of the
    sizes the demo scene uses is at least 0.8 (boxes in frame coordinates)."""
    engine = Engine.load(
        MODELS / "shapes-detector",
        RuntimeOptions(threads=1),
        Overrides(threshold=0.05, max_detections=100),
    )
    rng = np.random.default_rng(SEED + 1)
    preds, truths = [], []
    for i in range(150):
        w, h = [(640, 480), (480, 640), (320, 240), (416, 416), (1280, 720)][i % 5]
        short = min(w, h)
        shapes = random_shapes(rng, w, h, int(rng.integers(1, 6)), 0.12 * short, 0.3 * short)
        image = background(rng, w, h)
        for s in shapes:
            draw(image, s)
        preds.append(Boxes.of(engine.infer(image).detections))
        truths.append(truth_of(shapes, w, h))
    m, _ = mean_average_precision(preds, truths, len(SHAPES))
    assert m >= 0.8


def test_detector_finds_the_demo_scene() -> None:
    """On moving-scene frames (what the synthetic camera and sample clip show) the detector at
    its shipped threshold finds at least 90 % of the shapes with the right class."""
    engine = Engine.load(MODELS / "shapes-detector", RuntimeOptions(threads=1))
    found = total = 0
    for seed in range(6):
        scene = MovingScene(640, 480, count=3, seed=SEED + seed)
        for t in (0.0, 1.3, 2.7, 4.1):
            image, shapes = scene.frame(t)
            truth = truth_of(shapes, 640, 480)
            pred = Boxes.of(engine.infer(image).detections)
            found += len(match(pred, truth))
            total += len(truth)
    assert found / total >= 0.9


def test_bench_model_runs() -> None:
    """The random-weight MobileNetV2 runs end to end and reports its top 5 (meaningless)."""
    engine = Engine.load(MODELS / "mobilenet-v2-bench", RuntimeOptions(threads=1))
    image = MovingScene(640, 480, seed=SEED).frame(0.0)[0]
    result = engine.infer(image)
    assert result.task == "classification"
    assert len(result.classes) == 5


def test_the_detector_tables_quote_its_manifest() -> None:
    """The model tables of README.md and models/README.md give the detector's mAP@0.5 (apart,
    touching) as its manifest records them (``scripts/make_shapes_detector.py --measure``
    re-measures them when edge's preprocessing or decoding changes)."""
    metrics = json.loads((MODELS / "shapes-detector" / "manifest.json").read_text())["metrics"]
    apart, touching = f"{metrics['map50']:.3f}", f"{metrics['map50_touching']:.3f}"
    for readme in (MODELS.parent / "README.md", MODELS / "README.md"):
        (row,) = [
            line
            for line in readme.read_text().splitlines()
            if line.startswith("| `shapes-detector` |")
        ]
        assert f"mAP@0.5 {apart} " in row and f", {touching} " in row, (readme.name, row)
