"""Matching one frame's detections to the boxes a tracker predicts for its tracks.

Two passes, each greedy by cost (the cheapest pair first, each track and detection used once):

1. by overlap: pairs whose IoU reaches ``iou_threshold``, cost 1 − IoU;
2. among what the first pass left, by centre distance: pairs whose centres lie within
   ``max_centre_distance`` diagonals of the predicted box, cost that distance. This catches
   small or fast objects whose prediction missed by more than their size, and a box that
   changed shape (partly hidden, entering the frame).

In both, a detection of another class than the track costs ``OTHER_LABEL_COST`` more: the
same-class detection wins a close contest, but a class flip of the detector does not break the
track. When no track's gate holds two detections nor any detection two tracks (the common case
at camera frame rates), greedy matching is the optimal assignment and no costs are sorted; an
optimal solver (scipy's ``linear_sum_assignment``, ``lap``) would only differ in crowded
conflicts, and costs an import (see ``scripts/bench_tracking.py`` for the measured figures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge.result import Detection

Box = tuple[float, float, float, float]

OTHER_LABEL_COST = 0.3


def associate(
    predicted: Sequence[Box],
    classes: Sequence[int],
    detections: Sequence[Detection],
    iou_threshold: float,
    max_centre_distance: float,
) -> list[tuple[int, int]]:
    """(track, detection) index pairs, each index at most once, for tracks predicted at
    ``predicted`` (boxes normalized, x0, y0, x1, y1) with class ids ``classes``.
    ``max_centre_distance`` 0 turns the second pass off."""
    if not predicted or not detections:
        return []
    iou = iou_matrix(np.array(predicted), np.array([d.box for d in detections]))
    rows, cols = np.nonzero(iou >= iou_threshold)
    r_list, c_list = rows.tolist(), cols.tolist()
    if len(set(r_list)) == len(r_list) and len(set(c_list)) == len(c_list):
        pairs = list(zip(r_list, c_list, strict=True))
    else:
        cost = 1.0 - iou[rows, cols]
        cost += [
            OTHER_LABEL_COST if classes[r] != detections[c].class_id else 0.0
            for r, c in zip(r_list, c_list, strict=True)
        ]
        order = np.argsort(cost, kind="stable").tolist()
        pairs = _greedy([(r_list[k], c_list[k]) for k in order])
    if max_centre_distance > 0 and len(pairs) < min(len(predicted), len(detections)):
        used = {r for r, _ in pairs}
        taken = {c for _, c in pairs}
        scored = []
        for r, (x0, y0, x1, y1) in enumerate(predicted):
            if r in used:
                continue
            diag = math.hypot(x1 - x0, y1 - y0) or 1e-9
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            for c, d in enumerate(detections):
                if c in taken:
                    continue
                b = d.box
                dist = math.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy) / diag
                if dist <= max_centre_distance:
                    scored.append((dist + OTHER_LABEL_COST * (classes[r] != d.class_id), r, c))
        scored.sort()
        pairs += _greedy([(r, c) for _, r, c in scored])
    return pairs


def _greedy(ordered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs, in order, whose track and detection no earlier pair took."""
    used: set[int] = set()
    taken: set[int] = set()
    out = []
    for r, c in ordered:
        if r not in used and c not in taken:
            used.add(r)
            taken.add(c)
            out.append((r, c))
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N×4) with every box in ``b`` (M×4), x0, y0, x1, y1."""
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    np.maximum(wh, 0.0, out=wh)
    inter = wh[..., 0] * wh[..., 1]
    a_wh = a[:, 2:] - a[:, :2]
    b_wh = b[:, 2:] - b[:, :2]
    union = (a_wh[:, 0] * a_wh[:, 1])[:, None] + (b_wh[:, 0] * b_wh[:, 1]) - inter
    np.maximum(union, 1e-12, out=union)
    out: np.ndarray = inter / union
    return out


def box_iou(a: Box, b: Box) -> float:
    """IoU of two boxes x0, y0, x1, y1 (0 for boxes without area)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
