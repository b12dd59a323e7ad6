"""Tests for edge.notify: real AF_UNIX datagram sockets stand in for systemd's notify socket."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.notify import Notifier


class Receiver:
    """A bound datagram socket playing systemd's side; ``env`` points a Notifier at it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def recv(self) -> str:
        return self.sock.recv(4096).decode()


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield Receiver(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"edge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    yield Receiver(sock, "@" + name)
    sock.close()


@pytest.mark.parametrize("kind", ["path_receiver", "abstract_receiver"])
def test_messages_arrive_on_both_socket_kinds(kind: str, request: pytest.FixtureRequest) -> None:
    """READY, STATUS, WATCHDOG, STOPPING and RELOADING reach a path and an abstract socket."""
    rx: Receiver = request.getfixturevalue(kind)
    n = Notifier(rx.env)
    assert n.enabled
    n.ready("running 1 camera(s)")
    assert rx.recv() == "READY=1\nSTATUS=running 1 camera(s)"
    n.ready()
    assert rx.recv() == "READY=1"
    n.status("camera front offline")
    assert rx.recv() == "STATUS=camera front offline"
    n.watchdog()
    assert rx.recv() == "WATCHDOG=1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    head, stamp = rx.recv().split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert head == "RELOADING=1"
    key, _, value = stamp.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    n.stopping()
    assert rx.recv() == "STOPPING=1"
    n.close()


def test_status_is_flattened_to_one_line(path_receiver: Receiver) -> None:
    """Newlines in status text cannot inject extra assignments, and long text is cut."""
    n = Notifier(path_receiver.env)
    n.status("line one\nWATCHDOG=1\r\nline three")
    assert path_receiver.recv() == "STATUS=line one WATCHDOG=1 line three"
    n.status("x" * 5000)
    assert path_receiver.recv() == "STATUS=" + "x" * 1024
    n.close()


def test_without_socket_everything_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    """With no NOTIFY_SOCKET the notifier is disabled, silent, and never raises."""
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval is None
    with caplog.at_level(logging.DEBUG, logger="edge.notify"):
        n.ready("x")
        n.watchdog()
        n.status("x")
        n.reloading()
        n.stopping()
        n.close()
        n.close()
    assert caplog.records == []


def test_default_env_is_the_process_environment(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit mapping the notifier reads os.environ."""
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.env["NOTIFY_SOCKET"])
    monkeypatch.setenv("WATCHDOG_USEC", "2500000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert n.watchdog_interval == 2.5
    n.watchdog()
    assert path_receiver.recv() == "WATCHDOG=1"
    n.close()


def test_unusable_address_disables_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A NOTIFY_SOCKET that is neither a path nor @abstract turns notifications off, loudly."""
    with caplog.at_level(logging.WARNING, logger="edge.notify"):
        n = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert "not a unix socket path" in caplog.text
    n.ready()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("500000", "self", 0.5),
        ("30000000", "other", None),
        ("0", None, None),
        ("-5", None, None),
        ("30s", None, None),
        ("30000000", "not-a-pid", None),
        (None, "self", None),
    ],
)
def test_watchdog_interval_parsing(
    usec: str | None, pid: str | None, expected: float | None
) -> None:
    """WATCHDOG_USEC gives seconds, but only when WATCHDOG_PID is unset or names this process."""
    env: dict[str, str] = {}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    elif pid is not None:
        env["WATCHDOG_PID"] = pid
    assert Notifier(env).watchdog_interval == expected


def test_vanished_socket_warns_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sends to a removed socket do not raise, warn once per outage, and resume when it returns."""
    path = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    n = Notifier({"NOTIFY_SOCKET": str(path)})
    rx.close()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="edge.notify"):
        n.ready("x")
        n.watchdog()
        n.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "READY=1" in warnings[0].getMessage()

    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.settimeout(5)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.notify"):
        n.watchdog()
        assert rx.recv(64) == b"WATCHDOG=1"
        rx.close()
        path.unlink()
        n.watchdog()
    assert len(caplog.records) == 1, "a new outage after a success is reported again"
    n.close()


def test_abstract_socket_without_listener_does_not_raise() -> None:
    """An abstract name nobody listens on (systemd gone) is a logged failure, not an exception."""
    n = Notifier({"NOTIFY_SOCKET": f"@edge-test-absent-{uuid.uuid4().hex}"})
    assert n.enabled
    n.ready()
    n.watchdog()
    n.close()


def test_closed_notifier_sends_nothing(path_receiver: Receiver) -> None:
    """After close() the notifier is disabled and sends nothing."""
    n = Notifier(path_receiver.env)
    n.close()
    assert not n.enabled
    n.ready()
    n.watchdog()
    n.close()
    path_receiver.sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        path_receiver.sock.recv(64)


def test_concurrent_senders_and_close(path_receiver: Receiver) -> None:
    """Threads pinging while another closes the notifier neither raise nor garble datagrams."""
    n = Notifier(path_receiver.env)
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def ping() -> None:
        try:
            start.wait()
            for _ in range(200):
                n.watchdog()
                n.status("busy")
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=ping) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait()
    n.close()
    for t in threads:
        t.join()
    assert errors == []
    path_receiver.sock.settimeout(0)
    received = []
    while True:
        try:
            received.append(path_receiver.sock.recv(64))
        except BlockingIOError:
            break
    assert set(received) <= {b"WATCHDOG=1", b"STATUS=busy"}
    assert len(received) <= 4 * 200 * 2


def test_full_receive_queue_does_not_block(path_receiver: Receiver) -> None:
    """When systemd does not drain its socket, pings are dropped instead of blocking the caller."""
    n = Notifier(path_receiver.env)
    done = threading.Event()

    def flood() -> None:
        for _ in range(5000):
            n.watchdog()
        done.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    assert done.wait(10), "sender blocked on a full notify socket"
    t.join()
    n.close()
