"""Reloads as an operator does them (edit the file, SIGHUP) against a real mosquitto: a refused
reload changes nothing and loses nothing; an accepted one keeps boot_id and seq going."""

from __future__ import annotations

import json
from pathlib import Path

from broker import Broker, Subscriber
from faultkit import (
    BASE,
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


def test_reload_with_an_unreadable_password_file_is_refused_and_delivery_goes_on(
    broker: Broker, tmp_path: Path
) -> None:
    """A reload naming a missing password_file is refused before anything changes: results keep
    flowing, and restoring the file then reloads without a gap."""
    sub = subscribe(broker)
    good = config_text(broker, tmp_path / "state")
    d = DaemonProc(tmp_path, good)
    try:
        assert wait_results(sub, 20), d.log()
        bad = config_text(
            broker,
            tmp_path / "state",
            mqtt={"username": "u", "password_file": str(tmp_path / "nonexistent-pw")},
        )
        d.rewrite(bad)
        assert d.wait_log("reload refused"), d.log()
        n = len(results(sub))
        assert wait_results(sub, n + 50), f"delivery stopped after a refused reload\n{d.log()}"
        details = last_json(sub, "/status/details")
        assert details is not None and details["last_reload"]["ok"] is False
        assert "password_file" in details["last_reload"]["error"]
        d.rewrite(good)
        assert d.wait_log("configuration reloaded"), d.log()
        n = len(results(sub))
        assert wait_results(sub, n + 50), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    counts = tally(sub)
    report("reload with an unreadable password_file, then restored", counts, d.proc.returncode)
    assert len(counts) == 1, f"one boot_id for the whole process, got {list(counts)}"
    (t,) = counts.values()
    assert (t.gaps, t.duplicates, t.out_of_order) == (0, 0, 0), t
    assert "MQTT sink is closed" not in d.log()
    sub.close()


def test_refused_reload_applies_no_part_of_the_new_file(broker: Broker, tmp_path: Path) -> None:
    """A reload that moves to a second broker and names a truncated model is refused as a whole:
    results stay on the first broker; an accepted move to the second later keeps seq going."""
    second = Broker(tmp_path / "second")
    second.start()
    sub1, sub2 = subscribe(broker, "sub-one"), subscribe(second, "sub-two")
    model = Path(__file__).resolve().parents[2] / "models" / "shapes-detector" / "model.tflite"
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    state = tmp_path / "state"
    d = DaemonProc(tmp_path, config_text(broker, state))
    try:
        assert wait_results(sub1, 20), d.log()
        d.rewrite(config_text(second, state, model={"path": str(truncated)}))
        assert d.wait_log("reload refused"), d.log()
        n = len(results(sub1))
        assert wait_results(sub1, n + 50), d.log()
        assert results(sub2) == [], "part of a refused reload was applied"
        # The same move with a good model is accepted: results move, seq goes on.
        d.rewrite(config_text(second, state))
        assert d.wait_log("configuration reloaded (MQTT connection replaced)"), d.log()
        assert wait_results(sub2, 30), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
        second.kill()
    both = tally(sub1, sub2)
    report(
        "refused reload (2nd broker + truncated model), then accepted move", both, d.proc.returncode
    )
    assert len(both) == 1, list(both)
    (t,) = both.values()
    # Across the two brokers: every seq from 1 to the last, once (the outbox hands over what
    # the first broker had not acknowledged).
    assert (t.gaps, t.out_of_order) == (0, 0), t
    first_on_second = min(r["seq"] for r in results(sub2))
    assert first_on_second > 20, "seq restarted after the reload"
    sub1.close()
    sub2.close()


def test_accepted_reload_swaps_only_what_changed(broker: Broker, tmp_path: Path) -> None:
    """A reload that only changes a camera's rate keeps the MQTT connection, the model and the
    numbering."""
    sub = subscribe(broker)
    state = tmp_path / "state"
    d = DaemonProc(tmp_path, config_text(broker, state))
    try:
        assert wait_results(sub, 20), d.log()
        d.rewrite(config_text(broker, state, cameras={"a": {"fps": 20}}))
        assert d.wait_log("configuration reloaded (MQTT connection kept)"), d.log()
        n = len(results(sub))
        assert wait_results(sub, n + 20), d.log()
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    report("accepted reload of a camera rate", tally(sub), d.proc.returncode)
    assert d.log().count("loaded model.tflite") == 1, "an unchanged model was loaded again"
    (t,) = tally(sub).values()
    assert (t.gaps, t.duplicates, t.out_of_order) == (0, 0, 0), t
    statuses = [p.decode() for p in sub.payloads(f"{BASE}/status")]
    assert statuses.count("online") == 1, statuses
    stats = last_json(sub, "/stats")
    assert stats is not None and stats["reloads"]["accepted"] == 1
    json.dumps(stats)
    sub.close()


def test_reload_that_renames_the_device_or_moves_the_state_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    """The device id and the state directory name the daemon's topics and hold its outbox: a
    reload changing them is refused, saying how to apply it, and delivery goes on unbroken."""
    sub = subscribe(broker)
    renamed = Subscriber(broker, "edge/renamed/#", client_id="renamed-subscriber")
    state = tmp_path / "state"
    good = config_text(broker, state)
    d = DaemonProc(tmp_path, good)
    try:
        assert wait_results(sub, 20), d.log()
        d.rewrite(good.replace(f'device = "{DEVICE}"', 'device = "renamed"'))
        assert d.wait_log("reload refused"), d.log()
        assert f"device: '{DEVICE}' → 'renamed' cannot be applied by a reload" in d.log()
        assert "systemctl restart edge" in d.log()
        d.rewrite(config_text(broker, tmp_path / "elsewhere"))
        assert d.wait_log("reload refused", count=2), d.log()
        assert "state_dir:" in d.log() and "move the directory" in d.log()
        n = len(results(sub))
        assert wait_results(sub, n + 30), f"delivery stopped after a refused reload\n{d.log()}"
        details = last_json(sub, "/status/details")
        assert details is not None and details["last_reload"]["ok"] is False
        assert "state_dir" in details["last_reload"]["error"]
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    counts = tally(sub)
    report("reloads renaming the device and moving the state, refused", counts, d.proc.returncode)
    (t,) = counts.values()
    assert (t.gaps, t.duplicates, t.out_of_order) == (0, 0, 0), t
    assert renamed.received() == [], "part of a refused rename was applied"
    assert not (tmp_path / "elsewhere").exists(), "part of a refused move was applied"
    sub.close()
    renamed.close()


def test_reload_that_moves_or_stops_online_requests_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    """[online]'s request topics are subscribed for the life of the connection: a reload that
    moves them to another group or turns them off is refused as a whole, not half applied."""
    sub = subscribe(broker)
    base = config_text(broker, tmp_path / "state")
    d = DaemonProc(tmp_path, base + '[online]\nenabled = true\ngroup = "g"\n')
    try:
        assert wait_results(sub, 20), d.log()
        d.rewrite(base + '[online]\nenabled = true\ngroup = "h"\n')
        assert d.wait_log("reload refused"), d.log()
        assert "online.group: 'g' → 'h' cannot be applied by a reload" in d.log()
        d.rewrite(base)
        assert d.wait_log("reload refused", count=2), d.log()
        assert "online.enabled: true → false cannot be applied by a reload" in d.log()
        n = len(results(sub))
        assert wait_results(sub, n + 30), d.log()
        stats = last_json(sub, "/stats")
        assert stats is not None and stats["reloads"]["refused"] == 2
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    (t,) = tally(sub).values()
    assert (t.gaps, t.duplicates, t.out_of_order) == (0, 0, 0), t
    sub.close()
