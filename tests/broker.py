"""A real mosquitto for the tests: free loopback port, temp config and persistence directory, and
the faults the sink must survive (clean stop, SIGKILL, restart on the same port). Also a small
collecting subscriber that keeps its broker-side session across broker restarts.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process bound to 127.0.0.1:<port>; the port stays the same across restarts.

    ``extra_conf`` lines are appended to the generated mosquitto.conf (e.g. ``message_size_limit``).
    Persistence is on and saved after every change, so a subscriber's session survives ``kill()``.
    """

    def __init__(self, workdir: Path, extra_conf: str = "", port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            # When run as root mosquitto drops to this user; as anyone else it is ignored.
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_on_changes true\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.log_path}\n"
            "log_type all\n"
            "connection_messages true\n"
            f"{extra_conf}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and return once it accepts TCP connections on the port."""
        if self.running:
            raise RuntimeError("broker already running")
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err}\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                # The broker has no readiness signal; its port opening is the event we wait for.
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout)
        self._close_proc()

    def kill(self) -> None:
        """SIGKILL: nothing is saved, every connection drops at once."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._close_proc()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read, forwarded or acknowledged."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Start again on the same port after ``stop()`` or ``kill()``."""
        self.start()

    def log(self) -> str:
        """The broker's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _close_proc(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the subscriber saw it. dup: the broker's DUP flag, set when the broker
    re-sends a message to this subscriber (after a reconnect, from its persisted session); it is
    never copied from the publisher's packet, so a publisher's own re-send arrives with it clear."""

    topic: str
    payload: bytes
    retain: bool
    dup: bool = False


class Subscriber:
    """Collects every message on ``topic`` (QoS 1) into ``messages``; thread-safe waits.

    It uses a persistent MQTT 3.1.1 session (clean_session false, fixed client id), so messages
    published while it is reconnecting after a broker restart are queued for it by the broker.
    """

    def __init__(
        self, broker: Broker | tuple[str, int], topic: str, client_id: str = "test-subscriber"
    ) -> None:
        host, port = (broker.host, broker.port) if isinstance(broker, Broker) else broker
        self.topic = topic
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("subscriber could not subscribe within 10 s")

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, *_args: object) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup))
            )
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        """Block until ``predicate(messages)`` is true or ``timeout`` seconds pass."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def wait_for_count(self, n: int, timeout: float, topic_suffix: str = "") -> bool:
        """Block until at least ``n`` messages whose topic ends with ``topic_suffix`` arrived."""
        return self.wait_until(
            lambda ms: sum(m.topic.endswith(topic_suffix) for m in ms) >= n, timeout
        )

    def payloads(self, topic_suffix: str = "") -> list[bytes]:
        """Payloads received so far on topics ending with ``topic_suffix``, in arrival order."""
        with self._cond:
            return [m.payload for m in self.messages if m.topic.endswith(topic_suffix)]

    def received(self, topic_suffix: str = "") -> list[Received]:
        """Messages received so far on topics ending with ``topic_suffix``, in arrival order."""
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``: for state with no event to wait on
    (another process's counters, a broker's file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def make_certificates(d: Path) -> str:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in
    ``d``. Returns the mosquitto.conf lines for a listener that uses them and requires a client
    certificate (``extra_conf`` of :class:`Broker`)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")  # fmt: skip
    return (
        f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\n"
        f"keyfile {d / 'server.key'}\nrequire_certificate true\n"
    )
