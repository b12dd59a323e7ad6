"""What of each result goes to MQTT, and when: the publish policy (every result, on change of
the label set, or rate-limited), and annotated snapshots encoded on their own thread so JPEG
work never delays inference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge.config import MqttConfig
from edge.output import ResultEvent, payload
from edge.sinks import Sink
from edge.slots import Newest
from edge.trackevents import Overlay

log = logging.getLogger(__name__)

_JOB = "snapshot"  # the one key of the snapshot slot: across cameras, the newest job wins


class Publisher:
    """A result listener that applies ``[mqtt].publish`` and ``snapshot`` settings.

    Snapshots: at most one per camera per ``snapshot_interval``, only for results with
    detections or segments, encoded on the ``snapshot`` thread; a job not yet taken when the
    next is due is replaced by it (newest wins), so a slow encoder never queues frames.
    ``overlay(camera)``: what tracking draws on a snapshot of that camera (zones, track ids),
    read when the job is made (the tracking listener runs before this one).
    """

    def __init__(
        self,
        sink: Sink,
        settings: MqttConfig,
        overlay: Callable[[str], Overlay | None] | None = None,
    ) -> None:
        self.sink = sink
        self.settings = settings
        self._overlay = overlay
        self._last_labels: dict[str, frozenset[str]] = {}
        self._last_sent: dict[str, float] = {}
        self._last_snapshot: dict[str, float] = {}
        self.suppressed = 0
        self._jobs: Newest[str, tuple[ResultEvent, str, Overlay | None]] = Newest()
        self._taken = 0  # the version of the last job the snapshot thread took
        self._snap_thread: threading.Thread | None = None
        if settings.snapshot:
            self._snap_thread = threading.Thread(
                target=self._snapshots, name="snapshot", daemon=True
            )
            self._snap_thread.start()

    def _due(self, event: ResultEvent, now: float) -> bool:
        policy = self.settings.publish
        if policy == "every":
            return True
        camera = event.camera
        last = self._last_sent.get(camera)
        interval = self.settings.publish_interval
        if policy == "interval":
            return last is None or now - last >= interval
        labels = event.result.labels()
        changed = self._last_labels.get(camera) != labels
        self._last_labels[camera] = labels
        heartbeat = interval > 0 and last is not None and now - last >= interval
        return changed or heartbeat or last is None

    def on_result(self, event: ResultEvent) -> None:
        now = time.monotonic()
        camera, result = event.camera, event.result
        if self._due(event, now):
            self._last_sent[camera] = now
            self.sink.publish_result(camera, payload(event))
        else:
            self.suppressed += 1
        if self._snap_thread is not None and (result.detections or result.segments):
            last = self._last_snapshot.get(camera, -1e9)
            if now - last >= self.settings.snapshot_interval:
                self._last_snapshot[camera] = now
                figures = f"{camera} #{event.seq} {result.timings.invoke_ms:.1f} ms"
                overlay = self._overlay(camera) if self._overlay is not None else None
                self._jobs.put(_JOB, (event, figures, overlay))

    def pending_snapshot(self) -> bool:
        """Whether a snapshot job waits for the snapshot thread to take it."""
        entry = self._jobs.get(_JOB)
        return entry is not None and entry.version > self._taken

    def _snapshots(self) -> None:
        from edge.annotate import annotate, encode_jpeg  # OpenCV, loaded only with snapshots on

        while True:
            newer = self._jobs.wait({_JOB: self._taken}, None)
            if not newer:
                return  # closed
            entry = newer[_JOB]
            self._taken = entry.version
            event, figures, overlay = entry.value
            try:
                image = annotate(event.frame.image, event.result, figures, overlay)
                self.sink.publish_snapshot(event.camera, encode_jpeg(image))
            except Exception:
                log.exception("snapshot for %s failed", event.camera)

    def close(self) -> None:
        self._jobs.close()
        if self._snap_thread is not None:
            self._snap_thread.join(2.0)
