"""The output stage's contract: the :class:`ResultEvent` every result listener receives, the
fan-out that hands one event to several listeners, and :func:`payload`, the one place the
published result is built (``edge/schema/result.schema.json`` documents it; the tests validate
what it produces against that schema).

Neutral ground between the pipeline, which makes events, and what consumes them (the MQTT
publisher in ``edge.sinks.publisher``, the preview): this module imports neither side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from edge.frame import Frame
from edge.result import Result

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """One numbered result of one camera, as the result thread hands it to the listeners.

    device: the device id (second topic level). camera: the camera's name. seq: the camera's
    result number, from 1, continued across reloads. boot_id: names the process's life.
    frame: the frame inferred; its image is shared with every listener and must not be
    modified. done_mono: ``time.monotonic()`` seconds when the result was decoded and numbered.
    """

    device: str
    camera: str
    seq: int
    boot_id: str
    frame: Frame
    result: Result
    done_mono: float

    @property
    def captured_mono(self) -> float:
        """``time.monotonic()`` seconds at capture (every latency is measured from it)."""
        return self.frame.ts_mono

    @property
    def captured_wall(self) -> float:
        """``time.time()`` seconds at capture (only for what is published)."""
        return self.frame.ts_wall

    @property
    def e2e_ms(self) -> float:
        """Capture to result, milliseconds."""
        return (self.done_mono - self.frame.ts_mono) * 1000


class ResultListener(Protocol):
    """Receives every result. Called on a result thread: must return quickly (a slow listener
    holds up the results behind it, and then inference); slow work (network, JPEG) belongs on
    the listener's own thread."""

    def on_result(self, event: ResultEvent) -> None: ...


class FanOut:
    """A listener that hands each event to ``listeners`` in order, each call in its own try: a
    listener that raises is logged and the ones after it still get the event."""

    def __init__(self, listeners: Sequence[ResultListener]) -> None:
        self.listeners = tuple(listeners)

    def on_result(self, event: ResultEvent) -> None:
        for listener in self.listeners:
            try:
                listener.on_result(event)
            except Exception:
                log.exception("result listener %s failed", type(listener).__name__)


def payload(event: ResultEvent) -> bytes:
    """The published result: compact JSON of ``Result.to_dict()`` (what ``edge infer`` prints)
    followed by ``device``, ``boot_id``, ``camera``, ``seq``, ``captured_at`` (UTC, ISO 8601 to
    the millisecond) and ``latency_ms`` (capture to result), in that order."""
    out = event.result.to_dict()
    out["device"] = event.device
    out["boot_id"] = event.boot_id
    out["camera"] = event.camera
    out["seq"] = event.seq
    out["captured_at"] = (
        datetime.fromtimestamp(event.captured_wall, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    out["latency_ms"] = round(event.e2e_ms, 3)
    return json.dumps(out, separators=(",", ":")).encode()
