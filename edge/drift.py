"""Drift measures: what a model's results look like (class distribution, score deciles), the
baseline a manifest records of them, and how far a window of results is from it.

What one result contributes (:func:`observe`): a detector, one class per detection and its
score, or :data:`NOTHING` when it found nothing; a classifier, its top class and score, or
:data:`NOTHING` when no class passed the threshold; a segmentation model, each class present (no
scores). Raw-output models have no classes and are not measured.

The two measures are those Vertex AI's model monitoring uses. The class distributions are
compared with the Jensen–Shannon divergence in bits (0 for the same distribution, 1 for
distributions with no class in common); the scores with the L∞ distance between their deciles
(the largest difference of any decile, 0..1 for scores in 0..1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge.errors import ModelError
from edge.result import Result
from edge.stats import percentile

NOTHING = "(nothing)"  # the class of a result with no detection / no class over the threshold
DECILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def observe(result: Result) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """(classes, scores) that ``result`` adds to a distribution; both empty for raw outputs."""
    if result.task == "detection":
        if not result.detections:
            return (NOTHING,), ()
        return (
            tuple(d.label for d in result.detections),
            tuple(d.score for d in result.detections),
        )
    if result.task == "classification":
        if not result.classes:
            return (NOTHING,), ()
        top = result.classes[0]
        return (top.label,), (top.score,)
    if result.task == "segmentation":
        return tuple(s.label for s in result.segments) or (NOTHING,), ()
    return (), ()


def shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Counts → fractions summing to 1 (empty for no counts)."""
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items() if v > 0} if total > 0 else {}


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen–Shannon divergence in bits of two distributions over class names (each is
    normalised first; a class absent from one has probability 0 there): ``½ KL(P‖M) + ½
    KL(Q‖M)`` with ``M = ½ (P + Q)``. Symmetric, 0..1; nan when either is empty."""
    p, q = shares(p), shares(q)
    if not p or not q:
        return float("nan")
    total = 0.0
    for k in p.keys() | q.keys():
        a, b = p.get(k, 0.0), q.get(k, 0.0)
        m = (a + b) / 2
        if a > 0:
            total += 0.5 * a * math.log2(a / m)
        if b > 0:
            total += 0.5 * b * math.log2(b / m)
    return min(1.0, max(0.0, total))


def linf_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest absolute difference between matching entries of two equally long
    sequences (nan when empty); raises ValueError for different lengths."""
    if len(a) != len(b):
        raise ValueError(f"cannot compare {len(a)} quantiles with {len(b)}")
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=float("nan"))


def deciles(scores: Iterable[float]) -> tuple[float, ...]:
    """The 10th…90th nearest-rank percentiles (:func:`edge.stats.percentile`); empty for no
    scores."""
    values = sorted(scores)
    return tuple(percentile(values, q) for q in DECILES) if values else ()


@dataclass(frozen=True, slots=True)
class Baseline:
    """A model's results on representative images, as the manifest's ``baseline`` records them.

    classes: class name → share of the observations (sums to 1). score_deciles: the deciles of
    the scores (empty for a model without scores). results: how many results it was made from.
    threshold: the score threshold in force then (scores below it were never seen), or None.
    """

    classes: Mapping[str, float]
    score_deciles: tuple[float, ...]
    results: int
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "threshold": self.threshold,
            "classes": {k: round(v, 6) for k, v in sorted(self.classes.items())},
            "score_deciles": [round(v, 6) for v in self.score_deciles],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Baseline:
        """Read a manifest's ``baseline``; raises ModelError naming what is wrong."""
        hint = f"; run `edge baseline` on the model to write it again ({where})"
        if not isinstance(data, dict):
            raise ModelError(f"baseline must be an object{hint}")
        unknown = sorted(set(data) - {"results", "threshold", "classes", "score_deciles", "made"})
        if unknown:
            raise ModelError(f"baseline: unknown keys {', '.join(unknown)}{hint}")
        classes, qs = data.get("classes"), data.get("score_deciles", [])
        results, threshold = data.get("results"), data.get("threshold")
        if (
            not isinstance(classes, dict)
            or not classes
            or not all(isinstance(v, int | float) and v >= 0 for v in classes.values())
        ):
            raise ModelError(f"baseline.classes must map class names to shares{hint}")
        if not isinstance(qs, list) or len(qs) not in (0, len(DECILES)):
            raise ModelError(f"baseline.score_deciles must list {len(DECILES)} numbers{hint}")
        if not all(isinstance(v, int | float) for v in qs):
            raise ModelError(f"baseline.score_deciles must be numbers{hint}")
        if not isinstance(results, int) or results < 1:
            raise ModelError(f"baseline.results must be a positive count{hint}")
        if threshold is not None and not isinstance(threshold, int | float):
            raise ModelError(f"baseline.threshold must be a number{hint}")
        return cls(
            shares({str(k): float(v) for k, v in classes.items()}),
            tuple(float(v) for v in qs),
            results,
            None if threshold is None else float(threshold),
        )


def baseline_of(results: Iterable[Result], threshold: float | None) -> Baseline:
    """The baseline of ``results``; raises ModelError when they carry no classes (raw
    outputs) or there are none."""
    counts: Counter[str] = Counter()
    scores: list[float] = []
    n = 0
    for r in results:
        classes, s = observe(r)
        counts.update(classes)
        scores.extend(s)
        n += 1
    if not counts:
        raise ModelError(
            "no baseline: the model's results have no classes (raw outputs) or no image was "
            "given; a baseline needs a detector, classifier or segmentation model and images"
        )
    return Baseline(shares(counts), deciles(scores), n, threshold)
