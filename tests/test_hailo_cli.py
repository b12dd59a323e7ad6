"""The edge commands and the daemon with a Hailo model (.hef) on the fake hailo_platform:
`edge bench`, `infer` and `batch` give the TFLite model's report shape and labels, `edge run`
publishes the in-process detections for every frame on a real mosquitto, and `check-config` and
`run` refuse a HEF for another chip with exit 78."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import jsonschema
import numpy as np
from broker import Broker, Subscriber
from hailo_files import REPO, edge, fake_env, hailo_detector

from edge.engine import Engine
from edge.errors import EX_CONFIG

SHAPES = REPO / "tests" / "data" / "shapes"
TRUTH = json.loads((SHAPES / "truth.json").read_text())
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())
SCENES = sorted(n for n in TRUTH if "objects" in TRUTH[n])


def test_bench_prints_the_report_for_the_hef(hailo_model: Path) -> None:
    """`edge bench` on the HEF prints the usual report naming HailoRT and the chip, and the
    JSON report says the runs were made."""
    proc = edge("bench", str(hailo_model), "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "model shapes-detector-hailo   runtime hailort 4.23.0   delegate hailo8l"
    assert re.fullmatch(r" +1( +\d+\.\d+){7} +5 +-?\d+\.\dMB", lines[2]), lines
    report = json.loads(edge("bench", str(hailo_model), "--runs", "3", "--json").stdout)
    assert report[0]["backend"] == "hailort" and report[0]["runs"] == 3


def test_infer_prints_the_tflite_labels(hailo_model: Path) -> None:
    """`edge infer` on the HEF prints one schema-valid result per scene with the labels the
    TFLite model finds."""
    images = [str(SHAPES / n) for n in SCENES]
    hef, tflite = (
        edge("infer", str(hailo_model), *images),
        edge("infer", "shapes-detector", *images),
    )
    assert hef.returncode == tflite.returncode == 0, hef.stderr
    for a, b in zip(hef.stdout.splitlines(), tflite.stdout.splitlines(), strict=True):
        got, want = json.loads(a), json.loads(b)
        jsonschema.validate(got, SCHEMA)
        assert sorted(d["label"] for d in got["detections"]) == sorted(
            d["label"] for d in want["detections"]
        )


def test_batch_writes_the_tflite_labels(hailo_model: Path, tmp_path: Path) -> None:
    """`edge batch` with the HEF (two workers sharing the chip) writes a record per scene with
    the labels the TFLite model's batch records have."""
    out = {}
    for name, ref in (("hef", str(hailo_model)), ("tflite", "shapes-detector")):
        path = tmp_path / f"{name}.jsonl"
        images = [str(SHAPES / n) for n in SCENES]
        proc = edge("batch", *images, "--model", ref, "--workers", "2", "--output", str(path))
        assert proc.returncode == 0, proc.stderr
        out[name] = {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert out["hef"].keys() == out["tflite"].keys() and len(out["hef"]) == len(SCENES)
    for key, rec in out["hef"].items():
        labels = sorted(d["label"] for d in rec["detections"])
        assert labels == sorted(d["label"] for d in out["tflite"][key]["detections"]), key


def test_check_config_and_run_refuse_a_hef_for_another_chip(broker: Broker, tmp_path: Path) -> None:
    """`edge check-config` and `edge run` both exit 78 with the architecture message for a
    Hailo-8 HEF on a Hailo-8L, before anything is published."""
    model = hailo_detector(tmp_path / "m", "HAILO8P")
    config = tmp_path / "config.toml"
    config.write_text(
        f'device = "hailodev"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[model]\npath = "{model}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[[cameras]]\nname = "cam"\nsource = "{REPO / "samples" / "shapes.mp4"}"\n'
    )
    sub = Subscriber(broker, "edge/hailodev/#")
    env = fake_env(HAILO_FAKE_ARCH="HAILO8L")
    for args in (("check-config", str(config)), ("run", "--config", str(config))):
        proc = edge(*args, env=env)
        assert proc.returncode == EX_CONFIG, (args, proc.stderr)
        assert "device here is a HAILO8L" in proc.stderr and "Traceback" not in proc.stderr
    assert not sub.payloads("/result")
    sub.close()


def test_daemon_runs_the_hef(
    hailo: ModuleType, broker: Broker, hailo_model: Path, tmp_path: Path
) -> None:
    """`edge run` with the HEF publishes a result for every frame of the sample clip, in order,
    each with the detections edge's Engine gives for that frame in-process."""
    clip = REPO / "samples" / "shapes.mp4"
    config = tmp_path / "config.toml"
    config.write_text(
        f'device = "hailodev"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[model]\npath = "{hailo_model}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[[cameras]]\nname = "cam"\nsource = "{clip}"\nrealtime = false\n'
    )
    sub = Subscriber(broker, "edge/hailodev/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=fake_env(),
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
    assert {r["model"]["name"] for r in got} == {"shapes-detector-hailo"}
    engine = Engine.load(hailo_model)
    cap = cv2.VideoCapture(str(clip))
    try:
        for r in got:
            ok, frame = cap.read()
            assert ok
            want = engine.infer(frame).to_dict()["detections"]
            assert [d["label"] for d in r["detections"]] == [d["label"] for d in want]
            for d, w in zip(r["detections"], want, strict=True):
                np.testing.assert_allclose(d["box"], w["box"], atol=2e-3)
    finally:
        cap.release()
        engine.close()
