"""Result sinks: where the daemon's results, snapshots and stats go.

A sink owns delivery, never the format: payloads arrive already serialized (bytes), the
published result built by :func:`edge.output.payload`. :class:`Sink` below is what the
publisher (``edge.sinks.publisher``, which decides what of each result goes out, and when)
needs from one. ``edge.sinks.mqtt.MqttSink`` is the sink the daemon uses; it adds what the
daemon itself calls (start, close, stats, status, back-pressure), and ``edge.sinks.start``
builds it with its durable outbox.
"""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    """Accepts serialized results and snapshots of a camera. Called from result and snapshot
    threads: both calls are thread-safe and never block the caller (a sink queues and delivers
    on its own thread)."""

    def publish_result(self, camera: str, payload: bytes) -> None: ...

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...
