"""Frame → model input tensor, derived from the model's own input details.

A :class:`Preprocessor` is built once per model input. Resizing (``stretch``, ``letterbox``,
``crop``), colour order and normalization are planned per source frame size and cached, so the hot
path only runs kernels into buffers made at load time and writes the last step straight into the
interpreter's input tensor. A source that already delivers frames at the model's input size (the
Pi camera's ``lores`` stream, sized by the ISP) is fed with numpy alone. Bilinear resizing (the
``linear`` interpolation every bundled model uses) runs in numpy too (:mod:`edge.resize`, equal
bit for bit to OpenCV's), unless OpenCV is loaded already, for an OpenCV camera source or
snapshots, when its faster kernel gives the same pixels; the other interpolations and the
greyscale conversion import OpenCV when a frame needs them. Normalization
``(x - mean) / std`` and the input tensor's quantization ``q = x / scale + zero_point`` (in
float32, as ONNX QuantizeLinear computes it) are folded into one 256-entry lookup table per
channel, applied in a single pass (skipped when it is the identity).

Every result carries a :class:`Transform` that maps coordinates normalized to the model input
back to coordinates normalized to the source frame, so boxes are always reported on the frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from edge.choices import RESIZE_MODES
from edge.errors import ModelError
from edge.resize import LinearResize

COLOR_ORDERS = ("rgb", "bgr", "gray")
# interpolation name → OpenCV flag (cv2.INTER_LINEAR, INTER_NEAREST, INTER_AREA)
INTERPOLATIONS = {"linear": 1, "nearest": 0, "area": 3}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model tensor as the interpreter describes it.

    shape: full shape including batch. scale/zero_point: per-tensor affine quantization
    (real = scale * (q - zero_point)); scale 0 means not quantized.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def from_details(cls, d: dict[str, object]) -> TensorSpec:
        """Build from one entry of ``get_input_details()``/``get_output_details()``."""
        q = d.get("quantization") or (0.0, 0)
        assert isinstance(q, tuple | list)
        shape = d["shape"]
        assert isinstance(shape, np.ndarray | list | tuple)
        return cls(
            index=int(d["index"]),  # type: ignore[call-overload]
            name=str(d.get("name", "")),
            shape=tuple(int(s) for s in shape),
            dtype=np.dtype(d["dtype"]),  # type: ignore[call-overload]
            scale=float(q[0]),
            zero_point=int(q[1]),
        )

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        """Real values as float32 (a no-op view for float tensors)."""
        if self.quantized:
            return (values.astype(np.float32) - self.zero_point) * np.float32(self.scale)
        return values.astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class PreprocessConfig:
    """What the model file cannot tell: how its training images were prepared.

    mean/std: per-channel (or one value for all channels), in 0..255 pixel units, applied as
    ``(pixel - mean) / std`` before the input tensor's own quantization. For a float model trained
    on 0..1 inputs that is mean 0, std 255; for -1..1 inputs mean 127.5, std 127.5.
    color: channel order the model expects; ``gray`` for single-channel models.
    pad: letterbox padding value (0..255, before normalization).
    """

    resize: str = "stretch"
    color: str = "rgb"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: str = "linear"
    pad: int = 0

    def problems(self) -> list[str]:
        """Everything wrong with this config, as ``key: message`` strings (empty when valid)."""
        out = []
        if self.resize not in RESIZE_MODES:
            out.append(f"resize: {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.color not in COLOR_ORDERS:
            out.append(f"color: {self.color!r} is not one of {', '.join(COLOR_ORDERS)}")
        if self.interpolation not in INTERPOLATIONS:
            out.append(
                f"interpolation: {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
            )
        if len(self.mean) not in (1, 3) or len(self.std) not in (1, 3):
            out.append("mean/std: give one value or one per channel (3)")
        if any(s == 0 for s in self.std):
            out.append("std: must not be 0")
        if not 0 <= self.pad <= 255:
            out.append("pad: must be within 0..255")
        return out


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps model-input normalized coordinates to source-frame normalized coordinates:
    ``x_src = x_model * sx + ox`` and ``y_src = y_model * sy + oy``.

    valid: the region of the model input (x0, y0, x1, y1, normalized) that holds image content;
    letterbox padding lies outside it.
    """

    sx: float = 1.0
    sy: float = 1.0
    ox: float = 0.0
    oy: float = 0.0
    valid: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map N×4 x0,y0,x1,y1 model-normalized boxes to the source frame, clipped to 0..1."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = boxes[:, 0::2] * self.sx + self.ox
        out[:, 1::2] = boxes[:, 1::2] * self.sy + self.oy
        np.clip(out, 0.0, 1.0, out=out)
        return out


@dataclass(slots=True)
class _Plan:
    """Buffers and steps for one source frame size; built once, reused every frame."""

    crop: tuple[slice, slice] | None
    resize_to: tuple[int, int] | None  # (w, h) for cv2.resize, None when already the right size
    resizer: LinearResize | None  # numpy bilinear resizing, when OpenCV was not loaded for it
    resized: np.ndarray | None  # resize destination (a view into canvas when letterboxing)
    canvas: np.ndarray | None  # letterbox canvas, padding painted once
    convert: str | None  # "rgb" (swap BGR), "gray" (BGR→grey), "expand" (grey→3), None: as is
    converted: np.ndarray | None  # greyscale destination when a lookup table follows
    transform: Transform


class Preprocessor:
    """Writes source frames into a model input tensor.

    Thread affinity: one thread at a time (the inference thread); buffers are reused.
    Accepts HxWx3 BGR uint8 or HxW uint8 greyscale frames of any size; a new frame size costs one
    plan (a few small allocations), every later frame of that size allocates nothing.
    """

    def __init__(self, spec: TensorSpec, config: PreprocessConfig) -> None:
        problems = config.problems()
        if problems:
            raise ModelError("invalid preprocessing settings: " + "; ".join(problems))
        if len(spec.shape) != 4 or spec.shape[0] != 1 or spec.shape[3] not in (1, 3):
            raise ModelError(
                f"model input {spec.name!r} has shape {list(spec.shape)}; edge feeds images as "
                "[1, height, width, channels] with 1 or 3 channels (NHWC). Export the model with "
                "an NHWC image input, or use `--task raw` tooling outside edge for other inputs."
            )
        if spec.dtype not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32)):
            raise ModelError(
                f"model input {spec.name!r} is {spec.dtype}; edge feeds uint8, int8 or float32 "
                "image inputs. Re-export or quantize the model with uint8/int8 or float32 input."
            )
        self.spec = spec
        self.config = config
        self.height = spec.shape[1]
        self.width = spec.shape[2]
        self.channels = spec.shape[3]
        self.color = "gray" if self.channels == 1 else config.color
        self._interp = INTERPOLATIONS[config.interpolation]
        self._lut = _lookup_table(spec, config, self.channels)
        # One contiguous 256-entry column per channel: np.take is fastest on those.
        self._columns = (
            [np.ascontiguousarray(self._lut[:, c]) for c in range(self.channels)]
            if self._lut is not None
            else []
        )
        self._plans: dict[tuple[int, ...], _Plan] = {}

    @property
    def lut(self) -> np.ndarray | None:
        """The folded normalization+quantization table (256×C, or None when the identity)."""
        return self._lut

    def run(self, image: np.ndarray, out: np.ndarray) -> Transform:
        """Preprocess ``image`` into ``out`` (the input tensor view, [1,H,W,C] or [H,W,C]) and
        return the transform back to the source frame."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"frame must be uint8 HxW or HxWx3, got {image.dtype} with shape {image.shape}"
            )
        plan = self._plans.get(image.shape)
        if plan is None:
            plan = self._plans[image.shape] = self._make_plan(image.shape)
        dst = out[0] if out.ndim == 4 else out
        img = image if plan.crop is None else image[plan.crop]
        if plan.resized is not None:
            if plan.resizer is not None:
                plan.resizer(img, plan.resized)
            elif plan.resize_to is not None:
                import cv2

                cv2.resize(img, plan.resize_to, dst=plan.resized, interpolation=self._interp)
            else:  # letterbox of a frame that already fits: only the padding is new
                plan.resized[...] = img
            img = plan.canvas if plan.canvas is not None else plan.resized
        if plan.convert == "gray":
            import cv2

            target = plan.converted if plan.converted is not None else _plane(dst)
            cv2.cvtColor(img, cv2.COLOR_BGR2GRAY, dst=target)
            img = target
        elif plan.convert == "rgb":
            img = img[..., ::-1]  # a view: the copy below or the lookup reads it in RGB order
        elif plan.convert == "expand":
            img = np.broadcast_to(_plane(img)[..., None], (*img.shape[:2], 3))
        if self._lut is not None:
            if self.channels == 1:
                np.take(self._columns[0], _plane(img), out=_plane(dst), mode="clip")
            else:
                for c, column in enumerate(self._columns):
                    np.take(column, img[..., c], out=dst[..., c], mode="clip")
        elif img is not dst and not np.shares_memory(img, dst):
            np.copyto(dst, img.reshape(dst.shape))
        return plan.transform

    def to_array(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        """Preprocess into a fresh [1,H,W,C] array: for calibration, tests and batch tools that
        feed an interpreter through ``set_tensor`` rather than a view."""
        out = np.empty((1, self.height, self.width, self.channels), dtype=self.spec.dtype)
        return out, self.run(image, out)

    def _make_plan(self, shape: tuple[int, ...]) -> _Plan:
        h, w = shape[0], shape[1]
        src_channels = 1 if len(shape) == 2 else shape[2]
        if src_channels not in (1, 3):
            raise ValueError(f"frame must have 1 or 3 channels, got {src_channels}")
        H, W = self.height, self.width
        # Single-channel frames stay 2-D: OpenCV drops a trailing axis of 1 anyway.
        chan: tuple[int, ...] = () if src_channels == 1 else (3,)
        crop = None
        canvas = None
        transform = Transform()
        if self.config.resize == "crop":
            # Largest centred region with the model's aspect ratio, then a plain resize.
            scale = min(w / W, h / H)
            cw, ch = round(W * scale), round(H * scale)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
            transform = Transform(sx=cw / w, sy=ch / h, ox=x0 / w, oy=y0 / h)
            have, want = (cw, ch), (W, H)
        elif self.config.resize == "letterbox":
            scale = min(W / w, H / h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            px, py = (W - nw) // 2, (H - nh) // 2
            transform = Transform(
                sx=W / nw,
                sy=H / nh,
                ox=-px / nw,
                oy=-py / nh,
                valid=(px / W, py / H, (px + nw) / W, (py + nh) / H),
            )
            have, want = (w, h), (nw, nh)
            canvas = np.full((H, W, *chan), self.config.pad, np.uint8)  # padding painted once
        else:
            have, want = (w, h), (W, H)

        resized = None
        if canvas is not None:
            resized = canvas[py : py + nh, px : px + nw]  # resize straight into the canvas
        elif have != want:
            resized = np.empty((H, W, *chan), np.uint8)
        resizer = None
        if have != want and self.config.interpolation == "linear" and not opencv_loaded():
            # Same pixels as cv2.resize: OpenCV is not loaded just to scale frames.
            resizer = LinearResize((have[1], have[0], *chan), want)
        convert = _conversion(src_channels, self.color)
        converted = None
        if convert == "gray" and self._lut is not None:
            converted = np.empty((H, W), np.uint8)
        return _Plan(
            crop,
            want if have != want else None,
            resizer,
            resized,
            canvas,
            convert,
            converted,
            transform,
        )


def opencv_loaded() -> bool:
    """Whether this process has imported OpenCV already (then its resize is the faster one)."""
    return "cv2" in sys.modules


def _plane(a: np.ndarray) -> np.ndarray:
    """The 2-D view of a single-channel image (H×W×1 → H×W); other arrays unchanged."""
    return a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a


def _conversion(src_channels: int, color: str) -> str | None:
    if src_channels == 3:
        return {"rgb": "rgb", "gray": "gray"}.get(color)
    return None if color == "gray" else "expand"  # gray→bgr and gray→rgb are the same


def _lookup_table(spec: TensorSpec, config: PreprocessConfig, channels: int) -> np.ndarray | None:
    """256×C table mapping a pixel value to the tensor value, or None when that is the identity."""
    x = np.arange(256, dtype=np.float64)[:, None]
    mean = np.resize(np.asarray(config.mean, np.float64), channels)[None, :]
    std = np.resize(np.asarray(config.std, np.float64), channels)[None, :]
    real = (x - mean) / std
    if spec.dtype == np.float32:
        return np.ascontiguousarray(real.astype(np.float32))
    info = np.iinfo(spec.dtype)
    if spec.scale:
        # x / scale in float32, rounded half to even, then + zero point, as ONNX
        # QuantizeLinear defines it. In float64 the few pixel values whose float32 quotient is
        # a tie round the other way (the bundled detector's scale puts pixels 23, 115 and 207
        # on 25.5, 127.5 and 229.5), and the same int8 model as ONNX, which quantizes its float
        # input itself, would see another image than the .tflite does.
        q = np.round(real.astype(np.float32) / np.float32(spec.scale)) + spec.zero_point
    else:  # an unquantized integer input takes pixel-unit values directly
        q = np.round(real)
    table_i = np.clip(q, info.min, info.max).astype(spec.dtype)
    if spec.dtype == np.uint8 and np.array_equal(
        table_i, np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], table_i.shape)
    ):
        return None
    return np.ascontiguousarray(table_i)
