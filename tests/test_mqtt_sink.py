"""MqttSink against a real mosquitto: order, status and Last Will, outages, restarts, bounds,
poison messages, callback failures, protocol fallback, credentials."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, Subscriber, free_port, make_certificates, wait_for

from edge.errors import ConfigError
from edge.outbox import Outbox
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_client import LinkEvent
from edge.sinks.mqtt_refusals import POISON_STRIKES
from edge.sinks.mqtt_settings import MqttSettings, validate_topic_part

DEVICE = "dev1"
RESULTS = f"edge/{DEVICE}/+/result"

# A publisher in its own process, so that the test can SIGKILL it. argv: port, outbox path ("-"
# for RAM only), number of results. It prints its stats as one JSON line every 20 ms.
CHILD = r"""
import json, sys, time
from pathlib import Path
from edge.outbox import Outbox
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings
port, db, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = MqttSettings(device="dev1", host="127.0.0.1", port=port)
sink = MqttSink(s, Outbox(None if db == "-" else Path(db), s.outbox_max_rows))
sink.start()
for i in range(n):
    sink.publish_result("cam", json.dumps({"seq": i}).encode())
while True:
    print(json.dumps(sink.stats()), flush=True)
    time.sleep(0.02)
"""


def settings(broker: Broker, **kw: Any) -> MqttSettings:
    return MqttSettings(device=DEVICE, host=broker.host, port=broker.port, **kw)


def result(i: int) -> bytes:
    return json.dumps({"seq": i}).encode()


def seqs(sub: Subscriber, suffix: str = "/result") -> list[int]:
    return [int(json.loads(p)["seq"]) for p in sub.payloads(suffix)]


def assert_complete_in_order(received: list[int], n: int, max_dups: int) -> None:
    """Every seq 0..n-1 arrived; first arrivals are in order; duplicates are bounded."""
    firsts: list[int] = []
    seen: set[int] = set()
    for s in received:
        if s not in seen:
            seen.add(s)
            firsts.append(s)
    assert firsts == list(range(n)), f"missing or out of order: {sorted(set(range(n)) - seen)}"
    assert len(received) - n <= max_dups


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    """Sinks a test creates; closed at teardown even if the test fails."""
    made: list[MqttSink] = []
    yield made
    for sink in made:
        sink.close(timeout=1.0)


def start_sink(sinks: list[MqttSink], s: MqttSettings, db: Path | None) -> MqttSink:
    sink = MqttSink(s, Outbox(db, s.outbox_max_rows))
    sinks.append(sink)
    sink.start()
    return sink


def connected(sink: MqttSink, timeout: float = 10.0) -> bool:
    return wait_for(lambda: bool(sink.stats()["connected"]), timeout)


class Producer(threading.Thread):
    """Publishes results 0, 1, 2, ... at ``rate_hz`` until stopped; can pause."""

    def __init__(self, sink: MqttSink, rate_hz: float) -> None:
        super().__init__(name="test-producer", daemon=True)
        self.sink = sink
        self.period = 1.0 / rate_hz
        self.count = 0
        self.running = threading.Event()
        self.running.set()
        self.stopped = threading.Event()

    def run(self) -> None:
        next_t = time.monotonic()
        while not self.stopped.is_set():
            self.running.wait()
            if self.stopped.is_set():
                return
            self.sink.publish_result("cam", result(self.count))
            self.count += 1
            next_t += self.period
            self.stopped.wait(max(0.0, next_t - time.monotonic()))

    def produced(self, n: int, timeout: float) -> bool:
        return wait_for(lambda: self.count >= n, timeout)

    def stop(self) -> None:
        self.stopped.set()
        self.running.set()
        self.join(5)


class Child:
    """The CHILD publisher process and its latest stats line."""

    def __init__(self, port: int, db: Path | None, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(port), str(db) if db else "-", str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_stats(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """Read stats lines until one satisfies ``predicate``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            stats: dict[str, Any] = json.loads(line)
            if predicate(stats):
                return stats
        raise AssertionError("child publisher never reached the expected state")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.kill()


# -- basics -------------------------------------------------------------------------------------


def test_results_arrive_in_order_on_per_camera_topics_and_status_goes_online_then_stopped(
    broker: Broker, sinks: list[MqttSink]
) -> None:
    """Results keep their order per camera topic; status is online, then retained stopped."""
    sub = Subscriber(broker, f"edge/{DEVICE}/#")
    sink = start_sink(sinks, settings(broker), None)
    assert connected(sink)
    for i in range(60):
        sink.publish_result("front" if i % 2 == 0 else "back", result(i))
    assert sub.wait_for_count(60, 10, "/result")
    assert seqs(sub, "/front/result") == list(range(0, 60, 2))
    assert seqs(sub, "/back/result") == list(range(1, 60, 2))
    assert all(not m.retain for m in sub.messages if m.topic.endswith("/result"))
    sink.close()
    assert sub.wait_until(lambda ms: ms[-1].payload == b"stopped", 10)
    assert sub.payloads("/status") == [b"online", b"stopped"]
    assert sink.stats()["delivered"] == 60
    sub.close()
    late = Subscriber(broker, f"edge/{DEVICE}/status", client_id="late")
    assert late.wait_for_count(1, 5)
    assert late.messages[0].payload == b"stopped" and late.messages[0].retain
    late.close()


def test_stats_are_retained_and_snapshots_are_not(broker: Broker, sinks: list[MqttSink]) -> None:
    """stats is published retained, a snapshot as raw bytes without retain."""
    sink = start_sink(sinks, settings(broker), None)
    assert connected(sink)
    sub = Subscriber(broker, f"edge/{DEVICE}/#")
    sink.publish_stats(b'{"fps": 9.5}')
    sink.publish_snapshot("front", b"\xff\xd8jpeg\xff\xd9")
    assert sub.wait_until(lambda ms: any(m.topic.endswith("/snapshot") for m in ms), 5)
    assert sub.wait_until(lambda ms: any(m.topic.endswith("/stats") for m in ms), 5)
    sub.close()
    late = Subscriber(broker, f"edge/{DEVICE}/+", client_id="late")
    assert late.wait_until(lambda ms: any(m.topic.endswith("/stats") for m in ms), 5)
    stats = next(m for m in late.messages if m.topic.endswith("/stats"))
    assert stats.retain and stats.payload == b'{"fps": 9.5}'
    snap = next(m for m in sub.messages if m.topic.endswith("/snapshot"))
    assert snap.payload == b"\xff\xd8jpeg\xff\xd9" and not snap.retain
    late.close()


def test_last_will_offline_when_the_publisher_is_sigkilled(
    broker: Broker, children: list[Child]
) -> None:
    """SIGKILL of the publisher process makes the broker publish the retained Will 'offline'."""
    sub = Subscriber(broker, f"edge/{DEVICE}/status")
    child = Child(broker.port, None, 0)
    children.append(child)
    child.wait_stats(lambda s: s["connected"], 10)
    assert sub.wait_until(lambda ms: b"online" in [m.payload for m in ms], 5)
    child.kill()
    assert sub.wait_until(lambda ms: ms[-1].payload == b"offline", 10)
    sub.close()


def test_prompt_acks_write_nothing_to_disk(
    broker: Broker, sinks: list[MqttSink], tmp_path: Path
) -> None:
    """While the broker acknowledges promptly, no result row is ever written to the outbox file."""
    sub = Subscriber(broker, RESULTS)
    db = tmp_path / "outbox.db"
    sink = start_sink(sinks, settings(broker), db)
    assert connected(sink)
    for i in range(300):
        sink.publish_result("cam", result(i))
    assert sub.wait_for_count(300, 10)
    assert wait_for(lambda: sink.stats()["delivered"] == 300, 5)
    sink.close()
    assert sink.stats()["inserts"] == 0
    assert seqs(sub) == list(range(300))
    reopened = Outbox(db, 10)
    assert reopened.pending_disk == 0
    reopened.close()


# -- outages ------------------------------------------------------------------------------------


def outage(
    broker: Broker, sinks: list[MqttSink], tmp_path: Path, outage_s: float, rate_hz: float
) -> None:
    """Produce at ``rate_hz`` through a broker SIGKILL lasting ``outage_s`` and a restart on the
    same port; every result must arrive once, in order (duplicates at most the window)."""
    sub = Subscriber(broker, RESULTS)
    s = settings(broker, inflight=8)
    sink = start_sink(sinks, s, tmp_path / "outbox.db")
    assert connected(sink)
    producer = Producer(sink, rate_hz)
    producer.start()
    try:
        assert producer.produced(20, 10)
        # Quiesce, so that the broker holds nothing it acknowledged but did not forward (its own
        # loss on SIGKILL, not the sink's), then freeze it: what the sink sends from now on is
        # in flight, unacknowledged, when the broker dies, and must be sent again.
        producer.running.clear()
        assert wait_for(lambda: len(sub.messages) >= producer.count, 10)
        broker.freeze()
        producer.running.set()
        assert wait_for(lambda: sink.stats()["inflight"] == s.inflight, 10)
        broker.kill()
        start = producer.count
        assert wait_for(lambda: not sink.stats()["connected"], 10)
        assert producer.produced(start + int(outage_s * rate_hz), outage_s + 10)
        mid = sink.stats()
        assert mid["pending_disk"] > 0, "results produced while disconnected must be on disk"
        broker.restart()
        assert connected(sink, 40)
        assert producer.produced(producer.count + 10, 10)
    finally:
        producer.stop()
    n = producer.count
    assert sub.wait_until(lambda ms: len({json.loads(m.payload)["seq"] for m in ms}) >= n, 30)
    assert wait_for(lambda: sink.stats()["pending_ram"] + sink.stats()["pending_disk"] == 0, 10)
    assert_complete_in_order(seqs(sub), n, s.inflight)
    stats = sink.stats()
    assert stats["reconnects"] >= 1
    assert stats["inserts"] > 0
    sub.close()


def test_broker_sigkill_for_a_few_seconds_loses_nothing(
    broker: Broker, sinks: list[MqttSink], tmp_path: Path
) -> None:
    """A 3 s broker outage (SIGKILL, restart on the same port) at 20 results/s loses nothing."""
    outage(broker, sinks, tmp_path, outage_s=3.0, rate_hz=20.0)


@pytest.mark.slow
def test_broker_sigkill_for_30_seconds_loses_nothing(
    broker: Broker, sinks: list[MqttSink], tmp_path: Path
) -> None:
    """A 30 s broker outage at 20 results/s loses nothing and keeps the order."""
    outage(broker, sinks, tmp_path, outage_s=30.0, rate_hz=20.0)


def test_publisher_sigkilled_during_an_outage_delivers_its_backlog_after_restart(
    broker: Broker, sinks: list[MqttSink], children: list[Child], tmp_path: Path
) -> None:
    """Results spooled by a process killed during an outage are delivered, in order, by the next
    process that opens the same outbox."""
    sub = Subscriber(broker, RESULTS)
    broker.stop()
    db = tmp_path / "outbox.db"
    child = Child(broker.port, db, 200)
    children.append(child)
    child.wait_stats(lambda s: s["pending_disk"] == 200, 10)
    child.kill()
    broker.restart()
    sink = start_sink(sinks, settings(broker), db)
    assert sub.wait_for_count(200, 15)
    assert seqs(sub) == list(range(200))
    sink.publish_result("cam", result(200))
    assert sub.wait_for_count(201, 5)
    assert seqs(sub)[-1] == 200
    sub.close()


def test_results_unacknowledged_for_spool_after_s_go_to_disk_while_connected(
    broker: Broker, sinks: list[MqttSink], tmp_path: Path
) -> None:
    """A frozen broker (TCP up, no acknowledgements): after spool_after_s the waiting results are
    on disk; once it thaws they are delivered and their rows deleted."""
    sub = Subscriber(broker, RESULTS)
    sink = start_sink(sinks, settings(broker, spool_after_s=0.5), tmp_path / "outbox.db")
    assert connected(sink)
    broker.freeze()
    try:
        for i in range(30):
            sink.publish_result("cam", result(i))
        assert wait_for(lambda: sink.stats()["pending_disk"] == 30, 5)
        assert sink.stats()["connected"]
    finally:
        broker.thaw()
    assert sub.wait_for_count(30, 10)
    assert seqs(sub) == list(range(30))
    assert wait_for(lambda: sink.stats()["pending_disk"] == 0, 5)
    assert sink.stats()["inserts"] == 30
    sub.close()


def test_qos0_results_are_spooled_while_down_and_sent_once_after(
    tmp_path: Path, sinks: list[MqttSink]
) -> None:
    """With qos=0, results produced while the broker is down are spooled and delivered once
    (in order) after it returns; nothing stays pending."""
    broker = Broker(tmp_path / "mosquitto", extra_conf="queue_qos0_messages true")
    broker.start()
    try:
        sub = Subscriber(broker, RESULTS)
        broker.stop()
        sink = start_sink(sinks, settings(broker, qos=0), tmp_path / "outbox.db")
        for i in range(10):
            sink.publish_result("cam", result(i))
        assert wait_for(lambda: sink.stats()["pending_disk"] == 10, 5)
        broker.restart()
        assert sub.wait_for_count(10, 15)
        assert wait_for(lambda: sink.stats()["delivered"] == 10, 5)
        assert seqs(sub) == list(range(10))
        assert sink.stats()["pending_disk"] + sink.stats()["pending_ram"] == 0
        sub.close()
    finally:
        broker.kill()


def test_full_outbox_drops_the_oldest_while_the_broker_is_down_at_start(
    broker: Broker, sinks: list[MqttSink], tmp_path: Path
) -> None:
    """Broker down at start: start() returns at once, the newest max_rows results survive and
    the dropped ones are counted."""
    sub = Subscriber(broker, RESULTS)
    broker.stop()
    s = settings(broker, outbox_max_rows=20, inflight=4)
    t0 = time.monotonic()
    sink = start_sink(sinks, s, tmp_path / "outbox.db")
    assert time.monotonic() - t0 < 1.0
    for i in range(50):
        sink.publish_result("cam", result(i))
    assert wait_for(lambda: sink.stats()["pending_disk"] == 20, 5)
    assert sink.stats()["dropped_full"] == 30
    broker.restart()
    assert sub.wait_for_count(20, 15)
    assert wait_for(lambda: sink.stats()["delivered"] == 20, 5)
    assert seqs(sub) == list(range(30, 50))
    sub.close()


# -- faults ---------------------------------------------------------------------------------------


class FaultySink(MqttSink):
    """Every connect and publish callback raises after doing its work (handing its event over
    to the sink is the last thing each does)."""

    def _push(self, event: LinkEvent) -> None:
        super()._push(event)
        if event.kind in ("up", "ack"):
            raise RuntimeError(f"injected fault in the callback of {event.kind!r}")


def test_exceptions_in_callbacks_do_not_stop_delivery(broker: Broker) -> None:
    """Callbacks that raise are counted and logged; paho's thread lives and delivery goes on."""
    sub = Subscriber(broker, RESULTS)
    s = settings(broker)
    sink = FaultySink(s, Outbox(None, s.outbox_max_rows))
    sink.start()
    try:
        assert connected(sink)
        for i in range(50):
            sink.publish_result("cam", result(i))
        assert sub.wait_for_count(50, 10)
        assert seqs(sub) == list(range(50))
        assert wait_for(lambda: sink.stats()["callback_errors"] >= 51, 5)
        assert any(t.name.startswith("paho-mqtt-client-") for t in threading.enumerate())
        assert sink.stats()["connected"]
    finally:
        sink.close()
        sub.close()


def test_oversize_result_is_refused_before_sending(broker: Broker, sinks: list[MqttSink]) -> None:
    """A result above max_payload_bytes is counted in 'oversize' and never reaches the broker."""
    sub = Subscriber(broker, RESULTS)
    sink = start_sink(sinks, settings(broker, max_payload_bytes=100), None)
    assert connected(sink)
    sink.publish_result("cam", json.dumps({"seq": 0, "pad": "x" * 200}).encode())
    sink.publish_result("cam", result(1))
    assert sub.wait_for_count(1, 5)
    assert wait_for(lambda: sink.stats()["delivered"] == 1, 5)
    assert seqs(sub) == [1]
    assert sink.stats()["oversize"] == 1
    sizes = [int(n) for n in re.findall(r"Received PUBLISH .*\((\d+) bytes\)", broker.log())]
    assert sizes and max(sizes) <= 100
    sub.close()


def test_broker_acl_rejection_is_counted_and_not_retried(
    tmp_path: Path, sinks: list[MqttSink]
) -> None:
    """Under MQTT 5 a result the broker refuses (ACL: PUBACK 0x87) is counted as rejected once."""
    acl = tmp_path / "acl"
    acl.write_text(
        f"topic readwrite edge/{DEVICE}/status\ntopic readwrite edge/{DEVICE}/ok/#\n"
        "topic read edge/#\n"
    )
    broker = Broker(tmp_path / "mosquitto", extra_conf=f"acl_file {acl}")
    broker.start()
    try:
        sub = Subscriber(broker, RESULTS)
        sink = start_sink(sinks, settings(broker), None)
        assert connected(sink)
        sink.publish_result("ok", result(0))
        sink.publish_result("denied", result(1))
        sink.publish_result("ok", result(2))
        assert sub.wait_for_count(2, 5)
        assert wait_for(lambda: sink.stats()["rejected"] == 1, 5)
        assert seqs(sub) == [0, 2]
        assert broker.log().count("Denied PUBLISH") == 1
        sub.close()
    finally:
        sinks.pop().close(1.0)
        broker.kill()


def test_broker_size_limit_under_mqtt5_does_not_loop(tmp_path: Path, sinks: list[MqttSink]) -> None:
    """A result over mosquitto's message_size_limit (PUBACK 0x95, which paho cannot decode and
    drops the connection on) is given up after POISON_STRIKES tries; later results arrive."""
    broker = Broker(tmp_path / "mosquitto", extra_conf="message_size_limit 1000")
    broker.start()
    try:
        sub = Subscriber(broker, RESULTS)
        sink = start_sink(sinks, settings(broker), None)
        assert connected(sink)
        sink.publish_result("cam", result(0))
        sink.publish_result("cam", json.dumps({"seq": 1, "pad": "x" * 2000}).encode())
        for i in range(2, 6):
            sink.publish_result("cam", result(i))
        assert wait_for(lambda: sink.stats()["rejected"] == 1, 20)
        assert sub.wait_until(lambda ms: {2, 3, 4, 5} <= set(seqs(sub)), 10)
        received = seqs(sub)
        assert 1 not in received
        assert sorted(set(received)) == [0, 2, 3, 4, 5]
        assert wait_for(lambda: sink.stats()["pending_ram"] == 0, 5)
        sinks.pop().close(1.0)
        assert broker.log().count("Dropped too large PUBLISH") == POISON_STRIKES
        sub.close()
    finally:
        broker.kill()


# -- protocol, credentials, settings ---------------------------------------------------------------


def test_falls_back_to_mqtt_311_when_the_broker_refuses_5(
    tmp_path: Path, sinks: list[MqttSink]
) -> None:
    """Against amqtt (MQTT 3.1.1 only; it never answers an MQTT 5 CONNECT with a Will) the sink
    switches to 3.1.1 by itself and delivers."""
    pytest.importorskip("amqtt")
    port = free_port()
    conf = tmp_path / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    amqtt = Path(sys.executable).with_name("amqtt")
    proc = subprocess.Popen(
        [str(amqtt), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert wait_for(listening, 20)
        sub = Subscriber(("127.0.0.1", port), RESULTS)
        sink = MqttSink(MqttSettings(device=DEVICE, host="127.0.0.1", port=port), Outbox(None, 99))
        sink.v5_connack_timeout_s = 1.0
        sinks.append(sink)
        sink.start()
        for i in range(5):
            sink.publish_result("cam", result(i))
        assert sub.wait_for_count(5, 15)
        assert seqs(sub) == list(range(5))
        assert sink.stats()["protocol"] == 4
        sub.close()
        sinks.pop().close(2.0)
    finally:
        proc.terminate()
        proc.wait(10)


def test_password_from_the_systemd_credentials_directory(
    tmp_path: Path, sinks: list[MqttSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no password_file, $CREDENTIALS_DIRECTORY/mqtt-password authenticates; repr hides it."""
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "s3cret-pw"],
        check=True,
        capture_output=True,
    )
    broker = Broker(tmp_path / "mosquitto", extra_conf=f"password_file {passwd}")
    # The generated config allows anonymous clients; this broker must not.
    broker.conf_path.write_text(
        broker.conf_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    broker.start()
    try:
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "mqtt-password").write_text("s3cret-pw\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        s = settings(broker, username="edge")
        sink = start_sink(sinks, s, None)
        assert connected(sink)
        assert "s3cret" not in repr(sink) and "s3cret" not in repr(s)
        assert "s3cret" not in repr(settings(broker, username="edge", password="s3cret-pw"))
        sinks.pop().close(1.0)
    finally:
        broker.kill()


# paho leaves the socket of a failed TLS handshake to the garbage collector (closed when freed).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_with_a_client_certificate(
    tmp_path: Path, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    """Against a mosquitto TLS listener that requires client certificates: with the CA, the
    client certificate and its key the sink connects, verifies the server and gets results
    acknowledged; without the client certificate the broker never lets it in, and the log
    says where to look; with the wrong CA the log names the verification failure."""
    certs = tmp_path / "certs"
    certs.mkdir()
    broker = Broker(tmp_path / "mosquitto", extra_conf=make_certificates(certs))
    broker.start()
    try:
        s = settings(
            broker,
            tls_ca=certs / "ca.pem",
            tls_cert=certs / "client.pem",
            tls_key=certs / "client.key",
        )
        sink = start_sink(sinks, s, None)
        assert connected(sink), broker.log_path.read_text()[-2000:]
        for i in range(5):
            sink.publish_result("cam", result(i))
        assert wait_for(lambda: sink.stats()["delivered"] == 5, 10)
        sinks.pop().close(2.0)

        anonymous = start_sink(sinks, settings(broker, tls_ca=certs / "ca.pem"), None)
        assert not connected(anonymous, 3.0)
        sinks.pop().close(1.0)
        assert "closed the connection before accepting it" in caplog.text
        assert "check the TLS settings (tls_ca, tls_cert, tls_key)" in caplog.text

        wrong_ca = settings(
            broker,
            tls_ca=certs / "client.pem",
            tls_cert=certs / "client.pem",
            tls_key=certs / "client.key",
        )
        start_sink(sinks, wrong_ca, None)
        assert wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, 5), caplog.text
        sinks.pop().close(1.0)
        gc.collect()  # here, where the warning about paho's unclosed socket is ignored
    finally:
        broker.kill()


@pytest.mark.parametrize(
    "name",
    ["", "a+b", "a#", "a/b", "$SYS", "nul\x00", "tab\there", "x" * 65, "bad\udcff", "caméra"],
)
def test_unsafe_topic_parts_are_refused(name: str) -> None:
    """Names that would break or escape the topic tree, or that the configuration refuses for a
    device or camera name (one rule: "caméra" too), raise ConfigError."""
    with pytest.raises(ConfigError):
        validate_topic_part(name, "camera")


@pytest.mark.parametrize("name", ["front", "cam-1", "Garage_2", "x" * 64, "v1.2"])
def test_plain_topic_parts_are_accepted(name: str) -> None:
    """Ordinary names pass validation."""
    validate_topic_part(name, "camera")


def test_settings_report_every_problem_at_once() -> None:
    """An invalid MqttSettings raises one ConfigError listing each bad field."""
    with pytest.raises(ConfigError) as info:
        MqttSettings(device="a/b", port=0, qos=3, protocol="4", inflight=10, outbox_max_rows=5)
    fields = {p.split(":")[0] for p in info.value.problems}
    assert fields == {
        "mqtt.device",
        "mqtt.port",
        "mqtt.qos",
        "mqtt.protocol",
        "mqtt.outbox_max_rows",
    }


def test_paths_given_as_text_become_paths() -> None:
    """Path settings given as strings (as config files have them) are held as Path, '' as None."""
    s = MqttSettings(device="d", password_file="/run/pw", tls_ca="")  # type: ignore[arg-type]
    assert s.password_file == Path("/run/pw")
    assert s.tls_ca is None


def test_camera_name_is_validated_at_publish(broker: Broker, sinks: list[MqttSink]) -> None:
    """publish_result with a camera name that is not a topic level raises ConfigError."""
    sink = start_sink(sinks, settings(broker), None)
    with pytest.raises(ConfigError):
        sink.publish_result("a/b", b"{}")
