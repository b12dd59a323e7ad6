"""The normalization a model applies to its own input, read from its graph.

Keras models often scale pixels themselves: a ``Rescaling(1/255)`` or
``Rescaling(1/127.5, offset=-1)`` layer right after the input (the Keras tutorials' pattern),
a ``Normalization`` layer, or both (``keras.applications`` with ``include_preprocessing``).
Such a model wants raw 0..255 pixels; normalizing them again before it divides the input
twice. This module finds that per-channel affine map ``x * scale + offset`` by walking from the
input through layers (or ops) that apply it and layers that leave pixel values alone at
inference (augmentation, dropout, resizing), and stops at the first one that does anything
else:

- Keras files: the layers (nested ``Sequential``/functional blocks included).
- SavedModel folders: the serving signature's TensorFlow graph (``Mul``/``RealDiv``/``Sub``/
  ``AddV2`` with constant operands, through ``Identity``/``Cast`` and function calls).
  Augmentation layers exported into a SavedModel leave random-op graphs behind that this walk
  does not see through.
- Float ``.tflite`` files (and, as a fallback, the float conversion of the others):
  ``MUL``/``DIV``/``SUB``/``ADD`` with constant operands at the input. The TFLite converter
  folds a scale into the first convolution's weights, and an offset too when that convolution
  does not pad its input, so a ``Rescaling(1/255)`` is usually invisible here; an offset before
  a zero-padded (``same``) convolution survives.

Readers return None when the input is not normalized in a way they recognize; they never
raise for an unfamiliar graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# A map of 0..255 pixels counts as a normalization when it lands within this magnitude and
# spans at least NORMALIZED_SPAN: 0..1, -1..1 and ImageNet's about -2.1..2.6 all do; a
# Rescaling(255) (a model that wants 0..1 inputs and scales them up) does not.
NORMALIZED_MAX = 10.0
NORMALIZED_SPAN = 0.5

# Keras layers that pass pixel values through unchanged at inference: augmentation (active only
# in training), noise and dropout, and resampling, which commutes with a per-channel affine map.
KERAS_TRANSPARENT = frozenset(
    {
        "InputLayer",
        "Identity",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Resizing",
        "CenterCrop",
    }
)


@dataclass(frozen=True, slots=True)
class InputNormalization:
    """What a model does to its input before anything else: ``x * scale + offset`` per
    channel (one value each when all channels share it). steps: what applies it, in order,
    e.g. ``Rescaling layer 'rescaling' (x * 0.00392157 + 0)``."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    steps: tuple[str, ...]

    def range_of(self, lo: float, hi: float) -> tuple[float, float]:
        """The smallest and largest value inputs in ``lo..hi`` become, over all channels."""
        ends = [v * s + o for s, o in zip(self.scale, self.offset, strict=True) for v in (lo, hi)]
        return min(ends), max(ends)

    def takes_pixels(self) -> bool:
        """True when 0..255 pixels come out in a normalized range, i.e. the model expects raw
        pixels (edge then feeds them with mean 0, std 1)."""
        lo, hi = self.range_of(0.0, 255.0)
        return max(abs(lo), abs(hi)) <= NORMALIZED_MAX and hi - lo >= NORMALIZED_SPAN

    def describe(self) -> str:
        return " then ".join(self.steps)


class _Affine:
    """Accumulates per-channel ``x * scale + offset`` steps."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.scale = np.ones(channels, np.float64)
        self.offset = np.zeros(channels, np.float64)
        self.steps: list[str] = []

    def per_channel(self, value: Any) -> np.ndarray | None:
        """``value`` as one number per channel, or None when it is not scalar or per-channel
        along the last axis."""
        try:
            v = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            return None
        if v.size == 1:
            return np.full(self.channels, float(v.reshape(-1)[0]))
        if v.size == self.channels and v.shape[-1] == self.channels:
            return v.reshape(-1)
        return None

    def mul(self, factor: np.ndarray) -> None:
        self.scale *= factor
        self.offset *= factor

    def add(self, term: np.ndarray) -> None:
        self.offset += term

    def apply(self, kind: str, pos: int, v: np.ndarray) -> str | None:
        """Apply ``x <kind> v`` (``mul``, ``div``, ``sub``, ``add``; x is operand ``pos``);
        returns the step's text, "" for a step that changes nothing, None when it is not an
        affine map of x (``v / x``)."""
        if kind == "mul":
            self.mul(v)
            return "" if np.allclose(v, 1.0) else f"x * {_fmt(v)}"
        if kind == "div":
            if pos != 0:
                return None
            self.mul(1.0 / v)
            return "" if np.allclose(v, 1.0) else f"x / {_fmt(v)}"
        if kind == "sub":
            if pos == 0:
                self.add(-v)
                return "" if np.allclose(v, 0.0) else f"x - {_fmt(v)}"
            self.mul(np.full(self.channels, -1.0))
            self.add(v)
            return f"{_fmt(v)} - x"
        if kind == "add":
            self.add(v)
            if np.allclose(v, 0.0):
                return ""
            if np.allclose(v, v[0]):
                return f"x {'-' if v[0] < 0 else '+'} {abs(float(v[0])):.6g}"
            return f"x + {_fmt(v)}"
        return None

    def result(self) -> InputNormalization | None:
        if not self.steps or (np.allclose(self.scale, 1.0) and np.allclose(self.offset, 0.0)):
            return None
        return InputNormalization(_compact(self.scale), _compact(self.offset), tuple(self.steps))


def _compact(v: np.ndarray) -> tuple[float, ...]:
    if np.allclose(v, v[0]):
        return (float(v[0]),)
    return tuple(float(x) for x in v)


def _affine_text(scale: np.ndarray, offset: np.ndarray) -> str:
    """``x * 0.00392157``, ``x * 0.00784314 - 1``, ``x * [..] + [..]``."""
    text = f"x * {_fmt(scale)}"
    if np.allclose(offset, 0.0):
        return text
    if np.allclose(offset, offset[0]):
        sign = "-" if offset[0] < 0 else "+"
        return f"{text} {sign} {abs(float(offset[0])):.6g}"
    return f"{text} + {_fmt(offset)}"


def _fmt(v: np.ndarray) -> str:
    if np.allclose(v, v[0]):
        return f"{float(v[0]):.6g}"
    return "[" + ", ".join(f"{float(x):.6g}" for x in v) + "]"


_KINDS = ("mul", "div", "sub", "add")


# -- Keras ------------------------------------------------------------------------------------
def read_keras(model: Any) -> InputNormalization | None:
    """The normalization at the input of a loaded Keras model (Keras 3)."""
    try:
        shape = model.inputs[0].shape
        channels = int(shape[-1]) if shape[-1] is not None else 1
        affine = _Affine(channels)
        _keras_walk(model, affine)
    except Exception as exc:  # an unfamiliar model structure: say nothing rather than guess
        log.debug("could not walk the Keras model's input layers: %s", exc)
        return None
    return affine.result()


def _keras_walk(model: Any, affine: _Affine) -> bool:
    """Apply the leading normalization layers of ``model`` to ``affine``; True when every
    layer of the model was transparent or a normalization (so the walk may go on after it)."""
    if type(model).__name__ == "Sequential":
        return all(_keras_layer(layer, affine) for layer in model.layers)
    if len(model.inputs) != 1:
        return False
    current = model.inputs[0]
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    while True:
        consumers = [layer for layer in layers if _input_of(layer) is current]
        if len(consumers) != 1 or _consumed_elsewhere(layers, current):
            return len(consumers) == 0 and len(model.outputs) == 1 and current is model.outputs[0]
        layer = consumers[0]
        if not _keras_layer(layer, affine):
            return False
        current = layer.output


def _input_of(layer: Any) -> Any:
    try:
        return layer.input  # raises for a layer called more than once
    except Exception:
        return None


def _consumed_elsewhere(layers: Sequence[Any], tensor: Any) -> bool:
    """True when ``tensor`` also feeds a layer with several inputs (a skip connection)."""
    for layer in layers:
        inp = _input_of(layer)
        if isinstance(inp, list | tuple) and any(t is tensor for t in inp):
            return True
    return False


def _keras_layer(layer: Any, affine: _Affine) -> bool:
    """Apply one layer; False when it ends the normalization chain."""
    kind = type(layer).__name__
    if kind == "Rescaling":
        scale, offset = affine.per_channel(layer.scale), affine.per_channel(layer.offset)
        if scale is None or offset is None:
            return False
        affine.mul(scale)
        affine.add(offset)
        affine.steps.append(f"Rescaling layer {layer.name!r} ({_affine_text(scale, offset)})")
        return True
    if kind == "Normalization":
        axis = tuple(layer.axis) if isinstance(layer.axis, list | tuple) else (layer.axis,)
        mean = affine.per_channel(np.asarray(layer.mean))
        variance = affine.per_channel(np.asarray(layer.variance))
        if axis not in ((-1,), (3,)) or mean is None or variance is None:
            return False
        std = np.maximum(np.sqrt(variance), 1e-7)  # Keras' epsilon
        if getattr(layer, "invert", False):
            affine.mul(std)
            affine.add(mean)
            text = f"x * {_fmt(std)} + {_fmt(mean)}"
        else:
            affine.add(-mean)
            affine.mul(1.0 / std)
            text = f"(x - {_fmt(mean)}) / {_fmt(std)}"
        affine.steps.append(f"Normalization layer {layer.name!r} ({text})")
        return True
    if kind in KERAS_TRANSPARENT or (kind.startswith("Random") and kind != "RandomCrop"):
        return True
    if kind == "Activation" and getattr(layer.activation, "__name__", "") == "linear":
        return True
    if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested model
        return _keras_walk(layer, affine)
    return False


# -- SavedModel -------------------------------------------------------------------------------
_PASS_OPS = frozenset({"Identity", "StopGradient", "Snapshot", "Cast"})
_SHAPE_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_OP_KIND = {
    "Mul": "mul",
    "RealDiv": "div",
    "Div": "div",
    "Sub": "sub",
    "AddV2": "add",
    "Add": "add",
    "BiasAdd": "add",
}
_AFFINE_OPS = frozenset(_OP_KIND)
_CONST_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda a: a,
    "Cast": lambda a: a.astype(np.float64),
    "Sqrt": np.sqrt,
    "Rsqrt": lambda a: 1.0 / np.sqrt(a),
    "Reciprocal": lambda a: 1.0 / a,
    "Neg": np.negative,
    "Square": np.square,
}
_CONST_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Div": np.divide,
    "Sub": np.subtract,
    "AddV2": np.add,
    "Add": np.add,
    "Maximum": np.maximum,
    "Minimum": np.minimum,
}


class _Body:
    """One graph (the signature's) or function body, with what its arguments hold."""

    def __init__(
        self,
        nodes: Iterable[Any],
        args: dict[str, Callable[[], np.ndarray | None]],
        tf: Any,
    ) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.args = args
        self.tf = tf

    @staticmethod
    def source(ref: str) -> str:
        """The node or argument name an input string refers to (``node:out:0``, ``node:1``,
        ``arg``)."""
        return ref.split(":", 1)[0]

    def consumers(self, name: str) -> list[tuple[Any, int]]:
        out = []
        for node in self.nodes.values():
            for pos, ref in enumerate(node.input):
                if not ref.startswith("^") and self.source(ref) == name:
                    out.append((node, pos))
        return out

    def value(self, ref: str, depth: int = 0) -> np.ndarray | None:
        """The constant value of ``ref``, or None when it depends on anything else."""
        name = self.source(ref)
        if depth > 12:
            return None
        if name in self.args and name not in self.nodes:
            return self.args[name]()
        node = self.nodes.get(name)
        if node is None:
            return None
        if node.op == "Const":
            return np.asarray(self.tf.make_ndarray(node.attr["value"].tensor), np.float64)
        if node.op == "Placeholder" and name in self.args:
            return self.args[name]()
        inputs = [r for r in node.input if not r.startswith("^")]
        if node.op in _CONST_UNARY and len(inputs) == 1:
            a = self.value(inputs[0], depth + 1)
            return None if a is None else _CONST_UNARY[node.op](a)
        if node.op in _CONST_BINARY and len(inputs) == 2:
            a, b = self.value(inputs[0], depth + 1), self.value(inputs[1], depth + 1)
            return None if a is None or b is None else _CONST_BINARY[node.op](a, b)
        if node.op == "Reshape" and inputs:
            return self.value(inputs[0], depth + 1)
        return None


def read_saved_model(path: str, tf: Any) -> InputNormalization | None:
    """The normalization at the input of a SavedModel's serving signature."""
    try:
        return _saved_model(path, tf)
    except Exception as exc:  # unfamiliar graphs, odd signatures: say nothing rather than guess
        log.debug("could not walk the SavedModel's input ops: %s", exc)
        return None


def _saved_model(path: str, tf: Any) -> InputNormalization | None:
    loaded = tf.saved_model.load(path)
    signatures = loaded.signatures
    if not signatures:
        return None
    fn = signatures.get("serving_default") or next(iter(signatures.values()))
    captured = {internal.op.name: external for external, internal in fn.graph.captures}
    real = [t for t in fn.inputs if t.op.name not in captured]
    if len(real) != 1 or real[0].shape.rank != 4:
        return None
    channels = int(real[0].shape[-1] or 1)
    graph = fn.graph.as_graph_def()
    library = {f.signature.name: f for f in graph.library.function}

    def capture(value: Any) -> Callable[[], np.ndarray | None]:
        def get() -> np.ndarray | None:
            if value.dtype == tf.resource:
                return None
            return np.asarray(value.numpy(), np.float64)

        return get

    body = _Body(graph.node, {name: capture(v) for name, v in captured.items()}, tf)
    name = real[0].op.name
    affine = _Affine(channels)
    for _ in range(200):  # a bound on a malformed graph, far above any real chain
        consumers = [(n, pos) for n, pos in body.consumers(name) if n.op not in _SHAPE_OPS]
        if len(consumers) != 1:
            break
        node, pos = consumers[0]
        if node.op in _PASS_OPS:
            name = node.name
            continue
        if node.op in _CALL_OPS:
            fdef = library.get(node.attr["f"].func.name)
            if fdef is None:
                break
            caller = body
            inputs = [r for r in node.input if not r.startswith("^")]

            def arg(ref: str, caller: _Body = caller) -> Callable[[], np.ndarray | None]:
                return lambda: caller.value(ref)

            args = {
                a.name: arg(ref) for a, ref in zip(fdef.signature.input_arg, inputs, strict=False)
            }
            name = fdef.signature.input_arg[pos].name
            body = _Body(fdef.node_def, args, tf)
            continue
        if node.op not in _AFFINE_OPS:
            break
        inputs = [r for r in node.input if not r.startswith("^")]
        other = body.value(inputs[1 - pos]) if len(inputs) == 2 else None
        v = affine.per_channel(other) if other is not None else None
        if v is None:
            break
        text = affine.apply(_OP_KIND[node.op], pos, v)
        if text is None:
            break
        if text:
            affine.steps.append(f"{node.op} op {node.name!r} ({text})")
        name = node.name
    return affine.result()


# -- TFLite -----------------------------------------------------------------------------------
def read_tflite(model: bytes) -> InputNormalization | None:
    """The normalization at the input of a float ``.tflite`` (MUL/DIV/SUB/ADD by constants)."""
    try:
        return _tflite(model)
    except Exception as exc:  # private interpreter API, unfamiliar graphs
        log.debug("could not walk the .tflite's input ops: %s", exc)
        return None


def _tflite(model: bytes) -> InputNormalization | None:
    from edge.runtime.backends import load_backend

    raw = load_backend().module.Interpreter(model_content=model)
    inputs = raw.get_input_details()
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
        return None
    channels = int(inputs[0]["shape"][-1])
    ops = [o for o in raw._get_ops_details() if o.get("op_name") != "DELEGATE"]
    details = {int(t["index"]): t for t in raw.get_tensor_details()}
    produced = {int(i) for o in ops for i in o["outputs"]}
    affine = _Affine(channels)
    current = int(inputs[0]["index"])
    while True:
        users = [o for o in ops if current in [int(i) for i in o["inputs"]]]
        if len(users) != 1:
            break
        op = users[0]
        name = str(op["op_name"])
        operands = [int(i) for i in op["inputs"]]
        if name.lower() not in _KINDS or len(operands) != 2:
            break
        pos = operands.index(current)
        other = operands[1 - pos]
        if other in produced or other < 0 or other not in details:
            break
        v = affine.per_channel(raw.get_tensor(other))
        if v is None:
            break
        text = affine.apply(name.lower(), pos, v)
        if text is None:
            break
        if text:
            affine.steps.append(f"{name} op ({text})")
        outputs = [int(i) for i in op["outputs"]]
        if len(outputs) != 1:
            break
        current = outputs[0]
    return affine.result()
