"""edge.resize: OpenCV's bilinear resize reproduced in numpy, compared pixel for pixel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge import preprocess
from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec
from edge.resize import LinearResize, axis_taps


def opencv(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = np.empty((size[1], size[0], *image.shape[2:]), np.uint8)
    LinearResize(image.shape, size)(image, out)
    return out


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((480, 640, 3), (224, 224)),  # the 4:3 camera → square model case
        ((480, 640, 3), (300, 300)),
        ((480, 640, 3), (320, 240)),  # an exact halving: OpenCV averages 2×2 areas there
        ((720, 1280, 3), (320, 320)),
        ((1080, 1920, 3), (224, 224)),
        ((120, 160, 3), (224, 224)),  # upscaling: the edge pixels are clamped
        ((480, 640), (96, 96)),  # greyscale
        ((1, 1, 3), (5, 3)),
        ((37, 3), (2, 71)),
    ],
)
def test_matches_opencv_on_typical_sizes(shape: tuple[int, ...], size: tuple[int, int]) -> None:
    """Camera-sized colour and grey frames, scaled down, up and by exactly one half, give
    OpenCV's pixels exactly."""
    rng = np.random.default_rng(sum(shape) + sum(size))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(resized(image, size), opencv(image, size))


def test_matches_opencv_on_random_sizes() -> None:
    """Two hundred random source and target sizes, colour or grey, all equal to OpenCV's."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 400, 2))
        size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        shape = (h, w, 3) if rng.random() < 0.5 else (h, w)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(resized(image, size), opencv(image, size), str((shape, size)))


def test_strided_source_and_destination() -> None:
    """A cropped view as the source and a region of a larger canvas as the destination work,
    and repeated calls reuse the buffers without leaving anything behind."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    crop = frame[:, 80:560]
    canvas = np.zeros((300, 340, 3), np.uint8)
    region = canvas[20:220, 30:330]
    resize = LinearResize(crop.shape, (300, 200))
    resize(crop, region)
    np.testing.assert_array_equal(region, opencv(np.ascontiguousarray(crop), (300, 200)))
    assert not canvas[:20].any() and not canvas[220:].any() and not canvas[:, :30].any()
    other = np.ascontiguousarray(crop[::-1])
    resize(other, region)
    np.testing.assert_array_equal(region, opencv(other, (300, 200)))


def test_axis_weights_are_eleven_bit_and_clamped() -> None:
    """Weights are OpenCV's 11-bit fixed point; positions left of the first pixel and right of
    the last take the edge pixel alone."""
    i0, i1, w0, w1 = axis_taps(4, 8)  # upscaling by 2: the outer positions fall off the edge
    assert list(i0) == [0, 0, 0, 1, 1, 2, 2, 3] and list(i1) == [1, 1, 1, 2, 2, 3, 3, 3]
    assert (w0[0], w1[0]) == (2048, 0) and (w0[-1], w1[-1]) == (2048, 0)
    assert (w0[1], w1[1]) == (1536, 512)  # position 0.25


@pytest.mark.parametrize("loaded", [True, False])
def test_preprocessor_loads_no_opencv_to_resize(
    loaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preprocessor resizes with numpy when OpenCV is not loaded (and with OpenCV's faster
    kernel when it is); the tensor is the same either way."""
    monkeypatch.setattr(preprocess, "opencv_loaded", lambda: loaded)
    spec = TensorSpec(0, "input", (1, 224, 224, 3), np.dtype(np.uint8), 1 / 127.5, 127)
    p = Preprocessor(spec, PreprocessConfig(mean=(127.5,), std=(127.5,)))
    frame = np.random.default_rng(4).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out, _ = p.to_array(frame)
    assert (p._plans[frame.shape].resizer is None) is loaded
    expected = Preprocessor(spec, p.config)
    monkeypatch.setattr(preprocess, "opencv_loaded", lambda: not loaded)
    np.testing.assert_array_equal(out, expected.to_array(frame)[0])
