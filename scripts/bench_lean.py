"""Side by side: a bare invoke() loop, the daemon, and the loop most Pi tutorials write.

Runs, on one model at one interpreter thread and one real mosquitto (a free loopback port),
three programs in fresh processes, one after the other and in a rotating order each round:

- ``bare``: only ai-edge-litert and the model, calling ``invoke()`` on a zero input, no camera,
  no MQTT (the floor for memory, the ceiling for speed);
- ``daemon``: ``edge run`` (started as the console script does) on the synthetic source,
  publishing every result at QoS 1;
- ``naive``: scripts/naive_loop.py, the one-thread loop (capture, ``cv2.resize``, ``invoke``,
  ``json.dumps``, paho ``publish`` at QoS 1) on the same pictures at the same size.

It does so with the source at the model's input size (``lores``: what the Pi camera's ISP-scaled
stream delivers, so no resize is needed) and at 640×480 (the frame is resized to the model).
For each program it prints the median over the rounds of: results per second (the daemon's and
the naive loop's counted as they arrive at a subscriber, from 1.5 s after the first one) and
that divided by the bare loop's invokes per second in the same round; resident memory (RSS) and
private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup: pages no other
process maps) sampled 1.5 s before the end of the run; and start → first result (from spawning
the process to the first result at the subscriber; for ``bare``, to its first ``invoke()``).
Then the daemon's start → first result with the bundled detector, paced at 30 fps like a camera,
what the daemon's imports do before it can start (modules loaded, dataclasses created and the
time spent compiling their generated methods: counts that do not move with the load), and one
verdict line per target of the "lean" goal. CPU ms/result is the process's user + system
time (all threads) per result over the steady part of the run: the work each program does, which
the machine's load changes far less than it changes throughput.

    python scripts/bench_lean.py [--seconds 7] [--rounds 3] [--model mobilenet-v2-bench]
                                 [--detector shapes-detector] [--starts 11]
                                 [--interpreter /usr/bin/python3]

The default run takes about three minutes. It first compiles edge's bytecode, as installing the
package does. Throughput ratios move with the machine's load (printed at the start and the end);
memory does not. All three programs run on the interpreter that runs this script, named on the
first line. ``--interpreter`` runs them on another: a venv is made from it in a temporary folder
and this checkout installed there as scripts/install.sh installs it (``pip install .``, not
editable; the dependencies come from the package index), for instance the distribution's
``/usr/bin/python3``, the build a Raspberry Pi runs the daemon on. The build changes the start
more than anything edge does: interpreter start-up and imports are most of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from bench_pipeline import BARE, daemon_config, memory, start_broker
from paho.mqtt.enums import CallbackAPIVersion

NAIVE = Path(__file__).with_name("naive_loop.py")
# What the installed console script runs (``edge run ...``), rather than ``python -m edge``,
# whose runpy start-up an installed daemon does not pay.
EDGE = [sys.executable, "-c", "import sys; from edge.cli import main; sys.exit(main())"]
PROGRAMS = ("bare", "daemon", "naive")
WARMUP_S = 1.5  # results before this, after the first one, are not counted
TAIL_S = 0.5  # nor those in the last half second, while the program stops
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# In a child process, so that this one maps none of numpy, OpenCV or the runtime: a page this
# process mapped too would not count as the measured program's private memory.
DESCRIBE = """
import json, sys
from ai_edge_litert.interpreter import Interpreter
from edge.models import resolve
path = resolve(sys.argv[1])[0]
shape = Interpreter(model_path=str(path)).get_input_details()[0]["shape"]
print(json.dumps([str(path), int(shape[2]), int(shape[1])]))
"""

# The work the daemon's imports do before it can start (counts do not move with the machine's
# load, times do): modules loaded (those deferred to their first use not counted), dataclasses
# created, and how much of their creation is compiling the source of their generated methods,
# which dataclasses does with exec() for every class at every start.
STARTUP_WORK = """
import dataclasses, json, sys, time
spent = {"classes": 0, "class_s": 0.0}
real_process = dataclasses._process_class
def timed_process(cls, *args, **kwargs):
    t = time.perf_counter()
    try:
        return real_process(cls, *args, **kwargs)
    finally:
        spent["classes"] += 1
        spent["class_s"] += time.perf_counter() - t
dataclasses._process_class = timed_process
t0 = time.perf_counter()
import edge.cli
from edge import deferred_modules
deferred_modules.defer()  # as `edge run` does before it imports the daemon
import edge.daemon
import_s = time.perf_counter() - t0
from edge import dataclass_cache
cached, compiled = dataclass_cache.counts()
deferred = deferred_modules.pending()
print(json.dumps({**spent, "import_s": import_s, "modules": len(sys.modules) - len(deferred),
                  "edge_modules": sum(1 for m in sys.modules if m.split(".")[0] == "edge"),
                  "cached": cached, "compiled": compiled, "deferred": deferred}))
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """One program's run: results/s, RSS and private MiB, seconds from spawn to first result,
    CPU milliseconds (user + system, all threads, in the steady state) per result."""

    rate: float
    rss: float
    private: float
    first_s: float
    cpu_ms: float


class Arrivals:
    """Arrival times (time.monotonic()) of results at a subscriber, per device."""

    def __init__(self, port: int) -> None:
        self._times: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_connect = lambda c, *_a: c.subscribe("edge/+/+/result", qos=0)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        time.sleep(0.5)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        device = msg.topic.split("/")[1]
        with self._lock:
            self._times.setdefault(device, []).append(now)

    def take(self, device: str) -> list[float]:
        """The arrivals for ``device`` so far, forgetting them."""
        with self._lock:
            return self._times.pop(device, [])

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def run(
    program: str,
    model: Path,
    size: tuple[int, int],
    seconds: float,
    tmp: Path,
    port: int,
    arrivals: Arrivals,
) -> Sample:
    """One run of ``program`` in a fresh process."""
    device = {"bare": "", "daemon": "bench", "naive": "naive"}[program]
    if program == "bare":
        cmd = [sys.executable, "-c", BARE, str(model), str(seconds)]
    elif program == "daemon":
        cfg = daemon_config(tmp, port, str(model.parent), 0, size)
        cmd = [*EDGE, "run", "--config", str(cfg), "--duration", str(seconds)]
    else:
        cmd = [sys.executable, str(NAIVE), str(model), "--size", f"{size[0]}x{size[1]}"]
        cmd += ["--seconds", str(seconds), "--port", str(port), "--topic", "edge/naive/cam/result"]
    arrivals.take(device)
    wall0, t0 = time.time(), time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGE_LOG_LEVEL": "warning"},
    )
    # CPU time is read over the steady part of the run (start-up excluded), memory at its end.
    time.sleep(2.0)
    cpu0, at0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(max(1.0, seconds - 3.5))
    busy = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - at0)  # cores' worth
    mem = memory(proc.pid)
    out, err = proc.communicate(timeout=seconds + 60)
    if proc.returncode != 0:
        raise SystemExit(f"{program} failed ({proc.returncode}): {err}")
    if program == "bare":
        report = json.loads(out)
        rate = float(report["rate"])
        return Sample(
            rate, mem["rss"], mem["private"], report["first_result_at"] - wall0, busy * 1000 / rate
        )
    time.sleep(0.3)  # the last results on their way to the subscriber
    times = arrivals.take(device)
    if len(times) < 10:
        raise SystemExit(f"{program}: only {len(times)} results arrived; its log: {err}")
    start, end = times[0] + WARMUP_S, times[-1] - TAIL_S
    counted = [t for t in times if start <= t <= end]
    rate = (len(counted) - 1) / (counted[-1] - counted[0])
    return Sample(rate, mem["rss"], mem["private"], times[0] - t0, busy * 1000 / rate)


def first_result(
    detector: str, size: tuple[int, int], tmp: Path, port: int, arrivals: Arrivals
) -> float:
    """Seconds from spawning the daemon (detector, source paced at 30 fps) to its first result
    at the subscriber."""
    cfg = daemon_config(tmp, port, detector, 30, size, device="start")
    arrivals.take("start")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*EDGE, "run", "--config", str(cfg), "--duration", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EDGE_LOG_LEVEL": "warning"},
    )
    _, err = proc.communicate(timeout=60)
    time.sleep(0.2)
    times = arrivals.take("start")
    if proc.returncode != 0 or not times:
        raise SystemExit(f"detector run failed ({proc.returncode}): {err}")
    return times[0] - t0


def startup_work(runs: int = 5) -> str:
    """One line on what importing ``edge.cli`` and ``edge.daemon`` does (medians of ``runs``
    fresh processes): modules, dataclasses and the milliseconds spent creating them."""
    samples = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", STARTUP_WORK], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(runs)
    ]

    def ms(key: str) -> float:
        return med(s[key] for s in samples) * 1000

    return (
        f"daemon imports ({runs} runs): {ms('import_s'):.1f} ms, {samples[0]['modules']} modules "
        f"({samples[0]['edge_modules']} of edge), {samples[0]['classes']} dataclasses created in "
        f"{ms('class_s'):.1f} ms; their generated methods: {samples[0]['cached']} from the "
        f"cache, {samples[0]['compiled']} compiled (edge.dataclass_cache); run at first use, "
        f"not at import: {', '.join(samples[0]['deferred']) or 'none'} (edge.deferred_modules)"
    )


def compile_bytecode() -> None:
    """Compile edge's modules as ``pip install`` does: a source checkout run with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start (about a third
    of the daemon's start-up here). Then fill the cache of dataclass methods as the first start
    of an installed daemon does (edge.dataclass_cache; that variable keeps it from being
    written, as it keeps ``.pyc`` files)."""
    out = subprocess.run(
        [sys.executable, "-c", "import edge, os; print(os.path.dirname(edge.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", out], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import edge.cli, edge.daemon"], check=True, env=env)


def describe(ref: str) -> tuple[Path, tuple[int, int]]:
    """The model file of ``ref`` (a bundled name or a path) and its input size (w, h)."""
    out = subprocess.run(
        [sys.executable, "-c", DESCRIBE, ref], check=True, capture_output=True, text=True
    ).stdout
    path, width, height = json.loads(out)
    return Path(path), (width, height)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def on_interpreter(python: str, argv: list[str]) -> int:
    """Run this benchmark with ``argv`` on ``python``: in a venv made from it in a temporary
    folder, with this checkout installed as scripts/install.sh does."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="edge-lean-venv-") as tmp:
        venv = Path(tmp) / "venv"
        steps = [
            ([python, "-m", "venv", str(venv)], f"making a venv from {python}"),
            (
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    str(repo),
                ],
                f"installing {repo} into it (pip install ., as scripts/install.sh does)",
            ),
        ]
        for cmd, what in steps:
            print(f"{what} ...", flush=True)
            try:
                subprocess.run(cmd, check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise SystemExit(
                    f"{what} failed: {exc}; --interpreter needs a Python 3.11 or "
                    "later with venv (apt install python3-venv) and the package "
                    "index reachable"
                ) from exc
        run = subprocess.run([str(venv / "bin" / "python"), __file__, *argv], check=False)
        return run.returncode


def interpreter() -> str:
    """The Python the programs run on: version, installation (its prefix), and whether libpython
    is a shared library (builds of one version differ in start-up and pure-Python speed)."""
    with open("/proc/self/maps") as f:
        shared = "libpython" in f.read()
    home = os.path.expanduser("~")
    prefix = sys.base_prefix
    if prefix == home or prefix.startswith(home + os.sep):
        prefix = "~" + prefix[len(home) :]
    venv = ", in a venv" if sys.prefix != sys.base_prefix else ""
    return (
        f"python: {platform.python_implementation()} {platform.python_version()} ({prefix}{venv}), "
        f"libpython {'a shared library' if shared else 'linked into the executable'}"
    )


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=7.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three programs")
    parser.add_argument("--model", default="mobilenet-v2-bench")
    parser.add_argument("--detector", default="shapes-detector")
    parser.add_argument("--starts", type=int, default=11, help="detector starts per size")
    parser.add_argument(
        "--interpreter",
        help="run the programs on this Python, in a venv made from it with this checkout "
        "installed (e.g. /usr/bin/python3)",
    )
    args = parser.parse_args()
    if args.interpreter:
        same = ["--seconds", f"{args.seconds}", "--rounds", f"{args.rounds}", "--model"]
        same += [args.model, "--detector", args.detector, "--starts", f"{args.starts}"]
        sys.exit(on_interpreter(args.interpreter, same))
    compile_bytecode()
    model, lores = describe(args.model)
    _, detector_lores = describe(args.detector)
    sizes = {"lores": lores, "640x480": (640, 480)}
    print(interpreter())
    print(
        f"machine: {os.cpu_count()} cores, load average (1/5/15 min) {load()} at the start; "
        f"model {args.model}, 1 interpreter thread; {args.rounds} rounds of {args.seconds:g} s "
        "per program and size; medians over the rounds"
    )
    tmp = Path(tempfile.mkdtemp(prefix="edge-lean-"))
    broker, port = start_broker(tmp)
    arrivals = Arrivals(port)
    table: dict[str, dict[str, list[Sample]]] = {}
    starts: dict[str, list[float]] = {}
    try:
        for name, size in sizes.items():
            table[name] = {p: [] for p in PROGRAMS}
            for r in range(args.rounds):
                for program in PROGRAMS[r % 3 :] + PROGRAMS[: r % 3]:
                    sample = run(program, model, size, args.seconds, tmp, port, arrivals)
                    table[name][program].append(sample)
        for name, size in {"lores": detector_lores, "640x480": (640, 480)}.items():
            starts[name] = [
                first_result(args.detector, size, tmp, port, arrivals) for _ in range(args.starts)
            ]
    finally:
        arrivals.close()
        broker.terminate()
        broker.wait()

    for name, size in sizes.items():
        rows = table[name]
        where = (
            "the model's input size, as the Pi camera's lores stream"
            if name == "lores"
            else ("resized to the model's input by the program")
        )
        print(f"\nsource {size[0]}x{size[1]} ({where}):")
        print(
            "  program   results/s  ÷ bare   RSS MiB  + bare  private MiB  start → first"
            "  CPU ms/result"
        )
        bare = rows["bare"]
        for program in PROGRAMS:
            samples = rows[program]
            ratios = [s.rate / b.rate for s, b in zip(samples, bare, strict=True)]
            rss = med(s.rss for s in samples)
            print(
                f"  {program:8s} {med(s.rate for s in samples):9.1f}  {med(ratios):6.3f}  "
                f"{rss:8.1f}  {rss - med(b.rss for b in bare):+6.1f}  "
                f"{med(s.private for s in samples):11.1f}  "
                f"{med(s.first_s for s in samples):11.3f} s  {med(s.cpu_ms for s in samples):13.2f}"
            )
        ratios = [d.rate / n.rate for d, n in zip(rows["daemon"], rows["naive"], strict=True)]
        print(
            f"  daemon ÷ naive throughput: {med(ratios):.3f} "
            f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})"
        )
    print(
        f"\ndaemon start → first result with {args.detector} (source at 30 fps), "
        f"{args.starts} starts: "
        + "; ".join(
            f"{name} median {med(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})"
            for name, v in starts.items()
        )
    )
    print(startup_work())
    print(f"load average at the end: {load()}")
    lo, vga = table["lores"], table["640x480"]
    over = med(s.rss for s in lo["daemon"]) - med(s.rss for s in lo["bare"])
    d_rss, n_rss = med(s.rss for s in vga["daemon"]), med(s.rss for s in vga["naive"])
    speed = med(d.rate / n.rate for d, n in zip(vga["daemon"], vga["naive"], strict=True))
    first = med(starts["lores"])
    print("\nverdicts:")
    verdict(f"lores: daemon RSS is bare + {over:.1f} MiB", "<= +20 MiB", over <= 20)
    verdict(
        f"640x480: daemon RSS {d_rss:.1f} MiB, naive loop {n_rss:.1f} MiB",
        "daemon <= naive",
        d_rss <= n_rss,
    )
    verdict(f"640x480: daemon throughput {speed:.3f} × the naive loop's", ">= 1.1 ×", speed >= 1.1)
    verdict(
        f"start → first result, {args.detector} at lores: median {first:.3f} s",
        "<= 0.3 s",
        first <= 0.3,
    )


def med(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def verdict(what: str, target: str, ok: bool) -> None:
    print(f"  {'PASS' if ok else 'FAIL'}  {what}   (target {target})")


if __name__ == "__main__":
    main()
