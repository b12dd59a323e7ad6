"""SIGKILLs during a broker outage, with and without a disk-heavy neighbour (a process writing
1 MiB blocks with fsync into the state directory's filesystem): what each killed boot had
produced (as the next boot reports it, ``mqtt.previous_boot``) against what a real subscriber
received of it, by seq.

What this can and cannot see: ``previous_boot.produced`` is the count at the killed boot's last
commit, so the results it produced after that commit (the RAM tail that ``ram_window`` bounds)
are in neither figure. The measured loss is therefore what a commit promised and the subscriber
never got; for the tail itself the table shows how old the last commit was at the kill and the
most results a 50 fps camera could have produced since (plus the pipeline's depth).

The broker is stopped with SIGTERM for each outage: a SIGKILLed mosquitto can lose the last
message it acknowledged, a loss that is the broker's, not the daemon's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import Broker, Subscriber
from faultkit import DaemonProc, config_text, subscribe, tally, wait_results

RAM_WINDOW = 32
# Results that can still appear once the sink says "no room": the frame admitted just before
# (being preprocessed), the one in its slot, the one being invoked, the result queue (4) and the
# one being postprocessed.
PIPELINE_DEPTH = 8
FPS = 50  # config_text's synthetic camera
OUTAGE_S = 2.5  # how long each boot runs with the broker away before its SIGKILL
OFFLINE_START_S = 1.0  # how long each new boot runs before the broker is back

# Rewrites a 64 MiB region of one file in 1 MiB blocks, each followed by fsync, until SIGTERM;
# then prints how many blocks it wrote and in how many seconds. Paced to at most 200 blocks a
# second: far more than an SD card takes (10-20 MB/s, so there it never waits), while a fast
# disk with a write cache would otherwise absorb gigabytes a second for nothing.
NEIGHBOUR = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
block = os.urandom(1 << 20)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
n, t0 = 0, time.monotonic()
try:
    while True:
        os.pwrite(fd, block, (n % 64) << 20)
        os.fsync(fd)
        n += 1
        time.sleep(max(0.0, t0 + n / 200 - time.monotonic()))
finally:
    print(n, round(time.monotonic() - t0, 3), flush=True)
"""


@dataclass(frozen=True, slots=True)
class KilledBoot:
    """One boot killed during an outage, as the subscriber saw it afterwards.

    produced: results the boot had produced at its last commit (its successor's stats).
    commit_age_s: wall-clock seconds from that commit to the SIGKILL.
    next_commits, next_max_commit_ms: the successor boot's commits so far and its slowest one
    (it starts into the outage, so it commits under the same disk load).
    """

    boot_id: str
    produced: int
    received: int
    gaps: int
    duplicates: int
    out_of_order: int
    commit_age_s: float
    next_commits: int
    next_max_commit_ms: float

    @property
    def lost(self) -> int:
        return self.produced - self.received

    @property
    def tail_max(self) -> int:
        """The most results the boot can have produced after its last commit at 50 fps."""
        return math.ceil(self.commit_age_s * FPS) + PIPELINE_DEPTH


@dataclass
class Neighbour:
    """The disk-heavy neighbour's child process; ``blocks``/``seconds`` once stopped."""

    proc: subprocess.Popen[str]
    blocks: int = 0
    seconds: float = 0.0


@contextmanager
def disk_neighbour(path: Path) -> Iterator[Neighbour]:
    proc = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR, str(path)], stdout=subprocess.PIPE, text=True
    )
    n = Neighbour(proc)
    try:
        yield n
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        path.unlink(missing_ok=True)
        if out.split():
            n.blocks, n.seconds = int(out.split()[0]), float(out.split()[1])


def stats_of(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.payloads("/stats")]


def successor_stats(sub: Subscriber, killed: str) -> dict[str, Any] | None:
    """The newest stats message whose ``previous_boot`` is ``killed``."""
    found = [
        s for s in stats_of(sub) if (s["mqtt"].get("previous_boot") or {}).get("boot_id") == killed
    ]
    return found[-1] if found else None


def received_of(sub: Subscriber, boot: str) -> int:
    """Unique seqs of ``boot`` the subscriber has received."""
    rs = map(json.loads, sub.payloads("/result"))
    return len({r["seq"] for r in rs if r["boot_id"] == boot})


def outage_round(
    broker: Broker, sub: Subscriber, daemons: list[DaemonProc], text: str, boot: str
) -> tuple[float, str]:
    """Broker away, SIGKILL of ``boot`` during the outage, a new boot on the same state
    directory (briefly offline), broker back, the killed boot's backlog delivered and the new
    boot's results flowing. Returns the wall-clock time of the kill and the new boot's id."""
    # SIGTERM, not SIGKILL: a killed mosquitto can lose the last message it acknowledged (its
    # persistence lags its PUBACKs), which would count against the daemon here.
    broker.stop()
    # The outage itself: the daemon runs, produces and commits with nobody to send to.
    time.sleep(OUTAGE_S)
    killed_at = time.time()
    daemons[-1].kill()
    daemons.append(DaemonProc(daemons[-1].config_path.parent, text))
    assert daemons[-1].wait_log("capture 'a': streaming"), daemons[-1].log()
    time.sleep(OFFLINE_START_S)  # the new boot starts into the outage
    broker.restart()
    assert sub.wait_until(lambda _: successor_stats(sub, boot) is not None, 20), (
        f"no stats named {boot} as the previous boot\n{daemons[-1].log()}"
    )
    nxt = successor_stats(sub, boot)
    assert nxt is not None
    produced = nxt["mqtt"]["previous_boot"]["produced"]
    # The killed boot's backlog goes out before anything newer; what is still missing once the
    # new boot's own results flow is lost.
    sub.wait_until(lambda _: received_of(sub, boot) >= produced, 10)
    new = str(nxt["boot_id"])
    n = received_of(sub, new)
    assert sub.wait_until(lambda _: received_of(sub, new) >= n + 20, 20), daemons[-1].log()
    return killed_at, new


def kill_during_outages(tmp_path: Path, broker: Broker, rounds: int) -> list[KilledBoot]:
    """Run the daemon until results arrive, then ``rounds`` outage rounds; the last boot
    drains and stops with SIGTERM. Returns the killed boots' figures."""
    text = config_text(
        broker, tmp_path / "state", mqtt={"ram_window": RAM_WINDOW, "reconnect_max_s": 1}
    )
    sub = subscribe(broker)
    daemons = [DaemonProc(tmp_path, text)]
    kills: list[tuple[str, float]] = []  # (boot_id, wall-clock time of its SIGKILL)
    try:
        assert wait_results(sub, 20), daemons[-1].log()
        boot = json.loads(sub.payloads("/result")[-1])["boot_id"]
        for _ in range(rounds):
            killed_at, new = outage_round(broker, sub, daemons, text, boot)
            kills.append((boot, killed_at))
            boot = new
        assert daemons[-1].stop() == 0, daemons[-1].log()
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.kill()
        sub.close()
    counts = tally(sub)
    out = []
    for killed, at_kill in kills:
        nxt = successor_stats(sub, killed)
        assert nxt is not None
        prev = nxt["mqtt"]["previous_boot"]
        t = counts[(killed, "a")]
        out.append(
            KilledBoot(
                boot_id=killed,
                produced=prev["produced"],
                received=t.received,
                gaps=t.gaps,
                duplicates=t.duplicates,
                out_of_order=t.out_of_order,
                commit_age_s=round(at_kill - prev["at"], 3),
                next_commits=nxt["mqtt"]["commits"],
                next_max_commit_ms=nxt["mqtt"]["max_commit_ms"],
            )
        )
    return out


def table(boots: list[KilledBoot], title: str) -> str:
    head = (
        f"{'boot':<13} {'produced':>8} {'received':>8} {'lost':>5} {'gaps':>4} {'dup':>4} "
        f"{'ooo':>4} {'commit age s':>12} {'tail <=':>7} {'next: commits':>13} "
        f"{'max commit ms':>13}"
    )
    rows = [
        f"{b.boot_id:<13} {b.produced:>8} {b.received:>8} {b.lost:>5} {b.gaps:>4} "
        f"{b.duplicates:>4} {b.out_of_order:>4} {b.commit_age_s:>12.3f} {b.tail_max:>7} "
        f"{b.next_commits:>13} {b.next_max_commit_ms:>13.1f}"
        for b in boots
    ]
    bound = RAM_WINDOW + PIPELINE_DEPTH
    return "\n".join(
        [title, head, *rows, f"bound on lost: ram_window + {PIPELINE_DEPTH} = {bound}"]
    )


def check(boots: list[KilledBoot], rounds: int, report: str) -> None:
    assert len(boots) == rounds, report
    for b in boots:
        assert 0 <= b.lost <= RAM_WINDOW + PIPELINE_DEPTH, report
        assert (b.gaps, b.out_of_order) == (0, 0), report


def test_sigkills_during_an_outage_next_to_a_disk_heavy_neighbour_lose_at_most_the_window(
    broker: Broker, tmp_path: Path
) -> None:
    """Five SIGKILLs during broker outages while a neighbour fsyncs 1 MiB blocks into the same
    filesystem: each killed boot's committed count reaches the subscriber, short by at most
    ram_window + the pipeline's depth, without gaps or reordering."""
    with disk_neighbour(tmp_path / "neighbour.bin") as neighbour:
        boots = kill_during_outages(tmp_path, broker, rounds=5)
    report = table(
        boots,
        f"5 SIGKILLs during outages, neighbour: {neighbour.blocks} x 1 MiB "
        f"+ fsync in {neighbour.seconds} s",
    )
    print("\n" + report)
    assert neighbour.blocks > 0, "the neighbour wrote nothing"
    check(boots, 5, report)


def test_sigkills_during_an_outage_lose_at_most_the_window(broker: Broker, tmp_path: Path) -> None:
    """Three SIGKILLs during broker outages on a quiet disk: each killed boot's committed count
    reaches the subscriber, short by at most ram_window + the pipeline's depth, without gaps or
    reordering."""
    boots = kill_during_outages(tmp_path, broker, rounds=3)
    report = table(boots, "3 SIGKILLs during outages, no neighbour")
    print("\n" + report)
    check(boots, 3, report)
