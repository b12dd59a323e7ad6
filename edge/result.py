"""The result of one inference and its JSON form: ``Result.to_dict()`` is the object ``edge
infer`` prints, and the body of what the daemon publishes (:func:`edge.output.payload` adds the
device, camera, numbering and timing fields). ``edge/schema/result.schema.json`` documents both
and the tests validate every produced object against it. Bump ``SCHEMA_VERSION`` on any
incompatible change to that format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Detection:
    """One object. box: x0, y0, x1, y1 normalized to the source frame (0..1), clipped, x0<=x1."""

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 4),
            "box": [round(v, 4) for v in self.box],
        }


@dataclass(frozen=True, slots=True)
class ClassScore:
    """One class of a classifier's top-k. score: probability in 0..1 (dequantized, softmaxed
    only when the model outputs logits)."""

    label: str
    class_id: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class Segment:
    """One class present in a segmentation mask. fraction: share of the frame's pixels, 0..1."""

    label: str
    class_id: int
    fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "fraction": round(self.fraction, 4)}


@dataclass(frozen=True, slots=True)
class RawOutput:
    """Summary of one output tensor (dequantized) for models whose task edge does not know."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    min: float
    max: float
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "min": round(self.min, 6),
            "max": round(self.max, 6),
            "mean": round(self.mean, 6),
            "std": round(self.std, 6),
        }


@dataclass(frozen=True, slots=True)
class Timings:
    """Stage durations in milliseconds, measured with ``time.perf_counter()``."""

    preprocess_ms: float
    invoke_ms: float
    postprocess_ms: float

    def to_dict(self) -> dict[str, float]:
        return {
            "preprocess": round(self.preprocess_ms, 3),
            "invoke": round(self.invoke_ms, 3),
            "postprocess": round(self.postprocess_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class Result:
    """Everything one inference produced. Exactly one of detections/classes/segments/outputs is
    meaningful, chosen by ``task``. ``mask`` (segmentation only) is the HxW class-id mask at the
    model's output resolution; it is for callers (the preview draws it) and is never serialized.
    """

    model: str
    model_version: str
    task: str
    source: str
    width: int
    height: int
    timings: Timings
    detections: tuple[Detection, ...] = ()
    classes: tuple[ClassScore, ...] = ()
    segments: tuple[Segment, ...] = ()
    outputs: tuple[RawOutput, ...] = ()
    index: int | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    def labels(self) -> frozenset[str]:
        """The set of labels this result reports, whatever its task."""
        items: tuple[Detection | ClassScore | Segment, ...]
        if self.task == "detection":
            items = self.detections
        elif self.task == "classification":
            items = self.classes
        else:
            items = self.segments
        return frozenset(i.label for i in items)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready result (see ``edge/schema/result.schema.json``)."""
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "model": {"name": self.model, "version": self.model_version},
            "task": self.task,
            "source": self.source,
            "frame": {"width": self.width, "height": self.height},
            "timings_ms": self.timings.to_dict(),
        }
        if self.index is not None:
            out["frame"]["index"] = self.index
        if self.task == "detection":
            out["detections"] = [d.to_dict() for d in self.detections]
        elif self.task == "classification":
            out["classes"] = [c.to_dict() for c in self.classes]
        elif self.task == "segmentation":
            out["segments"] = [s.to_dict() for s in self.segments]
        else:
            out["outputs"] = [o.to_dict() for o in self.outputs]
        return out


def box_from_array(values: np.ndarray) -> tuple[float, float, float, float]:
    """Turn a 4-vector into a box tuple of Python floats."""
    return (float(values[0]), float(values[1]), float(values[2]), float(values[3]))
