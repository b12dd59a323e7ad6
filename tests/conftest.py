"""Shared fixtures. ``broker``: a real mosquitto on a free loopback port (see tests/broker.py);
``library``, ``control``, ``opened``: the native failing delegate of the failover tests (see
tests/native/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``hardware`` need a real Pi camera or Coral: they run only with
    EDGE_HARDWARE=1 (on the device) and are the only tests CI may skip."""
    if os.environ.get("EDGE_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="hardware test: run on the device with EDGE_HARDWARE=1")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
