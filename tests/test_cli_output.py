"""What the one-shot commands print: `edge infer` on a classifier, `edge listen` on early stats,
`edge demo`'s command line."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from broker import Broker

from edge.listen import _Message, format_line

REPO = Path(__file__).resolve().parent.parent
SCENE = str(REPO / "tests" / "data" / "shapes" / "scene_0.jpg")


def infer(*args: str) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "infer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_infer_shows_a_classifiers_top_classes_unless_a_threshold_is_given() -> None:
    """A scene of several shapes leaves the classifier unsure: without --threshold `edge infer`
    still prints its top 3 classes (the manifest's top_k), below the manifest's 0.3 threshold
    too; --threshold 0.4 keeps only those scoring at least 0.4."""
    (result,) = infer("shapes-classifier", SCENE)
    classes = result["classes"]
    assert isinstance(classes, list) and len(classes) == 3
    scores = [c["score"] for c in classes]
    assert scores == sorted(scores, reverse=True) and min(scores) < 0.3
    (filtered,) = infer("shapes-classifier", SCENE, "--threshold", "0.4")
    kept = filtered["classes"]
    assert isinstance(kept, list)
    assert kept == [c for c in classes if c["score"] >= 0.4] and 0 < len(kept) < 3


def test_infer_keeps_a_detectors_threshold() -> None:
    """Detectors keep the manifest's threshold (0.4) in `edge infer`: every detection clears it."""
    (result,) = infer("shapes-detector", SCENE)
    detections = result["detections"]
    assert isinstance(detections, list) and detections
    assert min(d["score"] for d in detections) >= 0.4


def stats_line(latency: dict[str, dict[str, float]]) -> str:
    """The `edge listen` line of a daemon stats payload with these latency percentiles."""
    camera = {"fps_in": 0.0, "fps_out": 0.0, "inferred": 0, "dropped": 0, "latency_ms": latency}
    stats = {"rss_mb": 80.5, "cpu_percent": 3.0, "cpu_temp_c": None, "cameras": {"porch": camera}}
    msg = _Message(time.time(), "edge/pi/stats", json.dumps(stats).encode(), False)
    return format_line(msg, "edge")


def test_listen_stats_line_without_latencies_yet() -> None:
    """The first stats of a camera that has not inferred yet print no `None ms`: the missing
    figures say so instead."""
    line = stats_line({"invoke": {}, "e2e": {}})
    assert "None" not in line
    assert "porch: 0.0→0.0 fps, 0 inferred, 0 dropped, 0 skipped" in line
    assert "no invoke times yet, no e2e times yet" in line and "rss 80.5 MiB; cpu 3.0 %" in line
    later = stats_line({"invoke": {"p50": 0.5}, "e2e": {"p50": 2.25}})
    assert "invoke p50 0.5 ms, e2e p50 2.25 ms" in later


def test_demo_prints_the_daemons_whole_command_line(broker: Broker) -> None:
    """`edge demo` prints the daemon's whole command line, interpreter first, shell-quoted."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "demo",
            "--broker",
            f"{broker.host}:{broker.port}",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("edge demo: "))
    argv = shlex.split(line.removeprefix("edge demo: "))
    assert argv[:4] == [sys.executable, "-m", "edge", "run"]
    assert argv[argv.index("--broker") + 1] == f"{broker.host}:{broker.port}"
    assert "demo/camera #1 " in proc.stdout
