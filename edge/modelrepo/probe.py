"""Verifying a version in a child process before the daemon loads it.

The child (``python -m edge.modelrepo.probe``, its request as JSON on stdin) loads the version
with the daemon's runtime options and overrides, exactly as :meth:`Engine.load` would in the
daemon, and runs one whole inference on a blank frame. A model that makes the runtime abort or
segfault in native code kills only the child: the parent reads the signal from its exit status
and reports the version failed while the serving one carries on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from edge.engine import Engine, Overrides
from edge.errors import EX_CONFIG
from edge.runtime import RuntimeOptions

TIMEOUT_S = 120.0  # a Pi Zero loads a large model with a delegate in well under this
_TAIL_LINES = 3
NICE = 10  # the verification child's scheduling priority
_STOP_CHECK_S = 0.2  # how often a waiting parent looks at its stop event


def verify(
    directory: Path,
    options: RuntimeOptions,
    overrides: Overrides,
    timeout: float = TIMEOUT_S,
    stop: threading.Event | None = None,
) -> str | None:
    """Why the version in ``directory`` cannot run, found by loading it and running one
    inference in a child process (blocks for the child's life, about a second), or None.
    ``stop`` set meanwhile kills the child (the daemon is shutting down)."""
    request = json.dumps(
        {"directory": str(directory), "options": _encode(options), "overrides": _encode(overrides)}
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "edge.modelrepo.probe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    pending: str | None = request
    while True:
        try:
            stdout, stderr = child.communicate(pending, timeout=_STOP_CHECK_S)
            break
        except subprocess.TimeoutExpired:
            pending = None  # communicate() already sent it
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                child.kill()
                child.communicate()
                if stop is not None and stop.is_set():
                    return "not verified: the daemon stopped meanwhile"
                return f"loading and running it in a verification process took over {timeout:g} s"
    if child.returncode == 0:
        return None
    tail = " | ".join(stderr.strip().splitlines()[-_TAIL_LINES:])
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        return f"the runtime crashed ({name}) loading or running it in a verification process" + (
            f": {tail}" if tail else ""
        )
    try:
        answer = json.loads(stdout.strip().splitlines()[-1])
        return str(answer["error"])
    except (IndexError, ValueError, KeyError, TypeError):
        return f"the verification process exited with code {child.returncode}: {tail}"


def _encode(obj: RuntimeOptions | Overrides) -> dict[str, Any]:
    out = asdict(obj)
    if isinstance(obj, Overrides) and obj.allow is not None:
        out["allow"] = sorted(obj.allow)
    return out


def _options(data: dict[str, Any]) -> RuntimeOptions:
    values = dict(data)
    values["library_options"] = tuple(tuple(p) for p in values["library_options"])
    values["chain"] = tuple(values["chain"])
    return RuntimeOptions(**{f.name: values[f.name] for f in fields(RuntimeOptions)})


def _overrides(data: dict[str, Any]) -> Overrides:
    values = dict(data)
    if values.get("allow") is not None:
        values["allow"] = frozenset(values["allow"])
    return Overrides(**{f.name: values[f.name] for f in fields(Overrides)})


def main() -> int:
    """The child: load, run once on a blank frame, say so on stdout (exit 0, or 78 with the
    error for a model error)."""
    import numpy as np

    from edge.errors import EdgeError
    from edge.models import load_spec

    # The daemon's cameras come first: on a two-core board the verification would otherwise
    # take CPU from the inference thread and make a live camera drop frames.
    os.nice(NICE)
    request = json.loads(sys.stdin.read())
    try:
        spec = load_spec(Path(request["directory"]))
        engine = Engine.load(spec, _options(request["options"]), _overrides(request["overrides"]))
        try:
            pre = engine.preprocessor
            engine.infer(np.zeros((pre.height, pre.width, 3), np.uint8))
        finally:
            engine.close()
    except EdgeError as exc:
        print(json.dumps({"error": str(exc)}))
        return exc.exit_code or EX_CONFIG
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
