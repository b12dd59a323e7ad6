"""Code run in a fresh interpreter (from the checkout, as the daemon's start would be) that
reports on its last line of output, as JSON: what the start-up tests read."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def report(code: str, *argv: str, env: Mapping[str, str] | None = None, check: bool = True) -> Any:
    """The JSON value on the last line ``code`` prints, run as ``python -c code argv...`` in
    the checkout with ``env`` (default: this process's); with ``check`` False a non-zero exit is
    not an error (a refused run still reports)."""
    out = subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=check,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=None if env is None else dict(env),
        timeout=60,
    ).stdout
    return json.loads(out.splitlines()[-1])
