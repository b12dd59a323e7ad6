"""The Prometheus endpoint: a running daemon's /metrics fetched over HTTP and parsed with
prometheus_client's text-format parser agrees with the stats topic at a real subscriber; bad
listen values and a port in use are refused with exit 78."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, free_port, wait_for
from faultkit import DaemonProc, config_text, subscribe
from prometheus_client.parser import text_string_to_metric_families

from edge.config import validate
from edge.config.metrics import split_listen
from edge.errors import EX_CONFIG, ConfigError

REPO = Path(__file__).resolve().parent.parent
CAM = {"source": "synthetic"}


def scrape(port: int) -> tuple[dict[str, list[Any]], float, float, str]:
    """(family name → samples, wall time before, wall time after, content type)."""
    before = time.time()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body, ctype = r.read().decode(), r.headers["Content-Type"]
    after = time.time()
    fams = {f.name: f.samples for f in text_string_to_metric_families(body)}
    return fams, before, after, ctype


def value(fams: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The one sample called ``name`` with ``labels`` (of a counter, summary or gauge)."""
    matches = [
        s.value
        for s in (x for family in fams.values() for x in family)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (name, labels, matches)
    return float(matches[0])


def test_listen_values_are_checked_without_io() -> None:
    """A host name, a missing or out-of-range port are config errors naming metrics.listen."""
    cams = [{"source": "synthetic"}]
    for bad, why in [
        ("localhost:9108", "must be an IP address"),
        ("127.0.0.1", 'must be "HOST:PORT"'),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:http", "from 1 to 65535"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate({"metrics": {"listen": bad}, "cameras": cams})
        assert any(p.startswith("metrics.listen: ") and why in p for p in info.value.problems)
    assert split_listen("[::1]:9108") == ("::1", 9108)
    config = validate({"metrics": {"listen": "0.0.0.0:9108"}, "cameras": cams})
    assert config.metrics.address == ("0.0.0.0", 9108)
    assert validate({"cameras": cams}).metrics.address is None


def test_check_config_refuses_a_bad_listen_value(tmp_path: Path) -> None:
    """`edge check-config` exits 78 on a listen value `edge run` would refuse."""
    path = tmp_path / "c.toml"
    path.write_text('[metrics]\nlisten = "edge.local:9108"\n[[cameras]]\nsource = "synthetic"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EX_CONFIG
    assert "metrics.listen: the host 'edge.local' must be an IP address" in proc.stderr


def test_a_port_in_use_exits_78_before_anything_starts(tmp_path: Path) -> None:
    """Another program on the metrics port: `edge run` exits 78 with a message naming the
    address and what to do, without opening a camera."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        text = config_text(("127.0.0.1", free_port()), tmp_path / "state")
        daemon = DaemonProc(tmp_path, text + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        code = daemon.wait(60)
    log = daemon.log()
    assert code == EX_CONFIG, log
    assert f"metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use" in log
    assert "pick a free one" in log
    assert "capture" not in log


@pytest.mark.slow
def test_metrics_agree_with_the_stats_topic(broker: Broker, tmp_path: Path) -> None:
    """Scraped while the daemon runs: the info labels equal the stats', and every counter lies
    between the stats published just before and just after the scrape."""
    port = free_port()
    text = config_text(broker, tmp_path / "state", cameras={"a": {"fps": 20}})
    daemon = DaemonProc(tmp_path, text + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    sub = subscribe(broker)
    try:
        assert sub.wait_for_count(2, 30, "/stats"), daemon.log()
        fams, t0, t1, ctype = scrape(port)
        assert wait_for(
            lambda: any(json.loads(p)["ts"] > t1 for p in sub.payloads("/stats")), 10
        ), daemon.log()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert info.value.code == 404
        info.value.close()
    finally:
        code = daemon.stop()
        sub.close()
    assert code == 0, daemon.log()
    assert ctype.startswith("text/plain; version=0.0.4")
    stats = [json.loads(p) for p in sub.payloads("/stats")]
    before = [s for s in stats if s["ts"] <= t0][-1]
    after = next(s for s in stats if s["ts"] >= t1)
    lo, hi = before["cameras"]["a"], after["cameras"]["a"]

    info = fams["edge_info"][0].labels
    assert info == {"device": "faultdev", "boot_id": after["boot_id"]}
    model = fams["edge_model_info"][0].labels
    m = after["models"]["shapes-detector"]
    assert model["delegate"] == m["delegate"] == "xnnpack"
    assert model["version"] == m["version"] == "1.1.0"
    assert (model["runtime"], model["task"]) == (m["runtime"], m["task"])

    cam = {"camera": "a", "model": "shapes-detector"}
    for name, key in [
        ("edge_frames_captured_total", "captured"),
        ("edge_frames_inferred_total", "inferred"),
    ]:
        assert lo[key] <= value(fams, name, **cam) <= hi[key], name
    assert lo["inferred"] > 0
    for stage in ("invoke", "e2e"):
        count = value(fams, "edge_stage_latency_seconds_count", stage=stage, **cam)
        assert lo["inferred"] <= count <= hi["inferred"]
        p50 = value(fams, "edge_stage_latency_seconds", stage=stage, quantile="0.5", **cam)
        assert 0 < p50 < 1
        lows = [s["cameras"]["a"]["latency_ms"][stage]["p50"] for s in (before, after)]
        assert min(lows) / 3 <= p50 * 1000 <= max(lows) * 3
    assert lo["dropped"] <= value(fams, "edge_frames_dropped_total", reason="slot", **cam)
    assert 0 < value(fams, "edge_fps_out", **cam) <= 25
    mq_lo, mq_hi = before["mqtt"], after["mqtt"]
    assert mq_lo["delivered"] <= value(fams, "edge_mqtt_delivered_total") <= mq_hi["delivered"]
    assert mq_lo["produced"] <= value(fams, "edge_mqtt_produced_total") <= mq_hi["produced"]
    assert value(fams, "edge_mqtt_dropped_total", reason="full") == mq_hi["dropped_full"] == 0
    assert value(fams, "edge_outbox_pending", where="disk") == mq_hi["pending_disk"]
    assert value(fams, "edge_mqtt_connected") == 1
    rss = value(fams, "edge_resident_memory_bytes") / 2**20
    assert (
        min(before["rss_mb"], after["rss_mb"]) - 5
        <= rss
        <= max(before["rss_mb"], after["rss_mb"]) + 5
    )
    assert value(fams, "edge_degraded") == len(after["degraded"]) == 0
    assert ("edge_cpu_temperature_celsius" in fams) == (after["cpu_temp_c"] is not None)
    assert after["drift"] == {}  # the bundled detector carries no baseline


@pytest.mark.slow
def test_a_reload_moves_the_endpoint_or_is_refused_keeping_it(
    broker: Broker, tmp_path: Path
) -> None:
    """SIGHUP with the same address keeps the socket; with a new port the old one closes and
    the new one serves; with a port in use the reload is refused, the endpoint stays."""
    p1, p2 = free_port(), free_port()
    base = config_text(broker, tmp_path / "state")
    daemon = DaemonProc(tmp_path, base + f'[metrics]\nlisten = "127.0.0.1:{p1}"\n')
    sub = subscribe(broker)
    try:
        assert sub.wait_for_count(1, 30, "/stats"), daemon.log()
        assert "edge_info" in scrape(p1)[0]
        daemon.rewrite(base + f'[metrics]\nlisten = "127.0.0.1:{p1}"\n')  # unchanged
        assert daemon.wait_log("configuration reloaded"), daemon.log()
        assert "edge_info" in scrape(p1)[0]
        assert daemon.log().count(f"metrics on http://127.0.0.1:{p1}/metrics") == 1
        daemon.rewrite(base + f'[metrics]\nlisten = "127.0.0.1:{p2}"\n')
        assert daemon.wait_log("configuration reloaded", count=2), daemon.log()
        assert "edge_frames_inferred" in scrape(p2)[0]
        with pytest.raises(urllib.error.URLError):
            scrape(p1)
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            busy = other.getsockname()[1]
            daemon.rewrite(base + f'[metrics]\nlisten = "127.0.0.1:{busy}"\n')
            assert daemon.wait_log("reload refused"), daemon.log()
        assert "edge_info" in scrape(p2)[0]
    finally:
        code = daemon.stop()
        sub.close()
    assert code == 0, daemon.log()
    assert f"cannot listen on 127.0.0.1:{busy}: Address already in use" in daemon.log()


def test_a_missing_library_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without prometheus-client, a configured endpoint is refused (check-config's preflight
    and the daemon's start) with the pip command; an unset one needs nothing."""
    import importlib.util

    from edge import metrics
    from edge.config import MetricsSettings

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    on = MetricsSettings(listen=f"127.0.0.1:{free_port()}")
    assert metrics.problem(MetricsSettings()) is None
    assert "pip install 'edge[metrics]'" in (metrics.problem(on) or "")
    endpoint = metrics.Endpoint(dict, dict)
    with pytest.raises(ConfigError, match=r"needs the prometheus-client package"):
        endpoint.follow(on)
    endpoint.follow(MetricsSettings())  # off: fine
    endpoint.close()


def test_the_server_binds_ipv6_answers_only_metrics_and_releases_the_port() -> None:
    """On [::1]: GET /metrics is 200 in the text format, HEAD has no body, other paths 404;
    after close() another server can listen on the port."""
    from prometheus_client.core import GaugeMetricFamily

    from edge.metrics.server import MetricsServer

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    server = MetricsServer(("::1", port), lambda: [GaugeMetricFamily("x", "A test.", value=2)])
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"\nx 2.0\n" in r.read()
        head = urllib.request.Request(f"http://[::1]:{port}/metrics", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as r:
            assert r.status == 200 and r.read() == b""
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://[::1]:{port}/other", timeout=5)
        assert info.value.code == 404
        info.value.close()
    finally:
        server.close()
    again = MetricsServer(("::1", port), list)  # the port is free for the next daemon
    again.start()
    again.close()
