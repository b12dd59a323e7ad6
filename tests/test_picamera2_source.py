"""The picamera2 source against the picamera2 test double (and, on a Pi, the real camera)."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterator
from types import ModuleType

import cv2
import numpy as np
import pytest
from fakes.activate import fake_picamera2

from edge.capture import CaptureThread
from edge.errors import ConfigError, SourceError
from edge.scene import COLOURS, MovingScene
from edge.sources import SourceSpec
from edge.sources.picamera2 import Picamera2Source


@pytest.fixture
def picam(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The picamera2 test double on sys.path, showing a still scene."""
    with fake_picamera2() as module:
        monkeypatch.setattr(module.Picamera2, "fake_speed", 0.0)
        yield module


def source(**fields: object) -> Picamera2Source:
    return Picamera2Source(SourceSpec(kind="picamera2", **fields))  # type: ignore[arg-type]


def still_scene(module: ModuleType, size: tuple[int, int] = (640, 480)) -> MovingScene:
    """What the fake camera is looking at."""
    return MovingScene(*size, count=3, seed=module.Picamera2.fake_seed, speed=0.0)


def test_lores_yuv_is_converted_to_correct_bgr(picam: ModuleType) -> None:
    """The ISP-scaled YUV420 lores stream arrives as BGR with each shape in its own colour."""
    cam = source(lores=(300, 300), fps=60.0)
    cam.open()
    try:
        frame = cam.read()
    finally:
        cam.close()
    assert frame is not None and frame.image.shape == (300, 300, 3)
    scene = still_scene(picam)
    expected = cv2.resize(scene.frame(0)[0], (300, 300), interpolation=cv2.INTER_AREA)
    assert float(np.abs(frame.image.astype(int) - expected).mean()) < 3.0
    for shape in scene.shapes_at(0):
        x = round(shape.cx * 300 / 640)
        y = round(shape.cy * 300 / 480)
        pixel = frame.image[y, x].astype(int)
        assert np.abs(pixel - COLOURS[shape.colour]).max() <= 12, (shape.colour, pixel)


def test_main_stream_rgb888_is_bgr_already(picam: ModuleType) -> None:
    """Without lores the RGB888 main stream (BGR in memory) is handed on exactly."""
    cam = source(width=320, height=240)
    cam.open()
    try:
        frame = cam.read()
    finally:
        cam.close()
    assert frame is not None
    assert np.array_equal(frame.image, still_scene(picam, (320, 240)).frame(0)[0])


def test_odd_lores_sizes_are_cropped_to_the_request(picam: ModuleType) -> None:
    """An odd model size is captured one pixel larger (the ISP needs even) and cropped."""
    cam = source(lores=(225, 151))
    cam.open()
    try:
        frame = cam.read()
    finally:
        cam.close()
    assert frame is not None and frame.image.shape == (151, 225, 3)
    assert frame.image.flags.c_contiguous


def test_lores_sizes_the_main_stream(picam: ModuleType) -> None:
    """A lores larger than the default main grows main; larger than an explicit main is refused."""
    cam = source(lores=(640, 640))
    assert cam.main_size == (640, 640)
    with pytest.raises(ConfigError, match="larger than the main stream 320x240"):
        source(lores=(640, 640), width=320, height=240)


def test_frames_are_stamped_with_the_sensor_timestamp(picam: ModuleType) -> None:
    """ts_mono is the sensor's start-of-exposure time, before the frame reached us."""
    cam = source(fps=30.0)
    cam.open()
    try:
        frames = [cam.read() for _ in range(3)]
    finally:
        cam.close()
    now = time.monotonic()
    for f in frames:
        assert f is not None
        # The fake stamps exposure start: at least the exposure (16 ms at 30 fps) + 5 ms ago.
        assert 0.02 <= now - f.ts_mono < 1.0
    assert all(a.ts_mono < b.ts_mono for a, b in itertools.pairwise(frames))  # type: ignore[union-attr]


def test_requests_are_released(picam: ModuleType) -> None:
    """Every request goes back to the camera: with 3 buffers, 15 reads never starve it."""
    cam = source(fps=120.0, options={"buffer_count": 3, "timeout": 1.0})
    cam.open()
    try:
        for _ in range(15):
            assert cam.read() is not None
    finally:
        cam.close()


def test_no_camera_is_a_source_error_with_what_to_check(
    picam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no camera attached, open raises SourceError naming the checks to make."""
    monkeypatch.setattr(picam.Picamera2, "fake_cameras", 0)
    with pytest.raises(SourceError) as info:
        source().open()
    text = str(info.value)
    assert "no camera detected" in text and "ribbon cable" in text
    assert "rpicam-hello --list-cameras" in text and "'video' group" in text
    assert isinstance(info.value.__cause__, IndexError)


def test_camera_that_fails_to_initialise_is_a_source_error(
    picam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """picamera2's "__init__ sequence did not complete" becomes the same actionable SourceError."""
    monkeypatch.setattr(picam.Picamera2, "fake_init_fails", True)
    with pytest.raises(SourceError, match=r"no camera detected.*did not complete"):
        source().open()


def test_missing_module_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without picamera2 installed, open raises SourceError with the apt and venv remedy."""
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    with pytest.raises(SourceError) as info:
        source().open()
    assert "sudo apt install python3-picamera2" in str(info.value)
    assert "--system-site-packages" in str(info.value)


def test_a_stalled_camera_raises_after_the_timeout(
    picam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the camera stops delivering, read raises SourceError after the configured timeout."""
    monkeypatch.setattr(picam.Picamera2, "fake_stall_after", 2)
    cam = source(fps=60.0, options={"timeout": 0.4})
    cam.open()
    try:
        assert cam.read() is not None and cam.read() is not None
        start = time.monotonic()
        with pytest.raises(SourceError, match=r"delivered no frame for 0\.4 s"):
            cam.read()
        assert 0.35 <= time.monotonic() - start < 1.0
    finally:
        cam.close()


def test_capture_thread_reopens_a_stalled_camera_and_stops_quickly(
    picam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled camera is reopened and streams again; stop() interrupts a blocked read."""
    monkeypatch.setattr(picam.Picamera2, "fake_stall_after", 3)
    cam = source(fps=60.0, options={"timeout": 0.3})
    cap = CaptureThread(cam, on_frame=lambda f: None, backoff=0.05)
    cap.start()
    try:
        assert cap.wait_for_state("reconnecting", timeout=5)
        assert cap.wait_for_state("streaming", timeout=5)
        assert "no frame" in str(cap.status()["last_error"])
    finally:
        # After 3 more frames the camera stalls again: stop lands in a blocked read.
        start = time.monotonic()
        cap.stop()
        cap.join(1.0)
    assert not cap.is_alive() and time.monotonic() - start < 1.0
    assert cap.history[:4] == ["starting", "streaming", "reconnecting", "streaming"]


def test_fake_validates_like_picamera2(picam: ModuleType) -> None:
    """The test double rejects what picamera2 rejects: lores above main, RGB lores on a Pi 4."""
    with picam.Picamera2() as cam:
        big = cam.create_video_configuration(main={"size": (320, 240)}, lores={"size": (640, 480)})
        with pytest.raises(RuntimeError, match="may not exceed main"):
            cam.configure(big)
        rgb = cam.create_video_configuration(lores={"size": (320, 240), "format": "RGB888"})
        with pytest.raises(RuntimeError, match="lores stream must be YUV"):
            cam.configure(rgb)
        with pytest.raises(ValueError, match="Bad key"):
            cam.create_video_configuration(main={"colour": 1})


@pytest.mark.hardware
@pytest.mark.skipif(os.environ.get("EDGE_HARDWARE") != "1", reason="needs EDGE_HARDWARE=1 on a Pi")
def test_real_camera_delivers_lores_frames() -> None:
    """On a Pi with a camera, the real picamera2 delivers BGR lores frames at about the rate."""
    cam = source(lores=(300, 300), fps=15.0)
    cam.open()
    try:
        frames = [cam.read() for _ in range(16)]
    finally:
        cam.close()
    assert all(f is not None and f.image.shape == (300, 300, 3) for f in frames)
    span = frames[-1].ts_mono - frames[1].ts_mono  # type: ignore[union-attr]
    assert 14 / 15 * 0.8 < span < 14 / 15 * 1.25


@pytest.mark.parametrize(("height", "stride"), [(224, 224), (192, 256), (300, 320), (480, 640)])
def test_i420_conversion_is_bit_identical_to_opencv(height: int, stride: int) -> None:
    """The numpy YUV420 → BGR conversion of lores frames gives OpenCV's pixels exactly."""
    from edge.sources.picamera2 import i420_to_bgr

    rng = np.random.default_rng(height)
    array = rng.integers(0, 256, (height * 3 // 2, stride), dtype=np.uint8)
    expected = cv2.cvtColor(array, cv2.COLOR_YUV2BGR_I420)
    assert np.array_equal(i420_to_bgr(array), expected)
