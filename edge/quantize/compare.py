"""How much quantization changed a model's answers: the float and the int8 model run through
edge's own Engine (same preprocessing, same decoders) on the same held-out images.

What is compared depends on the task, and so does the ``drop`` the ``--max-drop`` gate checks:

- classification: top-1 agreement (share of images where both pick the same class) and mean
  score error (|float − int8| probability of the float model's top class); drop = 100 −
  agreement %.
- detection: the int8 model's boxes matched to the float model's (same class, IoU ≥ 0.5,
  greedy by score); recall and mean IoU of the matches; drop = 100 − recall %.
- anything else (segmentation, raw): mean absolute error of the dequantized outputs; drop =
  100 × MAE / (range of the float outputs over the images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.engine import Engine
from edge.errors import ModelError
from edge.quantize.metrics import Boxes, box_agreement


@dataclass(frozen=True, slots=True)
class Agreement:
    """Float vs int8 on ``images`` held-out images. Percentages are 0..100; fields that do not
    apply to the task are None. drop: the figure ``--max-drop`` is checked against."""

    task: str
    images: int
    drop: float
    drop_meaning: str
    top1_agreement: float | None = None
    mean_score_error: float | None = None
    box_recall: float | None = None
    mean_iou: float | None = None
    float_boxes: int | None = None
    int8_boxes: int | None = None
    mean_abs_error: float | None = None
    output_range: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (round(v, 6) if isinstance(v, float) else v)
            for k, v in asdict(self).items()
            if v is not None
        }


def agreement(reference: Engine, candidate: Engine, images: Sequence[np.ndarray]) -> Agreement:
    """Compare ``candidate`` (int8) with ``reference`` (float) on ``images`` (BGR uint8).

    Both engines must have been loaded with the same task; classifiers with top_k covering
    every class and threshold 0, so full score vectors come back.
    """
    task = reference.task
    if task == "classification":
        return _classification(reference, candidate, images)
    if task == "detection":
        return _detection(reference, candidate, images)
    return _outputs(reference, candidate, images)


def _classification(ref: Engine, cand: Engine, images: Sequence[np.ndarray]) -> Agreement:
    same = 0
    errors = []
    for image in images:
        a = ref.infer(image).classes
        b = cand.infer(image).classes
        if not a:
            continue
        top = a[0]
        if b and b[0].class_id == top.class_id:
            same += 1
        b_score = next((c.score for c in b if c.class_id == top.class_id), 0.0)
        errors.append(abs(top.score - b_score))
    n = len(images)
    agree = 100.0 * same / n if n else 100.0
    return Agreement(
        task="classification",
        images=n,
        drop=100.0 - agree,
        drop_meaning="100 - top-1 agreement %",
        top1_agreement=agree,
        mean_score_error=float(np.mean(errors)) if errors else 0.0,
    )


def _detection(ref: Engine, cand: Engine, images: Sequence[np.ndarray]) -> Agreement:
    refs = [Boxes.of(ref.infer(image).detections) for image in images]
    cands = [Boxes.of(cand.infer(image).detections) for image in images]
    agg = box_agreement(refs, cands)
    return Agreement(
        task="detection",
        images=len(images),
        drop=100.0 * (1.0 - agg.recall),
        drop_meaning="100 - recall % of the float model's boxes (same class, IoU >= 0.5)",
        box_recall=100.0 * agg.recall,
        mean_iou=agg.mean_iou,
        float_boxes=agg.reference_boxes,
        int8_boxes=agg.candidate_boxes,
    )


def _outputs(ref: Engine, cand: Engine, images: Sequence[np.ndarray]) -> Agreement:
    abs_sum = 0.0
    count = 0
    lo, hi = np.inf, -np.inf
    for image in images:
        ref.infer(image)
        cand.infer(image)
        for i, (rs, cs) in enumerate(
            zip(ref.interpreter.outputs, cand.interpreter.outputs, strict=True)
        ):
            a = rs.dequantize(ref.interpreter.output(i)).astype(np.float64)
            b = cs.dequantize(cand.interpreter.output(i)).astype(np.float64)
            if a.shape != b.shape:
                raise ModelError(
                    f"output {i} of the int8 model has shape {list(b.shape)} but the float "
                    f"model's has {list(a.shape)}; the converter reordered the outputs, so "
                    "they cannot be compared position by position"
                )
            abs_sum += float(np.abs(a - b).sum())
            count += a.size
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    mae = abs_sum / count if count else 0.0
    span = hi - lo if count and hi > lo else 0.0
    if span:
        drop = 100.0 * mae / span
    else:  # constant float outputs: any error at all is a total change
        drop = 100.0 if mae else 0.0
    return Agreement(
        task=ref.task,
        images=len(images),
        drop=drop,
        drop_meaning="100 x mean absolute error / range of the float outputs",
        mean_abs_error=mae,
        output_range=span,
    )
