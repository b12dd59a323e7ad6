"""The delegate failover chain under an Engine and a camera pipeline: switching away from the
native test delegate and back loses no frame and changes no result."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from broker import wait_for
from fakes.sink import Recorder
from native.chains import DETECTOR, ONE_THREAD, chain_of, open_chain

from edge.config import BudgetSettings, CameraSettings, Config
from edge.engine import Engine, Overrides
from edge.models import load_spec
from edge.output import ResultEvent
from edge.pipeline import Pipeline
from edge.runtime.chain import FailoverStatus
from edge.runtime.failover import FailoverInterpreter
from edge.scene import MovingScene


def scene(seed: int) -> np.ndarray:
    image, _ = MovingScene(320, 240, count=3, seed=seed).frame(0.0)
    return image


def test_engine_on_the_chain_gives_xnnpack_detections_across_a_switch(
    library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """Engine.infer (which fills the input through input_view) on the chain gives the same
    detections as on XNNPACK alone, before and after the native delegate fails."""
    spec = load_spec("shapes-detector")
    interp = open_chain(opened, chain_of(library, control), DETECTOR)
    engine = Engine(spec, interp, Overrides())
    reference = Engine.load(spec, ONE_THREAD)
    for seed in range(6):
        if seed == 3:
            control.write_text("fail")
        image = scene(seed)
        assert engine.infer(image).detections == reference.infer(image).detections, seed
    assert interp.status.active == "xnnpack" and interp.status.switches == 1


class Commander:
    """A pipeline listener that makes the native delegate fail after the ``fail_at``-th result
    and heal after the ``heal_at``-th, waiting there (holding the results back) until a re-probe
    has found it healthy (or the switch back already happened); it snapshots the chain's status
    at each step."""

    def __init__(
        self, interp: FailoverInterpreter, control: Path, fail_at: int, heal_at: int
    ) -> None:
        self.interp = interp
        self.control = control
        self.fail_at = fail_at
        self.heal_at = heal_at
        self.count = 0
        self.seen: list[FailoverStatus] = []
        self.healed = False

    def on_result(self, event: ResultEvent) -> None:
        self.count += 1
        if self.count == self.fail_at:
            self.seen.append(self.interp.status)
            self.control.write_text("fail")
        elif self.count == self.heal_at:
            self.seen.append(self.interp.status)
            self.control.write_text("ok")
            self.healed = wait_for(lambda: "native" in self.found(), 10)

    def found(self) -> tuple[str, str]:
        """Pending, or already taken over by the inference thread (it may not be waiting)."""
        status = self.interp.status
        return status.pending, status.active


def test_pipeline_switches_mid_run_without_a_seq_gap_and_back(
    tmp_path: Path, library: Path, control: Path, opened: list[FailoverInterpreter]
) -> None:
    """A camera's model on the chain: the native delegate failing mid-run moves it to XNNPACK
    with every frame answered (seq 1..n, no gap, no error, each result what XNNPACK gives for
    that frame), and a re-probe moves it back once the delegate is healthy."""
    frames = [scene(s) for s in range(24)]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    spec = load_spec("shapes-detector")
    interp = open_chain(opened, chain_of(library, control), DETECTOR, reprobe_s=0.1)
    engine = Engine(spec, interp, Overrides())
    cfg = Config(
        device="testdev",
        cameras=(CameraSettings(source=f"{folder}/", name="a", realtime=False),),
        budget=BudgetSettings(latency_ms=0),  # the commander holds results back while it waits
    )
    rec = Recorder()
    commander = Commander(interp, control, fail_at=8, heal_at=16)
    p = Pipeline(cfg, [rec, commander], engine_loader=lambda ref: engine)
    try:
        p.start()
        assert wait_for(p.finished, 30), p.stats()
    finally:
        p.stop()
    got = rec.of("a")
    assert [c.seq for c in got] == list(range(1, len(frames) + 1))
    reference = Engine.load(spec, ONE_THREAD)
    for call, image in zip(got, frames, strict=True):
        assert call.result.detections == reference.infer(image).detections
    stats = p.cameras["a"].stats()
    assert stats["inferred"] == len(frames)
    assert stats["errors"] == stats["dropped"] == stats["skipped_latency"] == 0
    before_fail, before_heal = commander.seen
    assert before_fail.active == "native" and before_fail.switches == 0
    assert before_heal.active == "xnnpack" and before_heal.last_switch is not None
    assert "failing on command" in before_heal.last_switch.reason
    assert commander.healed
    final = interp.status
    assert final.active == "native" and final.switches == 2
    assert final.last_switch is not None and final.last_switch.source == "xnnpack"
    assert p.stats()["models"]["shapes-detector"]["degraded"] is None
