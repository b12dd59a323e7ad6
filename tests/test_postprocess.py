"""Postprocessing on hand-built output tensors with known boxes and scores."""

from __future__ import annotations

import numpy as np
import pytest

from edge.models import PostprocessConfig
from edge.postprocess import (
    SSD,
    YOLOV5,
    YOLOV8,
    Postprocessor,
    infer_task,
    iou_matrix,
    nms_class_aware,
)
from edge.preprocess import TensorSpec, Transform
from edge.tasks import feature_reason, fit_problem

LABELS = {0: "circle", 1: "square", 2: "triangle"}


def out(
    shape: tuple[int, ...],
    dtype: type = np.float32,
    scale: float = 0.0,
    zp: int = 0,
    name: str = "out",
    index: int = 0,
) -> TensorSpec:
    return TensorSpec(index, name, shape, np.dtype(dtype), scale, zp)


def yolov8_tensor(
    objects: list[tuple[float, float, float, float, int, float]], n: int = 50, classes: int = 3
) -> np.ndarray:
    """[1, 4+C, N]: cx, cy, w, h normalized, then per-class scores; other anchors empty."""
    t = np.zeros((1, 4 + classes, n), np.float32)
    for i, (cx, cy, w, h, c, s) in enumerate(objects):
        t[0, :4, i] = (cx, cy, w, h)
        t[0, 4 + c, i] = s
    return t


def test_infer_task_from_shapes() -> None:
    """Output shapes identify SSD, YOLOv5, YOLOv8, classification, segmentation and raw."""
    assert infer_task([out((1, 10, 4)), out((1, 10)), out((1, 10)), out((1,))]) == (
        "detection",
        SSD,
    )
    assert infer_task([out((1, 25200, 85))]) == ("detection", YOLOV5)
    assert infer_task([out((1, 84, 8400))]) == ("detection", YOLOV8)
    assert infer_task([out((1, 1001))])[0] == "classification"
    assert infer_task([out((1, 1, 1, 12))])[0] == "classification"
    assert infer_task([out((1, 257, 257, 21))])[0] == "segmentation"
    assert infer_task([out((1, 128))])[0] == "classification"
    assert infer_task([out((1, 7)), out((1, 3))])[0] == "raw"


def test_yolov8_decode_threshold_nms() -> None:
    """Overlapping same-class boxes collapse to the best one; other classes and far boxes stay;
    low scores are dropped."""
    t = yolov8_tensor(
        [
            (0.30, 0.30, 0.20, 0.20, 0, 0.90),
            (0.31, 0.30, 0.20, 0.20, 0, 0.80),  # duplicate of the first: suppressed
            (0.31, 0.30, 0.20, 0.20, 1, 0.70),  # same place, other class: kept
            (0.80, 0.70, 0.10, 0.20, 2, 0.60),
            (0.50, 0.50, 0.10, 0.10, 2, 0.10),  # below threshold
        ]
    )
    p = Postprocessor(
        "detection",
        YOLOV8,
        [out(t.shape)],
        LABELS,
        PostprocessConfig(threshold=0.4, iou_threshold=0.5),
    )
    dets = p([t], Transform()).detections
    assert [(d.label, round(d.score, 2)) for d in dets] == [
        ("circle", 0.9),
        ("square", 0.7),
        ("triangle", 0.6),
    ]
    np.testing.assert_allclose(dets[0].box, (0.2, 0.2, 0.4, 0.4), atol=1e-6)
    np.testing.assert_allclose(dets[2].box, (0.75, 0.6, 0.85, 0.8), atol=1e-6)


def test_yolov8_quantized_output_matches_float() -> None:
    """An int8 output is thresholded in the quantized domain and gives the float result."""
    t = yolov8_tensor([(0.3, 0.4, 0.2, 0.2, 1, 0.85), (0.7, 0.7, 0.1, 0.1, 0, 0.45)])
    scale, zp = 1 / 255, -128
    q = np.clip(np.round(t / scale + zp), -128, 127).astype(np.int8)
    spec = out(q.shape, np.int8, scale, zp)
    p = Postprocessor("detection", YOLOV8, [spec], LABELS, PostprocessConfig(threshold=0.4))
    dets = p([q], Transform()).detections
    assert [d.label for d in dets] == ["square", "circle"]
    assert dets[0].score == pytest.approx(0.85, abs=scale)
    np.testing.assert_allclose(dets[0].box, (0.2, 0.3, 0.4, 0.5), atol=2 * scale)


def test_yolov8_letterbox_unmapping_and_clipping() -> None:
    """Boxes from a letterboxed input land on the source frame and are clipped to it."""
    # 200x100 source letterboxed into a square: content occupies y 0.25..0.75.
    transform = Transform(sx=1.0, sy=2.0, ox=0.0, oy=-0.5, valid=(0, 0.25, 1, 0.75))
    t = yolov8_tensor([(0.5, 0.5, 0.5, 0.25, 0, 0.9), (0.9, 0.3, 0.4, 0.2, 1, 0.8)])
    p = Postprocessor("detection", YOLOV8, [out(t.shape)], LABELS, PostprocessConfig())
    dets = p([t], transform).detections
    np.testing.assert_allclose(dets[0].box, (0.25, 0.25, 0.75, 0.75), atol=1e-6)
    # x1 = 1.1 → clipped to 1; y0 = 0.2 → (0.2 - 0.25) * 2 < 0 → clipped to 0.
    np.testing.assert_allclose(dets[1].box, (0.7, 0.0, 1.0, 0.3), atol=1e-6)


def test_yolov5_objectness_times_class_and_pixel_units() -> None:
    """YOLOv5 scores are objectness × class score; pixel-unit boxes are normalized."""
    t = np.zeros((1, 30, 8), np.float32)
    t[0, 0] = (64, 32, 32, 16, 0.9, 0.1, 0.95, 0.0)  # cx, cy, w, h in pixels of a 128 input
    t[0, 1] = (10, 10, 4, 4, 0.3, 0.9, 0.0, 0.0)  # 0.27: below threshold
    p = Postprocessor("detection", YOLOV5, [out(t.shape)], LABELS, PostprocessConfig())
    p.set_input_size(128, 128)
    dets = p([t], Transform()).detections
    assert len(dets) == 1 and dets[0].label == "square"
    assert dets[0].score == pytest.approx(0.855)
    np.testing.assert_allclose(dets[0].box, (0.375, 0.1875, 0.625, 0.3125), atol=1e-6)


def test_ssd_tf1_order_and_label_gaps() -> None:
    """SSD outputs (boxes as ymin,xmin,ymax,xmax) map to x0,y0,x1,y1 with Coral-style labels."""
    specs = [
        out((1, 10, 4), name="TFLite_Detection_PostProcess", index=1),
        out((1, 10), name="TFLite_Detection_PostProcess:1", index=2),
        out((1, 10), name="TFLite_Detection_PostProcess:2", index=3),
        out((1,), name="TFLite_Detection_PostProcess:3", index=4),
    ]
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = (0.1, 0.2, 0.5, 0.6)
    boxes[0, 1] = (0.5, 0.5, 0.9, 0.9)
    classes = np.zeros((1, 10), np.float32)
    classes[0, :2] = (0, 2)
    scores = np.zeros((1, 10), np.float32)
    scores[0, :2] = (0.8, 0.3)
    count = np.array([2.0], np.float32)
    p = Postprocessor(
        "detection", SSD, specs, {0: "person", 2: "car"}, PostprocessConfig(threshold=0.25)
    )
    dets = p([boxes, classes, scores, count], Transform()).detections
    assert [(d.label, d.class_id) for d in dets] == [("person", 0), ("car", 2)]
    np.testing.assert_allclose(dets[0].box, (0.2, 0.1, 0.6, 0.5), atol=1e-6)


def test_label_allow_list_and_max_detections() -> None:
    """Only allowed labels are reported, at most max_detections of them, best first."""
    objs = [(0.1 + 0.1 * i, 0.5, 0.05, 0.05, i % 3, 0.5 + 0.04 * i) for i in range(8)]
    t = yolov8_tensor(objs)
    p = Postprocessor(
        "detection",
        YOLOV8,
        [out(t.shape)],
        LABELS,
        PostprocessConfig(allow=frozenset({"square", "triangle"}), max_detections=3),
    )
    dets = p([t], Transform()).detections
    assert len(dets) == 3
    assert {d.label for d in dets} <= {"square", "triangle"}
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_classification_quantized_probabilities_and_top_k() -> None:
    """A uint8 softmax output is dequantized (no second softmax) and ranked."""
    spec = out((1, 4), np.uint8, 1 / 256, 0)
    values = np.array([[10, 200, 30, 16]], np.uint8)
    p = Postprocessor(
        "classification",
        "",
        [spec],
        {0: "a", 1: "b", 2: "c", 3: "d"},
        PostprocessConfig(top_k=2, threshold=0.05),
    )
    classes = p([values], Transform()).classes
    assert [c.label for c in classes] == ["b", "c"]
    assert classes[0].score == pytest.approx(200 / 256)


def test_classification_logits_get_softmax() -> None:
    """Float logits (outside 0..1) are turned into probabilities that sum to 1."""
    p = Postprocessor(
        "classification", "", [out((1, 3))], {}, PostprocessConfig(top_k=3, threshold=0)
    )
    classes = p([np.array([[2.0, -1.0, 0.5]], np.float32)], Transform()).classes
    assert sum(c.score for c in classes) == pytest.approx(1.0, abs=1e-4)
    assert [c.label for c in classes] == ["0", "2", "1"]  # unnamed classes show their id


def test_segmentation_fractions_ignore_letterbox_padding() -> None:
    """Class fractions count only the image content, not the letterbox bars."""
    logits = np.zeros((1, 8, 8, 3), np.float32)
    logits[0, :, :, 0] = 1.0  # background everywhere
    logits[0, 2:4, :, 1] = 2.0  # class 1 in rows 2-3
    logits[0, 0:2, :, 2] = 2.0  # class 2 only in the padding rows 0-1
    transform = Transform(valid=(0.0, 0.25, 1.0, 0.75))  # rows 2..5 are content
    p = Postprocessor(
        "segmentation", "", [out(logits.shape)], {0: "bg", 1: "road"}, PostprocessConfig()
    )
    decoded = p([logits], transform)
    fractions = {s.label: s.fraction for s in decoded.segments}
    assert fractions == {"road": pytest.approx(0.5), "bg": pytest.approx(0.5)}
    assert decoded.mask is not None and decoded.mask.shape == (8, 8)


def test_raw_summaries() -> None:
    """Raw mode reports each output's name, shape, dtype and dequantized statistics."""
    spec = out((1, 4), np.int8, 0.5, 0, name="logits")
    p = Postprocessor("raw", "", [spec], {}, PostprocessConfig())
    raw = p([np.array([[0, 2, 4, 6]], np.int8)], Transform()).outputs[0]
    assert (raw.name, raw.shape, raw.dtype) == ("logits", (1, 4), "int8")
    assert (raw.min, raw.max, raw.mean) == (0.0, 3.0, 1.5)


def test_nms_class_aware_and_iou() -> None:
    """IoU of known boxes, and NMS that never suppresses across classes."""
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32)
    assert iou_matrix(a, a)[0, 1] == pytest.approx(1 / 7)
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0.05, 0, 1, 1]], np.float32)
    keep = nms_class_aware(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5)
    assert keep.tolist() == [0, 1]


def test_nms_matches_opencv_reference() -> None:
    """The numpy NMS keeps exactly what OpenCV's NMSBoxes keeps, per class, on crowded boxes."""
    import cv2

    rng = np.random.default_rng(7)
    for trial in range(20):
        n = int(rng.integers(2, 200))
        xy = rng.uniform(0, 0.8, (n, 2))
        wh = rng.uniform(0.02, 0.3, (n, 2))
        boxes = np.hstack([xy, xy + wh]).astype(np.float32)
        scores = rng.uniform(0.1, 1.0, n).astype(np.float32)
        classes = rng.integers(0, 3, n)
        got = nms_class_aware(boxes, scores, classes, 0.45)
        want: list[int] = []
        for c in range(3):
            idx = np.flatnonzero(classes == c)
            if idx.size == 0:
                continue
            b = boxes[idx]
            rects = np.hstack([b[:, :2], b[:, 2:] - b[:, :2]]).tolist()
            kept = cv2.dnn.NMSBoxes(rects, scores[idx].tolist(), 0.0, 0.45)
            want += idx[np.asarray(kept, dtype=np.int64).reshape(-1)].tolist()
        assert sorted(got.tolist()) == sorted(want), trial
        assert np.all(np.diff(scores[got]) <= 0)  # highest score first


def test_uint8_sigmoid_mask_is_dequantized_before_the_threshold() -> None:
    """A uint8 [1,H,W,1] probability output is cut at the threshold in real units, not cast:
    q=128 (0.5) is foreground at 0.5, q=127 is not; a label names the foreground."""
    spec = out((1, 2, 4, 1), np.uint8, 1 / 256, 0)
    q = np.array([[[[0], [127], [128], [255]], [[10], [200], [250], [3]]]], np.uint8)
    cfg = PostprocessConfig(labels_offset=-1)
    p = Postprocessor("segmentation", "", [spec], {0: "person"}, cfg)
    decoded = p([q], Transform())
    assert decoded.mask is not None
    np.testing.assert_array_equal(decoded.mask, [[0, 0, 1, 1], [0, 1, 1, 0]])
    assert {(s.label, s.fraction) for s in decoded.segments} == {
        ("person", 0.5),
        ("background", 0.5),
    }
    strict = PostprocessConfig(labels_offset=-1, segmentation_threshold=0.9)
    mask = Postprocessor("segmentation", "", [spec], {0: "person"}, strict)([q], Transform()).mask
    assert mask is not None and int(mask.sum()) == 2  # 250 and 255 only


def test_float_sigmoid_logits_are_thresholded_as_logits() -> None:
    """A float single-channel output with values outside 0..1 is read as logits: the cut is
    logit(threshold), so 0.3 (sigmoid 0.57) is foreground at 0.5 and -0.3 is not."""
    logits = np.array([[[-4.0, -0.3], [0.3, 5.0]]], np.float32)  # [1,H,W]
    p = Postprocessor("segmentation", "", [out(logits.shape)], {}, PostprocessConfig())
    decoded = p([logits], Transform())
    assert decoded.mask is not None
    np.testing.assert_array_equal(decoded.mask, [[0, 0], [1, 1]])
    assert {s.label for s in decoded.segments} == {"background", "foreground"}


def test_fit_problem_names_what_each_task_needs() -> None:
    """Each task checks the outputs it decodes: SSD outputs are no classifier, a classifier
    no mask, BlazeFace rows no mask of a square input, int ids no scores."""
    ssd = [out((1, 10, 4)), out((1, 10)), out((1, 10)), out((1,))]
    assert fit_problem("detection", ssd) == ""
    assert fit_problem("classification", ssd).startswith("classification needs one output")
    assert fit_problem("segmentation", [out((1, 12))]).startswith("segmentation needs")
    blaze = [out((1, 896, 16))]
    assert "a 896x16 output is no mask of the 128x128 input" in fit_problem(
        "segmentation", blaze, (128, 128)
    )
    assert fit_problem("segmentation", [out((1, 64, 48, 21))], (256, 192)) == ""
    assert fit_problem("classification", [out((1, 5), np.int64)]) != ""
    assert fit_problem("raw", blaze) == ""


def test_infer_task_tells_features_from_class_scores() -> None:
    """With the graph known, a [1,C] output from MEAN or a pool is raw features; from SOFTMAX,
    a dense layer, or with labels it stays classification; an opaque graph falls back on
    the quantization and the output name."""
    feat = out((1, 1024), index=7)
    assert infer_task([feat], {7: "MEAN"}) == ("raw", "")
    assert infer_task([feat], {7: "AVERAGE_POOL_2D"}) == ("raw", "")
    assert infer_task([feat], {7: "MEAN"}, labelled=True)[0] == "classification"
    assert infer_task([feat], {7: "SOFTMAX"})[0] == "classification"
    assert infer_task([feat], {7: "FULLY_CONNECTED"})[0] == "classification"
    named = out((1, 128), name="embeddings", index=3)
    assert infer_task([named], {3: "edgetpu-custom-op"}) == ("raw", "")
    q = out((1, 128), np.uint8, 1 / 256, 0, name="embeddings", index=3)
    assert infer_task([q], {3: "edgetpu-custom-op"})[0] == "classification"
    assert "computed by MEAN" in feature_reason(feat, "MEAN", False)
