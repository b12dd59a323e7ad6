"""Broker faults the daemon already survived, kept in the suite so they stay survived, counted at
a real subscriber by seq: broker killed mid-run, flapping, absent at start, SIGTERM while the
backlog drains; and the reconnect back-off after a long outage."""

from __future__ import annotations

import time
from pathlib import Path

from broker import Broker, Subscriber
from faultkit import DaemonProc, config_text, report, results, subscribe, tally, wait_results

INFLIGHT = 16


def assert_lossless(sub: Subscriber, case: str, code: int | None, boots: int = 1) -> None:
    counts = tally(sub)
    report(case, counts, code)
    assert len(counts) == boots, list(counts)
    for key, t in counts.items():
        assert (t.gaps, t.out_of_order) == (0, 0), (key, str(t))
        assert t.duplicates <= 2 * INFLIGHT, (key, str(t))


def test_broker_killed_mid_run_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    """SIGKILL of the broker for 4 s: every result arrives after it is back, in order."""
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, config_text(broker, tmp_path / "state"))
    try:
        assert wait_results(sub, 20), d.log()
        broker.kill()
        time.sleep(4)  # the outage under test
        broker.restart()
        n = len(results(sub))
        assert wait_results(sub, n + 250, timeout=30), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    assert_lossless(sub, "broker SIGKILLed for 4 s", d.proc.returncode)
    sub.close()


def test_flapping_broker_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    """Five cycles of broker down 1 s / up 1.5 s: nothing lost, nothing out of order."""
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, config_text(broker, tmp_path / "state", mqtt={"reconnect_max_s": 1}))
    try:
        assert wait_results(sub, 20), d.log()
        for _ in range(5):
            broker.kill()
            time.sleep(1)
            broker.restart()
            time.sleep(1.5)
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    last = int(d.log().split("(last seq ")[1].split(",")[0])
    assert sub.wait_until(lambda ms: len({r["seq"] for r in results(sub)}) >= last, 20)
    assert_lossless(sub, "broker flapping 5 x (1 s down, 1.5 s up)", d.proc.returncode)
    sub.close()


def test_broker_absent_at_start_then_back_within_the_backoff_cap(tmp_path: Path) -> None:
    """The broker is away for the first 12 s: results are kept, and once it starts the daemon
    is connected within reconnect_max_s (5 s) plus jitter slack, not 30 s later."""
    broker = Broker(tmp_path / "mosquitto")
    d = DaemonProc(tmp_path, config_text(broker, tmp_path / "state"))
    try:
        assert d.wait_log("cannot reach MQTT broker", timeout=20), d.log()
        time.sleep(12)  # the outage under test: several back-off steps
        broker.start()
        t0 = time.monotonic()
        sub = subscribe(broker)
        assert wait_results(sub, 1, timeout=15), d.log()
        waited = time.monotonic() - t0
        assert waited <= 5.0 + 1.0, f"reconnected {waited:.1f} s after the broker came back"
        n = len(results(sub))
        assert wait_results(sub, n + 100, timeout=30), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
        broker.kill()
    seqs = sorted({r["seq"] for r in results(sub)})
    assert seqs[0] == 1, "results produced before the broker came up were lost"
    assert_lossless(
        sub,
        f"broker absent 12 s at start (connected {waited:.1f} s after it came)",
        d.proc.returncode,
    )
    sub.close()


def test_sigterm_while_draining_a_backlog_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    """SIGTERM just after the broker returns from an outage: what is not delivered in time is
    kept on disk, and the next start delivers it."""
    sub = subscribe(broker)
    state = tmp_path / "state"
    d = DaemonProc(tmp_path, config_text(broker, state))
    try:
        assert wait_results(sub, 20), d.log()
        broker.kill()
        time.sleep(4)
        broker.restart()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    last = int(d.log().split("(last seq ")[1].split(",")[0])
    d2 = DaemonProc(tmp_path, config_text(broker, state), name="second.toml")
    try:
        first_boot = results(sub)[0]["boot_id"]
        assert sub.wait_until(
            lambda ms: len({r["seq"] for r in results(sub) if r["boot_id"] == first_boot}) >= last,
            30,
        ), d2.log()
        assert d2.stop() == 0
    finally:
        if d2.proc.poll() is None:
            d2.kill()
    assert_lossless(sub, "SIGTERM while draining, then restart", d2.proc.returncode, boots=2)
    sub.close()
