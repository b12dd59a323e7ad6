"""The cache of dataclass methods (edge.dataclass_cache): a start takes them from it, the classes
are the classes built without it, and a cache that is damaged, foreign or unsafe is not used."""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import fresh
from broker import Broker, Subscriber

from edge.dataclass_cache import FILENAME

REPO = Path(__file__).resolve().parent.parent

# The code of every method dataclasses generated for edge's classes, after the daemon's imports.
METHODS = """
import dataclasses, inspect, json, sys, types
import edge.cli, edge.daemon
from edge import dataclass_cache

def const(c):
    if isinstance(c, types.CodeType):
        return [c.co_code.hex(), [const(x) for x in c.co_consts]]
    if isinstance(c, frozenset):
        return sorted(map(repr, c))
    if isinstance(c, tuple):
        return [const(x) for x in c]
    return repr(c)

methods = {}
for name, mod in sorted(sys.modules.items()):
    if name.split(".")[0] != "edge":
        continue
    for cls in vars(mod).values():
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == name):
            continue
        for meth in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__"):
            f = inspect.unwrap(cls.__dict__[meth]) if meth in cls.__dict__ else None
            if f is not None and hasattr(f, "__code__"):
                code = f.__code__
                methods[f"{cls.__qualname__}.{meth}"] = [
                    const(code), code.co_names, code.co_varnames, code.co_freevars,
                    code.co_flags, f.__module__, f.__qualname__, str(inspect.signature(f)),
                    repr(f.__annotations__), repr(f.__defaults__), repr(f.__kwdefaults__)]
print(json.dumps({"counts": dataclass_cache.counts(), "methods": methods}))
"""


def run(code: str, cache: Path | str, *, bytecode: bool = True) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with the cache in ``cache`` ("" turns it off); with
    ``bytecode`` False, as under PYTHONDONTWRITEBYTECODE."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["EDGE_CACHE_DIR"] = str(cache)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    got: dict[str, Any] = fresh.report(code, env=env)
    return got


def test_a_second_start_takes_every_method_from_the_cache_and_builds_the_same_classes(
    tmp_path: Path,
) -> None:
    first = run(METHODS, tmp_path)
    cached, compiled = first["counts"]
    assert cached == 0 and compiled > 250  # some 300 methods for the daemon's 53 classes
    assert (tmp_path / FILENAME).stat().st_mode & 0o777 == 0o600
    second = run(METHODS, tmp_path)
    assert second["counts"] == [compiled, 0]
    without = run(METHODS, "")
    assert without["counts"] == [0, 0]  # turned off: dataclasses compiled them itself
    assert len(without["methods"]) > 250
    assert second["methods"] == without["methods"] == first["methods"]
    init = without["methods"]["Detection.__init__"]
    assert "label: 'str'" in init[7] and "-> None" in init[7]  # as their module spells them


COUNTS = "import json, edge.daemon\nfrom edge import dataclass_cache\n"
COUNTS += "print(json.dumps({'counts': dataclass_cache.counts()}))"


def test_a_damaged_foreign_or_writable_cache_is_not_used_and_a_damaged_one_is_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILENAME
    compiled = run(COUNTS, tmp_path)["counts"][1]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # cut short, as by a full disk
    assert run(COUNTS, tmp_path)["counts"] == [0, compiled]
    assert path.read_bytes() == good  # written again, whole
    assert run(COUNTS, tmp_path)["counts"] == [compiled, 0]
    _, codes = marshal.loads(good)
    path.write_bytes(marshal.dumps(("edge dataclass methods; another Python", codes)))
    assert run(COUNTS, tmp_path)["counts"] == [0, compiled]
    path.write_bytes(good)
    path.chmod(0o666)  # anybody could have put code there
    assert run(COUNTS, tmp_path)["counts"] == [0, compiled]
    assert path.stat().st_mode & 0o777 == 0o600  # replaced by this user's own


def test_nothing_is_written_where_python_writes_no_bytecode_or_cannot_write(
    tmp_path: Path,
) -> None:
    assert run(COUNTS, tmp_path, bytecode=False)["counts"][0] == 0
    assert not (tmp_path / FILENAME).exists()
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory would be\n")
    assert run(COUNTS, blocked)["counts"][0] == 0  # and the imports worked


OTHERS = """
import dataclasses, json, sys, types
from edge import dataclass_cache
before = dataclass_cache.counts()
@dataclasses.dataclass(frozen=True)
class Outside:
    x: int
middle = dataclass_cache.counts()
probe = types.ModuleType("edge.probe")
sys.modules["edge.probe"] = probe
exec("import dataclasses\\n@dataclasses.dataclass(frozen=True)\\nclass Inside:\\n    y: int",
     probe.__dict__)
after = dataclass_cache.counts()
print(json.dumps({"before": before, "middle": middle, "after": after, "outside": repr(Outside(1)),
                  "inside": repr(probe.Inside(2))}))
"""


def test_only_edge_s_own_classes_take_the_cache(tmp_path: Path) -> None:
    report = run(OTHERS, tmp_path)
    assert report["before"] == report["middle"] == [0, 0]  # Outside's methods passed through
    assert report["after"][0] == 0 and report["after"][1] >= 4  # Inside's took the cache
    assert report["outside"] == "Outside(x=1)" and report["inside"] == "Inside(y=2)"


def test_the_daemon_writes_the_cache_once_it_has_started(broker: Broker, tmp_path: Path) -> None:
    """Written when the daemon has started, not when it exits: a service killed on its first
    start (or running for weeks) leaves it for the next one."""
    sub = Subscriber(broker, "edge/cache/#")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'device = "cache"\nstate_dir = "{tmp_path / "state"}"\n'
        '[model]\npath = "shapes-detector"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        '[[cameras]]\nname = "cam"\nsource = "synthetic"\nfps = 15\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--duration", "30"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**env, "EDGE_LOG_LEVEL": "warning", "EDGE_CACHE_DIR": str(tmp_path / "cache")},
    )
    try:
        got = sub.wait_for_count(3, 30, "/result")
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=20)
        sub.close()
    assert got, err
    assert run(COUNTS, tmp_path / "cache")["counts"][1] == 0


RELEASED = """
import dataclasses, json, sys, types
from edge import dataclass_cache
import edge.result
dataclass_cache.save(release=True)
probe = types.ModuleType("edge.later")
sys.modules["edge.later"] = probe
exec("import dataclasses\\n@dataclasses.dataclass(frozen=True)\\nclass Later:\\n    z: int",
     probe.__dict__)
print(json.dumps({"hooked": "exec" in vars(dataclasses), "counts": dataclass_cache.counts(),
                  "later": repr(probe.Later(3))}))
"""


def test_once_released_the_cache_is_out_of_memory_and_of_the_way(tmp_path: Path) -> None:
    """The daemon releases the cache once it has started: dataclasses has its own exec back,
    nothing is held, and classes made later are built as without the cache."""
    report = run(RELEASED, tmp_path)
    assert report["hooked"] is False
    assert report["counts"] == [0, 0]
    assert report["later"] == "Later(z=3)"
    assert (tmp_path / FILENAME).exists()  # what the imports compiled was written first
