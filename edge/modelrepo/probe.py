"""Verifying a version in a child process before the daemon loads it.

The child (``python -m edge.modelrepo.probe``, its request as JSON on stdin) loads the version
with the daemon's runtime options and overrides, exactly as :meth:`Engine.load` would in the
daemon, and runs one whole inference on a blank frame. A model that makes the runtime abort or
segfault in native code kills only the child: the parent reads the signal from its exit status
and reports the version failed while the serving one carries on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from edge.engine import Engine, Overrides
from edge.errors import EX_CONFIG
from edge.runtime import RuntimeOptions

TIMEOUT_S = 120.0  # a Pi Zero loads a large model with a delegate in well under this
_TAIL_LINES = 3


def verify(
    directory: Path,
    options: RuntimeOptions,
    overrides: Overrides,
    timeout: float = TIMEOUT_S,
) -> str | None:
    """Why the version in ``directory`` cannot run, found by loading it and running one
    inference in a child process (blocks for the child's life, about a second), or None."""
    request = json.dumps(
        {"directory": str(directory), "options": _encode(options), "overrides": _encode(overrides)}
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edge.modelrepo.probe"],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading and running it in a verification process took over {timeout:g} s"
    if done.returncode == 0:
        return None
    tail = " | ".join(done.stderr.strip().splitlines()[-_TAIL_LINES:])
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"the runtime crashed ({name}) loading or running it in a verification process" + (
            f": {tail}" if tail else ""
        )
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        return str(answer["error"])
    except (IndexError, ValueError, KeyError, TypeError):
        return f"the verification process exited with code {done.returncode}: {tail}"


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
