"""The main-thread runner shared by ``edge run`` and ``edge preview``: signals become events,
the done check (a fatal capture error, the duration, every source ended) gives the exit code,
and shutdown runs every close, last started first, whatever one raises."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from broker import wait_for

from edge.config import validate
from edge.pipeline import Pipeline
from edge.runner import Runner


@pytest.fixture
def pipelines() -> Iterator[list[Pipeline]]:
    made: list[Pipeline] = []
    yield made
    for p in made:
        p.stop()


def started(pipelines: list[Pipeline], source: str) -> Pipeline:
    """A started pipeline of one camera reading ``source`` through the bundled classifier."""
    config = validate(
        {"model": {"path": "shapes-classifier"}, "cameras": [{"source": source, "name": "cam"}]}
    )
    p = Pipeline(config)
    pipelines.append(p)
    p.start()
    return p


def photo(tmp_path: Path) -> str:
    path = tmp_path / "photo.png"
    assert cv2.imwrite(str(path), np.full((48, 64, 3), 90, np.uint8))
    return str(path)


def test_done_gives_the_fatal_capture_error_its_exit_code(
    tmp_path: Path, pipelines: list[Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    """A source that cannot be read (a missing file) ends the run with its error's exit code
    (66), logged."""
    p = started(pipelines, str(tmp_path / "gone.mp4"))
    runner = Runner()
    assert wait_for(lambda: p.failure() is not None, 10)
    with caplog.at_level(logging.ERROR, logger="edge.runner"):
        assert runner.done(p) == 66
    assert "gone.mp4" in caplog.text


def test_done_when_every_source_ended_unless_told_to_stay(
    tmp_path: Path, pipelines: list[Pipeline]
) -> None:
    """Once the only source (a photo) has ended and been inferred, the run is done with 0; with
    at_end False (the preview keeps showing the last frame) it goes on."""
    p = started(pipelines, photo(tmp_path))
    runner = Runner()
    assert wait_for(p.finished, 10)
    assert runner.done(p, at_end=False) is None
    assert runner.done(p) == 0


def test_done_after_the_duration_counted_from_begin(
    pipelines: list[Pipeline], caplog: pytest.LogCaptureFixture
) -> None:
    """A live source runs on until ``duration`` seconds after begin(), then the run is done
    with 0; without a duration it is never done by time."""
    p = started(pipelines, "synthetic")
    timed = Runner(duration=0.2)
    timed.begin()
    forever = Runner()
    assert timed.done(p) is None and forever.done(p) is None
    with caplog.at_level(logging.INFO, logger="edge.runner"):
        assert wait_for(lambda: timed.done(p) == 0, 5)
    assert "duration of 0.2 s reached" in caplog.text
    assert forever.done(p) is None


def test_shutdown_runs_every_close_in_reverse_order_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """shutdown sets stop and calls the closes last registered first, each in its own try: one
    that raises is logged and the ones registered before it still run; a second shutdown runs
    nothing again."""
    runner = Runner()
    order: list[str] = []

    def fails() -> None:
        order.append("sink")
        raise OSError("close fails on purpose")

    runner.on_shutdown("notifier", lambda: order.append("notifier"))
    runner.on_shutdown("sink", fails)
    runner.on_shutdown("pipeline", lambda: order.append("pipeline"))
    with caplog.at_level(logging.ERROR, logger="edge.runner"):
        runner.shutdown()
    assert runner.stop.is_set()
    assert order == ["pipeline", "sink", "notifier"]
    assert "stopping the sink failed" in caplog.text
    runner.shutdown()
    assert order == ["pipeline", "sink", "notifier"]


def test_signals_set_the_events_and_are_restored() -> None:
    """Installed on the main thread, SIGHUP asks for a reload (only when reloads are handled)
    and SIGTERM and SIGINT stop; restore_signals puts the previous handlers back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    runner = Runner(reloads=True)
    runner.install_signals()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert runner.reload_requested.wait(5) and not runner.stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert runner.stop.wait(5)
    finally:
        runner.restore_signals()
    assert {s: signal.getsignal(s) for s in before} == before
    plain = Runner()
    plain.install_signals()
    try:
        assert signal.getsignal(signal.SIGHUP) == before[signal.SIGHUP]
        os.kill(os.getpid(), signal.SIGINT)
        assert plain.stop.wait(5)
    finally:
        plain.restore_signals()
    assert {s: signal.getsignal(s) for s in before} == before
