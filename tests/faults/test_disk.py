"""A state filesystem that fills up (a real 64 KiB tmpfs, so root only: CI runs as root):
delivery goes on from RAM while connected, production is held back while the broker is away,
the real SQLite error is logged once, writing resumes when space returns."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, wait_for
from faultkit import (
    DEVICE,
    DaemonProc,
    config_text,
    last_json,
    report,
    results,
    subscribe,
    tally,
    wait_results,
)

from edge.outbox import Outbox
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_state_disk_loses_nothing_while_connected_and_recovers(
    tmp_path: Path, small_fs: Path
) -> None:
    """With the outbox's filesystem full: held back (not lost) while the broker is away, every
    result delivered once it is back, one ERROR with SQLite's own message, and writing resumes
    by itself when space is freed."""
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 40 * 1024)
    broker = Broker(tmp_path / "mosquitto")
    state = small_fs / "state"
    d = DaemonProc(tmp_path, config_text(broker, state, mqtt={"reconnect_max_s": 1}))
    sub = None
    try:
        assert d.wait_log("cannot write", timeout=30), d.log()
        assert "database or disk is full" in d.log(), d.log()
        assert "cannot rollback" not in d.log()
        broker.start()
        sub = subscribe(broker)
        assert wait_results(sub, 150, timeout=30), f"delivery stalled on a full disk\n{d.log()}"
        stats = last_json(sub, "/stats")
        assert stats is not None and stats["mqtt"]["disk_ok"] is False, stats
        assert any("outbox not writable" in x for x in stats["degraded"]), stats
        assert stats["cameras"]["a"]["dropped_backpressure"] > 0, stats["cameras"]["a"]
        filler.unlink()
        broker.stop()  # results now go to disk again
        assert d.wait_log("is writable again", timeout=30), d.log()
        broker.start()
        n = len(results(sub))
        assert wait_results(sub, n + 50, timeout=30), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
        if sub is not None:
            sub.close()
        broker.kill()
    report("state disk full (64 KiB tmpfs), outage, space freed", tally(sub), d.proc.returncode)
    log = d.log()
    # Once per change of state: one ERROR per failing spell, each ended by one recovery line.
    failures, recoveries = log.count("database or disk is full"), log.count("writable again")
    assert recoveries >= 1 and failures in (recoveries, recoveries + 1), log
    (t,) = tally(sub).values()
    assert (t.gaps, t.out_of_order) == (0, 0), t
    assert t.duplicates <= 2 * 16, t


def test_sigterm_on_a_full_disk_while_the_broker_is_away_counts_what_is_lost(
    tmp_path: Path, small_fs: Path
) -> None:
    """SIGTERM while nothing can be delivered or written: the daemon exits 0 and says at ERROR
    how many results it could not keep."""
    (small_fs / "filler").write_bytes(b"\0" * 40 * 1024)
    broker = Broker(tmp_path / "mosquitto")  # never started: the broker is away
    d = DaemonProc(tmp_path, config_text(broker, small_fs / "state"))
    try:
        assert d.wait_log("cannot write", timeout=30), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    assert "could not be written to the outbox" in d.log(), d.log()
    assert "lost at this shutdown" in d.log()


def test_results_lost_at_sigterm_are_in_the_final_stats(tmp_path: Path, small_fs: Path) -> None:
    """SIGTERM on a full disk while the broker stops acknowledging: what could be neither
    delivered nor written is counted at ERROR, and the final stats handed to the connection
    before `stopped` carry the same count."""
    (small_fs / "filler").write_bytes(b"\0" * 40 * 1024)
    broker = Broker(tmp_path / "mosquitto")
    broker.start()
    outbox = Outbox(small_fs / "outbox.sqlite3", 10_000)
    sink = MqttSink(MqttSettings(device=DEVICE, host=broker.host, port=broker.port), outbox)
    seen: list[dict[str, Any]] = []

    def final() -> bytes:
        seen.append(sink.stats())
        return json.dumps(seen[-1]).encode()

    sink.final_stats = final
    try:
        sink.start()
        assert wait_for(lambda: sink.stats()["connected"], 10)
        broker.freeze()  # connected, but nothing is acknowledged any more
        for i in range(200):
            sink.publish_result("a", b'{"seq": %d, "pad": "%s"}' % (i, b"x" * 200))
        assert wait_for(lambda: sink.stats()["disk_ok"] is False, 10), sink.stats()
        sink.close(timeout=2.0)
    finally:
        broker.thaw()
        broker.kill()
    assert seen, "no final stats were published"
    lost = seen[0]["lost_at_shutdown"]
    assert lost > 0 and lost == sink.stats()["lost_at_shutdown"], seen[0]
    assert sink.stats()["delivered"] + lost + outbox.pending_disk >= 200 - 16, sink.stats()
