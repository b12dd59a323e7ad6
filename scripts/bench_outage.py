"""Measure what a broker outage and a SIGKILL cost the durable outbox, with and without a
disk-heavy neighbour (a process rewriting 1 MiB blocks with fsync in the state directory's
filesystem).

Runs the real daemon (``python -m edge run --config``) with one synthetic camera and the bundled
shapes detector against its own mosquitto on a free loopback port, with a persistent QoS 1
subscriber. Each round: stop the broker, let the daemon run through the outage, SIGKILL it,
start a new boot on the same state directory (it runs offline for a moment, so it commits under
the same disk load), start the broker again, wait for the killed boot's backlog. The last boot
drains and is stopped with SIGTERM. Prints, per killed boot:

- produced: what the boot had produced at its last commit, as the next boot reports it
  (``mqtt.previous_boot``); received: unique seqs of that boot at the subscriber; lost: the
  difference (what a commit promised and never arrived);
- commit age: wall-clock seconds from that last commit to the SIGKILL, and from it the most
  results a camera at ``--fps`` could have produced after it (plus the pipeline's depth): an
  upper bound on the RAM tail the kill took, which no figure above can see;
- uncommitted before the outage: ``mqtt.uncommitted`` in the boot's last stats while connected
  (results in RAM awaiting their acknowledgement). While disconnected the stats are not
  delivered, so the uncommitted count during the outage itself is not observable from outside;
- the next boot's commits, last and slowest commit (ms), and frames it dropped for
  back-pressure (``dropped_backpressure``), from its stats after reconnecting.

Then per scenario the commit durations sampled from every stats message (each carries the last
commit's duration), the slowest commit of the last boot (which drained under the same load), and
a summary line. Figures only; nothing is asserted beyond the run working at all.

    python scripts/bench_outage.py [--rounds 5] [--outage-s 2.5] [--neighbour both|on|off]
                                   [--neighbour-mib-s 0] [--fps 50] [--ram-window 32]

``--neighbour-mib-s`` paces the neighbour (0: as fast as the disk takes it). Run from the repo
root with the project's environment (``PYTHONPATH=$PWD`` in a checkout).
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
DEVICE = "bench-outage"
# Results that can appear after the sink says "no room": the frame being preprocessed, the one in
# its slot, the one being invoked, the result queue (4), the one being postprocessed.
PIPELINE_DEPTH = 8
OFFLINE_START_S = 1.0

NEIGHBOUR = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
rate = float(sys.argv[2])
block = os.urandom(1 << 20)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
n, t0 = 0, time.monotonic()
try:
    while True:
        os.pwrite(fd, block, (n % 64) << 20)
        os.fsync(fd)
        n += 1
        if rate > 0:
            time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
finally:
    print(n, round(time.monotonic() - t0, 3), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto on 127.0.0.1:<port> with persistence in ``d``; same port across restarts."""

    def __init__(self, d: Path) -> None:
        self.port = free_port()
        self.conf = d / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {d}/\nautosave_on_changes true\n"
            "autosave_interval 1\nmax_queued_messages 100000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)  # no readiness signal but the port
        raise SystemExit(f"mosquitto did not listen on port {self.port}: is it installed?")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions (a SIGKILLed one can lose the last message it
        acknowledged, which would be charged to the daemon here)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """Every message under the device's topics, over a persistent QoS 1 session."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-outage-sub", clean_session=False
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(f"edge/{DEVICE}/#", qos=1)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise SystemExit(f"could not subscribe at 127.0.0.1:{port}")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def json(self, suffix: str) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(p) for t, p in self.messages if t.endswith(suffix)]

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def received(self, boot: str) -> set[int]:
        return {r["seq"] for r in self.json("/result") if r["boot_id"] == boot}

    def stats(self, boot: str) -> list[dict[str, Any]]:
        return [s for s in self.json("/stats") if s["boot_id"] == boot]

    def successor(self, killed: str) -> dict[str, Any] | None:
        """The newest stats naming ``killed`` as the previous boot."""
        found = [
            s
            for s in self.json("/stats")
            if (s["mqtt"].get("previous_boot") or {}).get("boot_id") == killed
        ]
        return found[-1] if found else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "EDGE_LOG_LEVEL": "info"},
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if text in self.log():
                return True
            time.sleep(0.05)  # another process's log file: nothing to wait on but polling
        return False


@dataclass(frozen=True, slots=True)
class Round:
    boot: str
    produced: int
    received: int
    commit_age_s: float
    uncommitted_before: int | None
    next_stats: dict[str, Any]

    @property
    def lost(self) -> int:
        return self.produced - self.received


@dataclass(frozen=True, slots=True)
class Scenario:
    neighbour: bool
    rounds: list[Round]
    commit_samples: list[float]
    slowest_ms: float
    last_boot_mqtt: dict[str, Any]
    neighbour_mib_s: float | None
    exit_code: int


def config(d: Path, port: int, fps: float, ram_window: int) -> Path:
    path = d / "config.toml"
    path.write_text(
        f'device = "{DEVICE}"\nstate_dir = "{d / "state"}"\n[model]\npath = "shapes-detector"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nstats_interval = 1\ninflight = 16\n'
        f"reconnect_max_s = 1\nram_window = {ram_window}\n"
        f'[[cameras]]\nname = "a"\nsource = "synthetic"\nfps = {fps}\nwidth = 192\nheight = 192\n'
    )
    return path


def fail(msg: str, daemon: Daemon) -> SystemExit:
    return SystemExit(f"{msg}\n--- daemon log ---\n{daemon.log()}")


def run(args: argparse.Namespace, neighbour: bool) -> Scenario:
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        d = Path(tmp)
        broker = Mosquitto(d)
        broker.start()
        sub = Subscriber(broker.port)
        cfg = config(d, broker.port, args.fps, args.ram_window)
        nb = None
        if neighbour:
            nb = subprocess.Popen(
                [sys.executable, "-c", NEIGHBOUR, str(d / "neighbour.bin"), str(args.nb_rate)],
                stdout=subprocess.PIPE,
                text=True,
            )
        daemons = [Daemon(cfg, d / "daemon-0.log")]
        rounds: list[Round] = []
        try:
            if not sub.wait(lambda: len(sub.json("/result")) >= 20, 30):
                raise fail("no results from the daemon", daemons[-1])
            boot = sub.json("/result")[-1]["boot_id"]
            for i in range(args.rounds):
                rounds.append(one_round(args, broker, sub, daemons, cfg, d, boot, i + 1))
                boot = rounds[-1].next_stats["boot_id"]
            last = daemons[-1]
            sub.wait(lambda: any(s["mqtt"]["pending_disk"] == 0 for s in sub.stats(boot)), 15)
            last_stats = sub.stats(boot)
            last.proc.send_signal(signal.SIGTERM)
            code = last.proc.wait(30)
        finally:
            for dm in daemons:
                if dm.proc.poll() is None:
                    dm.proc.kill()
                    dm.proc.wait()
            mib_s = None
            if nb is not None:
                nb.terminate()
                out = nb.communicate(timeout=30)[0].split()
                mib_s = int(out[0]) / float(out[1]) if out else None
            sub.close()
            broker.stop()
        samples = [
            float(s["mqtt"]["last_commit_ms"])
            for s in sub.json("/stats")
            if s["mqtt"]["last_commit_ms"] is not None
        ]
        slowest = max((float(s["mqtt"]["max_commit_ms"]) for s in sub.json("/stats")), default=0)
        return Scenario(neighbour, rounds, samples, slowest, last_stats[-1]["mqtt"], mib_s, code)


def one_round(
    args: argparse.Namespace,
    broker: Mosquitto,
    sub: Subscriber,
    daemons: list[Daemon],
    cfg: Path,
    d: Path,
    boot: str,
    n: int,
) -> Round:
    # One stats message of this boot while connected, to read before the outage.
    sub.wait(lambda: any(s["mqtt"]["connected"] for s in sub.stats(boot)), 3)
    before = [s for s in sub.stats(boot) if s["mqtt"]["connected"]]
    uncommitted = before[-1]["mqtt"]["uncommitted"] if before else None
    broker.stop()
    time.sleep(args.outage_s)  # the outage being measured
    killed_at = time.time()
    daemons[-1].proc.kill()
    daemons[-1].proc.wait()
    daemons.append(Daemon(cfg, d / f"daemon-{n}.log"))
    if not daemons[-1].wait_log("capture 'a': streaming"):
        raise fail("the new boot did not start", daemons[-1])
    time.sleep(OFFLINE_START_S)  # the new boot starts into the outage
    broker.start()
    if not sub.wait(lambda: sub.successor(boot) is not None, 20):
        raise fail(f"no stats named {boot} as the previous boot", daemons[-1])
    nxt = sub.successor(boot)
    assert nxt is not None
    produced = int(nxt["mqtt"]["previous_boot"]["produced"])
    sub.wait(lambda: len(sub.received(boot)) >= produced, 10)
    new = nxt["boot_id"]
    have = len(sub.received(new))
    if not sub.wait(lambda: len(sub.received(new)) >= have + 20, 20):
        raise fail("the new boot delivers nothing", daemons[-1])
    nxt = sub.stats(new)[-1]  # after its backlog: its offline commits and the deletes since
    return Round(
        boot,
        produced,
        len(sub.received(boot)),
        killed_at - float(nxt["mqtt"]["previous_boot"]["at"]),
        uncommitted,
        nxt,
    )


def report(sc: Scenario, args: argparse.Namespace) -> None:
    bound = args.ram_window + PIPELINE_DEPTH
    title = "with a disk-heavy neighbour" if sc.neighbour else "without a neighbour"
    if sc.neighbour_mib_s is not None:
        title += f" ({sc.neighbour_mib_s:.0f} MiB/s of 1 MiB writes + fsync)"
    print(f"\n== {len(sc.rounds)} SIGKILLs during {args.outage_s} s outages, {title}")
    print(
        f"{'boot':<13} {'produced':>8} {'received':>8} {'lost':>4} {'commit age s':>12} "
        f"{'tail <=':>7} {'uncommitted before':>18} | next boot: {'commits':>7} "
        f"{'last ms':>7} {'max ms':>7} {'dropped bp':>10}"
    )
    for r in sc.rounds:
        m = r.next_stats["mqtt"]
        tail = math.ceil(r.commit_age_s * args.fps) + PIPELINE_DEPTH
        bp = r.next_stats["cameras"]["a"]["dropped_backpressure"]
        print(
            f"{r.boot:<13} {r.produced:>8} {r.received:>8} {r.lost:>4} {r.commit_age_s:>12.3f} "
            f"{tail:>7} {r.uncommitted_before!s:>18} | {'':>10} {m['commits']:>7} "
            f"{m['last_commit_ms']!s:>7} {m['max_commit_ms']:>7.1f} {bp:>10}"
        )
    s = sorted(sc.commit_samples)
    if s:
        p95 = s[min(len(s) - 1, int(0.95 * len(s)))]
        print(
            f"commit durations sampled from {len(s)} stats messages (each: the latest commit): "
            f"median {statistics.median(s):.2f} ms, p95 {p95:.2f} ms, max {s[-1]:.2f} ms"
        )
    last = sc.last_boot_mqtt
    print(
        f"last boot (drained, SIGTERM exit {sc.exit_code}): {last['commits']} commits, slowest "
        f"{last['max_commit_ms']:.1f} ms, delivered {last['delivered']}, pending on disk "
        f"{last['pending_disk']}"
    )
    worst = max((r.lost for r in sc.rounds), default=0)
    worst_tail = max(
        (math.ceil(r.commit_age_s * args.fps) + PIPELINE_DEPTH for r in sc.rounds), default=0
    )
    print(
        f"summary ({'neighbour' if sc.neighbour else 'quiet disk'}): lost after commit "
        f"{sum(r.lost for r in sc.rounds)} in {len(sc.rounds)} kills (worst {worst}, bound "
        f"{bound}); RAM tail at the kill <= {worst_tail} by the age of the last commit; "
        f"slowest commit seen in any stats {sc.slowest_ms:.1f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="SIGKILLs per scenario")
    p.add_argument("--outage-s", type=float, default=2.5, help="seconds offline before a kill")
    p.add_argument("--neighbour", choices=("both", "on", "off"), default="both")
    p.add_argument("--neighbour-mib-s", dest="nb_rate", type=float, default=0.0, help="0: unpaced")
    p.add_argument("--fps", type=float, default=50.0)
    p.add_argument("--ram-window", type=int, default=32)
    args = p.parse_args()
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.neighbour]
    for neighbour in modes:
        report(run(args, neighbour), args)


if __name__ == "__main__":
    main()
