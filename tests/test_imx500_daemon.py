"""The AI Camera in the real daemon process against a real mosquitto: picamera2's test double
(on the child's PYTHONPATH) with an AI Camera whose sensor runs the bundled shapes-detector and
gives a tensor on every third frame only. Results reach the subscriber with every seq once,
the frames without a tensor are counted, the stats say inference runs on the sensor, tracking
and snapshots work as for host inference; a bad network is exit 78 from run and check-config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, Subscriber
from faultkit import last_json, results, tally, wait_results
from rpk_files import SHAPES_LABELS, write_rpk
from test_daemon import DEVICE, REPO, Daemon

from edge.errors import EX_CONFIG

FAKES = REPO / "tests" / "fakes"


@pytest.fixture
def fake_ai_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child daemon imports picamera2's test double, set up as an AI Camera whose sensor
    has no tensor on the first 5 frames, then one on every third."""
    path = os.pathsep.join([str(FAKES), str(REPO), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("FAKE_PICAMERA2_MODEL", "imx500")
    monkeypatch.setenv("FAKE_IMX500_MODEL", str(REPO / "models/shapes-detector/model.tflite"))
    monkeypatch.setenv("FAKE_IMX500_FIRST_TENSOR", "5")
    monkeypatch.setenv("FAKE_IMX500_TENSOR_EVERY", "3")


def config(broker: Broker, tmp: Path, network: Path) -> str:
    return (
        f'device = "{DEVICE}"\nstate_dir = "{tmp / "state"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nstats_interval = 1\n'
        "snapshot = true\nsnapshot_interval = 0.5\n"
        '[[cameras]]\nname = "ai"\nsource = "imx500"\n'
        f'network = "{network}"\nfps = 30\nwidth = 320\nheight = 240\n'
    )


def test_sensor_results_are_published_without_gaps_and_the_empty_frames_counted(
    broker: Broker, tmp_path: Path, fake_ai_camera: None, daemons: list[Daemon]
) -> None:
    """`edge run` on an AI Camera: the subscriber gets results with every seq exactly once and
    the shapes' labels, a snapshot and track events; the stats count the frames without a
    tensor, name imx500 as runtime and delegate, say the model runs on the sensor and report
    the sensor's own network time as the invoke time; SIGTERM ends it with 0."""
    network = write_rpk(tmp_path / "shapes.rpk")
    sub = Subscriber(broker, f"edge/{DEVICE}/#")
    d = Daemon(tmp_path, config(broker, tmp_path, network))
    daemons.append(d)
    assert wait_results(sub, 30, timeout=60), d.log()
    assert sub.wait_until(lambda ms: any(m.topic.endswith("/snapshot") for m in ms), 20)
    assert sub.wait_until(lambda ms: any(m.topic.endswith("/events") for m in ms), 20)
    assert sub.wait_until(lambda ms: sum(m.topic.endswith("/stats") for m in ms) >= 2, 20)
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0, d.log()
    counts = tally(sub)
    assert len(counts) == 1, counts
    (t,) = counts.values()
    assert t.received >= 30 and t.gaps == 0 and t.duplicates == 0, t
    labelled = [r for r in results(sub) if r["detections"]]
    assert len(labelled) >= len(results(sub)) * 0.9
    assert {det["label"] for r in labelled for det in r["detections"]} <= set(SHAPES_LABELS)
    stats = last_json(sub, "/stats")
    assert stats is not None
    model: dict[str, Any] = stats["models"]["shapes"]
    assert (model["runtime"], model["delegate"], model["runs_on"]) == ("imx500", "imx500", "sensor")
    cam = stats["cameras"]["ai"]
    assert cam["no_tensor"] >= 5 and cam["inferred"] > 0
    # Two of every three frames after the first five carry no tensor.
    assert cam["no_tensor"] >= 1.5 * cam["inferred"]
    assert cam["latency_ms"]["invoke"]["p50"] == pytest.approx(8.2)
    assert cam["latency_ms"]["preprocess"]["p50"] == 0


def test_a_missing_network_is_exit_78_from_run_and_check_config(
    broker: Broker, tmp_path: Path
) -> None:
    """A network path that does not exist stops `edge run` and `edge check-config` alike with
    exit 78 and the message saying where the stock networks come from."""
    text = config(broker, tmp_path, tmp_path / "absent.rpk")
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    for argv in (["check-config", str(cfg)], ["run", "--config", str(cfg)]):
        proc = subprocess.run(
            [sys.executable, "-m", "edge", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == EX_CONFIG, (argv, proc.stderr)
        assert "IMX500 network not found" in proc.stderr and "imx500-all" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_check_config_accepts_a_good_ai_camera_table(broker: Broker, tmp_path: Path) -> None:
    """check-config reads the network's intrinsics without a camera and accepts the table."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(config(broker, tmp_path, write_rpk(tmp_path / "shapes.rpk")))
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
