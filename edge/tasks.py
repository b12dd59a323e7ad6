"""Which task a model's outputs fit: the decoder edge picks by itself (:func:`infer_task`), the
check that a task asked for (``--task``, ``[model] task``, a manifest's ``task``) can decode them
(:func:`fit_problem`), and how many classes that decoder reads (:func:`class_count`).

Shapes alone cannot tell a classifier's scores from a feature vector (both are ``[1,C]``), so
the guess also reads which operator computes the output (from the model's graph, see
:func:`edge.tflite_metadata.output_producers`), its name and its quantization.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from edge.preprocess import TensorSpec
from edge.tflite_metadata import BUILTIN_OPS

# Layouts a detection model can have.
SSD, YOLOV5, YOLOV8 = "ssd", "yolov5", "yolov8"
# How a segmentation output is read: per-class scores (argmax), one foreground probability
# per pixel (thresholded), or class ids already.
ARGMAX, PROBABILITY, CLASS_IDS = "argmax", "probability", "ids"

# Operators whose output is class scores, and operators whose output is a pooled feature
# vector (what embedding extractors end in: MobileNet feature vectors, FaceNet).
SCORE_OPS = frozenset({"SOFTMAX", "LOGISTIC", "LOG_SOFTMAX"})
FEATURE_OPS = frozenset({"AVERAGE_POOL_2D", "MEAN", "L2_NORMALIZATION"})
_FEATURE_NAMES = ("embedding", "feature")

_NEEDS = {
    "classification": "classification needs one output of class scores, [1,C] or [1,1,1,C], "
    "float or quantized",
    "detection": "detection needs the 4 outputs of TFLite's SSD post-process (boxes [1,N,4], "
    "classes [1,N], scores [1,N], count [1]), or one YOLOv5 [1,N,5+C] or YOLOv8 [1,4+C,N] "
    "output",
    "segmentation": "segmentation needs one output holding a mask with the input's aspect "
    "ratio: [1,H,W,C] class scores, [1,H,W,1] or [1,H,W] foreground probabilities, or [1,H,W] "
    "class ids",
}


def describe(outputs: Sequence[TensorSpec]) -> str:
    """The outputs as messages show them: ``'name' [1,10,4] float32, …``."""
    return ", ".join(
        f"{o.name!r} [{','.join(str(s) for s in o.shape)}] {o.dtype.name}" for o in outputs
    )


def _scores(o: TensorSpec) -> bool:
    """Whether ``o`` can hold scores: float, or integers with a quantization scale."""
    return o.dtype.kind == "f" or o.quantized


def detection_layout(outputs: Sequence[TensorSpec]) -> str:
    """SSD, YOLOV5 or YOLOV8 when the outputs have that layout, else ``""``.

    SSD post-processed: boxes [1,N,4], classes and scores [1,N], count [1]. YOLOv5 [1,N,5+C]
    (N > 5+C), YOLOv8 [1,4+C,N] (N > 4+C). The limits of the heuristic: a YOLO head with fewer
    anchors than channels is ambiguous and is read as v8 when the middle axis is the smaller
    one.
    """
    shapes = [tuple(o.shape) for o in outputs]
    if len(shapes) == 4 and sorted(len(s) for s in shapes) == [1, 2, 2, 3]:
        boxes = next(s for s in shapes if len(s) == 3)
        pair = [s for s in shapes if len(s) == 2]
        if boxes[0] == 1 and boxes[2] == 4 and all(p == (1, boxes[1]) for p in pair):
            return SSD
        return ""
    if len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][0] == 1 and _scores(outputs[0]):
        a, b = shapes[0][1], shapes[0][2]
        if b >= 6 and a > b:
            return YOLOV5
        if a >= 5 and b > a:
            return YOLOV8
    return ""


def segmentation_mode(output: TensorSpec) -> str:
    """How a segmentation output is read: ARGMAX over C > 1 channels, PROBABILITY for one
    float or quantized channel (sigmoid), CLASS_IDS for one unquantized integer channel."""
    if len(output.shape) == 4 and output.shape[3] > 1:
        return ARGMAX
    return PROBABILITY if _scores(output) else CLASS_IDS


def fit_problem(
    task: str, outputs: Sequence[TensorSpec], input_hw: tuple[int, int] | None = None
) -> str:
    """What decoding ``outputs`` as ``task`` needs and they lack; ``""`` when they fit.

    ``input_hw`` (model input height, width) lets segmentation refuse outputs whose two middle
    axes are not a mask of the input (within a factor 2 of its aspect ratio), such as
    BlazeFace's [1,896,16] anchor rows.
    """
    if task == "raw":
        return ""
    if task not in _NEEDS:
        return f"edge has no decoder for task {task!r}"
    if task == "detection":
        return "" if detection_layout(outputs) else _NEEDS[task]
    if len(outputs) != 1:
        return _NEEDS[task]
    o, s = outputs[0], tuple(outputs[0].shape)
    if task == "classification":
        fits = (len(s) == 2 and s[0] == 1) or (len(s) == 4 and s[:3] == (1, 1, 1))
        return "" if fits and _scores(o) else _NEEDS[task]
    if len(s) not in (3, 4) or s[0] != 1 or s[1] < 2 or s[2] < 2:
        return _NEEDS[task]
    if input_hw is not None and min(input_hw) > 0:
        skew = abs(math.log((s[2] / s[1]) / (input_hw[1] / input_hw[0])))
        if skew > math.log(2.0):
            return (
                f"{_NEEDS[task]}; a {s[1]}x{s[2]} output is no mask of the "
                f"{input_hw[0]}x{input_hw[1]} input"
            )
    return ""


def feature_reason(output: TensorSpec, producer: str, labelled: bool) -> str:
    """Why a ``[1,C]``/``[1,1,1,C]`` output holds features rather than class scores, or ``""``.

    A model with labels, or whose output comes from SOFTMAX/LOGISTIC, is a classifier. One whose
    output is computed by an average pool, a MEAN or an L2 normalization (looking through
    reshapes and quantization) is a feature extractor. Other builtin operators (a dense or 1×1
    convolution layer: logits) keep the classifier reading. When the graph does not say (a
    custom operator such as an Edge TPU-compiled graph, or no graph), an output quantized like
    a softmax (scale 1/256) is a classifier, and one named like ``embedding``/``features`` is
    not. ``producer`` is the operator name :func:`edge.tflite_metadata.output_producers`
    gives.
    """
    if labelled or producer in SCORE_OPS:
        return ""
    if producer in FEATURE_OPS:
        return (
            f"output {output.name!r} is computed by {producer}, which pools features; class "
            "scores come from SOFTMAX or a dense layer"
        )
    if producer in BUILTIN_OPS or producer.startswith("op "):
        return ""
    if output.quantized and math.isclose(output.scale, 1 / 256) and output.zero_point in (0, -128):
        return ""
    name = output.name.lower()
    if any(word in name for word in _FEATURE_NAMES):
        return f"output {output.name!r} is named as features"
    return ""


def infer_task(
    outputs: Sequence[TensorSpec],
    producers: Mapping[int, str] | None = None,
    labelled: bool = False,
    input_hw: tuple[int, int] | None = None,
) -> tuple[str, str]:
    """Guess (task, layout) from the output tensors.

    Detection when :func:`detection_layout` finds one; classification for one [1,C] or
    [1,1,1,C] output of scores, unless :func:`feature_reason` reads it as features
    (``producers``: output tensor index → operator, ``labelled``: the model has labels), which
    makes it ``raw``; segmentation for one [1,H,W,C] or [1,H,W] mask; anything else ``raw``.
    """
    layout = detection_layout(outputs)
    if layout:
        return "detection", layout
    if not fit_problem("classification", outputs):
        producer = (producers or {}).get(outputs[0].index, "")
        if feature_reason(outputs[0], producer, labelled):
            return "raw", ""
        return "classification", ""
    if not fit_problem("segmentation", outputs, input_hw):
        return "segmentation", ""
    return "raw", ""


def class_count(task: str, layout: str, outputs: Sequence[TensorSpec]) -> int | None:
    """How many class ids the ``task`` decoder can report for these outputs; None when the
    outputs do not bound them (SSD class ids, segmentation class-id maps, raw). A sigmoid
    segmentation output has two: 0 background, 1 foreground."""
    shape = tuple(outputs[0].shape) if outputs else ()
    if task == "classification":
        return math.prod(shape)
    if task == "segmentation":
        mode = segmentation_mode(outputs[0])
        return shape[3] if mode == ARGMAX else 2 if mode == PROBABILITY else None
    if task == "detection" and layout == YOLOV5:
        return shape[2] - 5
    if task == "detection" and layout == YOLOV8:
        return shape[1] - 4
    return None
