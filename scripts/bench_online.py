"""Measure online inference over MQTT 5 on loopback: request→response latency and the
throughput of one daemon while it also runs its camera.

Starts a mosquitto on a free loopback port (with ``set_tcp_nodelay true``: with Nagle's
algorithm on the broker's sockets an answer waits for a delayed ACK, about 40 ms; ``--nagle``
shows it) and one daemon (``python -m edge run``, the bundled
shapes-detector, a synthetic camera at ``--fps``, ``[online]`` on with ``queue_size`` 8). Then:

- latency: ``--latency-n`` requests one at a time (the next sent when the answer arrived),
  timed at the client from publish to answer: p50, p99, max in ms;
- throughput: ``--throughput-n`` requests with at most ``--window`` outstanding: answers per
  second, and how many were answered busy;
- the camera: its ``fps_out`` from the stats topic before and during the throughput phase (the
  camera pipeline keeps its priority when requests compete for the CPU).

Figures only; the load average is printed because the machine may be shared.

    python scripts/bench_online.py [--image tests/data/shapes/scene_0.jpg] [--fps 15]
                                   [--latency-n 200] [--throughput-n 600] [--window 8]

Run from the repo root with the project's environment (``PYTHONPATH=$PWD`` in a checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from broker import Broker  # noqa: E402
from faultkit import DEVICE, DaemonProc, config_text  # noqa: E402

from edge.stats import percentile  # noqa: E402

REPLY = "bench/reply"


class Client:
    """MQTT 5 requester: publish times and answer times by correlation; the daemon's stats."""

    def __init__(self, broker: Broker) -> None:
        self.sent: dict[bytes, float] = {}
        self.answered: dict[bytes, float] = {}
        self.busy = 0
        self.stats: dict[str, Any] = {}
        self._cond = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

        def on_connect(c: mqtt.Client, *_a: object) -> None:
            c.subscribe([(REPLY, 1), (f"edge/{DEVICE}/stats", 0)])

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise SystemExit("could not subscribe to the broker")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if msg.topic != REPLY:
            self.stats = json.loads(msg.payload)
            return
        cid = bytes(getattr(msg.properties, "CorrelationData", b""))
        with self._cond:
            if b'"error":"busy"' in msg.payload:
                self.busy += 1
            self.answered.setdefault(cid, now)
            self._cond.notify_all()

    def send(self, cid: str, image: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = REPLY
        props.CorrelationData = cid.encode()
        props.ContentType = "image/jpeg"
        self.sent[cid.encode()] = time.perf_counter()
        self.client.publish(f"edge/{DEVICE}/infer", image, qos=1, properties=props)

    def wait(self, n: int, timeout: float = 30.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.answered) >= n, timeout):
                raise SystemExit(f"only {len(self.answered)} of {n} answers within {timeout} s")

    def camera_fps(self) -> float:
        return float(self.stats.get("cameras", {}).get("a", {}).get("fps_out", 0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(ROOT / "tests" / "data" / "shapes" / "scene_0.jpg"))
    ap.add_argument("--fps", type=float, default=15.0, help="the daemon's camera rate")
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--throughput-n", type=int, default=600)
    ap.add_argument("--window", type=int, default=8, help="outstanding requests at most")
    ap.add_argument(
        "--nagle", action="store_true", help="leave out mosquitto's set_tcp_nodelay true"
    )
    args = ap.parse_args()
    image = Path(args.image).read_bytes()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "mosquitto", extra_conf="" if args.nagle else "set_tcp_nodelay true")
        broker.start()
        text = config_text(broker, tmp / "state", {"a": {"fps": args.fps}})
        daemon = DaemonProc(tmp, text + "[online]\nenabled = true\nqueue_size = 8\n")
        try:
            client = Client(broker)
            deadline = time.monotonic() + 60
            while "online" not in client.stats or client.camera_fps() == 0:
                if time.monotonic() > deadline or daemon.proc.poll() is not None:
                    raise SystemExit(f"the daemon did not start:\n{daemon.log()}")
                time.sleep(0.1)
            for i in range(20):  # warm-up
                client.send(f"w{i}", image)
                client.wait(i + 1)
            time.sleep(2.5)
            idle_fps = client.camera_fps()
            done = len(client.answered)
            for i in range(args.latency_n):
                client.send(f"l{i}", image)
                client.wait(done + i + 1)
            lat = sorted(
                (client.answered[c] - client.sent[c]) * 1000
                for c in client.answered
                if c.startswith(b"l")
            )
            done = len(client.answered)
            t0 = time.perf_counter()
            for i in range(args.throughput_n):
                client.wait(done + i - args.window + 1)
                client.send(f"t{i}", image)
            client.wait(done + args.throughput_n, 120)
            elapsed = time.perf_counter() - t0
            busy_fps = client.camera_fps()
            online = client.stats.get("online", {})
        finally:
            daemon.stop()
            broker.kill()
    load = os.getloadavg()
    print(
        f"online inference over MQTT 5 on loopback, image {Path(args.image).name} "
        f"({len(image)} bytes), shapes-detector, camera at {args.fps:g} fps; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores"
    )
    print(
        f"latency, one at a time, n={len(lat)}: p50 {percentile(lat, 50):.2f} ms, "
        f"p99 {percentile(lat, 99):.2f} ms, max {lat[-1]:.2f} ms"
    )
    print(
        f"throughput, window {args.window}, n={args.throughput_n}: "
        f"{args.throughput_n / elapsed:.1f} requests/s, {client.busy} answered busy"
    )
    print(
        f"camera fps_out: {idle_fps:.1f} without requests, {busy_fps:.1f} during the throughput run"
    )
    print(
        "daemon's own latency, arrival to answer sent, over its last 256 requests (the "
        f"throughput run: queueing included): {online.get('latency_ms')}"
    )
    print(f"broker: mosquitto{' (Nagle on)' if args.nagle else ' with set_tcp_nodelay true'}")


if __name__ == "__main__":
    main()
