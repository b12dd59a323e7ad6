#!/usr/bin/env python3
"""Build the two custom-op test fixtures in ``tests/data/`` by rewriting the flatbuffer of
``tests/data/metadata/plain.tflite`` (the tiny uint8 classifier made by
``scripts/make_metadata_fixture.py model``: QUANTIZE → AVERAGE_POOL_2D → reshape ops →
FULLY_CONNECTED → SOFTMAX → QUANTIZE). The model is parsed and re-packed with the generated
schema classes ai-edge-litert ships (``ai_edge_litert.schema_py_generated``) and the
``flatbuffers`` package, so nothing but the operator list and operator codes changes:

- ``edgetpu_op.tflite``: what ``edgetpu_compiler`` emits when it maps a whole graph, i.e. one
  CUSTOM operator (builtin code 32, version 1) with custom_code ``edgetpu-custom-op`` from the
  model input to the model output in place of every original operator. Tensors only the
  removed operators used are dropped (the rest renumbered) and their weight buffers emptied;
  buffer indices, the signature and the metadata entries are kept. The custom options, which
  hold the compiled Edge TPU executable in a real model, are empty here, so the file cannot run
  on a Coral either: it only reproduces the error a runtime without the Edge TPU delegate gives.
- ``custom_op.tflite``: the AVERAGE_POOL_2D operator turned into a CUSTOM operator with
  custom_code ``MyCustomOp`` (same input and output tensors, no options), standing for a model
  exported with an op the runtime does not register. It is the pooling op, not a later one,
  because this model's Flatten is a dynamic reshape (SHAPE → STRIDED_SLICE → PACK), and
  TFLite defers preparing every operator after a dynamic tensor to the first ``invoke()``: an
  unknown op there is only reported when the model first runs.

A runtime without those ops loads both files and fails at ``allocate_tensors()`` with
``Encountered unresolved custom op: <custom_code>.``. The output is byte-for-byte the same on
every run. Regenerate with ai-edge-litert installed::

    python scripts/make_custom_op_fixtures.py
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SOURCE = DATA / "metadata" / "plain.tflite"
EDGETPU_OP = "edgetpu-custom-op"
CUSTOM_OP = "MyCustomOp"


def _load(path: Path) -> tuple[Any, Any]:
    """The generated schema module and the parsed model (``ModelT``) of ``path``."""
    from ai_edge_litert import schema_py_generated as tfl  # only this script needs it

    return tfl, tfl.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def _pack(model: Any) -> bytes:
    """Serialize a ``ModelT`` with the TFLite file identifier."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _custom_code(tfl: Any, model: Any, name: str) -> int:
    """Append an OperatorCode for custom op ``name`` and return its index."""
    code = tfl.OperatorCodeT()
    code.builtinCode = tfl.BuiltinOperator.CUSTOM
    # Readers before schema v3a only look at the byte field, and CUSTOM (32) fits in it.
    code.deprecatedBuiltinCode = tfl.BuiltinOperator.CUSTOM
    code.customCode = name
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _custom_operator(tfl: Any, opcode: int, inputs: list[int], outputs: list[int]) -> Any:
    """A CUSTOM operator with no options (flexbuffer format, as the schema requires)."""
    op = tfl.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = list(inputs)
    op.outputs = list(outputs)
    op.builtinOptionsType = tfl.BuiltinOptions.NONE
    op.customOptionsFormat = tfl.CustomOptionsFormat.FLEXBUFFERS
    return op


def edgetpu_model(source: Path) -> bytes:
    """``source`` with its whole graph replaced by one ``edgetpu-custom-op`` operator."""
    tfl, model = _load(source)
    (graph,) = model.subgraphs
    opcode = _custom_code(tfl, model, EDGETPU_OP)
    graph.operators = [_custom_operator(tfl, opcode, graph.inputs, graph.outputs)]
    # The compiler drops the operators it maps, and with them every intermediate tensor.
    keep = sorted({int(i) for i in graph.inputs} | {int(i) for i in graph.outputs})
    renumber = {old: new for new, old in enumerate(keep)}
    for i, tensor in enumerate(graph.tensors):
        if i not in renumber and tensor.buffer:
            model.buffers[tensor.buffer].data = None
    graph.tensors = [graph.tensors[i] for i in keep]
    graph.inputs = [renumber[int(i)] for i in graph.inputs]
    graph.outputs = [renumber[int(i)] for i in graph.outputs]
    graph.operators[0].inputs = list(graph.inputs)
    graph.operators[0].outputs = list(graph.outputs)
    for sig in model.signatureDefs or []:
        for ref in [*sig.inputs, *sig.outputs]:
            ref.tensorIndex = renumber[ref.tensorIndex]
    # A compiled model keeps only the codes its operators use.
    model.operatorCodes = [model.operatorCodes[opcode]]
    graph.operators[0].opcodeIndex = 0
    return _pack(model)


def custom_op_model(source: Path) -> bytes:
    """``source`` with its AVERAGE_POOL_2D operator turned into the custom op ``MyCustomOp``."""
    tfl, model = _load(source)
    (graph,) = model.subgraphs
    pool = [
        n
        for n, op in enumerate(graph.operators)
        if model.operatorCodes[op.opcodeIndex].builtinCode == tfl.BuiltinOperator.AVERAGE_POOL_2D
    ]
    if len(pool) != 1:
        raise SystemExit(f"{source}: expected one AVERAGE_POOL_2D operator, found {len(pool)}")
    old = graph.operators[pool[0]]
    opcode = _custom_code(tfl, model, CUSTOM_OP)
    graph.operators[pool[0]] = _custom_operator(tfl, opcode, old.inputs, old.outputs)
    # The pooling code is now unused; leaving it in is harmless, and removing it would renumber.
    return _pack(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--source", type=Path, default=SOURCE, help="model to rewrite")
    ap.add_argument("--out", type=Path, default=DATA, help="fixture directory")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("edgetpu_op.tflite", edgetpu_model(args.source)),
        ("custom_op.tflite", custom_op_model(args.source)),
    ):
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
