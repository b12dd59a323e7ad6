"""A stand-in for "whichever MQTT sink the daemon holds now": the publisher and the tracking
listener keep one for the life of the process while a reload may replace the sink behind it.
What is published while there is no sink (between closing one and starting the next, which a
reload does not do for a kept connection) is dropped, as it would be by a closed sink.
"""

from __future__ import annotations

from collections.abc import Callable

from edge.sinks.mqtt import MqttSink


class CurrentSink:
    """Forwards each publish to ``current()`` when it returns a sink. Thread-safe as the sink
    is: ``current`` is read once per call."""

    def __init__(self, current: Callable[[], MqttSink | None]) -> None:
        self._current = current

    def publish_result(self, camera: str, payload: bytes) -> None:
        sink = self._current()
        if sink is not None:
            sink.publish_result(camera, payload)

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        sink = self._current()
        if sink is not None:
            sink.publish_snapshot(camera, jpeg)

    def publish_event(self, camera: str, payload: bytes) -> None:
        sink = self._current()
        if sink is not None:
            sink.publish_event(camera, payload)

    def publish_state(self, camera: str, payload: bytes) -> None:
        sink = self._current()
        if sink is not None:
            sink.publish_state(camera, payload)

    def retain(self, topic: str, payload: bytes, force: bool = False) -> None:
        sink = self._current()
        if sink is not None:
            sink.retain(topic, payload, force)
