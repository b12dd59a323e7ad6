"""The daemon's build of a configuration (start and reload): what a refused configuration
loaded is closed again, and what the running configuration shares with it is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.config import load
from edge.daemon import Daemon
from edge.engine import Engine
from edge.errors import EdgeError


def write(tmp: Path, name: str, threads: int, source: str) -> Path:
    cfg = tmp / name
    cfg.write_text(
        f'device = "build"\nstate_dir = "{tmp / "state"}"\n'
        f'[model]\npath = "shapes-detector"\nthreads = {threads}\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 1\n'
        f'[[cameras]]\nname = "cam"\nsource = "{source}"\nfps = 5\n'
    )
    return cfg


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[Engine]:
    """Every engine closed while the test runs (and really closed)."""
    out: list[Engine] = []
    real = Engine.close

    def close(self: Engine) -> None:
        out.append(self)
        real(self)

    monkeypatch.setattr(Engine, "close", close)
    return out


def test_a_refused_configuration_closes_the_engines_it_loaded(
    tmp_path: Path, closed: list[Engine]
) -> None:
    """A configuration whose model loads (other settings, so a new engine) but whose camera
    file is missing is refused, and the engine loaded for it is closed; the running
    configuration's engine is neither closed nor replaced, and still answers."""
    good = load(write(tmp_path, "good.toml", 1, "synthetic"))
    daemon = Daemon(good)
    built = daemon._build(good)
    daemon._engines = built.engines
    (running,) = built.engines.values()
    built.publisher.close()
    bad = load(write(tmp_path, "bad.toml", 2, str(tmp_path / "missing.mp4")))
    with pytest.raises(EdgeError, match=r"missing\.mp4"):
        daemon._build(bad)
    assert len(closed) == 1 and closed[0] is not running
    assert closed[0].interpreter.info.threads == 2
    # Same settings as the running one: the engine is shared, so nothing is closed.
    shared = load(write(tmp_path, "shared.toml", 1, str(tmp_path / "missing.mp4")))
    with pytest.raises(EdgeError, match=r"missing\.mp4"):
        daemon._build(shared)
    assert len(closed) == 1
    assert running.infer(np.full((120, 160, 3), 114, np.uint8)).detections == ()
    running.close()
