"""The producer side of the MQTT sink: results (and track events, which travel the same way)
handed over from any thread, never blocking.

``Intake.put`` builds the camera's topic once (checking the name as a topic level), refuses
and counts a payload over ``max_payload_bytes``, counts and drops a result whose topic is
quarantined, and appends the rest to a deque that the sink's outbox thread drains into the
Outbox. The deque is bounded by ``outbox_max_rows``, a bound reached only while the outbox thread
is stalled (e.g. on a dead disk): then the oldest result goes, counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from edge.outbox import Outbox
from edge.sinks.mqtt_refusals import Quarantine
from edge.sinks.mqtt_settings import MqttSettings, validate_topic_part
from edge.sinks.mqtt_throttle import Throttle

log = logging.getLogger(__name__)


class Intake:
    """Results on their way from producers to the outbox thread, which ``wake`` wakes.

    ``put``, ``topic``, ``size_ok`` and the counters: any thread; ``drain``: the outbox thread.
    After ``closed`` is set, results are ignored with a (rate-limited) warning."""

    def __init__(
        self,
        settings: MqttSettings,
        quarantine: Quarantine,
        throttle: Throttle,
        wake: threading.Event,
    ) -> None:
        self.closed = False
        self.produced = 0  # results accepted for delivery
        self.oversize = 0  # payloads (results, stats, snapshots) over max_payload_bytes
        self.dropped_full = 0  # oldest dropped while the outbox thread was stalled
        self.dropped_refused = 0  # results of a quarantined topic
        self._settings = settings
        self._quarantine = quarantine
        self._throttle = throttle
        self._wake = wake
        self._queue: deque[tuple[str, bytes, float]] = deque()
        self._produced_lock = threading.Lock()
        self._topics: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        """Results waiting for the outbox thread."""
        return len(self._queue)

    def topic(self, camera: str, kind: str) -> str:
        """``<prefix>/<device>/<camera>/<kind>``; raises ConfigError for a camera name that is
        not a valid topic level."""
        topic = self._topics.get((camera, kind))
        if topic is None:
            validate_topic_part(camera, "camera")
            base = self._settings.base_topic
            topic = self._topics.setdefault((camera, kind), f"{base}/{camera}/{kind}")
        return topic

    def put(self, camera: str, payload: bytes, kind: str = "result") -> None:
        """Hand over one message of ``camera`` for ``<camera>/<kind>`` (a result, or
        ``events``) (see the module doc)."""
        topic = self.topic(camera, kind)
        if self.closed:
            if (n := self._throttle.ready("closed")) is not None:
                log.warning("result for %s ignored: the MQTT sink is closed (+%d)", camera, n)
            return
        with self._produced_lock:
            self.produced += 1
        if topic in self._quarantine:
            self.dropped_refused += 1
            self._wake.set()  # the outbox thread decides when to try the topic again
            return
        if not self.size_ok(len(payload), "result", camera):
            return
        if len(self._queue) >= self._settings.outbox_max_rows:
            # Only when the outbox thread is stalled (e.g. on a dead disk): keep the newest.
            try:
                self._queue.popleft()
                self.dropped_full += 1
            except IndexError:
                pass
        self._queue.append((topic, payload, time.monotonic()))
        self._wake.set()

    def size_ok(self, size: int, what: str, camera: str) -> bool:
        """Whether a ``size``-byte payload may be sent; a larger one is counted and logged."""
        limit = self._settings.max_payload_bytes
        if size <= limit:
            return True
        self.oversize += 1
        if (n := self._throttle.ready("oversize")) is not None:
            log.error(
                "refused a %d-byte %s%s: larger than mqtt.max_payload_bytes (%d); raise the limit "
                "(and the broker's message_size_limit) or make the payload smaller (+%d more)",
                size,
                what,
                f" from {camera}" if camera else "",
                limit,
                n,
            )
        return False

    def drain(self, outbox: Outbox) -> None:
        """Move every waiting result into ``outbox`` (the outbox thread)."""
        while True:
            try:
                topic, payload, created = self._queue.popleft()
            except IndexError:
                break
            outbox.put(topic, payload, created)
        outbox.produced = self.produced
