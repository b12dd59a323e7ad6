"""Does the float model see the calibration images at all?

A model fed wrongly normalized inputs (divided twice, say, so every pixel is near 0) answers
nearly the same for every image. Its int8 version then "agrees" with it on whatever constant
answer it gives, and the agreement figure looks fine. This check runs the float model on the
preprocessed calibration tensors and measures how much its outputs move across them; the tool
raises an alert when they barely do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.runtime.backends import load_backend

# Below this spread the outputs are taken as not responding to the images. Measured on five
# small shape classifiers (softmax and logits outputs, with and without biases), 32 varied
# frames each: 0.84-1.35 with the right preprocessing; 0.0002-0.017 with the input divided
# by 255 twice; 0.0003-0.025 with -1..1 normalization on top of the model's own. Calibrating
# on frames of a single class gives 0.006-1.0: a confident softmax then says nearly the same
# for every frame, which this check also reports (such a set is a poor calibration too).
SPREAD_MIN = 0.05
# Images run through the float model for the check (more adds time, not information).
SPREAD_IMAGES = 32


@dataclass(frozen=True, slots=True)
class OutputSpread:
    """How much the float model's outputs change across ``images`` inputs.

    spread: for each output tensor, the mean over its elements of the standard deviation
    across images, divided by the mean absolute value of the tensor; the largest over the
    tensors (one responsive output is enough). 0 means the same answer for every image; a
    classifier that sees varied images gives about 0.5 or more. The figure is scale-free, so
    raw outputs (logits) of a network without biases, which all shrink by the same factor when
    the inputs are too small, look normal (a softmax flattens and is caught); and images that
    are all alike look like a model that ignores them: ``input_spread``, the same figure for
    the input tensors, tells those apart.
    """

    spread: float
    input_spread: float
    images: int

    def barely_varies(self) -> bool:
        """The outputs hardly move across the images."""
        return self.images > 1 and self.spread < SPREAD_MIN

    def images_alike(self) -> bool:
        """The input tensors themselves hardly differ (black frames, one frame copied)."""
        return self.images > 1 and self.input_spread < SPREAD_MIN


def measure(
    model: bytes, samples: Sequence[np.ndarray], limit: int = SPREAD_IMAGES
) -> OutputSpread:
    """Run the float ``model`` (``.tflite`` bytes) on up to ``limit`` of ``samples`` (float32
    [1,H,W,C] input tensors) and measure the spread of its outputs."""
    raw = load_backend().module.Interpreter(model_content=model)
    raw.allocate_tensors()
    inp = raw.get_input_details()[0]["index"]
    outputs = [d["index"] for d in raw.get_output_details()]
    taken = list(samples[:limit])
    values: list[list[np.ndarray]] = [[] for _ in outputs]
    for sample in taken:
        raw.set_tensor(inp, sample)
        raw.invoke()
        for k, index in enumerate(outputs):
            values[k].append(np.array(raw.get_tensor(index), np.float64).reshape(-1))
    spreads = [_spread(np.stack(per_image)) for per_image in values if per_image]
    inputs = (
        _spread(np.stack([np.asarray(t, np.float64).reshape(-1) for t in taken])) if taken else 0.0
    )
    return OutputSpread(max(spreads) if spreads else 0.0, inputs, len(taken))


def _spread(a: np.ndarray) -> float:
    """Images × values: mean standard deviation across images over mean absolute value."""
    magnitude = float(np.abs(a).mean())
    return float(a.std(axis=0).mean()) / magnitude if magnitude > 0 else 0.0
