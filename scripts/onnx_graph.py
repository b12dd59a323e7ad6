"""The bundled TFLite models as ONNX graphs edge runs: tf2onnx's conversion of an int8
``.tflite`` with uint8 input and output, rewritten to float input and output, a batch of 1, the
input in the layout asked for, and names and node order that make the same model the same file.
Used by ``make_onnx_models.py``; needs tf2onnx and onnx (``pip install 'edge[onnx-tools]'``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

OPSET = 17  # onnxruntime 1.17 (the oldest edge[onnx] allows) runs up to opset 20


def convert(tflite: Path, layout: str, dequantize: bool) -> Any:
    """The ONNX graph of ``tflite`` (int8, uint8 I/O) by tf2onnx, with float I/O, a batch of 1
    and the input in ``layout`` ("nchw" or "nhwc").

    dequantize: weights dequantized to float32 and float activations (a float model);
    otherwise the TFLite model's own quantization as QuantizeLinear/DequantizeLinear pairs
    around each operator (a QDQ int8 model that onnxruntime runs with int8 kernels).
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        command = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite)]
        command += ["--opset", str(OPSET), "--output", str(path)]
        if dequantize:  # a command-line option only: from_tflite() has no such argument
            command.append("--dequantize")
        subprocess.run(command, check=True, capture_output=True)
        model = onnx.load(str(path))
    float_io(model.graph, layout)
    canonical(model.graph)
    model.graph.doc_string = ""  # tf2onnx writes the .tflite's path there: no machine paths
    onnx.checker.check_model(model, full_check=True)
    return model


def canonical(graph: Any) -> None:
    """Put the nodes in an order and give them and their tensors names that depend only on
    the graph's structure, so that the same model gives the same file.

    tf2onnx emits nodes in a varying order and numbers the constants it makes as it meets
    them (``scale__119`` in one run is ``scale__121`` in the next). The order here is a
    depth-first walk back from the outputs (inputs in their order); tensors are named ``t0``,
    ``t1`` … as that walk first meets them, the graph's input and outputs keep their names.
    """
    producer = {o: n for n in graph.node for o in n.output}
    order: list[Any] = []
    seen: set[int] = set()

    def visit(tensor: str) -> None:
        node = producer.get(tensor)
        if node is None or id(node) in seen:
            return
        seen.add(id(node))
        for i in node.input:
            visit(i)
        order.append(node)

    for out in graph.output:
        visit(out.name)
    keep = {graph.input[0].name} | {o.name for o in graph.output}
    names: dict[str, str] = {}
    for node in order:
        for t in [*node.input, *node.output]:
            if t and t not in names:
                names[t] = t if t in keep else f"t{len(names)}"
    for k, node in enumerate(order):
        node.name = f"{node.op_type}_{k}"
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    del graph.node[:]
    graph.node.extend(order)
    inits = sorted(graph.initializer, key=lambda t: int(names[t.name][1:]))
    for t in inits:
        t.name = names[t.name]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def float_io(graph: Any, layout: str) -> None:
    """Rewrite tf2onnx's graph of a uint8-I/O TFLite model to float I/O, in place.

    The input's dequantization (Cast, Sub zero point, Mul scale; or one DequantizeLinear) is
    dropped, so the graph takes the real values (0..1 here) directly: float32 ``[1,H,W,C]``,
    or ``[1,C,H,W]`` with the Transpose to NCHW that tf2onnx put after the input's
    elementwise nodes removed. The QuantizeLinear nodes that make the output uint8 (those not
    followed by a DequantizeLinear on the way to the output) are dropped too, so the output is
    the float tensor they quantized.
    """
    from onnx import TensorProto, helper

    (inp,) = graph.input
    first = _consumers(graph, inp.name)[0]
    ops = ["Cast", "Sub", "Mul"] if first.op_type == "Cast" else ["DequantizeLinear"]
    chain, name = [], inp.name
    for op in ops:
        (node,) = _consumers(graph, name)
        if node.op_type != op:
            raise ValueError(f"expected {op} after {name}, found {node.op_type}")
        chain.append(node)
        name = node.output[0]
    for node in chain:
        graph.node.remove(node)
    _rename_inputs(graph, name, inp.name)
    _, h, w, c = (d.dim_value for d in inp.type.tensor_type.shape.dim)
    shape = [1, h, w, c]
    if layout == "nchw":
        shape = [1, c, h, w]
        node = _consumers(graph, inp.name)[0]
        while node.op_type != "Transpose":  # elementwise (QuantizeLinear): any layout will do
            (node,) = _consumers(graph, node.output[0])
        if list(node.attribute[0].ints) != [0, 3, 1, 2]:
            raise ValueError("expected the Transpose to NCHW after the input")
        graph.node.remove(node)
        _rename_inputs(graph, node.output[0], node.input[0])
    graph.input.remove(inp)
    graph.input.insert(0, helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, shape))

    outputs = {o.name for o in graph.output}
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if not _reaches_output(graph, q.output[0], outputs):
            continue
        graph.node.remove(q)
        old, new = q.input[0], q.output[0]
        if new not in outputs:
            old, new = new, old
        # The float tensor takes the quantized one's place (and name, for a graph output).
        _rename_inputs(graph, old, new)
        for n in graph.node:
            n.output[:] = [new if o == old else o for o in n.output]
    for out in graph.output:
        out.type.tensor_type.elem_type = TensorProto.FLOAT
        out.type.tensor_type.shape.dim[0].dim_value = 1
    del graph.value_info[:]  # shapes with the old symbolic batch; onnxruntime infers them
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)


def _consumers(graph: Any, name: str) -> list[Any]:
    return [n for n in graph.node if name in n.input]


def _rename_inputs(graph: Any, old: str, new: str) -> None:
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]


def _reaches_output(graph: Any, name: str, outputs: set[str]) -> bool:
    """Whether tensor ``name`` flows into a graph output through no DequantizeLinear."""
    todo, seen = [name], set()
    while todo:
        t = todo.pop()
        if t in outputs:
            return True
        seen.add(t)
        for n in _consumers(graph, t):
            if n.op_type != "DequantizeLinear":
                todo += [o for o in n.output if o not in seen]
    return False
