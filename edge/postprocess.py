"""Model outputs → results: classification top-k, SSD, YOLOv5/v8 with class-aware NMS,
segmentation (per-class scores, sigmoid foreground or class ids), and raw summaries.

The decoder is chosen once per model from its output tensors (:func:`edge.tasks.infer_task`) and
built with everything it needs (labels, thresholds, quantization) so per-frame work is only the
decode. Boxes come out as x0, y0, x1, y1 normalized to the source frame and clipped to 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.errors import ModelError
from edge.models import PostprocessConfig
from edge.preprocess import TensorSpec, Transform
from edge.result import ClassScore, Detection, RawOutput, Segment, box_from_array
from edge.tasks import (
    ARGMAX,
    PROBABILITY,
    SSD,
    YOLOV5,
    YOLOV8,
    class_count,
    infer_task,
    segmentation_mode,
)

__all__ = ["SSD", "YOLOV5", "YOLOV8", "Decoded", "Postprocessor", "infer_task"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a decoder produced for one frame; only the fields of its task are filled."""

    detections: tuple[Detection, ...] = ()
    classes: tuple[ClassScore, ...] = ()
    segments: tuple[Segment, ...] = ()
    outputs: tuple[RawOutput, ...] = ()
    mask: np.ndarray | None = None


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out


class Postprocessor:
    """Decodes one model's outputs. Thread affinity: one thread at a time (the daemon's result
    thread for that model).

    ``labels`` are as read from the labels file or metadata; ``config.labels_offset`` (None
    counts as 0) shifts them onto class ids once, here. A negative offset leaves class 0 without
    a line: it is the background of the "class 0 is background" convention and is named so.
    """

    def __init__(
        self,
        task: str,
        layout: str,
        outputs: Sequence[TensorSpec],
        labels: dict[int, str],
        config: PostprocessConfig,
    ) -> None:
        self.task = task
        self.layout = layout
        self.outputs = tuple(outputs)
        self.labels = labels
        self.config = config
        decoders: dict[str, Callable[[list[np.ndarray], Transform], Decoded]] = {
            "classification": self._classification,
            "segmentation": self._segmentation,
            "raw": self._raw,
        }
        if task == "detection":
            decoders["detection"] = {SSD: self._ssd, YOLOV5: self._yolo, YOLOV8: self._yolo}[layout]
        if task not in decoders:
            raise ModelError(
                f"the model's outputs {[list(o.shape) for o in outputs]} do not fit task "
                f"{task!r}. Use --task raw to see them, or a model of that task."
            )
        self._decode = decoders[task]
        if task == "detection" and layout == SSD:
            self._ssd_roles = _ssd_roles(self.outputs)
        self.classes = class_count(task, layout, self.outputs)
        offset = config.labels_offset or 0
        self.names = {i - offset: name for i, name in labels.items() if i - offset >= 0}
        if offset < 0:
            self.names.setdefault(0, "background")
        if task == "segmentation":
            self._init_segmentation()

    def label(self, class_id: int) -> str:
        """The label of ``class_id`` (its number when the labels do not name it)."""
        return self.names.get(class_id) or str(class_id)

    def known_labels(self) -> frozenset[str] | None:
        """Every label this decoder can report, or None when it names classes by number and
        their count is unknown (an SSD model without labels)."""
        if self.task == "raw":
            return frozenset()
        if self.classes is None:
            return frozenset(self.names.values()) if self.names else None
        return frozenset(self.label(c) for c in range(self.classes))

    def __call__(self, values: list[np.ndarray], transform: Transform) -> Decoded:
        """Decode raw output arrays (as stored, quantized or not) for one frame."""
        return self._decode(values, transform)

    def _allowed(self, label: str) -> bool:
        return not self.config.allow or label in self.config.allow

    # -- classification -------------------------------------------------------------------
    def _classification(self, values: list[np.ndarray], transform: Transform) -> Decoded:
        scores = self.outputs[0].dequantize(values[0]).reshape(-1)
        logits = self.config.logits
        if logits is None:
            logits = bool(scores.min() < -1e-3 or scores.max() > 1.0 + 1e-3)
        if logits:
            scores = softmax(scores)
        k = min(self.config.top_k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        out = []
        for i in top:
            s = float(scores[i])
            label = self.label(int(i))
            if s >= self.config.threshold and self._allowed(label):
                out.append(ClassScore(label, int(i), min(1.0, s)))
        return Decoded(classes=tuple(out))

    # -- detection ------------------------------------------------------------------------
    def _finish(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        transform: Transform,
        nms: bool,
    ) -> Decoded:
        """Threshold, class-aware NMS, top-N, unmap to the source frame (model-normalized
        x0,y0,x1,y1 in)."""
        cfg = self.config
        keep = scores >= cfg.threshold
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        if cfg.allow and len(scores):
            ok = np.array([self.label(int(c)) in cfg.allow for c in class_ids], bool)
            boxes, scores, class_ids = boxes[ok], scores[ok], class_ids[ok]
        if nms and len(scores) > 1:
            order = nms_class_aware(boxes, scores, class_ids, cfg.iou_threshold)
        else:
            order = np.argsort(-scores, kind="stable")
        order = order[: cfg.max_detections]
        src = transform.boxes_to_source(boxes[order]) if len(order) else boxes[:0]
        dets = []
        for row, i in zip(src, order, strict=True):
            if row[2] <= row[0] or row[3] <= row[1]:
                continue  # entirely in letterbox padding or degenerate
            c = int(class_ids[i])
            dets.append(
                Detection(self.label(c), c, min(1.0, float(scores[i])), box_from_array(row))
            )
        return Decoded(detections=tuple(dets))

    def _ssd(self, values: list[np.ndarray], transform: Transform) -> Decoded:
        b, c, s, n = self._ssd_roles
        count = int(self.outputs[n].dequantize(values[n]).reshape(-1)[0])
        boxes = self.outputs[b].dequantize(values[b]).reshape(-1, 4)[:count]
        classes = self.outputs[c].dequantize(values[c]).reshape(-1)[:count]
        scores = self.outputs[s].dequantize(values[s]).reshape(-1)[:count]
        # SSD boxes are ymin, xmin, ymax, xmax; the post-process op already applied NMS.
        xyxy = boxes[:, [1, 0, 3, 2]]
        return self._finish(xyxy, scores, np.round(classes).astype(np.int64), transform, nms=False)

    def _yolo(self, values: list[np.ndarray], transform: Transform) -> Decoded:
        spec = self.outputs[0]
        raw = values[0][0]
        if self.layout == YOLOV8:
            raw = raw.T  # [4+C, N] → [N, 4+C]
        first_class = 5 if self.layout == YOLOV5 else 4
        # Threshold in the quantized domain first, so only candidates are dequantized.
        cls_q = raw[:, first_class:]
        best_q = cls_q.max(axis=1)
        if spec.quantized and self.layout == YOLOV8:
            qt = math.floor(self.config.threshold / spec.scale + spec.zero_point)
            cand = np.nonzero(best_q >= qt)[0]
        else:
            cand = np.arange(raw.shape[0])
        rows = spec.dequantize(raw[cand])
        cls = rows[:, first_class:]
        class_ids = cls.argmax(axis=1)
        scores = cls[np.arange(len(rows)), class_ids]
        if self.layout == YOLOV5:
            scores = scores * rows[:, 4]
        xywh = rows[:, :4]
        if len(xywh) and float(np.abs(xywh).max()) > 2.0:
            # Pixel units of the model input (some exports); normalize.
            h, w = self._input_hw
            xywh = xywh / np.array([w, h, w, h], np.float32)
        boxes = np.empty_like(xywh)
        boxes[:, 0] = xywh[:, 0] - xywh[:, 2] / 2
        boxes[:, 1] = xywh[:, 1] - xywh[:, 3] / 2
        boxes[:, 2] = xywh[:, 0] + xywh[:, 2] / 2
        boxes[:, 3] = xywh[:, 1] + xywh[:, 3] / 2
        return self._finish(boxes, scores, class_ids, transform, nms=True)

    _input_hw: tuple[int, int] = (1, 1)

    def set_input_size(self, height: int, width: int) -> None:
        """Tell the decoder the model input size, for outputs in pixel units."""
        self._input_hw = (height, width)

    # -- segmentation ---------------------------------------------------------------------
    def _init_segmentation(self) -> None:
        """Plan the mask decode once: argmax, or the foreground threshold in the output's own
        domain (quantized steps, probabilities, or logits when ``config.logits`` says so)."""
        spec = self.outputs[0]
        self._seg_mode = segmentation_mode(spec)
        if self._seg_mode != PROBABILITY:
            return
        if not self.labels:
            self.names = {0: "background", 1: "foreground"}
        t = self.config.segmentation_threshold
        # sigmoid(x) >= t  ⇔  x >= log(t / (1 - t)), for a float output of logits
        self._seg_logit_cut = (
            math.log(t / (1 - t)) if 0 < t < 1 else (-math.inf if t <= 0 else math.inf)
        )
        cut = self._seg_logit_cut if self.config.logits else t
        if spec.quantized and math.isfinite(cut):
            # real = scale * (q - zero_point) >= cut  ⇔  q >= zero_point + cut / scale
            cut = float(math.ceil(spec.zero_point + cut / spec.scale - 1e-6))
        self._seg_cut = cut

    def _segmentation(self, values: list[np.ndarray], transform: Transform) -> Decoded:
        out = values[0][0]
        h, w = out.shape[0], out.shape[1]
        if self._seg_mode == ARGMAX:
            # argmax is invariant under the (monotonic) dequantization: skip it.
            mask = out.argmax(axis=2).astype(np.uint8 if out.shape[2] <= 256 else np.int32)
        elif self._seg_mode == PROBABILITY:
            cut = self._seg_cut
            undeclared = self.config.logits is None and not self.outputs[0].quantized
            # Undeclared and not known from the graph: values outside 0..1 are logits.
            if undeclared and (out.min() < -1e-3 or out.max() > 1.0 + 1e-3):
                cut = self._seg_logit_cut
            mask = (out.reshape(h, w) >= cut).view(np.uint8)
        else:
            mask = out.reshape(h, w).astype(np.int32)
        x0, y0, x1, y1 = transform.valid
        region = mask[round(y0 * h) : round(y1 * h) or h, round(x0 * w) : round(x1 * w) or w]
        flat = region.reshape(-1)
        if self._seg_mode not in (ARGMAX, PROBABILITY):
            flat = flat[flat >= 0]  # negative ids mark "ignore" in some exports
        counts = np.bincount(flat, minlength=2 if self._seg_mode == PROBABILITY else 1)
        total = max(1, region.size)
        segs = []
        # A sigmoid mask reports both classes, also at 0 %: "no foreground" is an answer.
        present = range(2) if self._seg_mode == PROBABILITY else np.nonzero(counts)[0]
        for cid in present:
            frac = counts[cid] / total
            label = self.label(int(cid))
            if self._allowed(label):
                segs.append(Segment(label, int(cid), float(frac)))
        segs.sort(key=lambda s: -s.fraction)
        return Decoded(segments=tuple(segs), mask=mask)

    # -- raw ------------------------------------------------------------------------------
    def _raw(self, values: list[np.ndarray], transform: Transform) -> Decoded:
        outs = []
        for spec, v in zip(self.outputs, values, strict=True):
            real = spec.dequantize(v)
            outs.append(
                RawOutput(
                    spec.name,
                    tuple(int(x) for x in v.shape),
                    str(v.dtype),
                    float(real.min()),
                    float(real.max()),
                    float(real.mean()),
                    float(real.std()),
                )
            )
        return Decoded(outputs=tuple(outs))


def _ssd_roles(outputs: Sequence[TensorSpec]) -> tuple[int, int, int, int]:
    """(boxes, classes, scores, count) output positions of an SSD post-process model.

    Boxes are the rank-3 tensor and count the rank-1 one. Classes and scores have the same
    shape; TF1 exports name them ``TFLite_Detection_PostProcess:1`` and ``:2``; TF2 exports
    order them differently, so without those names the first [1,N] output whose name sorts
    as ``...:1``-like is not trusted and classes are told from scores by name order where the
    converter kept the post-process op's output numbering, else by position (TF2 puts scores
    first).
    """
    ranks = [len(o.shape) for o in outputs]
    b = ranks.index(3)
    n = ranks.index(1)
    pair = [i for i, r in enumerate(ranks) if r == 2]
    names = [outputs[i].name for i in pair]
    if all(":" in nm and nm.rsplit(":", 1)[1].isdigit() for nm in names) and all(
        "PostProcess" in nm for nm in names
    ):
        pair.sort(key=lambda i: int(outputs[i].name.rsplit(":", 1)[1]))
        return b, pair[0], pair[1], n
    # TF2 "StatefulPartitionedCall:N" exports: outputs are [scores, boxes, count, classes].
    if b == 1 and n == 2:
        return b, pair[1], pair[0], n
    return b, pair[0], pair[1], n


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of N×4 and M×4 x0,y0,x1,y1 boxes (any common unit)."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def nms_class_aware(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Indices kept by greedy NMS applied per class, highest score first.

    A box is dropped when its IoU with a higher-scoring kept box of the same class exceeds
    ``iou_threshold`` (ties in score keep the earlier box). One vectorized pass per kept box, so
    the cost grows with candidates × kept, never candidates².
    """
    order = np.argsort(-scores, kind="stable")
    xyxy = boxes.astype(np.float64)
    keep: list[int] = []
    while order.size:
        first, rest = int(order[0]), order[1:]
        keep.append(first)
        iou = iou_matrix(xyxy[first : first + 1], xyxy[rest])[0]
        order = rest[(iou <= iou_threshold) | (class_ids[rest] != class_ids[first])]
    return np.asarray(keep, dtype=np.int64)
