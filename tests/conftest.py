"""Shared fixtures. ``broker``: a real mosquitto on a free loopback port (see tests/broker.py)."""

from __future__ import annotations

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
