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
    """What the daemon's producers hand a sink: serialized results, snapshots, track events and
    states of a camera, and latest-value messages (retained, re-sent on every connect) for a
    topic. Called from result, snapshot and main threads: every call is thread-safe and never
    blocks the caller (a sink queues and delivers on its own thread). ``MqttSink`` is the
    implementation; each producer uses the calls it needs."""

    def publish_result(self, camera: str, payload: bytes) -> None: ...

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...

    def publish_event(self, camera: str, payload: bytes) -> None: ...

    def publish_state(self, camera: str, payload: bytes) -> None: ...

    def retain(self, topic: str, payload: bytes, force: bool = False) -> None: ...


class NullSink:
    """A sink that drops everything: where a preview without ``--mqtt`` sends track events and
    states (only its frames show the tracks), so the same producers run with or without a
    broker."""

    def publish_result(self, camera: str, payload: bytes) -> None:
        pass

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        pass

    def publish_event(self, camera: str, payload: bytes) -> None:
        pass

    def publish_state(self, camera: str, payload: bytes) -> None:
        pass

    def retain(self, topic: str, payload: bytes, force: bool = False) -> None:
        pass
