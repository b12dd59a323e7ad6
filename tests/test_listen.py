"""``edge listen`` against a real mosquitto: readable lines, raw JSON lines, filters, errors."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import Broker, free_port, make_certificates
from paho.mqtt.enums import CallbackAPIVersion

from edge.cli import main
from edge.commands.listen import add_arguments
from edge.errors import SinkError
from edge.listen import listen

RESULT = {
    "schema": 1,
    "model": {"name": "ssd", "version": "1"},
    "task": "detection",
    "source": "front",
    "frame": {"width": 640, "height": 480, "index": 7},
    "timings_ms": {"preprocess": 1.0, "invoke": 9.0, "postprocess": 0.5},
    "detections": [
        {"label": "person", "class_id": 0, "score": 0.91, "box": [0.1, 0.1, 0.5, 0.9]},
        {"label": "dog", "class_id": 17, "score": 0.55, "box": [0.6, 0.5, 0.9, 0.9]},
    ],
    "device": "dev1",
    "camera": "front",
    "seq": 42,
    "boot_id": "b00t",
}


def retain(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    """Publish retained messages and return once the broker acknowledged all of them."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    # No lock of ours around publish(): paho calls on_publish holding its own message lock, so
    # waiting on each MQTTMessageInfo is the deadlock-free way to know they were acknowledged.
    infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(5)
        assert info.is_published()
    client.disconnect()
    client.loop_stop()


def result_payload() -> bytes:
    return json.dumps({**RESULT, "captured_at": datetime.now(UTC).isoformat()}).encode()


def test_prints_a_readable_result_line(broker: Broker) -> None:
    """A result becomes one line with device/camera, seq, labels with scores and e2e latency."""
    retain(broker, [("edge/dev1/front/result", result_payload())])
    out = io.StringIO()
    assert listen(broker.host, broker.port, "edge", None, False, 1, 10, out) == 0
    line = out.getvalue()
    assert line.count("\n") == 1
    assert "dev1/front #42 person 0.91, dog 0.55 e2e " in line
    assert line.rstrip().endswith("ms (retained)")


def test_prints_raw_json_lines(broker: Broker) -> None:
    """--raw prints one JSON object per message with the parsed payload."""
    payload = result_payload()
    retain(broker, [("edge/dev1/front/result", payload)])
    out = io.StringIO()
    listen(broker.host, broker.port, "edge", "dev1", True, 1, 10, out)
    obj = json.loads(out.getvalue())
    assert obj == {
        "topic": "edge/dev1/front/result",
        "retained": True,
        "payload": json.loads(payload),
    }


def test_status_stats_and_snapshot_lines_and_device_filter(broker: Broker) -> None:
    """Status and stats are summarized, snapshots shown by size; other devices are filtered out."""
    retain(
        broker,
        [
            ("edge/dev1/status", b"online"),
            (
                "edge/dev1/stats",
                json.dumps(
                    {
                        "rss_mb": 88.3,
                        "cpu_percent": 12.5,
                        "cpu_temp_c": None,
                        "cameras": {
                            "front": {
                                "fps_in": 10.0,
                                "fps_out": 9.9,
                                "inferred": 120,
                                "dropped": 3,
                                "skipped_latency": 1,
                                "skipped_motion": 0,
                                "latency_ms": {"invoke": {"p50": 3.4}, "e2e": {"p50": 5.5}},
                            }
                        },
                        "mqtt": {
                            "pending_ram": 0,
                            "pending_disk": 7,
                            "uncommitted": 2,
                            "last_commit_ms": 4.25,
                            "dropped_full": 1,
                            "dropped_ram": 2,
                        },
                        "degraded": ["outbox not writable: database or disk is full"],
                    }
                ).encode(),
            ),
            ("edge/dev1/front/snapshot", b"\xff\xd8" + bytes(2000)),
            (
                "edge/dev1/status/details",
                b'{"boot_id":"b","degraded":[],"last_reload":{"ok":false,"error":"bad"}}',
            ),
            ("edge/dev2/status", b"offline"),
        ],
    )
    out = io.StringIO()
    listen(broker.host, broker.port, "edge", "dev1", False, 4, 10, out)
    lines = sorted(out.getvalue().splitlines(), key=lambda s: s.split(" ", 2)[2])
    assert [line.split(" ", 1)[1] for line in lines] == [
        "dev1/status healthy; last reload refused: bad (retained)",
        "dev1/front snapshot 2,002 bytes (retained)",
        "dev1 stats rss 88.3 MiB; cpu 12.5 %; front: 10.0→9.9 fps, 120 inferred, 3 dropped, "
        "1 skipped, invoke p50 3.4 ms, e2e p50 5.5 ms; outbox 0 ram / 7 disk, 2 uncommitted, "
        "last commit 4.2 ms, 3 dropped; DEGRADED: outbox not writable: database or disk is full "
        "(retained)",
        "dev1 status online (retained)",
    ]
    raw = io.StringIO()
    listen(broker.host, broker.port, "edge", "dev1", True, 4, 10, raw)
    snap = next(json.loads(x) for x in raw.getvalue().splitlines() if "snapshot" in x)
    assert snap == {
        "topic": "edge/dev1/front/snapshot",
        "retained": True,
        "payload": None,
        "bytes": 2002,
    }


def test_events_state_and_switch_lines(broker: Broker) -> None:
    """Track events read as seq, type, id, label, scores and zones (an end with how long the
    object was seen), the state as its non-zero counts per label and zone, the switch as ON
    or OFF."""
    event = {
        "type": "end",
        "id": 3,
        "label": "square",
        "score": 0.51,
        "top_score": 0.9641,
        "box": [0.0, 0.47, 0.07, 0.59],
        "zones": [],
        "first_seen": "2026-01-02T03:04:27.684Z",
        "last_seen": "2026-01-02T03:04:32.786Z",
        "camera": "yard",
        "device": "pi",
        "seq": 14,
        "boot_id": "03f1fe9bd90e",
    }
    new = {**event, "type": "new", "zones": ["lawn", "drive"], "seq": 1, "camera": "porch"}
    state = {"circle": 1, "square": 0, "triangle": 2, "zones": {"lawn": {"triangle": 1}}}
    retain(
        broker,
        [
            ("edge/pi/yard/events", json.dumps(event).encode()),
            ("edge/pi/yard/state", json.dumps(state).encode()),
            ("edge/pi/gate/state", b'{"circle":0,"zones":{"lawn":{"circle":0}}}'),
            ("edge/pi/yard/detect/state", b"OFF"),
            ("edge/pi/porch/events", json.dumps(new).encode()),
        ],
    )
    out = io.StringIO()
    listen(broker.host, broker.port, "edge", "pi", False, 5, 10, out)
    lines = sorted(line.split(" ", 1)[1] for line in out.getvalue().splitlines())
    assert lines == [
        "pi/gate state nothing; lawn: nothing (retained)",
        "pi/porch #1 new id 3 square 0.51 (top 0.96) in lawn, drive (retained)",
        "pi/yard #14 end id 3 square 0.51 (top 0.96) in no zone after 5.1 s (retained)",
        "pi/yard state circle 1, triangle 2; lawn: triangle 1 (retained)",
        "pi/yard/detect state OFF (retained)",
    ]


def test_timeout_with_no_messages_returns_zero(broker: Broker) -> None:
    """With nothing published, listen returns 0 after the timeout and prints nothing."""
    out = io.StringIO()
    assert listen(broker.host, broker.port, "edge", None, False, None, 0.3, out) == 0
    assert out.getvalue() == ""


def test_unreachable_broker_raises_sink_error() -> None:
    """No broker on the port: SinkError naming the address and what to check."""
    port = free_port()
    with pytest.raises(SinkError, match=f"127.0.0.1:{port}.*--broker"):
        listen("127.0.0.1", port, "edge", None, False, 1, 1, io.StringIO())


def test_cli_unreachable_broker_exits_1_with_a_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edge listen` turns an unreachable broker into exit code 1 and one message on stderr."""
    monkeypatch.setattr("edge.cli.setup_logging", lambda level: None)  # keep pytest's handlers
    assert main(["listen", "--broker", f"127.0.0.1:{free_port()}", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge: error: cannot reach the MQTT broker at 127.0.0.1:")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--broker", "mqtt.local"], ("mqtt.local", 1883)),
        (["--broker", "10.0.0.2:8883"], ("10.0.0.2", 8883)),
        (["--broker", "[::1]:1884"], ("::1", 1884)),
    ],
)
def test_broker_argument_forms(argv: list[str], expected: tuple[str, int]) -> None:
    """--broker accepts HOST, HOST:PORT and [IPv6]:PORT."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(argv).broker == expected


@pytest.mark.parametrize(
    "argv",
    [["--broker", "host:notaport"], ["--device", "a/b"], ["--count", "0"], ["--timeout", "-1"]],
)
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    """Malformed options are rejected by the parser (exit 2)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2


def test_tls_and_login_from_flags_or_the_daemon_config(tmp_path: Path) -> None:
    """Against a broker that wants TLS with a client certificate and a password: `edge listen`
    gets in with the TLS and login options, or with --config pointing at a daemon's
    configuration (which also picks its device); without the password it exits with a message
    that says what to give."""
    certs = tmp_path / "certs"
    certs.mkdir()
    tls_conf = make_certificates(certs)
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "viewer", "pw-123"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "pw").write_text("pw-123\n")
    broker = Broker(
        tmp_path / "mosquitto",
        extra_conf=f"{tls_conf}password_file {passwd}\n",
    )
    broker.conf_path.write_text(
        broker.conf_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    broker.start()
    tls = ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem")]
    tls += ["--tls-key", str(certs / "client.key")]
    try:
        publish = [*tls, "--username", "viewer", "--password-file", str(tmp_path / "pw")]
        retained = retain_over_tls(broker, certs, "edge/dev9/status", b"online")
        assert retained

        def edge_listen(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "edge", "listen", "--count", "1", "--timeout", "10", *args],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )

        flags = edge_listen("--broker", f"{broker.host}:{broker.port}", *publish)
        assert flags.returncode == 0, flags.stderr
        assert "dev9 status online" in flags.stdout

        config = tmp_path / "edge.toml"
        config.write_text(
            f'device = "dev9"\n[model]\npath = "shapes-detector"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "viewer"\n'
            f'password_file = "{tmp_path / "pw"}"\ntls_ca = "{certs / "ca.pem"}"\n'
            f'tls_cert = "{certs / "client.pem"}"\ntls_key = "{certs / "client.key"}"\n'
            '[[cameras]]\nname = "cam"\nsource = "synthetic"\n'
        )
        from_config = edge_listen("--config", str(config))
        assert from_config.returncode == 0, from_config.stderr
        assert "dev9 status online" in from_config.stdout

        anonymous = edge_listen("--broker", f"{broker.host}:{broker.port}", *tls)
        assert anonymous.returncode != 0
        assert "refused the connection" in anonymous.stderr
        assert "--username and --password-file" in anonymous.stderr
        assert "Traceback" not in anonymous.stderr
    finally:
        broker.kill()


def retain_over_tls(broker: Broker, certs: Path, topic: str, payload: bytes) -> bool:
    """Publish one retained message over TLS with the test login; True once acknowledged."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set("viewer", "pw-123")
    client.tls_set(
        ca_certs=str(certs / "ca.pem"),
        certfile=str(certs / "client.pem"),
        keyfile=str(certs / "client.key"),
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(10)
        return info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_stats_and_details_show_a_models_delegate_chain(broker: Broker) -> None:
    """A model on a delegate chain is shown with the delegate running it, the chain, its switch
    count and the last switch, from the stats' failover entry and from the status details."""
    chain = {
        "active": "xnnpack",
        "chain": ["edgetpu", "xnnpack"],
        "switches": 1,
        "last_switch": {"source": "edgetpu", "target": "xnnpack", "reason": "invoke timed out"},
    }
    stats = {"cameras": {}, "models": {"det": {"delegate": "xnnpack", "failover": chain}}}
    details = {
        "boot_id": "b",
        "degraded": ["model det: running on xnnpack"],
        "failover": {"det": chain},
    }
    retain(
        broker,
        [
            ("edge/dev1/stats", json.dumps(stats).encode()),
            ("edge/dev1/status/details", json.dumps(details).encode()),
        ],
    )
    out = io.StringIO()
    listen(broker.host, broker.port, "edge", "dev1", False, 2, 10, out)
    shown = (
        "model det on xnnpack (chain edgetpu,xnnpack; 1 switch, last edgetpu→xnnpack: "
        "invoke timed out)"
    )
    assert sorted(line.split(" ", 1)[1] for line in out.getvalue().splitlines()) == [
        f"dev1 stats {shown} (retained)",
        f"dev1/status DEGRADED: model det: running on xnnpack; {shown} (retained)",
    ]


def test_stats_show_the_online_requests(broker: Broker) -> None:
    """The stats line sums up the online requests: answered, errors of every reason, expired
    and the latency p50."""
    online = {
        "answered": 12,
        "errors": {"busy": 2, "undecodable": 1},
        "expired": 4,
        "latency_ms": {"p50": 7.25, "p99": 30.0},
    }
    retain(broker, [("edge/dev1/stats", json.dumps({"cameras": {}, "online": online}).encode())])
    out = io.StringIO()
    listen(broker.host, broker.port, "edge", "dev1", False, 1, 10, out)
    assert out.getvalue().splitlines()[0].split(" ", 1)[1] == (
        "dev1 stats online 12 answered, 3 errors, 4 expired, p50 7.2 ms (retained)"
    )
