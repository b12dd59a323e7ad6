"""The output stage's contract: the published payload, byte for byte and against its JSON
Schema, the event's times, and the fan-out that shields listeners from each other."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge.engine import Engine
from edge.frame import Frame
from edge.output import FanOut, ResultEvent, payload
from edge.result import Detection, Result, Timings
from edge.scene import MovingScene

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())

# The published result of EVENT below, as the daemon has always sent it: the result's own
# fields, then the daemon's, in this order, compact.
GOLDEN = (
    b'{"schema":1,"model":{"name":"shapes-detector","version":"2"},"task":"detection",'
    b'"source":"door","frame":{"width":320,"height":240,"index":7},'
    b'"timings_ms":{"preprocess":1.235,"invoke":7.891,"postprocess":0.5},'
    b'"detections":[{"label":"circle","class_id":0,"score":0.9123,"box":[0.1,0.2,0.3333,0.4]}],'
    b'"device":"dev1","boot_id":"0123456789ab","camera":"door","seq":42,'
    b'"captured_at":"2023-11-14T22:13:20.123Z","latency_ms":12.346}'
)


def event_of(
    result: Result, *, ts_mono: float = 100.0, done_mono: float = 100.0123456
) -> ResultEvent:
    frame = Frame(np.zeros((240, 320, 3), np.uint8), 7, ts_mono, 1700000000.1234, "door", 7)
    return ResultEvent("dev1", "door", 42, "0123456789ab", frame, result, done_mono)


EVENT = event_of(
    Result(
        model="shapes-detector",
        model_version="2",
        task="detection",
        source="door",
        width=320,
        height=240,
        timings=Timings(1.23456, 7.891011, 0.5),
        detections=(Detection("circle", 0, 0.912345, (0.1, 0.2, 0.33333, 0.4)),),
        index=7,
    )
)


def test_payload_is_byte_for_byte_the_published_format() -> None:
    """The payload is the result's JSON followed by device, boot_id, camera, seq, captured_at
    (UTC, milliseconds) and latency_ms (capture to decode, 3 decimals), compact: exactly the
    bytes subscribers have always received."""
    assert payload(EVENT) == GOLDEN
    body = EVENT.result.to_dict()
    published = json.loads(GOLDEN)
    assert list(published)[: len(body)] == list(body)
    assert {k: published[k] for k in body} == body


def test_payloads_of_real_results_match_the_schema() -> None:
    """Payloads of the bundled detector's and classifier's real results validate against
    edge/schema/result.schema.json, the daemon's fields included."""
    image, _ = MovingScene(320, 240, count=3, seed=0).frame(0.0)
    for model in ("shapes-detector", "shapes-classifier"):
        result = Engine.load(model).infer(image, source="door", index=3)
        published = json.loads(payload(event_of(result)))
        jsonschema.validate(published, SCHEMA)
        assert published["task"] == result.task and published["seq"] == 42


def test_event_times_come_from_its_frame_and_decode() -> None:
    """Capture times are the frame's (monotonic and wall); e2e is capture to decode in ms."""
    assert (EVENT.captured_mono, EVENT.captured_wall) == (100.0, 1700000000.1234)
    assert EVENT.e2e_ms == pytest.approx(12.3456)


def test_fan_out_calls_every_listener_in_order_whatever_one_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each listener gets the event in the order given; one that raises is logged by name and
    the ones after it still get the event."""
    calls: list[tuple[str, int]] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_result(self, event: ResultEvent) -> None:
            calls.append((self.name, event.seq))

    class Broken:
        def on_result(self, event: ResultEvent) -> None:
            calls.append(("broken", event.seq))
            raise ValueError("listener fails on purpose")

    fan = FanOut([Named("first"), Broken(), Named("last")])
    with caplog.at_level(logging.ERROR, logger="edge.output"):
        fan.on_result(EVENT)
        fan.on_result(EVENT)
    assert calls == [("first", 42), ("broken", 42), ("last", 42)] * 2
    assert caplog.text.count("result listener Broken failed") == 2
    FanOut([]).on_result(EVENT)  # no listener: nothing to do
