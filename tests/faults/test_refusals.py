"""A topic the broker refuses must not starve the others: a real mosquitto ACL that denies one
camera's topic (MQTT 5: PUBACK "not authorized"), and a broker that refuses by closing the
connection (as MQTT 3.1.1 brokers must: a proxy in front of mosquitto that drops the connection
when it sees a PUBLISH on the denied topic)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import Broker, free_port
from faultkit import BASE, DaemonProc, config_text, last_json, report, results, subscribe, tally


def test_acl_denied_camera_is_quarantined_and_the_other_flows(tmp_path: Path) -> None:
    """With camera b's topic denied by the broker's ACL, camera a's results all arrive, b is
    quarantined after a few refusals with one ERROR naming the topic, and stats say so."""
    acl = tmp_path / "acl"
    # Lines before the first `user` are for anonymous clients (the test's subscriber). Camera
    # b may publish its track events and state, not its results.
    acl.write_text(
        "topic read #\n"
        f"user edge\ntopic write {BASE}/a/#\ntopic write {BASE}/status\n"
        f"topic write {BASE}/status/details\ntopic write {BASE}/stats\n"
        f"topic write {BASE}/b/events\ntopic write {BASE}/b/state\n"
        f"topic write {BASE}/b/detect/state\n"
    )
    broker = Broker(tmp_path / "mosquitto", extra_conf=f"acl_file {acl}\n")
    broker.start()
    try:
        sub = subscribe(broker, "reader")
        pw = tmp_path / "pw"
        pw.write_text("x\n")
        d = DaemonProc(
            tmp_path,
            config_text(
                broker,
                tmp_path / "state",
                cameras={"a": {}, "b": {}},
                mqtt={"username": "edge", "password_file": str(pw)},
            ),
        )
        try:
            assert d.wait_log("the broker refuses results on", timeout=30), d.log()
            n = len(results(sub, "a"))
            assert sub.wait_until(
                lambda ms: sum("/a/result" in m.topic for m in ms) >= n + 100, 15
            ), f"camera a starved beside a refused camera\n{d.log()}"
            stats = last_json(sub, "/stats")
            assert stats is not None
            assert f"{BASE}/b/result" in stats["mqtt"]["quarantined"], stats["mqtt"]
            assert stats["mqtt"]["dropped_refused"] > 0
            assert any("broker refuses" in x for x in stats["degraded"]), stats["degraded"]
            assert d.stop() == 0
        finally:
            if d.proc.poll() is None:
                d.kill()
        assert d.log().count("the broker refuses results on") == 1, d.log()
        counts = tally(sub)
        report("ACL denies camera b (MQTT 5)", counts, d.proc.returncode)
        t = next(iter(counts.values()))
        assert {c for _, c in counts} == {"a"}, "a denied result reached the subscriber"
        assert (t.gaps, t.out_of_order) == (0, 0), t
        sub.close()
    finally:
        broker.kill()


class DroppingProxy:
    """TCP proxy to a broker that closes the client's connection as soon as the client sends a
    PUBLISH whose topic contains ``deny``: how a broker refuses a message on MQTT 3.1.1."""

    def __init__(self, target: Broker, deny: str) -> None:
        self.port = free_port()
        self.target = target
        self.deny = deny.encode()
        self.drops = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target.host, self.target.port))
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _pump_down(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src, dst)

    def _pump_up(self, src: socket.socket, dst: socket.socket) -> None:
        """Client → broker, packet by packet (MQTT fixed header + remaining length)."""
        buf = b""
        try:
            while data := src.recv(65536):
                buf += data
                while (packet := _split(buf)) is not None:
                    body, buf = packet
                    if body[0] >> 4 == 3 and self._topic(body).find(self.deny) >= 0:
                        self.drops += 1
                        _close(src, dst)
                        return
                    dst.sendall(body)
        except OSError:
            pass
        finally:
            _close(src, dst)

    @staticmethod
    def _topic(packet: bytes) -> bytes:
        i = 1
        while packet[i] & 0x80:
            i += 1
        i += 1
        n = int.from_bytes(packet[i : i + 2], "big")
        return packet[i + 2 : i + 2 + n]

    def close(self) -> None:
        self._stop = True
        self._server.close()


def _split(buf: bytes) -> tuple[bytes, bytes] | None:
    """One whole MQTT packet from the front of ``buf`` and the rest, or None if incomplete."""
    if len(buf) < 2:
        return None
    length, mult, i = 0, 1, 1
    while True:
        if i >= len(buf):
            return None
        length += (buf[i] & 0x7F) * mult
        if not buf[i] & 0x80:
            break
        mult *= 128
        i += 1
    end = i + 1 + length
    return (buf[:end], buf[end:]) if len(buf) >= end else None


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


@pytest.fixture
def proxied(broker: Broker) -> Iterator[DroppingProxy]:
    # Camera b's results only: its events would be quarantined the same way, its state and
    # detect/state (latest values, re-sent on every connect) are not guarded by the quarantine.
    proxy = DroppingProxy(broker, f"{BASE}/b/result")
    yield proxy
    proxy.close()


def test_broker_that_refuses_by_disconnecting_gets_the_topic_quarantined(
    broker: Broker, proxied: DroppingProxy, tmp_path: Path
) -> None:
    """MQTT 3.1.1 through a broker that drops the connection on camera b's publishes: after a
    few such drops b is quarantined and camera a's results all arrive, in order."""
    sub = subscribe(broker)
    d = DaemonProc(
        tmp_path,
        config_text(
            ("127.0.0.1", proxied.port),
            tmp_path / "state",
            cameras={"a": {}, "b": {}},
            mqtt={"protocol": "3.1.1", "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
        ),
    )
    try:
        assert d.wait_log("the broker refuses results on", timeout=40), d.log()
        n = len(results(sub, "a"))
        assert sub.wait_until(lambda ms: sum("/a/result" in m.topic for m in ms) >= n + 100, 15), (
            f"camera a starved\n{d.log()}"
        )
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    counts = tally(sub)
    report("broker disconnects on camera b's publishes (MQTT 3.1.1)", counts, d.proc.returncode)
    assert {c for _, c in counts} == {"a"}
    (t,) = counts.values()
    assert (t.gaps, t.out_of_order) == (0, 0), t
    assert t.duplicates <= 3 * 16, t
    sub.close()
