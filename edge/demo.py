"""``edge demo``: the whole product on bundled defaults, in one command.

Runs the real daemon (``edge run``, a child process) on the bundled sample clip with the bundled
detector, publishing to a local broker: mosquitto when one answers on localhost:1883, otherwise
an embedded broker started here (amqtt, from the ``demo`` extra; it speaks MQTT 3.1.1 only, so
the daemon is told to use 3.1.1). Results are shown as they arrive through ``edge listen``. It
stops by itself when the clip has played (``--loop`` repeats it until ``--duration``) or on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, InputError
from edge.listen import listen

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "shapes.mp4"


def broker_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """amqtt running in its own event loop on a daemon thread, bound to 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.host, self.port = "127.0.0.1", port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._broker: Any = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise EdgeError(
                f"the embedded MQTT broker did not start: {self._error}. Start "
                "mosquitto (`sudo apt install mosquitto`) and run the demo again."
            )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            # amqtt is only needed here: importing it costs the daemon nothing.
            from amqtt.broker import Broker

            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._broker is None or not self._loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            fut.result(5)
        except Exception:  # shutting down anyway
            log.debug("embedded broker shutdown failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source", default=str(SAMPLE), help="what to run on (default: the bundled sample clip)"
    )
    p.add_argument(
        "--model", default="shapes-detector", help="model (default: the bundled shapes detector)"
    )
    p.add_argument("--broker", help="HOST:PORT of a broker to use instead of looking for one")
    p.add_argument(
        "--duration", type=float, default=30.0, help="stop after this many seconds (default 30)"
    )
    p.add_argument("--loop", action="store_true", help="repeat the clip until --duration")
    p.add_argument("--raw", action="store_true", help="print raw JSON lines")


def run(args: argparse.Namespace) -> int:
    if args.source == str(SAMPLE) and not SAMPLE.exists():
        raise InputError(f"the sample clip {SAMPLE} is missing; run scripts/make_sample_clip.py")
    embedded: EmbeddedBroker | None = None
    protocol = "5"
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        host, port = host or "localhost", int(port_text)
    elif broker_answers("localhost", 1883):
        host, port = "localhost", 1883
        print("edge demo: using the MQTT broker on localhost:1883", file=sys.stderr)
    else:
        embedded = EmbeddedBroker(free_port())
        embedded.start()
        host, port, protocol = embedded.host, embedded.port, "3.1.1"
        print(
            f"edge demo: no broker on localhost:1883; started an embedded one on "
            f"{host}:{port} (MQTT 3.1.1)",
            file=sys.stderr,
        )
    device = "demo"
    state = tempfile.TemporaryDirectory(prefix="edge-demo-")
    cmd = [
        sys.executable,
        "-m",
        "edge",
        "run",
        "--source",
        args.source,
        "--model",
        args.model,
        "--broker",
        f"{host}:{port}",
        "--device",
        device,
        "--protocol",
        protocol,
        "--state-dir",
        state.name,
        "--duration",
        str(args.duration),
    ]
    if args.loop:
        cmd.append("--loop")
    print("edge demo: " + shlex.join(cmd), file=sys.stderr)
    daemon = subprocess.Popen(cmd, env={**os.environ, "EDGE_LOG_LEVEL": "warning"})
    ended: list[float] = []

    def daemon_done() -> bool:
        if daemon.poll() is None:
            return False
        if not ended:
            ended.append(time.monotonic())
        return time.monotonic() - ended[0] > 1.0  # let the last messages arrive

    try:
        listen(
            host,
            port,
            "edge",
            device,
            args.raw,
            None,
            args.duration + 15,
            sys.stdout,
            until=daemon_done,
        )
    except KeyboardInterrupt:
        pass
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        if embedded is not None:
            embedded.stop()
        state.cleanup()
    return code
