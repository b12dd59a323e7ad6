"""Drift measures against hand-computed values, the manifest baseline, the rolling window and the
monitor's degraded state; ``edge baseline`` on real images with the bundled detector."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.config import DriftSettings
from edge.drift import (
    NOTHING,
    Baseline,
    baseline_of,
    deciles,
    js_divergence,
    linf_distance,
    observe,
)
from edge.drift_monitor import DriftMonitor, DriftWindow
from edge.errors import ModelError
from edge.frame import Frame
from edge.models import bundled_models, load_spec
from edge.output import ResultEvent
from edge.result import ClassScore, Detection, Result, Timings

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "tests" / "data" / "shapes"
T = Timings(0.0, 0.0, 0.0)
EDGE = [sys.executable, "-m", "edge"]


def detection(*items: tuple[str, float]) -> Result:
    dets = tuple(Detection(label, i, score, (0, 0, 1, 1)) for i, (label, score) in enumerate(items))
    return Result("m", "1", "detection", "", 10, 10, T, detections=dets)


def test_js_divergence_of_hand_computed_distributions() -> None:
    """JS in bits: 0 for equal mixes, 1 for disjoint ones, and the worked value for
    P = (½, ½), Q = (1, 0): M = (¾, ¼), ½·[½ log2(⅔) + ½ log2 2] + ½·log2(4/3) = 0.311278."""
    assert js_divergence({"a": 1, "b": 3}, {"a": 0.25, "b": 0.75}) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(
        1 / 0.75
    )
    assert expected == pytest.approx(0.311278, abs=1e-6)
    assert js_divergence({"a": 2, "b": 2}, {"a": 5}) == pytest.approx(0.311278, abs=1e-6)
    assert js_divergence({"a": 5}, {"a": 2, "b": 2}) == pytest.approx(0.311278, abs=1e-6)
    assert math.isnan(js_divergence({}, {"a": 1}))


def test_linf_distance_is_the_largest_decile_difference() -> None:
    """L∞ of (0.1, 0.5, 0.9) and (0.2, 0.4, 0.6) is 0.3; sequences of other lengths are refused."""
    assert linf_distance((0.1, 0.5, 0.9), (0.2, 0.4, 0.6)) == pytest.approx(0.3)
    assert linf_distance((0.5,), (0.5,)) == 0.0
    with pytest.raises(ValueError, match="cannot compare 2 quantiles with 1"):
        linf_distance((0.1, 0.2), (0.1,))


def test_deciles_are_nearest_rank() -> None:
    """Deciles of 0.01…1.00 are 0.1…0.9; of (0.2, 0.4), p10-p50 are 0.2 and p60-p90 are 0.4."""
    assert deciles(i / 100 for i in range(100, 0, -1)) == pytest.approx(
        tuple(q / 10 for q in range(1, 10))
    )
    assert deciles([0.4, 0.2]) == (0.2,) * 5 + (0.4,) * 4
    assert deciles([]) == ()


def test_observe_counts_one_class_per_detection_and_nothing_for_empty_results() -> None:
    """A detector adds each detection's class and score; an empty result adds NOTHING; a
    classifier its top class."""
    assert observe(detection(("circle", 0.9), ("square", 0.5))) == (
        ("circle", "square"),
        (0.9, 0.5),
    )
    assert observe(detection()) == ((NOTHING,), ())
    top = Result("m", "1", "classification", "", 1, 1, T, classes=(ClassScore("cat", 3, 0.8),))
    assert observe(top) == (("cat",), (0.8,))


def test_baseline_round_trips_through_the_manifest_form() -> None:
    """baseline_of → to_dict → from_dict gives the same baseline; a broken one is a ModelError
    that says how to write it again."""
    b = baseline_of([detection(("circle", 0.9)), detection(("square", 0.5)), detection()], 0.4)
    assert b.results == 3
    assert b.classes == pytest.approx({"circle": 1 / 3, "square": 1 / 3, NOTHING: 1 / 3})
    again = Baseline.from_dict(json.loads(json.dumps(b.to_dict())), "m.json")
    assert again.classes == pytest.approx(b.classes)
    assert again.score_deciles == pytest.approx(b.score_deciles)
    assert again.threshold == 0.4
    with pytest.raises(ModelError, match="run `edge baseline`"):
        Baseline.from_dict({"results": 3, "classes": {}}, "m.json")
    with pytest.raises(ModelError, match="score_deciles must list 9"):
        Baseline.from_dict({"results": 3, "classes": {"a": 1}, "score_deciles": [0.5]}, "m")


def test_window_measures_only_once_full_and_forgets_old_results() -> None:
    """Against a half-circle, half-square baseline a full window of circles reads JS 0.311278
    and, once an even mix replaces them all, 0; nothing is measured before the window is full."""
    base = Baseline({"circle": 0.5, "square": 0.5}, (0.5,) * 9, 100)
    w = DriftWindow(base, size=4)
    for _ in range(3):
        w.add(("circle",), (0.5,))
    assert w.measures() == (None, None)
    w.add(("circle",), (0.9,))
    js, linf = w.measures()
    assert js == pytest.approx(0.311278, abs=1e-6)
    # Window scores 0.5, 0.5, 0.5, 0.9: nearest-rank p80 is the 4th value (0.9).
    assert linf == pytest.approx(0.4)
    for kind in ("circle", "square", "circle", "square"):
        w.add((kind,), (0.5,))
    assert w.measures() == (0.0, 0.0)
    assert len(w) == 4


def test_monitor_is_degraded_over_a_threshold_and_logs_each_change_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over class_threshold the model is degraded (one WARNING however often it is asked);
    back under, one INFO and no degraded state."""
    engine = _FakeEngine(Baseline({"circle": 0.5, "square": 0.5}, (), 10))
    mon = DriftMonitor()
    mon.configure([engine], DriftSettings(window=10, class_threshold=0.2))  # type: ignore[list-item]
    caplog.set_level(logging.INFO, logger="edge.drift_monitor")
    for _ in range(10):
        mon.on_result(_event(detection(("circle", 0.9))))
    assert (
        mon.degraded()
        == mon.degraded()
        == ["model m: results drifted from its baseline (class divergence over 0.2)"]
    )
    assert mon.stats()["m"]["class_divergence"] == pytest.approx(0.311278, abs=1e-6)
    for i in range(10):
        mon.on_result(_event(detection(("circle" if i % 2 else "square", 0.9))))
    assert mon.degraded() == []
    warnings = [r for r in caplog.records if "drifted" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert sum("back within" in r.getMessage() for r in caplog.records) == 1


class _FakeSpec:
    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline


class _FakePost:
    threshold = 0.4


class _FakeEngine:
    """Only what DriftMonitor.configure reads of an Engine: name, spec.baseline, threshold."""

    name = "m"
    postprocess_config = _FakePost()

    def __init__(self, baseline: Baseline) -> None:
        self.spec = _FakeSpec(baseline)


def _event(result: Result) -> ResultEvent:
    frame = Frame(np.zeros((10, 10, 3), np.uint8), 0, 0.0, 0.0, "cam")
    return ResultEvent("dev", "cam", 1, "boot", frame, result, 0.0)


def test_edge_baseline_writes_the_manifest_the_engine_reads(tmp_path: Path) -> None:
    """`edge baseline DIR images…` runs the real detector on the test scenes and writes a
    baseline that load_spec reads back, keeping the manifest's other keys."""
    model = tmp_path / "det"
    shutil.copytree(bundled_models()["shapes-detector"], model)
    before = json.loads((model / "manifest.json").read_text())
    images = [str(p) for p in sorted(SHAPES.glob("*.png"))]
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "baseline", str(model), *images],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    after = json.loads((model / "manifest.json").read_text())
    assert {k: v for k, v in after.items() if k != "baseline"} == before
    assert after["baseline"]["made"] == f"edge baseline on {len(images)} images"
    spec = load_spec(model)
    assert spec.baseline is not None
    assert spec.baseline.results == len(images) == printed["results"]
    # The same images through `edge infer`: the baseline's shares are its labels' shares.
    infer = subprocess.run(
        [sys.executable, "-m", "edge", "infer", str(model), *images],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    labels = [
        d["label"] for line in infer.stdout.splitlines() for d in json.loads(line)["detections"]
    ]
    assert len(set(labels)) == 3
    for kind in set(labels):
        assert spec.baseline.classes[kind] == pytest.approx(
            labels.count(kind) / len(labels), abs=1e-6
        )
    assert len(spec.baseline.score_deciles) == 9
    assert spec.baseline.threshold == 0.4


def test_edge_baseline_refuses_a_bare_model_file(tmp_path: Path) -> None:
    """A .tflite without a directory has no manifest to write into: exit 78 saying so."""
    bare = tmp_path / "model.tflite"
    shutil.copy(bundled_models()["shapes-detector"] / "model.tflite", bare)
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "baseline", str(bare), str(SHAPES / "red_circle.png")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 78
    assert "bare model file" in proc.stderr and "--dry-run" in proc.stderr


def test_edge_baseline_dry_run_at_another_threshold_writes_nothing(tmp_path: Path) -> None:
    """`--threshold 0.9 --dry-run` prints a baseline whose scores are all at least 0.9, made at
    0.9, and leaves the manifest as it was."""
    model = tmp_path / "det"
    shutil.copytree(bundled_models()["shapes-detector"], model)
    before = (model / "manifest.json").read_bytes()
    proc = subprocess.run(
        [*EDGE, "baseline", str(model), str(SHAPES), "--dry-run", "--threshold", "0.9"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 66  # the folder holds corrupt.jpg, named on stderr
    assert "corrupt.jpg" in proc.stderr
    images = [str(p) for p in sorted(SHAPES.glob("scene_*.jpg"))]
    proc = subprocess.run(
        [*EDGE, "baseline", str(model), *images, "--dry-run", "--threshold", "0.9"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    printed = json.loads(proc.stdout)
    assert printed["threshold"] == 0.9 and printed["results"] == len(images)
    assert min(printed["score_deciles"]) >= 0.9
    assert (model / "manifest.json").read_bytes() == before


def test_a_baseline_made_at_another_threshold_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model running at threshold 0.4 whose baseline was made at 0.6 gets a WARNING naming
    both thresholds when the monitor is configured."""
    engine = _FakeEngine(Baseline({"circle": 1.0}, (), 10, threshold=0.6))
    with caplog.at_level(logging.WARNING, logger="edge.drift_monitor"):
        DriftMonitor().configure([engine], DriftSettings())  # type: ignore[list-item]
    assert any(
        "baseline was made at score threshold 0.6, it runs at 0.4" in r.getMessage()
        for r in caplog.records
    )


def test_a_model_without_classes_has_no_baseline() -> None:
    """Raw outputs (an embedding extractor) carry no classes: baseline_of says so."""
    raw = Result("m", "1", "raw", "", 1, 1, T)
    assert observe(raw) == ((), ())
    with pytest.raises(ModelError, match="no classes"):
        baseline_of([raw, raw], None)
