"""Drift in a running daemon: a baseline made with `edge baseline` on scenes of mixed shapes;
a camera shown other scenes of the same mix stays under the thresholds, a camera shown only
circles rises above the class threshold, one shown washed-out scenes above the score
threshold, on the stats topic, the status details and /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from broker import Broker, free_port, wait_for
from faultkit import DaemonProc, last_json, subscribe
from prometheus_client.parser import text_string_to_metric_families

from edge.models import bundled_models
from edge.scene import background, random_shapes, render

SIDE = 192


def scenes(folder: Path, n: int, seed: int, only: str | None = None, fade: float = 0.0) -> Path:
    """``n`` PNG scenes of 2-4 shapes (every kind, or ``only`` that kind) in ``folder``,
    blended ``fade`` of the way to flat grey (a washed-out camera: same objects, lower
    scores)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shapes = random_shapes(rng, SIDE, SIDE, int(rng.integers(2, 5)), SIDE * 0.16, SIDE * 0.3)
        if only is not None:
            shapes = [replace(s, kind=only) for s in shapes]
        image = render(shapes, background(rng, SIDE, SIDE))
        if fade:
            image = cv2.addWeighted(image, 1 - fade, np.full_like(image, 128), fade, 0)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


def model_copy(tmp: Path, name: str, baseline_images: Path) -> Path:
    """The bundled detector under another name, with a baseline from `edge baseline`."""
    d = tmp / name
    shutil.copytree(bundled_models()["shapes-detector"], d)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "name": name}))
    subprocess.run(
        [sys.executable, "-m", "edge", "baseline", str(d), str(baseline_images)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return d


def drift_of(stats: dict[str, Any] | None) -> dict[str, Any]:
    drift: dict[str, Any] = (stats or {}).get("drift", {})
    return drift


@pytest.mark.slow
def test_drift_rises_above_the_threshold_when_the_class_mix_changes(
    broker: Broker, tmp_path: Path
) -> None:
    """Same mix: divergence under 0.1 and not degraded; circles only: over 0.1, degraded,
    logged once, and the metrics show the same figures as the stats."""
    mixed = scenes(tmp_path / "baseline", 40, seed=1)
    same = scenes(tmp_path / "same", 30, seed=2)
    circles = scenes(tmp_path / "circles", 30, seed=3, only="circle")
    faded = scenes(tmp_path / "faded", 30, seed=4, fade=0.4)
    steady, drifting, fading = (
        model_copy(tmp_path, "det-same", mixed),
        model_copy(tmp_path, "det-circ", mixed),
        model_copy(tmp_path, "det-fade", mixed),
    )
    port = free_port()
    cams = "".join(
        f'[[cameras]]\nname = "{name}"\nsource = "{src}"\nmodel = "{model}"\nloop = true\n'
        f"fps = 20\n"
        for name, src, model in [
            ("a", same, steady),
            ("b", circles, drifting),
            ("c", faded, fading),
        ]
    )
    text = (
        f'device = "faultdev"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nstats_interval = 1\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        "[drift]\nwindow = 30\nclass_threshold = 0.1\nscore_threshold = 0.1\n" + cams
    )
    daemon = DaemonProc(tmp_path, text)
    sub = subscribe(broker)
    try:
        measured = wait_for(
            lambda: (
                all(
                    d.get("class_divergence") is not None
                    for d in drift_of(last_json(sub, "/stats")).values()
                )
                and len(drift_of(last_json(sub, "/stats"))) == 3
            ),
            40,
        )
        assert measured, daemon.log()
        assert wait_for(
            lambda: json.dumps(last_json(sub, "/status/details")).count("drifted") == 2, 10
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
        stats = last_json(sub, "/stats")
    finally:
        code = daemon.stop()
        sub.close()
    assert code == 0, daemon.log()
    assert stats is not None
    drift = stats["drift"]
    print(f"\nDRIFT stats {json.dumps(drift)}")  # for the record (pytest -s)
    assert drift["det-same"]["window"] == drift["det-same"]["results"] == 30
    assert drift["det-same"]["class_divergence"] < 0.1
    assert drift["det-same"]["score_distance"] < 0.1
    assert drift["det-circ"]["class_divergence"] > 0.1
    assert drift["det-fade"]["class_divergence"] < 0.1 < drift["det-fade"]["score_distance"]
    degraded = sorted(d for d in stats["degraded"] if "drifted" in d)
    assert degraded == [
        "model det-circ: results drifted from its baseline (class divergence over 0.1)",
        "model det-fade: results drifted from its baseline (score distance over 0.1)",
    ]
    assert daemon.log().count("model det-circ: results drifted from its baseline") == 1
    scraped = {
        (f.name, s.labels["model"]): s.value
        for f in text_string_to_metric_families(body)
        if f.name.startswith("edge_drift_")
        for s in f.samples
    }
    # The windows keep moving (the cameras loop), so the scrape and the stats may differ a little.
    js, linf = "edge_drift_class_divergence", "edge_drift_score_distance"
    assert scraped[js, "det-same"] < 0.1 < scraped[js, "det-circ"]
    assert scraped[linf, "det-same"] < 0.1 < scraped[linf, "det-fade"]
    assert scraped["edge_drift_window_results", "det-fade"] == 30
