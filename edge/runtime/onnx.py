"""ONNX models on ONNX Runtime, behind the same :class:`edge.runtime.Interpreter` as TFLite
models, so preprocessing, decoding, ``edge infer``/``bench``/``batch`` and the daemon run them
unchanged.

onnxruntime is the optional extra ``edge[onnx]``, imported only when an ``.onnx`` model is
loaded. :class:`OnnxSession` gives the part of the TFLite interpreter API that ``Interpreter``
calls (details, a view of input 0, set/get tensor, invoke) over an ``InferenceSession``. The
model tells its input layout, dtype and size: NCHW ``[1,C,H,W]`` (what PyTorch and ultralytics
export) or NHWC ``[1,H,W,C]``, uint8, int8 or float32. edge's Preprocessor writes NHWC, so an
NCHW input is exposed as the NHWC-ordered view of the NCHW buffer (``transpose(0, 2, 3, 1)``,
no copy): the preprocessor's per-channel lookup writes each channel plane of that buffer
directly, and ``set_tensor`` transposes while it copies. ONNX tensors carry no quantization
parameters: int8 QDQ models (``onnxruntime.quantization``) keep float inputs and outputs, and an
integer input takes pixel values as they are. An NCHW model's 4-D outputs laid out the same
way, ``[1,C,h,w]`` with ``h:w`` the input's aspect ratio (a segmentation mask as PyTorch exports
it), are offered as their NHWC view ``[1,h,w,C]`` too, so decoding reads them as it reads a
TFLite model's. Normalization comes from the model's manifest;
without one a float input is fed 0..1 (:func:`edge.engine.default_preprocess`).
Thread affinity: as for TFLite, one thread at a time; ``invoke()`` releases the GIL.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import DelegateError, ModelError, RuntimeUnavailableError

if TYPE_CHECKING:
    from edge.runtime import Interpreter, RuntimeOptions

log = logging.getLogger(__name__)

SUFFIX = ".onnx"
INSTALL = "pip install 'edge[onnx]'"
# ONNX element types edge can hold in a buffer; others (strings, bfloat16) are refused.
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}
_CHANNELS = (1, 3)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or RuntimeUnavailableError saying what to install."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"ONNX models need ONNX Runtime, which is not installed ({exc}). Install it with "
            f"`{INSTALL}` (or `pip install onnxruntime`), or use the model as .tflite."
        ) from exc


class OnnxSession:
    """An ``InferenceSession`` with the TFLite interpreter calls ``edge.runtime.Interpreter``
    makes. Tensor indices: 0 is the (one) input, 1.. the outputs in the model's order.

    Built once at load: the input buffers, the NHWC view of input 0, the feed and the output
    names. ``get_tensor`` of an output returns the array onnxruntime allocated for the last
    ``invoke()``; later invokes never write into it.
    """

    def __init__(self, session: Any, path: Path) -> None:
        self._session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs)
            raise ModelError(
                f"{path} has {len(inputs)} inputs ({names}); edge feeds models one image input. "
                "Export the model with the image as its only input."
            )
        node = inputs[0]
        shape = _image_shape(node.shape, node.name, path)
        dtype = _dtype(node.type, node.name, path)
        self.layout = "nchw" if shape[1] in _CHANNELS and shape[3] not in _CHANNELS else "nhwc"
        self._buffer = np.zeros(shape, dtype)
        self._view = self._buffer.transpose(0, 2, 3, 1) if self.layout == "nchw" else self._buffer
        self._feed = {node.name: self._buffer}
        self._input = {
            "index": 0,
            "name": node.name,
            "shape": np.array(self._view.shape, np.int32),
            "dtype": dtype,
            "quantization": (0.0, 0),
        }
        self._names = [o.name for o in session.get_outputs()]
        self._types = [_dtype(o.type, o.name, path) for o in session.get_outputs()]
        static = [_static(o.shape) for o in session.get_outputs()]
        self._values: list[np.ndarray] = []
        self._nchw_out: list[bool] = [False] * len(static)
        if any(s is None for s in static):
            self.invoke()  # some output dims are symbolic: one run on zeros tells them
            shapes = [tuple(v.shape) for v in self._values]
        else:
            shapes = [s for s in static if s is not None]
        if self.layout == "nchw":
            self._nchw_out = [_channels_first(s, shape[2], shape[3]) for s in shapes]
        self._shapes = [
            (s[0], s[2], s[3], s[1]) if t else s
            for s, t in zip(shapes, self._nchw_out, strict=True)
        ]

    def get_input_details(self) -> list[dict[str, Any]]:
        return [dict(self._input)]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [
            {
                "index": 1 + i,
                "name": name,
                "shape": np.array(shape, np.int32),
                "dtype": dtype,
                "quantization": (0.0, 0),
            }
            for i, (name, shape, dtype) in enumerate(
                zip(self._names, self._shapes, self._types, strict=True)
            )
        ]

    def tensor(self, index: int) -> Callable[[], np.ndarray]:
        """A function returning the writable view of input ``index`` (always the same array)."""
        self._input_only(index)
        return lambda: self._view

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        """Copy ``value`` ([1,H,W,C] in the input's dtype, as TFLite wants it) into the input
        buffer, transposing for an NCHW model. Raises ValueError for another shape or dtype."""
        self._input_only(index)
        if value.shape != self._view.shape or value.dtype != self._view.dtype:
            raise ValueError(
                f"cannot set input {index}: got {value.dtype} {list(value.shape)}, the model "
                f"takes {self._view.dtype} {list(self._view.shape)}"
            )
        np.copyto(self._view, value)

    def get_tensor(self, index: int) -> np.ndarray:
        """Input 0 as a fresh NHWC copy, or output ``index - 1`` of the last invoke."""
        if index == 0:
            return self._view.copy()
        if not self._values:
            raise ValueError("no outputs yet: call invoke() first")
        value = self._values[index - 1]
        return value.transpose(0, 2, 3, 1) if self._nchw_out[index - 1] else value

    def invoke(self) -> None:
        """Run the model once (the GIL is released meanwhile). Raises RuntimeError, as TFLite
        does, when onnxruntime fails."""
        try:
            self._values = self._session.run(self._names, self._feed)
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise RuntimeError(f"onnxruntime: {exc}") from exc

    def _input_only(self, index: int) -> None:
        if index != 0:
            raise ValueError(f"tensor {index} is not the model's input (0)")


def _channels_first(shape: tuple[int, ...], height: int, width: int) -> bool:
    """Whether an NCHW model's output ``shape`` is ``[1,C,h,w]`` with ``h:w`` the input's
    ``height:width`` (and not already ``[1,h,w,C]``)."""
    if len(shape) != 4 or shape[0] != 1:
        return False
    _, c, h, w = shape
    return h * width == w * height and c * width != h * height


def load(path: Path, options: RuntimeOptions, verify: bool = True) -> Interpreter:
    """Load ``path`` on ONNX Runtime's CPU execution provider with ``options``: ``threads``
    become ``intra_op_num_threads``, the TFLite runtime choice does not apply, and
    ``delegate = "edgetpu"`` cannot run an ONNX model: DelegateError, or the CPU with
    ``fallback = "cpu"`` (said in the log and ``LoadInfo.degraded``).

    verify: run one inference on a zero input, so a model onnxruntime cannot execute fails
    here rather than on the first frame. Raises ModelError for unreadable or unsupported
    models, RuntimeUnavailableError without onnxruntime.
    """
    from edge.runtime import Interpreter, LoadInfo, default_threads, read_head
    from edge.runtime.backends import Backend

    read_head(path, 1, ".onnx")
    if options.delegate == "external":
        raise DelegateError(
            f"an external TFLite delegate cannot run the ONNX model {path.name}; use "
            "delegate xnnpack for it"
        )
    degraded = ""
    if options.delegate == "edgetpu":
        reason = (
            f"the Edge TPU runs only Edge TPU-compiled .tflite models, not {path.name}; run "
            "the .tflite version of the model for the Coral, or this one with --delegate "
            'xnnpack (or `edgetpu_fallback = "cpu"`)'
        )
        if options.fallback == "fail":
            raise DelegateError(reason)
        degraded = f"Edge TPU unavailable, running on the CPU: {reason}"
        log.warning("%s", degraded)
    ort = import_onnxruntime()
    threads = options.threads or default_threads()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # errors only: they reach us as exceptions, warnings as noise
    # Worker threads that spin between invokes burn the cores the capture threads need.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        raise _explain(path, exc, ort.__version__) from exc
    try:
        raw = OnnxSession(session, path)  # runs the model once when output shapes are symbolic
        if verify:
            raw.invoke()
    except RuntimeError as exc:
        raise ModelError(
            f"{path} loads but does not run on onnxruntime {ort.__version__}: {exc}"
        ) from exc
    init_ms = (time.perf_counter() - t0) * 1000
    info = LoadInfo(
        "onnxruntime", ort.__version__, "cpu", threads, init_ms, op_counts(path), 0, degraded
    )
    log.info(
        "loaded %s with onnxruntime %s (CPU, %s input, %d threads) in %.1f ms",
        path.name,
        ort.__version__,
        raw.layout.upper(),
        threads,
        init_ms,
    )
    return Interpreter(raw, Backend("onnxruntime", ort.__version__, ort), info, path)


def _image_shape(dims: list[Any], name: str, path: Path) -> tuple[int, int, int, int]:
    """The input's shape with a symbolic batch read as 1; ModelError for anything that is not
    a fixed-size image with 1 or 3 channels on axis 1 (NCHW) or 3 (NHWC)."""
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if len(fixed) == 4 and fixed[0] is None:
        fixed[0] = 1
    if len(fixed) != 4 or fixed[0] != 1:
        raise ModelError(
            f"{path}: input {name!r} has shape {dims}; edge feeds one image, [1,C,H,W] (NCHW) "
            "or [1,H,W,C] (NHWC) with 1 or 3 channels."
        )
    if any(d is None for d in fixed):
        raise ModelError(
            f"{path}: input {name!r} has no fixed image size ({dims}). Export the model with "
            "a fixed input size (ultralytics: `yolo export format=onnx imgsz=640 dynamic=False`)."
        )
    n, a, b, c = (int(d) for d in fixed if d is not None)
    if a not in _CHANNELS and c not in _CHANNELS:
        raise ModelError(
            f"{path}: input {name!r} has shape {dims}; edge feeds images with 1 or 3 channels "
            "on axis 1 (NCHW) or axis 3 (NHWC)."
        )
    return n, a, b, c


def _static(dims: list[Any]) -> tuple[int, ...] | None:
    """The shape when every dim is fixed (a symbolic leading batch counts as 1), else None."""
    out = [d if isinstance(d, int) and d >= 0 else None for d in dims]
    if out and out[0] is None:
        out[0] = 1
    return None if any(d is None for d in out) else tuple(int(d) for d in out if d is not None)


def _dtype(onnx_type: str, name: str, path: Path) -> type[Any]:
    dtype = _DTYPES.get(onnx_type)
    if dtype is None:
        raise ModelError(f"{path}: tensor {name!r} is {onnx_type}, which edge cannot hold")
    return dtype


def _explain(path: Path, exc: Exception, version: str) -> ModelError:
    """Turn an onnxruntime load error into a ModelError with a cause and a remedy."""
    text = str(exc).strip()
    if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
        return ModelError(
            f"{path} is not a valid ONNX model (its protobuf does not parse): the copy or "
            "download was cut short, or it is another kind of file. Export or copy it again."
        )
    if "opset" in text.lower() or "Could not find an implementation" in text:
        return ModelError(
            f"{path} needs an operator or opset that onnxruntime {version} does not have "
            f"({text}). Upgrade onnxruntime (`pip install -U onnxruntime`) or export the model "
            "with an older opset."
        )
    return ModelError(f"{path} could not be loaded by onnxruntime {version}: {text}")


def op_counts(path: Path) -> dict[str, int]:
    """The main graph's nodes by operator type, read from the ONNX protobuf's wire format
    (ModelProto.graph = field 7, GraphProto.node = 1, NodeProto.op_type = 4), for
    ``edge bench``. Empty when the file does not parse (onnxruntime has said why by then)."""
    try:
        data = memoryview(path.read_bytes())
        counts: Counter[str] = Counter()
        for field, graph in _fields(data):
            if field != 7:
                continue
            for gfield, node in _fields(graph):
                if gfield == 1:
                    kinds = [bytes(v).decode() for f, v in _fields(node) if f == 4]
                    counts.update(kinds[:1])
        return dict(counts)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.debug("%s: cannot count its operators (%s)", path, exc)
        return {}


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview]]:
    """The length-delimited fields of one protobuf message as (field number, bytes); scalar
    fields are skipped. Raises ValueError for a malformed message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("a field runs past the end of its message")
            yield key >> 3, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"wire type {wire} is not used by ONNX")
    if pos != end:
        raise ValueError("the last field runs past the end of its message")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
