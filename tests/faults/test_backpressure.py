"""The RAM-only window while the broker is away, on a disk whose commits are slow (each commit
held for 0.3 s, as a busy SD card can): a live camera drops frames at capture instead of piling
up uncommitted results, a lossless file waits, and the results waiting in RAM never exceed
``ram_window`` plus the pipeline's depth, the bound the README states for a SIGKILL."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from broker import free_port, wait_for

from edge.config import validate
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings
from edge.sinks.publisher import Publisher

RAM_WINDOW = 8
PIPELINE_DEPTH = 8
COMMIT_S = 0.3


def slow_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Outbox._write

    def slow(self: Outbox, body: Any) -> None:
        time.sleep(COMMIT_S)
        real(self, body)

    monkeypatch.setattr(Outbox, "_write", slow)


@pytest.mark.parametrize("fps", [50.0, 0.0], ids=["live camera", "unpaced (lossless)"])
def test_uncommitted_results_stay_within_the_window_on_a_slow_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fps: float
) -> None:
    """With no broker and 0.3 s commits, at most ram_window + pipeline depth results are ever
    uncommitted; a live source drops frames at capture (counted), a lossless one drops none."""
    slow_commits(monkeypatch)
    config = validate(
        {
            "cameras": [
                {
                    "source": "synthetic",
                    "width": 192,
                    "height": 192,
                    **({"fps": fps} if fps else {}),
                }
            ],
            "mqtt": {"port": free_port(), "ram_window": RAM_WINDOW, "ram_max_rows": 1000},
        }
    )
    settings = MqttSettings.from_config(config)
    sink = MqttSink(settings, Outbox(tmp_path / "outbox.sqlite3", 10_000, boot_id="b"))
    sink.start()
    pipeline = Pipeline(config, [Publisher(sink, config.mqtt)], admit=sink.room)
    most = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, int(sink.stats()["uncommitted"]))
            done.wait(0.002)

    watcher = threading.Thread(target=watch)
    pipeline.start()
    watcher.start()
    try:
        assert wait_for(lambda: sink.stats()["commits"] >= 8, 30), sink.stats()
    finally:
        done.set()
        watcher.join()
        pipeline.stop()
        sink.close(timeout=2.0)
    cam = pipeline.stats()["cameras"]["camera"]
    st = sink.stats()
    assert st["produced"] > 2 * RAM_WINDOW, st
    assert most <= RAM_WINDOW + PIPELINE_DEPTH, (most, st)
    if fps:
        assert cam["dropped_backpressure"] > 0, cam
    else:
        assert cam["dropped_backpressure"] == 0 and cam["dropped"] == 0, cam
    print(
        f"\nBACKPRESSURE {'live' if fps else 'lossless'}: produced {st['produced']}, commits "
        f"{st['commits']} (max {st['max_commit_ms']:.0f} ms), most uncommitted {most} "
        f"(bound {RAM_WINDOW + PIPELINE_DEPTH}), dropped at capture {cam['dropped_backpressure']}"
    )
