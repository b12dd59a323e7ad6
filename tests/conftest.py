"""Shared fixtures. ``broker``: a real mosquitto on a free loopback port (see tests/broker.py);
``library``, ``control``, ``opened``: the native failing delegate of the failover tests (see
tests/native/); ``hailo``, ``hailo_model``: the fake HailoRT and a stand-in HEF (see
tests/hailo_files.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Protocol

import pytest
from broker import Broker

from edge.runtime.failover import FailoverInterpreter


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto with a temp config and persistence directory; killed afterwards."""
    b = Broker(tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native test delegate, compiled with gcc once per run."""
    from native.build import compile_failing_delegate

    return compile_failing_delegate(tmp_path_factory.mktemp("native"))


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    """The delegate's control file, saying "ok"; reset afterwards, which also releases a stalled
    invoke so that its abandoned thread ends."""
    path = tmp_path / "control"
    path.write_text("ok")
    yield path
    path.write_text("ok")


@pytest.fixture
def opened() -> Iterator[list[FailoverInterpreter]]:
    """Failover interpreters made by a test, closed afterwards whatever happened."""
    made: list[FailoverInterpreter] = []
    yield made
    for interp in made:
        interp.close()


@pytest.fixture
def hailo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """The fake hailo_platform on a Hailo-8L with matching driver and firmware; no sysfs
    driver version unless a test writes one; every device released afterwards."""
    from fakes.activate import fake_hailo_platform
    from hailo_files import KNOBS

    from edge.runtime import hailo as backend

    for knob in KNOBS:
        monkeypatch.delenv(knob, raising=False)
    monkeypatch.setattr(backend, "SYSFS_MODULES", tmp_path / "sys-module")
    with fake_hailo_platform() as module:
        yield module
    assert backend._Shared.users == 0 and backend._Shared.vdevice is None


@pytest.fixture
def hailo_model(tmp_path: Path) -> Path:
    """A model directory with a stand-in HEF of the shapes detector for the Hailo-8L."""
    from hailo_files import hailo_detector

    return hailo_detector(tmp_path / "shapes-detector-hailo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``hardware`` need a real Pi camera or Coral: they run only with
    EDGE_HARDWARE=1 (on the device) and are the only tests CI may skip."""
    if os.environ.get("EDGE_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="hardware test: run on the device with EDGE_HARDWARE=1")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


class _Process(Protocol):
    """What the daemon fixtures reap: faultkit.DaemonProc and test_daemon.Daemon."""

    proc: subprocess.Popen[bytes]
    _log: IO[bytes]

    def wait(self, timeout: float = ...) -> int: ...


@pytest.fixture
def daemons() -> Iterator[list[_Process]]:
    """The daemon processes a test starts (append them): any still running at the end is
    killed, and each is reaped with its log file closed."""
    made: list[_Process] = []
    yield made
    for d in made:
        if d.proc.poll() is None:
            d.proc.kill()
        if not d._log.closed:
            d.wait(10)
