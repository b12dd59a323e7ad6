"""An in-memory stand-in for the MQTT sink and a recording pipeline listener, with waits on
what they received instead of sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable

from edge.output import ResultEvent


class MemorySink:
    """Implements ``edge.sinks.Sink``: keeps every (camera, payload) published, results,
    snapshots, events and states apart, and retained messages by topic. Thread-safe;
    ``fail_snapshots`` makes that many snapshot publishes raise first."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bytes]] = []
        self.snapshots: list[tuple[str, bytes]] = []
        self.events: list[tuple[str, bytes]] = []
        self.states: list[tuple[str, bytes]] = []
        self.retained: dict[str, bytes] = {}
        self.fail_snapshots = 0
        self._cond = threading.Condition()

    def publish_result(self, camera: str, payload: bytes) -> None:
        with self._cond:
            self.results.append((camera, payload))
            self._cond.notify_all()

    def publish_event(self, camera: str, payload: bytes) -> None:
        with self._cond:
            self.events.append((camera, payload))
            self._cond.notify_all()

    def publish_state(self, camera: str, payload: bytes) -> None:
        with self._cond:
            self.states.append((camera, payload))
            self._cond.notify_all()

    def retain(self, topic: str, payload: bytes, force: bool = False) -> None:
        with self._cond:
            self.retained[topic] = payload
            self._cond.notify_all()

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        with self._cond:
            if self.fail_snapshots:
                self.fail_snapshots -= 1
                self._cond.notify_all()
                raise OSError("snapshot publish fails on purpose")
            self.snapshots.append((camera, jpeg))
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[MemorySink], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` holds or ``timeout`` seconds pass."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


class Recorder:
    """A pipeline ``ResultListener`` that records every event, thread-safe, with a wait."""

    def __init__(self) -> None:
        self.calls: list[ResultEvent] = []
        self._cond = threading.Condition()

    def on_result(self, event: ResultEvent) -> None:
        with self._cond:
            self.calls.append(event)
            self._cond.notify_all()

    def of(self, camera: str) -> list[ResultEvent]:
        with self._cond:
            return [c for c in self.calls if c.camera == camera]

    def wait_for_count(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` results arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= n, timeout)
