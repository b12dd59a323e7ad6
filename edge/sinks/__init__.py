"""Result sinks: where the daemon sends each inference result, its periodic stats and snapshots.

A sink implements the small ``Sink`` protocol below; ``edge.sinks.mqtt.MqttSink`` is the one the
daemon uses. Payloads arrive already serialized (bytes): the pipeline owns the wire format, a sink
owns delivery.
"""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    """What the pipeline needs from a sink. ``publish_*`` are called from producer threads and
    must not block them; ``start`` and ``close`` from the thread that owns the pipeline."""

    def start(self) -> None: ...

    def publish_result(self, camera: str, payload: bytes) -> None: ...

    def publish_stats(self, payload: bytes) -> None: ...

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...

    def stats(self) -> dict[str, int | bool | float]: ...

    def close(self, timeout: float = 5.0) -> None: ...
