"""The methods :mod:`dataclasses` generates for edge's own classes, compiled once per interpreter
instead of at every start.

For each dataclass, Python writes out the source of ``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__`` and ``__delattr__`` and compiles it with ``exec``; it has no cache
for them as it has for modules (``__pycache__``). For the 53 frozen classes that the daemon
builds before its first result that is some 300 compilations, 35-60 ms of every start (the whole
``edge run`` takes about 0.3 s to its first result). Here the code those compilations produce is
kept in one file, keyed by the exact source text, and reused; a start compiles only what changed
since the last one.

What the cache holds is what ``exec`` compiles from exactly that text with exactly this
interpreter (the file records ``sys.version`` and the optimization level; the compile inherits
no ``__future__`` flags, as ``exec`` called from ``dataclasses`` does not), so a class built
from it is the class built without it, down to its methods' code and annotations. Only calls
from ``dataclasses`` for modules of this package take the cache; every other ``exec``
(another package's dataclasses, anything else) passes through untouched. Where
``dataclasses`` stops calling ``exec`` by that name, nothing is cached and nothing changes.

The file: ``dataclasses-<implementation cache tag>.marshal`` in ``$EDGE_CACHE_DIR``, else the
service's ``$CACHE_DIRECTORY`` (systemd's ``CacheDirectory=``), else ``$XDG_CACHE_HOME/edge``,
else ``~/.cache/edge``. It is read only if this user owns it and nobody else can write it (it
holds code, as a ``.pyc`` does); one that is missing, damaged or from another interpreter is
ignored and replaced. It is written, by rename, when something new was compiled and the
directory is writable, unless Python was told not to write bytecode (``PYTHONDONTWRITEBYTECODE``,
``-B``). ``EDGE_CACHE_DIR=`` (empty) turns the cache off.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import os
import sys
from types import CodeType
from typing import Any

FILENAME = f"dataclasses-{sys.implementation.cache_tag or 'none'}.marshal"
_HEADER = f"edge dataclass methods 2; {sys.version}; optimize {sys.flags.optimize}"
_MAX_ENTRIES = 4096  # beyond this, a write keeps only what this process used

_codes: dict[str, CodeType] = {}  # source text → compiled code, loaded and new
_used: set[str] = set()
_state: dict[str, Any] = {"dirty": False, "path": None, "compiled": 0}  # path: installed


def cache_path() -> str | None:
    """Where the cache lives for this process (None: turned off with ``EDGE_CACHE_DIR=``)."""
    env = os.environ
    if "EDGE_CACHE_DIR" in env:
        return os.path.join(env["EDGE_CACHE_DIR"], FILENAME) if env["EDGE_CACHE_DIR"] else None
    if env.get("CACHE_DIRECTORY"):  # systemd may list several, separated by ':'
        return os.path.join(env["CACHE_DIRECTORY"].split(":")[0], FILENAME)
    if env.get("XDG_CACHE_HOME"):
        return os.path.join(env["XDG_CACHE_HOME"], "edge", FILENAME)
    return os.path.join(os.path.expanduser("~"), ".cache", "edge", FILENAME)


def install() -> None:
    """Load the cache and have :mod:`dataclasses` compile edge's methods through it. Call before
    any of edge's dataclasses is created (``edge/__init__.py`` does); twice is once."""
    if _state["path"] is not None:
        return
    path = cache_path()
    if path is None:
        return
    import dataclasses  # every module of edge needs it next

    _state["path"] = path
    _codes.update(_read(path))
    dataclasses.exec = _exec  # type: ignore[attr-defined]  # the name dataclasses resolves
    atexit.register(save)


def uninstall() -> None:
    """Give :mod:`dataclasses` the builtin ``exec`` back and drop the cache (tests)."""
    import dataclasses

    if getattr(dataclasses, "exec", None) is _exec:
        del dataclasses.exec  # type: ignore[attr-defined]
    _state.update(dirty=False, path=None, compiled=0)
    _codes.clear()
    _used.clear()
    atexit.unregister(save)


def counts() -> tuple[int, int]:
    """(methods taken from the cache, methods compiled) by this process so far (benchmarks)."""
    return len(_used) - _state["compiled"], _state["compiled"]


def save(*, release: bool = False) -> bool:
    """Write the cache if this process compiled something new (True when written). With
    ``release``, then drop it from memory: what is created later compiles as without the cache
    (the daemon releases once it has started; the cache is about half a MiB)."""
    written = False
    path = _state["path"]
    if _state["dirty"] and path is not None and not sys.dont_write_bytecode:
        _state["dirty"] = False
        codes = _codes if len(_codes) <= _MAX_ENTRIES else {s: _codes[s] for s in _used}
        written = _write(path, codes)
    if release:
        uninstall()
    return written


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    if type(source) is str and type(globals) is dict and _ours(globals.get("__name__")):
        code = _codes.get(source)
        if type(code) is not CodeType:
            # dont_inherit: compiled as exec() compiles it for dataclasses, whose module has no
            # __future__ imports (this one's would make every annotation a string).
            code = _codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
            _state["dirty"] = True
            _state["compiled"] += 1
        _used.add(source)
        return builtins.exec(code, globals, locals)
    return builtins.exec(source, globals, locals)


def _ours(module: object) -> bool:
    return type(module) is str and (module == "edge" or module.startswith("edge."))


def _read(path: str) -> dict[str, CodeType]:
    import marshal  # built in: no import cost

    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return {}  # code someone else could have written: not run
            header, codes = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if header != _HEADER or type(codes) is not dict:
        return {}
    return codes


def _write(path: str, codes: dict[str, CodeType]) -> bool:
    import marshal

    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((_HEADER, codes)))
        os.replace(tmp, path)
    except OSError:  # a read-only home, a full disk: the next start compiles, as without it
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True
