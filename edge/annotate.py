"""Drawing a result onto its frame: boxes with labels and scores (and, for a tracked camera,
its zones and its tracks' ids), the top classes, a segmentation overlay, and a line
of live figures. Used by MQTT snapshots and the preview; it
runs on their own threads, never on the inference thread.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.result import Result
from edge.trackevents import Overlay

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour_for(class_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class id (golden-angle hue steps)."""
    hue = int((class_id * 137.508) % 180)
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _label(
    img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float
) -> None:
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    y = max(y, th + base + 2)
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def annotate(
    image: np.ndarray, result: Result, figures: str = "", tracked: Overlay | None = None
) -> np.ndarray:
    """A BGR copy of ``image`` with ``result`` drawn on it and ``figures`` in the top left.
    With ``tracked`` its zones are outlined (white, named) and each track's id is tagged
    (``#id``, in a colour per id) under its box."""
    img = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 900)
    thick = max(1, round(min(w, h) / 320))
    if result.mask is not None:
        mask = cv2.resize(result.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        lut = np.array([colour_for(i) for i in range(256)], np.uint8)
        overlay = lut[mask]
        overlay[mask == 0] = img[mask == 0]  # class 0 is usually background: leave it clear
        cv2.addWeighted(overlay, 0.45, img, 0.55, 0, dst=img)
    for d in result.detections:
        x0, y0, x1, y1 = _pixels(d.box, w, h)
        colour = colour_for(d.class_id)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick)
        _label(img, f"{d.label} {d.score:.2f}", x0, y0, colour, scale)
    if tracked is not None:
        for z in tracked.zones:
            pts = np.array([(round(x * w), round(y * h)) for x, y in z.points], np.int32)
            cv2.polylines(img, [pts], True, (255, 255, 255), thick, cv2.LINE_AA)
            top = int(pts[:, 1].min()) + 2
            _label(img, z.name, int(pts[:, 0].min()) + thick, top, (255, 255, 255), scale)
        for t in tracked.tracks:
            x0, _, _, y1 = _pixels(t.box, w, h)
            (_, th), base = cv2.getTextSize("#", _FONT, scale, 1)
            # Below the box, so its sides keep the class colour.
            _label(img, f"#{t.id}", x0, y1 + th + base + 2 + thick, colour_for(t.id), scale)
    y = int(40 * scale) + 24
    for c in result.classes:
        _label(img, f"{c.label} {c.score:.2f}", 6, y, colour_for(c.class_id), scale * 1.2)
        y += int(34 * scale) + 6
    for s in result.segments[:5]:
        _label(img, f"{s.label} {s.fraction:.0%}", 6, y, colour_for(s.class_id), scale)
        y += int(28 * scale) + 6
    if figures:
        _label(img, figures, 6, int(30 * scale) + 6, (255, 255, 255), scale)
    return img


def _pixels(box: tuple[float, float, float, float], w: int, h: int) -> tuple[int, int, int, int]:
    return round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
