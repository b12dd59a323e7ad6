"""The delegate failover chain in the real daemon process against a real mosquitto: the native
test delegate failing mid-run moves the model to XNNPACK with no seq gap, the switch is on the
stats and the retained status details, a re-probe moves it back; a chain without a Coral runs on
XNNPACK and says why; a chain none of whose entries loads is exit 78 with each one's reason."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker import Broker, Subscriber
from test_daemon import DEVICE, REPO, Daemon

from edge.errors import EX_CONFIG

MODEL = "shapes-detector"


def config(broker: Broker, tmp: Path, model: str) -> str:
    return (
        f'device = "{DEVICE}"\nstate_dir = "{tmp / "state"}"\n'
        f'[model]\npath = "{MODEL}"\nthreads = 1\n{model}'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nstats_interval = 1\n'
        '[[cameras]]\nname = "cam"\nsource = "synthetic"\nfps = 15\n'
    )


def native_chain(library: Path, control: Path, reprobe_s: float) -> str:
    return (
        'delegate = ["external", "xnnpack"]\n'
        f'delegate_library = "{library}"\n'
        f'delegate_library_options = ["control={control}"]\n'
        f"reprobe_s = {reprobe_s}\n"
    )


def jsons(sub: Subscriber, suffix: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads(suffix)]


def chain_in_details(sub: Subscriber) -> dict[str, Any]:
    """The model's chain as the latest status details say (empty before any)."""
    details = jsons(sub, "/status/details")
    entry: dict[str, Any] = details[-1].get("failover", {}).get(MODEL, {}) if details else {}
    return entry


def chain_in_stats(sub: Subscriber) -> dict[str, Any]:
    """The model's ``failover`` entry in the latest stats (empty before any)."""
    stats = jsons(sub, "/stats")
    entry: dict[str, Any] = stats[-1]["models"][MODEL].get("failover", {}) if stats else {}
    return entry


def test_native_delegate_failing_mid_run_switches_without_a_gap_and_back(
    broker: Broker, tmp_path: Path, library: Path, control: Path, daemons: list[Daemon]
) -> None:
    """`edge run` on external (the native delegate), then xnnpack: when the delegate fails
    mid-run the model moves to XNNPACK, the subscriber sees every seq once (no gap), the
    switch (from, to, reason) is on the stats and the retained status details, which call the
    model degraded; a re-probe moves it back once the delegate is healthy. The switch is
    logged once."""
    sub = Subscriber(broker, f"edge/{DEVICE}/#")
    d = Daemon(tmp_path, config(broker, tmp_path, native_chain(library, control, 0.3)))
    daemons.append(d)

    def results() -> int:
        return len(sub.payloads("/result"))

    assert sub.wait_until(
        lambda ms: results() >= 10 and chain_in_details(sub).get("active") == "external", 30
    ), d.log()
    assert chain_in_details(sub)["chain"] == ["external", "xnnpack"]
    assert jsons(sub, "/status/details")[-1]["degraded"] == []
    control.write_text("fail")
    assert sub.wait_until(lambda ms: chain_in_details(sub).get("active") == "xnnpack", 20), d.log()
    details = jsons(sub, "/status/details")[-1]
    last = details["failover"][MODEL]["last_switch"]
    assert (last["source"], last["target"]) == ("external", "xnnpack")
    assert "failing on command" in last["reason"]
    assert any(f"model {MODEL}: running on xnnpack, not external" in x for x in details["degraded"])
    assert sub.wait_until(lambda ms: chain_in_stats(sub).get("active") == "xnnpack", 10)
    stats = jsons(sub, "/stats")[-1]
    assert stats["models"][MODEL]["failover"]["last_switch"]["target"] == "xnnpack"
    assert stats["models"][MODEL]["failover"]["switches"] == 1
    assert any("running on xnnpack, not external" in x for x in stats["degraded"])
    switched_at = results()
    assert sub.wait_until(lambda ms: results() >= switched_at + 10, 20), d.log()
    control.write_text("ok")
    assert sub.wait_until(lambda ms: chain_in_details(sub).get("active") == "external", 20), d.log()
    back = chain_in_details(sub)
    assert back["switches"] == 2 and back["last_switch"]["source"] == "xnnpack"
    assert back["last_switch"]["reason"] == "re-probe: healthy again"
    assert sub.wait_until(lambda ms: jsons(sub, "/status/details")[-1]["degraded"] == [], 5)
    healed_at = results()
    assert sub.wait_until(lambda ms: results() >= healed_at + 5, 20), d.log()
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0, d.log()
    n = d.last_seq()
    assert sub.wait_until(lambda ms: results() >= n, 10)
    seqs = [json.loads(p)["seq"] for p in sub.payloads("/result")]
    assert seqs == list(range(1, n + 1))
    log = d.log()
    assert log.count("switched from external to xnnpack") == 1, log
    assert "is healthy again; switched back to it" in log
    sub.close()


def test_chain_without_a_coral_runs_on_xnnpack_and_says_why(
    broker: Broker, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """`edge run --delegate edgetpu,xnnpack` where no Edge TPU can be used (none is at usb:9)
    runs on XNNPACK: the log says why, the stats' failover entry has edgetpu's reason, and the
    status details call the model degraded with that reason."""
    sub = Subscriber(broker, f"edge/{DEVICE}/#")
    d = Daemon(
        tmp_path, config(broker, tmp_path, ""), "--delegate", "edgetpu,xnnpack", "--tpu", "usb:9"
    )
    daemons.append(d)
    assert sub.wait_until(lambda ms: chain_in_stats(sub).get("active") == "xnnpack", 30), d.log()
    entry = chain_in_stats(sub)
    assert entry["chain"] == ["edgetpu", "xnnpack"] and entry["switches"] == 0
    assert "Edge TPU" in entry["reasons"]["edgetpu"]
    degraded = jsons(sub, "/status/details")[-1]["degraded"]
    assert any(
        f"model {MODEL}: running on xnnpack, not edgetpu: " in x and "Edge TPU" in x
        for x in degraded
    ), degraded
    assert chain_in_details(sub)["active"] == "xnnpack"
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0, d.log()
    assert "edgetpu cannot run it" in d.log()
    sub.close()


def test_chain_with_nothing_loadable_is_exit_78_listing_each_reason(
    broker: Broker, tmp_path: Path, library: Path, control: Path
) -> None:
    """A chain none of whose entries loads (the native delegate refusing, no Edge TPU at usb:9):
    `edge check-config` and `edge run` both exit 78 naming every entry with its reason."""
    control.write_text("refuse")
    cfg = tmp_path / "chain.toml"
    model = native_chain(library, control, 30).replace('"xnnpack"', '"edgetpu"')
    cfg.write_text(config(broker, tmp_path, model + 'edgetpu_device = "usb:9"\n'))
    for command in ("check-config", "run"):
        args = [str(cfg)] if command == "check-config" else ["--config", str(cfg)]
        proc = subprocess.run(
            [sys.executable, "-m", "edge", command, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        assert proc.returncode == EX_CONFIG, proc.stderr
        error = proc.stderr.strip().splitlines()[-1]
        assert error.startswith("edge: error: ") and "Traceback" not in proc.stderr
        assert "no delegate of the chain external, edgetpu can run" in error, error
        assert "external: " in error and "edgetpu: " in error and "Edge TPU" in error, error
