"""Shared fixtures. ``broker``: a real mosquitto on a free loopback port (see tests/broker.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto with a temp config and persistence directory; killed afterwards."""
    b = Broker(tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.kill()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``hardware`` need a real Pi camera or Coral: they run only with
    EDGE_HARDWARE=1 (on the device) and are the only tests CI may skip."""
    if os.environ.get("EDGE_HARDWARE") == "1":
        return
    skip = pytest.mark.skip(reason="hardware test: run on the device with EDGE_HARDWARE=1")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
