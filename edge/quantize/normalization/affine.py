"""Per-channel affine maps ``x * scale + offset``: the normalization a reader found
(:class:`InputNormalization`), the accumulator the readers apply each step to (:class:`Affine`),
and how steps are written in messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# A map of 0..255 pixels counts as a normalization when it lands within this magnitude and
# spans at least NORMALIZED_SPAN: 0..1, -1..1 and ImageNet's about -2.1..2.6 all do; a
# Rescaling(255) (a model that wants 0..1 inputs and scales them up) does not.
NORMALIZED_MAX = 10.0
NORMALIZED_SPAN = 0.5


@dataclass(frozen=True, slots=True)
class InputNormalization:
    """What a model does to its input before anything else: ``x * scale + offset`` per
    channel (one value each when all channels share it). steps: what applies it, in order,
    e.g. ``Rescaling layer 'rescaling' (x * 0.00392157 + 0)``."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    steps: tuple[str, ...]

    def range_of(self, lo: float, hi: float) -> tuple[float, float]:
        """The smallest and largest value inputs in ``lo..hi`` become, over all channels."""
        ends = [v * s + o for s, o in zip(self.scale, self.offset, strict=True) for v in (lo, hi)]
        return min(ends), max(ends)

    def takes_pixels(self) -> bool:
        """True when 0..255 pixels come out in a normalized range, i.e. the model expects raw
        pixels (edge then feeds them with mean 0, std 1)."""
        lo, hi = self.range_of(0.0, 255.0)
        return max(abs(lo), abs(hi)) <= NORMALIZED_MAX and hi - lo >= NORMALIZED_SPAN

    def describe(self) -> str:
        return " then ".join(self.steps)


class Affine:
    """Accumulates per-channel ``x * scale + offset`` steps."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.scale = np.ones(channels, np.float64)
        self.offset = np.zeros(channels, np.float64)
        self.steps: list[str] = []

    def per_channel(self, value: Any) -> np.ndarray | None:
        """``value`` as one number per channel, or None when it is not scalar or per-channel
        along the last axis."""
        try:
            v = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            return None
        if v.size == 1:
            return np.full(self.channels, float(v.reshape(-1)[0]))
        if v.size == self.channels and v.shape[-1] == self.channels:
            return v.reshape(-1)
        return None

    def mul(self, factor: np.ndarray) -> None:
        self.scale *= factor
        self.offset *= factor

    def add(self, term: np.ndarray) -> None:
        self.offset += term

    def apply(self, kind: str, pos: int, v: np.ndarray) -> str | None:
        """Apply ``x <kind> v`` (``mul``, ``div``, ``sub``, ``add``; x is operand ``pos``);
        returns the step's text, "" for a step that changes nothing, None when it is not an
        affine map of x (``v / x``)."""
        if kind == "mul":
            self.mul(v)
            return "" if np.allclose(v, 1.0) else f"x * {fmt(v)}"
        if kind == "div":
            if pos != 0:
                return None
            self.mul(1.0 / v)
            return "" if np.allclose(v, 1.0) else f"x / {fmt(v)}"
        if kind == "sub":
            if pos == 0:
                self.add(-v)
                return "" if np.allclose(v, 0.0) else f"x - {fmt(v)}"
            self.mul(np.full(self.channels, -1.0))
            self.add(v)
            return f"{fmt(v)} - x"
        if kind == "add":
            self.add(v)
            if np.allclose(v, 0.0):
                return ""
            if np.allclose(v, v[0]):
                return f"x {'-' if v[0] < 0 else '+'} {abs(float(v[0])):.6g}"
            return f"x + {fmt(v)}"
        return None

    def result(self) -> InputNormalization | None:
        if not self.steps or (np.allclose(self.scale, 1.0) and np.allclose(self.offset, 0.0)):
            return None
        return InputNormalization(_compact(self.scale), _compact(self.offset), tuple(self.steps))


def _compact(v: np.ndarray) -> tuple[float, ...]:
    if np.allclose(v, v[0]):
        return (float(v[0]),)
    return tuple(float(x) for x in v)


def affine_text(scale: np.ndarray, offset: np.ndarray) -> str:
    """``x * 0.00392157``, ``x * 0.00784314 - 1``, ``x * [..] + [..]``."""
    text = f"x * {fmt(scale)}"
    if np.allclose(offset, 0.0):
        return text
    if np.allclose(offset, offset[0]):
        sign = "-" if offset[0] < 0 else "+"
        return f"{text} {sign} {abs(float(offset[0])):.6g}"
    return f"{text} + {fmt(offset)}"


def fmt(v: np.ndarray) -> str:
    if np.allclose(v, v[0]):
        return f"{float(v[0]):.6g}"
    return "[" + ", ".join(f"{float(x):.6g}" for x in v) + "]"


# The elementwise steps Affine.apply takes, by name.
STEP_KINDS = ("mul", "div", "sub", "add")
