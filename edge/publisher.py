"""What of each result goes to MQTT, and when: the publish policy (every result, on change of
the label set, or rate-limited), and annotated snapshots encoded on their own thread so JPEG
work never delays inference.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Protocol

from edge.config import MqttConfig
from edge.frame import Frame
from edge.pipeline import CameraState
from edge.result import Result

log = logging.getLogger(__name__)


class Sink(Protocol):
    """The part of the MQTT sink the publisher uses (non-blocking, thread-safe calls)."""

    def publish_result(self, camera: str, payload: bytes) -> None: ...

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...


class Publisher:
    """A pipeline listener that applies ``[mqtt].publish`` and ``snapshot`` settings."""

    def __init__(self, sink: Sink, settings: MqttConfig) -> None:
        self.sink = sink
        self.settings = settings
        self._last_labels: dict[str, frozenset[str]] = {}
        self._last_sent: dict[str, float] = {}
        self._last_snapshot: dict[str, float] = {}
        self.suppressed = 0
        self._snap_cond = threading.Condition()
        self._snap_job: tuple[str, Frame, Result, str] | None = None
        self._closed = False
        self._snap_thread: threading.Thread | None = None
        if settings.snapshot:
            self._snap_thread = threading.Thread(
                target=self._snapshots, name="snapshot", daemon=True
            )
            self._snap_thread.start()

    def _due(self, camera: str, result: Result, now: float) -> bool:
        policy = self.settings.publish
        if policy == "every":
            return True
        last = self._last_sent.get(camera)
        interval = self.settings.publish_interval
        if policy == "interval":
            return last is None or now - last >= interval
        labels = result.labels()
        changed = self._last_labels.get(camera) != labels
        self._last_labels[camera] = labels
        heartbeat = interval > 0 and last is not None and now - last >= interval
        return changed or heartbeat or last is None

    def on_result(
        self, camera: CameraState, frame: Frame, result: Result, payload: dict[str, Any]
    ) -> None:
        now = time.monotonic()
        if self._due(camera.name, result, now):
            self._last_sent[camera.name] = now
            self.sink.publish_result(
                camera.name, json.dumps(payload, separators=(",", ":")).encode()
            )
        else:
            self.suppressed += 1
        if self._snap_thread is not None and (result.detections or result.segments):
            last = self._last_snapshot.get(camera.name, -1e9)
            if now - last >= self.settings.snapshot_interval:
                self._last_snapshot[camera.name] = now
                figures = f"{camera.name} #{payload['seq']} {result.timings.invoke_ms:.1f} ms"
                with self._snap_cond:
                    self._snap_job = (camera.name, frame, result, figures)  # newest wins
                    self._snap_cond.notify()

    def _snapshots(self) -> None:
        from edge.annotate import annotate, encode_jpeg  # OpenCV, loaded only with snapshots on

        while True:
            with self._snap_cond:
                while self._snap_job is None and not self._closed:
                    self._snap_cond.wait()
                if self._closed:
                    return
                job, self._snap_job = self._snap_job, None
            assert job is not None
            camera, frame, result, figures = job
            try:
                self.sink.publish_snapshot(
                    camera, encode_jpeg(annotate(frame.image, result, figures))
                )
            except Exception:
                log.exception("snapshot for %s failed", camera)

    def close(self) -> None:
        with self._snap_cond:
            self._closed = True
            self._snap_cond.notify_all()
        if self._snap_thread is not None:
            self._snap_thread.join(2.0)
