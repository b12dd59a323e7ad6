#!/usr/bin/env python3
"""Build the model directories in ``tests/data/answers/`` that test how edge turns outputs into
answers: each stands for a kind of published model whose outputs edge used to misread. The
weights are set by hand (or from a fixed seed where only the output layout matters), so the
models give known answers on the coloured shapes of ``tests/data/shapes``; every input is
32×32 (the BlazeFace stand-in 64×64) RGB 0..1 and every file a few KiB.

- ``segment-float``, ``segment-int8``: a single-channel sigmoid segmenter, output
  ``[1,32,32,1]`` = P(pixel is red) = sigmoid(10·(R − (G+B)/2) − 2) of the 0..1 input, as a
  1×1 convolution with a LOGISTIC. The int8 copy is full-integer quantized with int8 input and
  output (LOGISTIC's fixed output scale 1/256, zero point −128). ``labels.txt``: ``red``.
- ``classifier-1001``, ``classifier-1001-background``: a uint8 classifier with 1001 classes
  (class 0 background, the convention of TF-slim's ImageNet models): global average pool →
  dense → softmax, class 1 = red, 2 = green, 3 = blue by the mean colour, class 0 wins on grey
  frames, the other 997 never. The first directory's ``labels.txt`` has 1000 lines (no
  background line, as shipped with many such models), the second's 1001 starting with
  ``background``; the two ``model.tflite`` are the same file.
- ``embedding-mean``, ``embedding-pool``: feature extractors (3×3 conv with 16 ReLU filters,
  random weights from seed 0), no labels, no softmax. ``embedding-mean`` ends in Keras'
  GlobalAveragePooling2D with keepdims (TFLite MEAN, output ``[1,1,1,16]``),
  ``embedding-pool`` in AveragePooling2D then Flatten (AVERAGE_POOL_2D then RESHAPE,
  output ``[1,16]``).
- ``ssd``: an SSD detector ending in TFLite's own ``TFLite_Detection_PostProcess`` custom op
  (registered by every TFLite runtime) with the TF1 output names: boxes ``[1,10,4]``, classes
  ``[1,10]``, scores ``[1,10]``, count ``[1]``, all float32. 16 anchors on a 4×4 grid; box
  encodings are zero (boxes = anchors) and the class scores sigmoid(20·colour excess − 2) per
  cell for red, green, blue, yellow. Keras cannot emit that op, so it is spliced into the
  converted graph with the generated schema classes of ai-edge-litert and flatbuffers.
- ``blazeface``: outputs shaped like MediaPipe's BlazeFace short-range model, ``regressors``
  ``[1,896,16]`` and ``classificators`` ``[1,896,1]`` (16×16×2 + 8×8×6 anchors), from 1×1
  convolutions on pooled pixels (random weights, seed 0).

Every directory has a ``manifest.json`` with the preprocessing (stretch, RGB, mean 0, std 255)
and no task, so edge decides the task from the model. The output is byte-for-byte the same on
every run. Regenerate (TensorFlow and ai-edge-litert needed)::

    python scripts/make_answer_fixtures.py
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "answers"
SIZE = 32
MADE_BY = "scripts/make_answer_fixtures.py"
# The four colours the hand-set weights tell apart, as RGB weights over a 0..1 input: the
# colour's excess over the other channels.
COLOURS = {
    "red": (1.0, -0.5, -0.5),
    "green": (-0.5, 1.0, -0.5),
    "blue": (-0.5, -0.5, 1.0),
    "yellow": (0.5, 0.5, -1.0),
}


def _keras() -> Any:
    import tensorflow as tf  # only this script needs it

    tf.keras.utils.set_random_seed(0)
    return tf


def _convert(model: Any, quantize: str = "", size: int = SIZE, per_channel: bool = True) -> bytes:
    """TFLite bytes of a Keras model: float, or full-integer with ``quantize`` (``int8`` or
    ``uint8``) input and output, calibrated on random 0..1 frames. ``per_channel=False``
    quantizes weights per tensor (a 1001-wide dense layer's per-channel scales and zero points
    would take 24 KiB, three times its weights)."""
    tf = _keras()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:

        def representative() -> Iterator[list[np.ndarray]]:
            rng = np.random.default_rng(1)
            for i in range(64):
                # Random pixels, and flat colour frames so every class is seen at its peak.
                if i % 2:
                    yield [rng.uniform(0.0, 1.0, (1, size, size, 3)).astype(np.float32)]
                else:
                    colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
                    yield [np.broadcast_to(colour, (1, size, size, 3)).copy()]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8}[quantize]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
        conv._experimental_disable_per_channel = not per_channel
    data: bytes = conv.convert()
    return data


def segmenter(quantize: str) -> bytes:
    """P(red) per pixel: sigmoid(10·(R − (G+B)/2) − 2)."""
    tf = _keras()
    keras = tf.keras
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1, name="image")
    layer = keras.layers.Conv2D(1, 1, activation="sigmoid", name="foreground")
    out = layer(inp)
    layer.set_weights(
        [10.0 * np.array(COLOURS["red"], np.float32).reshape(1, 1, 3, 1), np.array([-2.0])]
    )
    return _convert(keras.Model(inp, out), quantize)


def classifier_1001() -> bytes:
    """Mean colour → 1001-way softmax: 0 background (grey), 1 red, 2 green, 3 blue."""
    tf = _keras()
    keras = tf.keras
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1, name="image")
    x = keras.layers.GlobalAveragePooling2D()(inp)
    dense = keras.layers.Dense(1001, activation="softmax", name="probabilities")
    out = dense(x)
    w = np.zeros((3, 1001), np.float32)
    b = np.full(1001, -10.0, np.float32)
    b[0] = 2.0
    for cid, name in enumerate(("red", "green", "blue"), start=1):
        w[:, cid] = 100.0 * np.array(COLOURS[name], np.float32)
        b[cid] = 0.0
    dense.set_weights([w, b])
    return _convert(keras.Model(inp, out), "uint8", per_channel=False)


def embedding(kind: str) -> bytes:
    """A 16-feature extractor ending in a MEAN (``mean``) or an average pool + reshape."""
    tf = _keras()
    keras = tf.keras
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="features")(inp)
    if kind == "mean":
        out = keras.layers.GlobalAveragePooling2D(keepdims=True, name="embedding")(x)
    else:
        x = keras.layers.AveragePooling2D(SIZE - 2)(x)
        out = keras.layers.Flatten(name="embedding")(x)
    return _convert(keras.Model(inp, out))


def blazeface() -> bytes:
    """Outputs shaped like BlazeFace's: regressors [1,896,16], classificators [1,896,1]."""
    tf = _keras()
    keras = tf.keras
    size = 64
    inp = keras.Input((size, size, 3), batch_size=1, name="image")
    regressors, scores = [], []
    for pool, anchors in ((4, 2), (8, 6)):  # 16x16x2 + 8x8x6 = 896 anchors
        x = keras.layers.AveragePooling2D(pool)(inp)
        cells = (size // pool) ** 2 * anchors
        r = keras.layers.Conv2D(16 * anchors, 1)(x)
        regressors.append(keras.layers.Reshape((cells, 16))(r))
        s = keras.layers.Conv2D(anchors, 1)(x)
        scores.append(keras.layers.Reshape((cells, 1))(s))
    reg = keras.layers.Concatenate(axis=1)(regressors)
    cls = keras.layers.Concatenate(axis=1)(scores)
    data = _convert(keras.Model(inp, [reg, cls]), size=size)
    return _rename_outputs(data, {(1, 896, 16): "regressors", (1, 896, 1): "classificators"})


# -- flatbuffer surgery (the SSD post-process op, output names) ------------------------------
def _model(data: bytes) -> tuple[Any, Any]:
    from ai_edge_litert import schema_py_generated as tfl  # for the generated schema classes

    return tfl, tfl.ModelT.InitFromPackedBuf(data, 0)


def _pack(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _rename_outputs(data: bytes, names: dict[tuple[int, ...], str]) -> bytes:
    """Give each output the name its shape maps to (the signature keeps its own keys)."""
    _, model = _model(data)
    (graph,) = model.subgraphs
    for i in graph.outputs:
        tensor = graph.tensors[i]
        tensor.name = names[tuple(int(s) for s in tensor.shape)]
    return _pack(model)


def ssd() -> bytes:
    """A 4-colour detector ending in TFLite_Detection_PostProcess (see the module docstring)."""
    from flatbuffers import flexbuffers

    tf = _keras()
    keras = tf.keras
    grid, classes, max_det = 4, len(COLOURS), 10
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1, name="image")
    x = keras.layers.AveragePooling2D(SIZE // grid)(inp)
    box_layer = keras.layers.Conv2D(4, 1, name="box_encodings")
    boxes = keras.layers.Reshape((grid * grid, 4))(box_layer(x))
    cls_layer = keras.layers.Conv2D(classes + 1, 1, activation="sigmoid", name="class_scores")
    scores = keras.layers.Reshape((grid * grid, classes + 1))(cls_layer(x))
    box_layer.set_weights([np.zeros((1, 1, 3, 4), np.float32), np.zeros(4, np.float32)])
    w = np.zeros((1, 1, 3, classes + 1), np.float32)
    b = np.full(classes + 1, -2.0, np.float32)
    for c, rgb in enumerate(COLOURS.values(), start=1):
        w[0, 0, :, c] = 20.0 * np.array(rgb, np.float32)
    cls_layer.set_weights([w, b])
    tfl, model = _model(_convert(keras.Model(inp, [boxes, scores])))
    (graph,) = model.subgraphs
    by_width = {int(graph.tensors[i].shape[-1]): int(i) for i in graph.outputs}
    box_in, cls_in = by_width[4], by_width[classes + 1]

    def tensor(name: str, shape: tuple[int, ...], data: bytes | None = None) -> int:
        buf = tfl.BufferT()
        if data is not None:
            buf.data = np.frombuffer(data, np.uint8).copy()
        model.buffers.append(buf)
        t = tfl.TensorT()
        t.name, t.shape, t.type = name, list(shape), tfl.TensorType.FLOAT32
        t.buffer = len(model.buffers) - 1
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    # Anchors in the op's centre-size form: ycenter, xcenter, height, width (normalized).
    centres = (np.arange(grid, dtype=np.float32) + 0.5) / grid
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    anchors = np.stack([cy.ravel(), cx.ravel(), *np.full((2, grid * grid), 1 / grid)], axis=1)
    anchors_t = tensor("anchors", anchors.shape, anchors.astype(np.float32).tobytes())
    outs = [
        tensor("TFLite_Detection_PostProcess", (1, max_det, 4)),
        tensor("TFLite_Detection_PostProcess:1", (1, max_det)),
        tensor("TFLite_Detection_PostProcess:2", (1, max_det)),
        tensor("TFLite_Detection_PostProcess:3", (1,)),
    ]
    code = tfl.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tfl.BuiltinOperator.CUSTOM
    code.customCode, code.version = "TFLite_Detection_PostProcess", 1
    model.operatorCodes.append(code)
    op = tfl.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs, op.outputs = [box_in, cls_in, anchors_t], outs
    op.customOptionsFormat = tfl.CustomOptionsFormat.FLEXBUFFERS
    options = {
        "max_detections": max_det,
        "max_classes_per_detection": 1,
        "detections_per_class": 100,
        "use_regular_nms": False,
        "nms_score_threshold": 0.3,
        "nms_iou_threshold": 0.6,
        "num_classes": classes,
        "y_scale": 10.0,
        "x_scale": 10.0,
        "h_scale": 5.0,
        "w_scale": 5.0,
    }
    op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8).copy()
    graph.operators.append(op)
    graph.outputs = outs
    model.signatureDefs = []  # the Keras signature names the two tensors no longer output
    return _pack(model)


def _write(out: Path, name: str, model: bytes, description: str, labels: list[str]) -> None:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.tflite").write_bytes(model)
    manifest: dict[str, Any] = {
        "name": name,
        "version": "1",
        "model": "model.tflite",
        "description": description,
        "made_by": MADE_BY,
        "preprocess": {"resize": "stretch", "color": "rgb", "mean": [0.0], "std": [255.0]},
    }
    if labels:
        (d / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        manifest["labels"] = "labels.txt"
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {d} ({len(model)} bytes model, {len(labels)} labels)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="fixture directory")
    args = ap.parse_args()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    others = [f"unused {i}" for i in range(4, 1001)]
    cls = classifier_1001()
    jobs: list[tuple[str, Callable[[], bytes], str, list[str]]] = [
        ("segment-float", lambda: segmenter(""), "float sigmoid segmenter: P(red)", ["red"]),
        ("segment-int8", lambda: segmenter("int8"), "int8 sigmoid segmenter: P(red)", ["red"]),
        (
            "classifier-1001",
            lambda: cls,
            "1001-class classifier (0 = background), labels file without background",
            ["red", "green", "blue", *others],
        ),
        (
            "classifier-1001-background",
            lambda: cls,
            "1001-class classifier (0 = background), labels file starting with background",
            ["background", "red", "green", "blue", *others],
        ),
        ("embedding-mean", lambda: embedding("mean"), "feature extractor ending in MEAN", []),
        ("embedding-pool", lambda: embedding("pool"), "feature extractor: pool + reshape", []),
        ("ssd", ssd, "SSD detector with TFLite_Detection_PostProcess", list(COLOURS)),
        ("blazeface", blazeface, "outputs shaped like BlazeFace's", []),
    ]
    for name, build, description, labels in jobs:
        _write(out, name, build(), description, labels)


if __name__ == "__main__":
    main()
