"""Measure the delegate failover chain: how long a failure takes to be seen and to be switched
away from, how long switching back takes, and what the wrapper costs a healthy invoke.

Uses the native test delegate (tests/native/failing_delegate.c, compiled into a temporary
directory with the system C compiler) in front of XNNPACK, on a bundled model
(mobilenet-v2-bench by default). Per round, with a fresh chain:

- raise: the delegate's kernel returns an error; detect = from the start of the failed invoke to
  the error, switch = from then until XNNPACK (loaded then) has answered the same input;
- stall: the kernel blocks; detect is the watchdog's ``--timeout-ms``, switch as above;
- back: the delegate healthy again: ready = from then until a re-probe (every
  ``--reprobe-s``) has loaded and verified it off the hot path, take = what the inference
  thread then spends switching to it.

Overhead: median ms per invoke over interleaved rounds of the same XNNPACK interpreter called
bare and through the wrapper (with the watchdog thread and without), and of a healthy
native+XNNPACK chain. Figures only; the load average is printed because the machine may be
shared.

    python scripts/bench_failover.py [--model mobilenet-v2-bench] [--rounds 5] [--threads 2]
                                     [--timeout-ms 250] [--reprobe-s 0.2]

Run from the repo root with the project's environment (``PYTHONPATH=$PWD`` in a checkout).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "native"))

from build import compile_failing_delegate  # noqa: E402

from edge.models import load_spec  # noqa: E402
from edge.runtime import Interpreter, RuntimeOptions, failover  # noqa: E402
from edge.runtime.chain import Link, chain  # noqa: E402


def median(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f}" if values else "       -"


def wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return False


def failure_rounds(
    path: Path, links: tuple[Link, ...], control: Path, mode: str, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Per round: detect and switch ms of a failure in ``mode``, then ready and take ms of the
    switch back."""
    out: dict[str, list[float]] = {"detect": [], "switch": [], "ready": [], "take": []}
    for _ in range(args.rounds):
        control.write_text("ok")
        interp = failover.load(path, links, args.timeout_ms, args.reprobe_s)
        x = np.zeros(interp.inputs[0].shape, interp.inputs[0].dtype)
        for _ in range(3):
            interp.set_input(x)
            interp.invoke()
        control.write_text(mode)
        interp.set_input(x)
        interp.invoke()
        switch = interp.status.last_switch
        assert switch is not None and switch.target == "xnnpack", interp.status
        out["detect"].append(switch.detect_ms)
        out["switch"].append(switch.switch_ms)
        healed = time.perf_counter()
        control.write_text("ok")
        if wait(lambda: interp.status.pending == "native", 30):  # noqa: B023 (called right here)
            out["ready"].append((time.perf_counter() - healed) * 1000)
            interp.set_input(x)
            interp.invoke()
            back = interp.status.last_switch
            assert back is not None and back.target == "native"
            out["take"].append(back.switch_ms)
        interp.close()
    return out


def per_invoke_ms(
    target: Interpreter | failover.FailoverInterpreter, x: np.ndarray, n: int
) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        target.set_input(x)
        target.invoke()
    return (time.perf_counter() - t0) / n * 1000


def overhead(path: Path, links: tuple[Link, ...], args: argparse.Namespace) -> None:
    xnn = chain(["xnnpack"], RuntimeOptions(threads=args.threads))
    watched = failover.load(path, xnn, args.timeout_ms)
    unwatched = failover.load(path, xnn, 0)
    healthy = failover.load(path, links, args.timeout_ms)
    x = np.random.default_rng(0).integers(0, 256, watched.inputs[0].shape, dtype=np.uint8)
    for label, wrapper in (("watchdog", watched), ("no watchdog", unwatched)):
        entry = wrapper._entry
        assert entry is not None
        pair: dict[str, list[float]] = {"bare": [], "wrapped": []}
        for r in range(args.rounds * 4):
            for name in ("bare", "wrapped") if r % 2 else ("wrapped", "bare"):
                target = entry.interp if name == "bare" else wrapper
                pair[name].append(per_invoke_ms(target, x, args.invokes))
        bare, wrapped = statistics.median(pair["bare"]), statistics.median(pair["wrapped"])
        print(
            f"  {label:12s} bare {bare:8.3f} ms  wrapped {wrapped:8.3f} ms  "
            f"overhead {(wrapped - bare) * 1000:+7.0f} µs ({(wrapped / bare - 1) * 100:+.1f} %)"
        )
    bare_entry = watched._entry
    assert bare_entry is not None
    both: dict[str, list[float]] = {"xnnpack": [], "native+xnnpack": []}
    for r in range(args.rounds * 4):
        for name in ("xnnpack", "native+xnnpack") if r % 2 else ("native+xnnpack", "xnnpack"):
            target = bare_entry.interp if name == "xnnpack" else healthy
            both[name].append(per_invoke_ms(target, x, args.invokes))
    print(
        f"  healthy native+xnnpack chain {statistics.median(both['native+xnnpack']):8.3f} ms vs "
        f"bare xnnpack {statistics.median(both['xnnpack']):8.3f} ms"
    )
    for w in (watched, unwatched, healthy):
        w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet-v2-bench")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout-ms", type=float, default=250.0)
    ap.add_argument("--reprobe-s", type=float, default=0.2)
    ap.add_argument("--invokes", type=int, default=10, help="invokes per overhead round")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # each switch logs a warning: the table says it
    path = load_spec(args.model).path
    with tempfile.TemporaryDirectory() as tmp:
        library = compile_failing_delegate(Path(tmp))
        control = Path(tmp) / "control"
        native = Link(
            "native",
            RuntimeOptions(
                threads=args.threads,
                library=str(library),
                library_options=(("control", str(control)),),
            ),
        )
        links = (native, *chain(["xnnpack"], RuntimeOptions(threads=args.threads)))
        print(
            f"{args.model}, {args.threads} threads, {args.rounds} rounds, timeout "
            f"{args.timeout_ms:g} ms, re-probe every {args.reprobe_s:g} s; load average "
            + " ".join(f"{v:.2f}" for v in os.getloadavg())
        )
        print("  mode     detect ms  switch ms   ready ms    take ms   (medians)")
        for mode in ("fail", "stall"):
            r = failure_rounds(path, links, control, mode, args)
            print(
                f"  {'raise' if mode == 'fail' else mode:6s}  {median(r['detect'])}   "
                f"{median(r['switch'])}   {median(r['ready'])}   {median(r['take'])}"
            )
        control.write_text("ok")
        overhead(path, links, args)


if __name__ == "__main__":
    main()
