"""What every fault test needs: the real daemon in a child process with a config file it can
rewrite and signal, and a tally of what a real subscriber received, by ``(boot_id, camera)``:
gaps, duplicates and order counted from ``seq``, never from the daemon's own counters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import Broker, Subscriber, wait_for

REPO = Path(__file__).resolve().parents[1]
DEVICE = "faultdev"
BASE = f"edge/{DEVICE}"


def config_text(
    broker: Broker | tuple[str, int],
    state: Path,
    cameras: dict[str, dict[str, Any]] | None = None,
    mqtt: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> str:
    """A daemon configuration: synthetic cameras at the detector's input size (no resize, so
    little CPU), stats every second, short reconnect waits."""
    host, port = (broker.host, broker.port) if isinstance(broker, Broker) else broker
    m = {"host": host, "port": port, "stats_interval": 1, "inflight": 16, **(mqtt or {})}
    lines = [f'device = "{DEVICE}"', f'state_dir = "{state}"', "[model]"]
    lines += [
        f"{k} = {json.dumps(v)}" for k, v in {"path": "shapes-detector", **(model or {})}.items()
    ]
    lines += ["[mqtt]"] + [f"{k} = {json.dumps(v)}" for k, v in m.items()]
    for name, cam in (cameras or {"a": {}}).items():
        c = {"name": name, "source": "synthetic", "fps": 50, "width": 192, "height": 192, **cam}
        lines += ["[[cameras]]"] + [f"{k} = {json.dumps(v)}" for k, v in c.items()]
    return "\n".join(lines) + "\n"


class DaemonProc:
    """``python -m edge run --config FILE`` in a child process, its output in a log file."""

    def __init__(self, tmp: Path, text: str, *args: str, name: str = "config.toml") -> None:
        self.config_path = tmp / name
        self.config_path.write_text(text)
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.config_path), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "EDGE_LOG_LEVEL": "info"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rewrite(self, text: str) -> None:
        """Replace the configuration file (atomically) and send SIGHUP."""
        tmp = self.config_path.with_suffix(".new")
        tmp.write_text(text)
        tmp.replace(self.config_path)
        self.proc.send_signal(signal.SIGHUP)

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> bool:
        return wait_for(lambda: self.log().count(text) >= count, timeout, 0.05)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@dataclass
class Tally:
    """What one subscriber received of one ``(boot_id, camera)`` stream.

    seqs: every arrival the daemon caused, in order. redelivered: arrivals of a seq already
    received that the broker itself re-sent from the subscriber's persisted session (DUP flag
    set): those say how the broker restored its session, not what the daemon sent, so they are
    counted apart and do not count as the daemon's duplicates."""

    seqs: list[int] = field(default_factory=list)
    redelivered: int = 0

    @property
    def received(self) -> int:
        return len(set(self.seqs))

    @property
    def duplicates(self) -> int:
        return len(self.seqs) - len(set(self.seqs))

    @property
    def gaps(self) -> int:
        """seq values missing between 1 and the highest received."""
        return max(self.seqs, default=0) - len(set(self.seqs))

    @property
    def out_of_order(self) -> int:
        """Arrivals lower than the highest seq seen before them, not counting duplicates."""
        n, top, seen = 0, 0, set()
        for s in self.seqs:
            if s < top and s not in seen:
                n += 1
            top = max(top, s)
            seen.add(s)
        return n

    def __str__(self) -> str:
        return (
            f"received {self.received} (max seq {max(self.seqs, default=0)}), gaps {self.gaps}, "
            f"duplicates {self.duplicates}, out of order {self.out_of_order}, "
            f"re-sent by the broker {self.redelivered}"
        )


def tally(*subs: Subscriber) -> dict[tuple[str, str], Tally]:
    """Results received by the subscribers, per (boot_id, camera), in arrival order."""
    out: dict[tuple[str, str], Tally] = {}
    seen: dict[tuple[str, str], set[int]] = {}
    for sub in subs:
        for m in sub.received("/result"):
            r = json.loads(m.payload)
            key = (r["boot_id"], r["camera"])
            t = out.setdefault(key, Tally())
            seq = int(r["seq"])
            if m.dup and seq in seen.setdefault(key, set()):
                t.redelivered += 1
            else:
                t.seqs.append(seq)
                seen.setdefault(key, set()).add(seq)
    return out


def results(sub: Subscriber, camera: str | None = None) -> list[dict[str, Any]]:
    rs = [json.loads(p) for p in sub.payloads("/result")]
    return [r for r in rs if camera is None or r["camera"] == camera]


def last_json(sub: Subscriber, suffix: str) -> dict[str, Any] | None:
    """The newest JSON message on a topic ending with ``suffix``."""
    ps = sub.payloads(suffix)
    return json.loads(ps[-1]) if ps else None


def wait_results(sub: Subscriber, n: int, timeout: float = 30.0, camera: str | None = None) -> bool:
    return sub.wait_until(
        lambda ms: (
            sum(
                m.topic.endswith("/result") and (camera is None or f"/{camera}/" in m.topic)
                for m in ms
            )
            >= n
        ),
        timeout,
    )


def subscribe(broker: Broker | tuple[str, int], client_id: str = "fault-subscriber") -> Subscriber:
    return Subscriber(broker, f"{BASE}/#", client_id=client_id)


def report(case: str, counts: dict[tuple[str, str], Tally], exit_code: int | None) -> None:
    """One line per fault case for the record (shown with ``pytest -s``): what the subscriber
    counted, per stream, and the daemon's exit code."""
    streams = "; ".join(f"{cam}@{boot[:6]} {t}" for (boot, cam), t in sorted(counts.items()))
    print(f"\nFAULT {case}: exit {exit_code}; {streams}")
