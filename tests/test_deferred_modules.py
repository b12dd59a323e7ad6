"""Modules run at their first use (edge.deferred_modules): a daemon without TLS never loads
OpenSSL, not even through a broker outage, and code that uses a deferred module sees the real
module, run once however many threads reach it together."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import fresh
import pytest
from broker import Broker
from faultkit import DaemonProc, config_text, results, subscribe, tally, wait_results

from edge import deferred_modules


def openssl_mapped(pid: int) -> list[str]:
    """The OpenSSL libraries (libssl, libcrypto) process ``pid`` has mapped."""
    with open(f"/proc/{pid}/maps") as f:
        names = {line.split()[-1] for line in f if len(line.split()) >= 6}
    return sorted(n for n in names if "libssl" in n or "libcrypto" in n)


def test_the_daemons_imports_leave_ssl_hashlib_and_urllib_request_unrun() -> None:
    """``edge run`` defers the three modules paho-mqtt imports before the daemon's imports: once
    ``edge.daemon`` is imported their extension modules and what urllib.request brings are not
    loaded."""
    got = fresh.report(
        "import argparse, json, sys\n"
        "from edge import deferred_modules\n"
        "from edge.commands import run\n"
        "from edge.commands import UsageError\n"
        "try:  # its first check, after the imports, stops it: nothing to run on\n"
        "    run.run(argparse.Namespace(config=None, source=None))\n"
        "except UsageError:\n"
        "    pass\n"
        "assert 'edge.daemon' in sys.modules\n"
        "loaded = [m for m in ('_ssl', '_hashlib', 'http.client', 'email.parser') "
        "if m in sys.modules]\n"
        "print(json.dumps({'pending': deferred_modules.pending(), 'loaded': loaded}))"
    )
    assert got == {"pending": ["hashlib", "ssl", "urllib.request"], "loaded": []}


def test_other_commands_import_them_as_usual() -> None:
    """Only the daemon defers them: a command that may load TensorFlow (``edge info`` probes it)
    needs OpenSSL loaded before TensorFlow's libraries."""
    got = fresh.report(
        "import json, sys\n"
        "from edge import cli, deferred_modules\n"
        "try:\n"
        "    cli.main(['info', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import edge.daemon\n"
        "print(json.dumps({'pending': deferred_modules.pending(), '_ssl': '_ssl' in sys.modules}))"
    )
    assert got == {"pending": [], "_ssl": True}


def test_using_a_deferred_module_gives_the_real_module() -> None:
    """``import`` binds the module, the first attribute read (or ``dir()``) runs it, and from then
    on it is an ordinary module, the one in sys.modules, that works as imported at the start."""
    got = fresh.report(
        "import json, sys, types\n"
        "from edge import deferred_modules\n"
        "deferred_modules.defer()\n"
        "import hashlib, ssl, urllib.request\n"
        "from hashlib import sha256\n"
        "digest = sha256(b'abc').hexdigest()\n"
        "context = ssl.create_default_context()\n"
        "listed = 'getproxies' in dir(urllib.request)\n"
        "from edge import deferred_modules\n"
        "print(json.dumps({'digest': digest,\n"
        "  'verify': context.verify_mode == ssl.CERT_REQUIRED,\n"
        "  'ordinary': [type(m) is types.ModuleType for m in (hashlib, ssl)],\n"
        "  'same': sys.modules['ssl'] is ssl and sys.modules['hashlib'] is hashlib,\n"
        "  'ssl_ext': '_ssl' in sys.modules, 'listed': listed,\n"
        "  'pending': deferred_modules.pending()}))"
    )
    assert got == {
        "digest": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "verify": True,
        "ordinary": [True, True],
        "same": True,
        "ssl_ext": True,
        "listed": True,
        "pending": [],
    }


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[str]:
    """A module of our own, deferred: its code counts its runs and takes 0.3 s."""
    name = "edge_deferred_probe"
    (tmp_path / f"{name}.py").write_text(
        "import sys, time\n"
        "sys.edge_probe_runs = getattr(sys, 'edge_probe_runs', 0) + 1\n"
        "time.sleep(0.3)\n"
        "if getattr(sys, 'edge_probe_fail', False):\n"
        "    raise RuntimeError('probe failed')\n"
        "VALUE = 42\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
        for attr in ("edge_probe_runs", "edge_probe_fail"):
            if hasattr(sys, attr):
                delattr(sys, attr)


def test_threads_that_reach_a_deferred_module_together_run_it_once(probe: str) -> None:
    """Eight threads reading an attribute at the same moment all get its value; the module's
    code ran once, and none of them saw it half-run."""
    deferred_modules.defer((probe,))
    module = sys.modules[probe]
    assert not hasattr(sys, "edge_probe_runs")
    seen: list[object] = []
    go = threading.Barrier(8)

    def read() -> None:
        go.wait()
        seen.append(module.VALUE)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (seen, getattr(sys, "edge_probe_runs", 0)) == ([42] * 8, 1)
    assert type(module) is types.ModuleType and deferred_modules.pending() == []


def test_a_deferred_module_that_fails_raises_at_its_first_use_as_its_import_would(
    probe: str,
) -> None:
    """Its error reaches the code that used it, the module leaves sys.modules, and the next
    ``import`` runs it again (and fails again) instead of handing out a half-run module."""
    sys.edge_probe_fail = True  # type: ignore[attr-defined]
    deferred_modules.defer((probe,))
    module = sys.modules[probe]
    with pytest.raises(RuntimeError, match="probe failed"):
        _ = module.VALUE
    assert probe not in sys.modules
    with pytest.raises(RuntimeError, match="probe failed"):
        __import__(probe)
    assert sys.edge_probe_runs == 2  # type: ignore[attr-defined]


def test_a_daemon_without_tls_never_loads_openssl_even_through_a_broker_outage(
    broker: Broker, tmp_path: Path
) -> None:
    """Publishing, losing the broker for 2 s and reconnecting (paho's reads and writes failing
    and blocking all the while) map neither libssl nor libcrypto into the daemon; every result
    still arrives, in order."""
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, config_text(broker, tmp_path / "state"))
    try:
        assert wait_results(sub, 20), d.log()
        assert openssl_mapped(d.proc.pid) == [], d.log()
        broker.kill()
        assert d.wait_log("lost the MQTT broker"), d.log()
        assert d.wait_log("cannot reach MQTT broker"), d.log()
        broker.restart()
        n = len(results(sub))
        assert wait_results(sub, n + 100, timeout=30), d.log()
        mapped = openssl_mapped(d.proc.pid)
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.kill()
    assert mapped == [], d.log()
    (t,) = tally(sub).values()
    assert (t.gaps, t.out_of_order) == (0, 0), str(t)
    sub.close()
