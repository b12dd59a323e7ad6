"""Scoring detections and classes: box matching, mAP@0.5, and float-vs-int8 agreement figures.

One matching rule serves both uses so they cannot drift apart: the bundled detector's mAP
against ground truth and the quantize tool's recall of the float model's boxes by the int8
model. Pure NumPy (IoU comes from :mod:`edge.postprocess`), so tests and the daemon's machines
can import it without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.postprocess import iou_matrix
from edge.result import Detection


@dataclass(frozen=True, slots=True)
class Boxes:
    """Detections of one image as arrays. boxes: N×4 x0,y0,x1,y1 (any common unit, usually
    normalized to the source frame); classes: N class ids; scores: N scores in 0..1 (1 for
    ground truth)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(cls, detections: Sequence[Detection]) -> Boxes:
        """From edge's own detection results."""
        return cls(
            np.array([d.box for d in detections], np.float64).reshape(-1, 4),
            np.array([d.class_id for d in detections], np.int64),
            np.array([d.score for d in detections], np.float64),
        )

    @classmethod
    def truth(cls, boxes: Sequence[Sequence[float]], classes: Sequence[int]) -> Boxes:
        """Ground truth (every score 1)."""
        return cls(
            np.asarray(boxes, np.float64).reshape(-1, 4),
            np.asarray(classes, np.int64),
            np.ones(len(classes), np.float64),
        )

    def __len__(self) -> int:
        return len(self.classes)


def match(pred: Boxes, truth: Boxes, iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, highest-scoring prediction first, same class only.

    Each prediction takes the unmatched truth box of its class with the highest IoU, if that
    IoU is at least ``iou_threshold`` (the PASCAL VOC / COCO rule). Returns
    (prediction index, truth index, IoU) triples in prediction score order.
    """
    if not len(pred) or not len(truth):
        return []
    iou = iou_matrix(pred.boxes, truth.boxes)
    iou = np.where(pred.classes[:, None] == truth.classes[None, :], iou, -1.0)
    taken = np.zeros(len(truth), bool)
    out = []
    for p in np.argsort(-pred.scores, kind="stable"):
        row = np.where(taken, -1.0, iou[p])
        t = int(row.argmax())
        if row[t] >= iou_threshold:
            taken[t] = True
            out.append((int(p), t, float(row[t])))
    return out


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision/recall curve with precision made monotonic (all-point
    interpolation, as PASCAL VOC 2010+ and COCO compute it per IoU threshold)."""
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def mean_average_precision(
    predictions: Sequence[Boxes],
    truths: Sequence[Boxes],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> tuple[float, list[float]]:
    """mAP over classes at one IoU threshold: (mean, AP per class).

    predictions/truths: one entry per image, in the same order. Predictions should be kept down
    to a low score threshold (e.g. 0.05), or the curve is cut short and AP understated. A class
    with no truth box in any image is left out of the mean (its AP is reported as NaN).
    """
    if len(predictions) != len(truths):
        raise ValueError("predictions and truths must hold the same number of images")
    per_class: list[float] = []
    for c in range(num_classes):
        scores: list[float] = []
        hits: list[bool] = []
        n_truth = 0
        for pred, truth in zip(predictions, truths, strict=True):
            pc = _select(pred, pred.classes == c)
            tc = _select(truth, truth.classes == c)
            n_truth += len(tc)
            matched = {p for p, _, _ in match(pc, tc, iou_threshold)}
            scores.extend(pc.scores.tolist())
            hits.extend(i in matched for i in range(len(pc)))
        if n_truth == 0:
            per_class.append(float("nan"))
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = np.asarray(hits, np.float64)[order]
        cum_tp = np.cumsum(tp)
        cum_fp = np.cumsum(1.0 - tp)
        recall = cum_tp / n_truth
        precision = cum_tp / np.maximum(cum_tp + cum_fp, 1e-12)
        per_class.append(average_precision(recall, precision))
    valid = [a for a in per_class if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), per_class


@dataclass(frozen=True, slots=True)
class BoxAgreement:
    """How well one detector (int8) reproduces another's boxes (float), over a set of images.

    recall: share of reference boxes matched (same class, IoU ≥ 0.5), 0..1. mean_iou: mean IoU
    of the matched pairs (NaN when nothing matched). extra: candidate boxes with no reference
    match.
    """

    reference_boxes: int
    candidate_boxes: int
    matched: int
    recall: float
    mean_iou: float
    extra: int


def box_agreement(
    reference: Sequence[Boxes], candidate: Sequence[Boxes], iou_threshold: float = 0.5
) -> BoxAgreement:
    """Match each image's candidate boxes to its reference boxes with :func:`match`."""
    n_ref = sum(len(r) for r in reference)
    n_cand = sum(len(c) for c in candidate)
    ious: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        ious.extend(iou for _, _, iou in match(cand, ref, iou_threshold))
    return BoxAgreement(
        reference_boxes=n_ref,
        candidate_boxes=n_cand,
        matched=len(ious),
        recall=len(ious) / n_ref if n_ref else 1.0,
        mean_iou=float(np.mean(ious)) if ious else float("nan"),
        extra=n_cand - len(ious),
    )


def _select(b: Boxes, mask: np.ndarray) -> Boxes:
    return Boxes(b.boxes[mask], b.classes[mask], b.scores[mask])
