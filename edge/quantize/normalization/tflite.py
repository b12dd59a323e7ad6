"""Reading the normalization of a float ``.tflite``: ``MUL``/``DIV``/``SUB``/``ADD`` with
constant operands at the input."""

from __future__ import annotations

import logging

from edge.quantize.normalization.affine import STEP_KINDS, Affine, InputNormalization

log = logging.getLogger(__name__)


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
    affine = Affine(channels)
    current = int(inputs[0]["index"])
    while True:
        users = [o for o in ops if current in [int(i) for i in o["inputs"]]]
        if len(users) != 1:
            break
        op = users[0]
        name = str(op["op_name"])
        operands = [int(i) for i in op["inputs"]]
        if name.lower() not in STEP_KINDS or len(operands) != 2:
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
