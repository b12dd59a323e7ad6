"""Preprocessing: golden comparisons against a plain numpy reference, transforms, buffers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge import preprocess
from edge.errors import ModelError
from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec, Transform


@pytest.fixture(autouse=True, params=["opencv", "numpy"])
def resizer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: resizing with OpenCV (loaded here) and with edge.resize, as in a
    process without OpenCV; both must give the same pixels."""
    if request.param == "numpy":
        monkeypatch.setattr(preprocess, "opencv_loaded", lambda: False)
    return str(request.param)


def spec(shape: tuple[int, ...], dtype: type, scale: float = 0.0, zp: int = 0) -> TensorSpec:
    return TensorSpec(0, "input", shape, np.dtype(dtype), scale, zp)


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)


def reference(image: np.ndarray, size: tuple[int, int], mean: float, std: float) -> np.ndarray:
    """The textbook pipeline: resize, BGR→RGB, normalize in float."""
    rgb = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)[..., ::-1]
    return (rgb.astype(np.float64) - mean) / std


def test_float_input_matches_reference(frame: np.ndarray) -> None:
    """A float32 input gets (pixel - mean) / std of the resized RGB frame."""
    p = Preprocessor(
        spec((1, 96, 128, 3), np.float32), PreprocessConfig(mean=(127.5,), std=(127.5,))
    )
    out, t = p.to_array(frame)
    np.testing.assert_allclose(out[0], reference(frame, (128, 96), 127.5, 127.5), atol=1e-6)
    assert t == Transform()


def test_uint8_quantized_input_folds_normalization(frame: np.ndarray) -> None:
    """A uint8 input with scale/zero point receives round(real / scale + zp) in one pass."""
    s = spec((1, 64, 64, 3), np.uint8, scale=1 / 128, zp=128)
    p = Preprocessor(s, PreprocessConfig(mean=(127.5,), std=(127.5,)))
    out, _ = p.to_array(frame)
    real = reference(frame, (64, 64), 127.5, 127.5)
    expect = np.clip(np.round(real * 128 + 128), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[0], expect)


def test_quantization_is_computed_in_float32() -> None:
    """x / scale is taken in float32 and rounded half to even, as ONNX QuantizeLinear does: at
    scale 0.0035371012 (the bundled detector's input) pixel 23 is 25.5 in float32 (25.4999993
    in float64) and gets 26, pixel 22 gets 24."""
    s = spec((1, 8, 8, 3), np.uint8, scale=0.0035371012054383755, zp=0)
    lut = Preprocessor(s, PreprocessConfig(mean=(0.0,), std=(255.0,))).lut
    assert lut is not None
    assert [int(v) for v in lut[[22, 23, 115, 207, 230, 231], 0]] == [24, 26, 128, 230, 255, 255]


def test_int8_input(frame: np.ndarray) -> None:
    """An int8 input (scale 1/255, zp -128, 0..1 training range) gets pixel - 128."""
    p = Preprocessor(
        spec((1, 32, 32, 3), np.int8, 1 / 255, -128), PreprocessConfig(mean=(0.0,), std=(255.0,))
    )
    out, _ = p.to_array(frame)
    rgb = cv2.resize(frame, (32, 32))[..., ::-1].astype(np.int16)
    np.testing.assert_array_equal(out[0].astype(np.int16), rgb - 128)


def test_identity_table_is_skipped(frame: np.ndarray) -> None:
    """A uint8 model fed raw pixels needs no lookup table and still gets the exact pixels."""
    p = Preprocessor(
        spec((1, 48, 48, 3), np.uint8, 1 / 255, 0), PreprocessConfig(mean=(0.0,), std=(255.0,))
    )
    assert p.lut is None
    out, _ = p.to_array(frame)
    np.testing.assert_array_equal(out[0], cv2.resize(frame, (48, 48))[..., ::-1])


def test_per_channel_mean_std(frame: np.ndarray) -> None:
    """Per-channel mean/std apply to R, G, B in that order (after the colour conversion)."""
    mean, std = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)
    p = Preprocessor(spec((1, 40, 40, 3), np.float32), PreprocessConfig(mean=mean, std=std))
    out, _ = p.to_array(frame)
    rgb = cv2.resize(frame, (40, 40))[..., ::-1].astype(np.float64)
    np.testing.assert_allclose(out[0], (rgb - np.array(mean)) / np.array(std), atol=1e-5)


def test_bgr_order_keeps_channels(frame: np.ndarray) -> None:
    """color = bgr leaves OpenCV's channel order alone."""
    p = Preprocessor(
        spec((1, 30, 30, 3), np.uint8, 1 / 255, 0),
        PreprocessConfig(color="bgr", mean=(0.0,), std=(255.0,)),
    )
    out, _ = p.to_array(frame)
    np.testing.assert_array_equal(out[0], cv2.resize(frame, (30, 30)))


def test_gray_model_from_colour_frame(frame: np.ndarray) -> None:
    """A single-channel model gets the luma of a colour frame."""
    p = Preprocessor(
        spec((1, 20, 20, 1), np.uint8, 1 / 255, 0), PreprocessConfig(mean=(0.0,), std=(255.0,))
    )
    out, _ = p.to_array(frame)
    gray = cv2.cvtColor(cv2.resize(frame, (20, 20)), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(out[0, ..., 0], gray)


def test_gray_frame_into_colour_model(frame: np.ndarray) -> None:
    """A greyscale frame is replicated into the three channels of a colour model."""
    gray = frame[..., 1].copy()
    p = Preprocessor(spec((1, 20, 20, 3), np.float32), PreprocessConfig(std=(255.0,)))
    out, _ = p.to_array(gray)
    g = cv2.resize(gray, (20, 20)).astype(np.float32) / 255
    for c in range(3):
        np.testing.assert_allclose(out[0, ..., c], g, atol=1e-6)


def test_letterbox_pads_and_maps_back() -> None:
    """Letterbox keeps the aspect ratio, pads evenly, and its transform maps model coordinates
    of the image content back onto the source frame."""
    image = np.full((100, 200, 3), 255, np.uint8)
    p = Preprocessor(
        spec((1, 100, 100, 3), np.uint8, 1 / 255, 0),
        PreprocessConfig(resize="letterbox", pad=0, mean=(0.0,), std=(255.0,)),
    )
    out, t = p.to_array(image)
    rows = np.nonzero(out[0, :, 50, 0])[0]
    assert (rows.min(), rows.max()) == (25, 74)  # 200x100 → 100x50 centred
    assert t.valid == pytest.approx((0.0, 0.25, 1.0, 0.75))
    # The content's corners in model space are the source frame's corners.
    mapped = t.boxes_to_source(np.array([[0.0, 0.25, 1.0, 0.75]], np.float32))
    np.testing.assert_allclose(mapped[0], [0, 0, 1, 1], atol=1e-6)
    mid = t.boxes_to_source(np.array([[0.25, 0.375, 0.5, 0.5]], np.float32))
    np.testing.assert_allclose(mid[0], [0.25, 0.25, 0.5, 0.5], atol=1e-6)


def test_crop_transform() -> None:
    """Crop takes the centred region with the model's aspect ratio and maps boxes back into it."""
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 200
    p = Preprocessor(
        spec((1, 50, 50, 3), np.uint8, 1 / 255, 0),
        PreprocessConfig(resize="crop", mean=(0.0,), std=(255.0,)),
    )
    out, t = p.to_array(image)
    assert (out == 200).all()  # only the centre square was used
    mapped = t.boxes_to_source(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32))
    np.testing.assert_allclose(mapped[0], [0.25, 0, 0.75, 1], atol=1e-6)


def test_writes_into_given_buffer_without_new_allocations(frame: np.ndarray) -> None:
    """Repeated frames of one size reuse the plan's buffers and write into the given tensor."""
    p = Preprocessor(
        spec((1, 64, 64, 3), np.int8, 1 / 255, -128),
        PreprocessConfig(resize="letterbox", mean=(0.0,), std=(255.0,)),
    )
    tensor = np.zeros((1, 64, 64, 3), np.int8)
    assert p.run(frame, tensor) is not None
    plan = p._plans[frame.shape]
    canvas = plan.canvas
    assert canvas is not None
    first = tensor.copy()
    painted = canvas.copy()
    other = np.ascontiguousarray(frame[::-1])  # same size, different pixels
    p.run(other, tensor)
    # Looked up again: a plan rebuilt for the second frame would be a different object.
    assert len(p._plans) == 1 and p._plans[frame.shape] is plan and plan.canvas is canvas
    assert not np.array_equal(canvas, painted), "the second frame was not drawn into the canvas"
    fresh, _ = Preprocessor(p.spec, p.config).to_array(other)
    np.testing.assert_array_equal(tensor, fresh)  # written into the given tensor
    p.run(frame, tensor)
    np.testing.assert_array_equal(tensor, first)  # nothing left over from the other frame


def test_rejects_unfeedable_inputs() -> None:
    """NCHW, 4-channel and int16 inputs are refused with a message naming the shape or type."""
    with pytest.raises(ModelError, match="NHWC"):
        Preprocessor(spec((1, 3, 224, 224), np.float32), PreprocessConfig())
    with pytest.raises(ModelError, match="int16"):
        Preprocessor(spec((1, 8, 8, 3), np.int16), PreprocessConfig())


def test_config_problems_listed_together() -> None:
    """Every invalid preprocessing field is reported, not just the first."""
    cfg = PreprocessConfig(resize="zoom", color="hsv", std=(0.0,), pad=300)
    problems = cfg.problems()
    assert len(problems) == 4
    with pytest.raises(ModelError, match=r"resize.*color"):
        Preprocessor(spec((1, 8, 8, 3), np.uint8), cfg)


def test_interpolation_names_are_opencv_flags() -> None:
    """The interpolation table (kept free of an OpenCV import) holds OpenCV's own flag values."""
    from edge.preprocess import INTERPOLATIONS

    assert INTERPOLATIONS == {
        "linear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "area": cv2.INTER_AREA,
    }


@pytest.mark.parametrize("color", ["rgb", "bgr"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32])
def test_model_size_frames_match_the_opencv_reference(color: str, dtype: type) -> None:
    """Frames already at the input size (no OpenCV involved) give what OpenCV's colour swap
    and lookup table give, for every input type."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    q = (1 / 255, -128) if dtype == np.int8 else (0.0, 0)
    p = Preprocessor(
        spec((1, 48, 64, 3), dtype, *q),
        PreprocessConfig(color=color, mean=(10.0, 20.0, 30.0), std=(50.0, 60.0, 70.0)),
    )
    got, _ = p.to_array(frame)
    src = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if color == "rgb" else frame
    lut = p.lut
    assert lut is not None
    expected = cv2.LUT(src, np.ascontiguousarray(lut).reshape(1, 256, 3))
    assert np.array_equal(got[0], expected)
