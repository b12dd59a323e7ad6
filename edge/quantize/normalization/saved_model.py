"""Reading the normalization of a SavedModel: the serving signature's TensorFlow graph
(``Mul``/``RealDiv``/``Sub``/``AddV2`` with constant operands, through ``Identity``/``Cast``
and function calls)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edge.quantize.normalization.affine import Affine, InputNormalization

log = logging.getLogger(__name__)

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
    affine = Affine(channels)
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
