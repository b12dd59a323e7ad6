"""What the daemon loads (no OpenCV to resize frames, no other command's modules) and how it
allocates (one malloc arena)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fresh
from broker import Broker, Subscriber

REPO = Path(__file__).resolve().parent.parent


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    return set(fresh.report(f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"))


def test_edge_run_imports_no_other_command() -> None:
    """Parsing an `edge run` command line imports the run command only: not edge demo's
    modules (asyncio, the listener), nor quantize's or preview's."""
    modules = loaded_after(
        "from edge.cli import build_parser\n"
        "build_parser().parse_args(['run', '--source', 'synthetic', '--duration', '1'])"
    )
    assert "edge.commands.run" in modules
    others = {"edge.commands.demo", "edge.demo", "edge.listen", "edge.commands.quantize"}
    assert not others & modules
    assert "asyncio" not in modules and "edge.preview" not in modules


def test_help_lists_every_command_without_importing_them() -> None:
    """`edge --help` names every command from the registry alone; a command's own help
    still shows its options, loaded when asked for."""
    from edge.commands import COMMANDS

    proc = subprocess.run(
        [sys.executable, "-m", "edge", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert all(c.name in proc.stdout for c in COMMANDS)
    modules = loaded_after("from edge.cli import build_parser\nbuild_parser().format_help()")
    assert not {f"edge.commands.{c.module}" for c in COMMANDS} & modules
    demo = subprocess.run(
        [sys.executable, "-m", "edge", "demo", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--duration" in demo.stdout


def test_frames_resized_to_the_model_need_no_opencv(broker: Broker, tmp_path: Path) -> None:
    """A 640×480 source is resized to the detector's input without loading OpenCV: the running
    daemon maps no OpenCV library (nor numpy.random, which the synthetic camera's scene does
    without), and its results still find the shapes."""
    sub = Subscriber(broker, "edge/lean/#")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'device = "lean"\nstate_dir = "{tmp_path / "state"}"\n'
        '[model]\npath = "shapes-detector"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        '[[cameras]]\nname = "cam"\nsource = "synthetic"\nfps = 15\nwidth = 640\nheight = 480\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--duration", "20"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "EDGE_LOG_LEVEL": "warning"},
    )
    try:
        got = sub.wait_for_count(10, 30, "/result")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        sub.close()
    assert got, err
    assert proc.returncode == 0, err
    assert "cv2" not in maps and "opencv" not in maps
    assert "numpy/random" not in maps
    results = [json.loads(p) for p in sub.payloads("/result")]
    found = [r for r in results if r["detections"]]
    assert len(found) >= 0.9 * len(results)
    labels = {d["label"] for r in found for d in r["detections"]}
    assert {"circle", "square", "triangle"} & labels


# Modules of features a configuration turns on; a daemon without them never imports them.
OPTIONAL_FEATURES = {
    "edge.homeassistant": "[homeassistant] enabled",
    "edge.modelrepo.watch": "a model repository",
    "edge.modelrepo.scan": "a model repository",
    "edge.drift": "a model with a baseline",
    "edge.runtime.sensor": "an AI Camera network",
    "edge.rpk": "an AI Camera network",
    "edge.online.server": "[online] enabled",
    "edge.metrics.server": "[metrics] listen",
    "edge.runtime.failover": "a delegate chain",
}


def test_a_daemon_without_optional_features_imports_none_of_them(
    broker: Broker, tmp_path: Path
) -> None:
    """``edge run`` with the bundled detector and nothing else configured serves its camera
    without importing discovery, repository, drift, AI Camera, online, metrics or failover modules
    (each import costs start-up time); turned on, discovery and a baseline import theirs."""
    base = (
        f'device = "plain"\nstate_dir = "{tmp_path / "state"}"\n'
        '[model]\npath = "shapes-detector"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        '[[cameras]]\nname = "cam"\nsource = "synthetic"\nfps = 15\n'
    )
    plain = tmp_path / "plain.toml"
    plain.write_text(base)
    run = (
        "from edge.cli import main\nassert main(['run', '--config', {!r}, '--duration', '1']) == 0"
    )
    modules = loaded_after(run.format(str(plain)))
    assert "edge.pipeline" in modules and "edge.tracking" in modules  # it did run, tracking on
    assert not set(OPTIONAL_FEATURES) & modules, sorted(set(OPTIONAL_FEATURES) & modules)
    on = tmp_path / "on.toml"
    on.write_text(base + "[homeassistant]\nenabled = true\n")
    assert "edge.homeassistant" in loaded_after(run.format(str(on)))


ARENAS = """
import ctypes, sys, threading
from edge.system import one_malloc_arena
one = sys.argv[1] == "one" and one_malloc_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
held, ready, done = [], threading.Barrier(5), threading.Event()
def work():
    held.extend(libc.malloc(1000) for _ in range(100))
    ready.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
ready.wait()
spans = [[int(a, 16) for a in ln.split()[0].split("-")] + [ln.split()[1]]
         for ln in open("/proc/self/maps").read().splitlines()]
done.set()
for t in threads:
    t.join()
# A thread arena is a 64 MiB reservation, mostly inaccessible until the arena grows into it.
print(one, sum(1 for a, b, perms in spans if perms == "---p" and b - a > 32 << 20))
"""


def test_threads_started_after_one_malloc_arena_make_no_arena_of_their_own() -> None:
    """Threads that allocate each reserve a glibc arena (64 MiB of address space) by default;
    after one_malloc_arena(), as `edge run` calls it, they reserve none."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def arenas(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", ARENAS, mode],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=60,
        ).stdout.split()
        return out[0], int(out[1])

    default, one = arenas("default"), arenas("one")
    assert default[0] == "False" and default[1] >= 1
    assert one == ("True", 0)


COLLECTOR = """
import gc, json, sys
from edge import system
collections, calls = [0], []
def count(phase, info):
    collections[0] += phase == "start"
gc.callbacks.append(count)
real = system.resume_collector
def resume(*, freeze=False):
    calls.append([freeze, collections[0], gc.isenabled()])
    real(freeze=freeze)
system.resume_collector = resume
from edge.cli import main
at_main = collections[0]
code = main(sys.argv[1:])
print(json.dumps({"code": code, "at_main": at_main, "calls": calls, "enabled": gc.isenabled(),
                  "frozen": gc.get_freeze_count()}))
"""


def test_the_collector_pauses_while_a_command_starts_and_runs_again_after(
    broker: Broker, tmp_path: Path
) -> None:
    """No garbage collection runs from `edge run`'s start until its daemon has started; then the
    collector runs again, with what start-up made frozen out of it. Any other command, and a
    run refused for its configuration, get the collector back before they work or exit."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'device = "gc"\nstate_dir = "{tmp_path / "state"}"\n'
        '[model]\npath = "shapes-detector"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        '[[cameras]]\nname = "cam"\nsource = "synthetic"\nfps = 15\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("fps = 15", 'fps = "fast"'))

    def started(*argv: str) -> dict[str, Any]:
        # check=False: the refused run exits 78; its report is still printed
        env = {**os.environ, "EDGE_LOG_LEVEL": "warning"}
        report: dict[str, Any] = fresh.report(COLLECTOR, *argv, env=env, check=False)
        return report

    run = started("run", "--config", str(cfg), "--duration", "1")
    assert run["code"] == 0
    # The daemon resumed it, frozen, with no collection since main() began (about 70 otherwise).
    assert run["calls"][0] == [True, run["at_main"], False]
    assert run["enabled"] and run["frozen"] > 10_000
    refused = started("run", "--config", str(bad), "--duration", "1")
    assert refused["code"] == 78
    assert refused["calls"][0][0] is False and refused["enabled"] and refused["frozen"] == 0
    check = started("check-config", str(cfg))
    assert check["code"] == 0
    assert check["calls"][0] == [False, check["at_main"], False]
    assert check["enabled"]
