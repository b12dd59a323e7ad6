"""The motion gate alone: unchanged frames skipped, changed ones passed, the reference being the
last frame let through, the max-skip heartbeat, and off by default (in the running pipeline:
test_pipeline.py)."""

from __future__ import annotations

import cv2
import numpy as np

from edge.config import CameraSettings
from edge.frame import Frame
from edge.motion import MotionGate
from edge.scene import MovingScene
from edge.workers import CameraState


def scene(seed: int) -> np.ndarray:
    """A 320×240 frame of three shapes (a different scene for every seed)."""
    image, _ = MovingScene(320, 240, count=3, seed=seed).frame(0.0)
    return image


def frame_at(image: np.ndarray, ts_mono: float, seq: int = 0) -> Frame:
    return Frame(image, seq, ts_mono, ts_mono, "cam", seq)


def brighter(image: np.ndarray, by: int) -> np.ndarray:
    return np.clip(image.astype(np.int16) + by, 0, 255).astype(np.uint8)


def test_motion_gate_skips_unchanged_frames_and_passes_changed_ones() -> None:
    """With a threshold, frames equal to the last inferred one are skipped, a different scene
    passes, and the comparison is then against that newer frame."""
    gate = MotionGate(threshold=5.0, max_skip_s=10.0)
    a, b = scene(0), scene(3)
    noisy = brighter(a, 2)  # below the threshold
    passed = [
        gate.moved(frame_at(img, t))
        for t, img in enumerate([a, a, noisy, b, b, a, cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)])
    ]
    assert passed == [True, False, False, True, False, True, False]


def test_motion_gate_compares_with_the_last_frame_let_through() -> None:
    """A slow drift passes once it adds up to the threshold: skipped frames do not become the
    reference, so small steps cannot creep past the gate unseen."""
    gate = MotionGate(threshold=5.0, max_skip_s=0.0)
    a = scene(0)
    steps = [gate.moved(frame_at(brighter(a, 3 * i), float(i))) for i in range(5)]
    # 0 passes; +3 (3 from 0) skipped; +6 (6 from 0) passes; +9 (3 from 6) skipped; +12 passes.
    assert steps == [True, False, True, False, True]


def test_motion_gate_infers_anyway_after_motion_max_skip_s() -> None:
    """An unchanged scene is still inferred once ``motion_max_skip_s`` has passed since the last
    inferred frame; with 0 it never is."""
    a = scene(0)
    every = MotionGate(threshold=5.0, max_skip_s=2.5)
    assert [every.moved(frame_at(a, float(t))) for t in range(8)] == [
        True, False, False, True, False, False, True, False,
    ]  # fmt: skip
    never = MotionGate(threshold=5.0, max_skip_s=0.0)
    assert [never.moved(frame_at(a, float(t) * 100)) for t in range(4)] == [
        True, False, False, False,
    ]  # fmt: skip


def test_motion_gate_off_passes_every_frame() -> None:
    """With motion_threshold 0 (the default) every frame passes, identical or not."""
    state = CameraState(CameraSettings(source="synthetic"), "m")
    assert state.motion.threshold == 0.0
    a = scene(0)
    assert all(state.motion.moved(frame_at(a, float(t))) for t in range(5))


def test_each_camera_gets_a_gate_from_its_settings() -> None:
    """A camera's gate takes motion_threshold and motion_max_skip_s from its settings."""
    settings = CameraSettings(source="synthetic", motion_threshold=7.5, motion_max_skip_s=2.0)
    gate = CameraState(settings, "m").motion
    assert (gate.threshold, gate.max_skip_s) == (7.5, 2.0)
