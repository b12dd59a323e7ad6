"""Standard-library modules that edge's dependencies import at their top but use only on paths a
daemon may never take, run at their first use instead of at import.

paho-mqtt imports ``ssl`` (for TLS), ``hashlib`` (for the websocket handshake) and
``urllib.request`` (for proxies named in the environment, and only when PySocks is installed) as
it is imported; ``urllib.request`` brings ``http.client`` and the ``email`` package. Loading them
costs a daemon that uses none of them about 6 MiB resident (OpenSSL's libcrypto and libssl are
most of it) and tens of milliseconds of its start. :func:`defer` puts a module object in
``sys.modules`` for each that has its spec and nothing else: ``import ssl`` binds it as usual,
and the first attribute anyone reads from it (``ssl.SSLContext``, ``from hashlib import
sha256``) runs the module's code in that same object, once, under a lock; it is then the real
module, as if it had been imported at the start. Nothing changes for code that uses them, only
when the cost is paid.

Only the daemon defers them (``edge run`` calls :func:`defer` before its imports; it never loads
TensorFlow). A process that loads TensorFlow, as ``edge quantize`` and ``edge info`` may, must
have OpenSSL's libcrypto loaded before TensorFlow's own libraries: with ``hashlib`` deferred,
TensorFlow 2's import crashes the interpreter when ``hmac`` later loads ``_hashlib``.

:mod:`importlib.util.LazyLoader` does not serve: under Python 3.11 the ``import`` statement
itself reads the module's ``__spec__``, which makes such a module load there.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types

__all__ = ["DEFERRED", "defer", "pending"]

# Each with what needs it, so that nobody wonders why it is here.
DEFERRED = (
    "ssl",  # paho-mqtt, http.client: TLS connections only
    "hashlib",  # paho-mqtt: websockets; urllib.request: digest auth; edge: Home Assistant ids
    "urllib.request",  # paho-mqtt: proxies from the environment, only with PySocks installed
)

_lock = threading.RLock()
_running: set[str] = set()  # whose code is running now (in the thread holding the lock)


class _Deferred(types.ModuleType):
    """A module whose code has not run yet; reading any attribute it lacks runs it."""

    def __getattr__(self, name: str) -> object:
        if not _ran(self):  # read by its own code while it runs: not defined yet
            raise AttributeError(f"partially initialized module {self.__name__!r} has no {name!r}")
        return getattr(self, name)

    def __dir__(self) -> list[str]:
        _ran(self)
        return sorted(self.__dict__)


def _ran(module: types.ModuleType) -> bool:
    """Run ``module``'s code unless it has run or is running; whether it has run."""
    with _lock:  # another thread waits here until the module has run, as an import would
        if type(module) is _Deferred and module.__name__ not in _running:
            _run(module)
    return type(module) is not _Deferred


def _run(module: types.ModuleType) -> None:
    spec = module.__spec__
    assert spec is not None and spec.loader is not None  # set by defer()
    _running.add(spec.name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        # As a failed import does: the next ``import`` tries again and raises.
        if sys.modules.get(spec.name) is module:
            del sys.modules[spec.name]
        raise
    finally:
        _running.discard(spec.name)
    module.__class__ = types.ModuleType  # an ordinary module from here on


def defer(names: tuple[str, ...] = DEFERRED) -> None:
    """Defer each of ``names`` not imported yet and found on this system (``ssl`` only where the
    interpreter has its ``_ssl`` extension: without it ``import ssl`` must fail at once, as the
    importers' ``except ImportError`` expect)."""
    with _lock:
        for name in names:
            if name in sys.modules or (name == "ssl" and importlib.util.find_spec("_ssl") is None):
                continue
            spec = importlib.util.find_spec(name)  # imports the parent package, if any
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            module.__class__ = _Deferred
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)


def pending() -> list[str]:
    """The deferred modules whose code has not run yet."""
    return sorted(n for n, m in list(sys.modules.items()) if type(m) is _Deferred)
