"""Make ``import picamera2`` (and ``import libcamera``), or ``import hailo_platform``, find the
fakes in this folder, for one test.

Used as ``with fake_picamera2() as module: ...`` (or ``fake_hailo_platform()``) from a fixture.
Whatever modules of those names were imported before (the real ones, on a Pi) are put back
afterwards, so a hardware test later in the same session still gets the real library.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

FAKES = str(Path(__file__).resolve().parent)
_PACKAGES = ("picamera2", "libcamera")


def _ours(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@contextmanager
def _faked(top: str, packages: tuple[str, ...]) -> Iterator[ModuleType]:
    saved = {name: mod for name, mod in sys.modules.items() if _ours(name, packages)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, FAKES)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(top)
        assert module.__file__ is not None and module.__file__.startswith(FAKES)
        yield module
    finally:
        sys.path.remove(FAKES)
        for name in [n for n in sys.modules if _ours(n, packages)]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextmanager
def fake_picamera2() -> Iterator[ModuleType]:
    with _faked("picamera2", _PACKAGES) as module:
        yield module


@contextmanager
def fake_hailo_platform() -> Iterator[ModuleType]:
    with _faked("hailo_platform", ("hailo_platform",)) as module:
        yield module
