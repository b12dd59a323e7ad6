"""The TFLite interpreter packages edge can run on, in order of preference.

All three expose the same ``Interpreter``/``load_delegate``/``OpResolverType`` API, so a backend
is just the module that provides it. ai-edge-litert is the maintained successor of tflite-runtime
and hands int8 models to XNNPACK (tflite-runtime 2.14 does not, and is ~20× slower on them);
tflite-runtime stays for older Raspberry Pi OS images (it needs numpy < 2); full TensorFlow is the
last resort on development machines.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from types import ModuleType

from edge.errors import RuntimeUnavailableError

log = logging.getLogger(__name__)

# name → (distribution, module providing Interpreter); the order is the preference.
BACKENDS: dict[str, tuple[str, str]] = {
    "ai-edge-litert": ("ai-edge-litert", "ai_edge_litert.interpreter"),
    "tflite-runtime": ("tflite-runtime", "tflite_runtime.interpreter"),
    "tensorflow": ("tensorflow", "tensorflow.lite.python.interpreter"),
}


@dataclass(frozen=True, slots=True)
class Backend:
    """An importable interpreter package: its name, version and module."""

    name: str
    version: str
    module: ModuleType


def _version(dist: str, module: str) -> str:
    """The package's own ``__version__`` (cheap), else its installed metadata."""
    top = sys.modules.get(module.partition(".")[0])
    own = getattr(top, "__version__", None)
    if isinstance(own, str):
        return own
    from importlib import metadata  # costs ~1 MiB and 10 ms: only when the package is silent

    for candidate in (dist, dist + "-cpu"):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def load_backend(preferred: str | None = None) -> Backend:
    """Import the first available backend, or exactly ``preferred`` (default:
    ``$EDGE_RUNTIME`` when set).

    Raises RuntimeUnavailableError naming what to install when none imports.
    """
    preferred = preferred or os.environ.get("EDGE_RUNTIME") or None
    names = [preferred] if preferred else list(BACKENDS)
    errors = []
    for name in names:
        if name not in BACKENDS:
            raise RuntimeUnavailableError(
                f"unknown runtime {name!r}; choose one of {', '.join(BACKENDS)}"
            )
        dist, module = BACKENDS[name]
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # ImportError, or numpy ABI errors from tflite-runtime
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        return Backend(name, _version(dist, module), mod)
    detail = "; ".join(errors)
    raise RuntimeUnavailableError(
        "no TFLite runtime could be imported (" + detail + "). Install one: "
        "`pip install ai-edge-litert` (Python 3.11-3.13, x86_64/aarch64), or on older Raspberry "
        "Pi OS `pip install tflite-runtime 'numpy<2'`."
    )


def available_backends() -> list[Backend]:
    """Every backend that imports here (for ``edge info``)."""
    out = []
    for name in BACKENDS:
        try:
            out.append(load_backend(name))
        except RuntimeUnavailableError:
            continue
    return out
