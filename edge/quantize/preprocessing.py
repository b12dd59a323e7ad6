"""Which preprocessing a quantization feeds the model, and why.

In order: a config passed to the Python API, else the ``preprocess`` of the manifest.json beside
the model, else — when the model normalizes its input itself (see
:mod:`edge.quantize.normalization`) — raw 0..255 pixels (mean 0, std 1), else the 0..1
convention most Keras models are trained with (mean 0, std 255). Command-line flags then
replace single fields. A mean/std that normalizes on top of the model's own normalization is
kept (it may be how the model was trained) but raises an alert, because it usually means the
input is divided twice and the float model barely sees the images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge.preprocess import PreprocessConfig
from edge.quantize.normalization import InputNormalization
from edge.quantize.variation import OutputSpread

# The 0..1 convention most Keras image models are trained with; used when nothing says.
DEFAULT_PREPROCESS = PreprocessConfig(mean=(0.0,), std=(255.0,))
# What a model that normalizes its own input is fed: the pixels as they are.
RAW_PIXELS = (0.0,), (1.0,)

ORIGINS = ("request", "manifest", "flags", "model", "default")


@dataclass(frozen=True, slots=True)
class Choice:
    """The preprocessing to use. origin: where its mean/std came from, one of ``ORIGINS``
    (``model``: the model normalizes itself, so raw pixels). in_model: the normalization the
    model applies itself, if one was found. notes: for the report (the report states the
    model's own normalization and the origin itself); alerts: loud warnings."""

    config: PreprocessConfig
    origin: str
    in_model: InputNormalization | None
    notes: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()


def choose(
    *,
    given: PreprocessConfig | None,
    manifest: PreprocessConfig | None,
    overrides: Mapping[str, Any],
    in_model: InputNormalization | None,
) -> Choice:
    """Pick the preprocessing (see the module docstring). overrides: PreprocessConfig fields
    given on the command line."""
    notes: list[str] = []
    alerts: list[str] = []
    own = in_model is not None and in_model.takes_pixels()
    if given is not None:
        base, origin = given, "request"
    elif manifest is not None:
        base, origin = manifest, "manifest"
    elif in_model is not None and own:
        mean, std = RAW_PIXELS
        base, origin = replace(DEFAULT_PREPROCESS, mean=mean, std=std), "model"
    else:
        base, origin = DEFAULT_PREPROCESS, "default"
    config = replace(base, **overrides) if overrides else base
    if "mean" in overrides or "std" in overrides:
        origin = "flags"
    if origin == "default":
        notes.append(
            "no preprocessing given (flags or a manifest.json next to the model): assumed "
            "stretch resize, RGB, inputs scaled to 0..1 (mean 0, std 255)"
        )
        if in_model is not None:
            lo, hi = in_model.range_of(0.0, 255.0)
            notes.append(
                f"the model's input starts with {in_model.describe()}, which turns 0..255 into "
                f"{lo:.4g}..{hi:.4g}, not a normalized range, so edge did not rely on it"
            )
    explicit = origin in ("request", "manifest", "flags")
    if in_model is not None and own and explicit and not _is_identity(config):
        alerts.append(_double(config, origin, in_model))
    return Choice(config, origin, in_model, tuple(notes), tuple(alerts))


def seen_range(
    config: PreprocessConfig, in_model: InputNormalization | None
) -> tuple[float, float]:
    """The values the model's first real layer sees for 0..255 pixels: edge's mean/std, then
    the model's own normalization if it has one."""
    channels = max(len(config.mean), len(config.std))
    mean = np.broadcast_to(np.asarray(config.mean, np.float64), channels)
    std = np.broadcast_to(np.asarray(config.std, np.float64), channels)
    ends = np.stack([(0.0 - mean) / std, (255.0 - mean) / std])
    if in_model is not None:
        n = max(channels, len(in_model.scale))
        scale = np.broadcast_to(np.asarray(in_model.scale, np.float64), n)
        offset = np.broadcast_to(np.asarray(in_model.offset, np.float64), n)
        ends = np.broadcast_to(ends, (2, n)) * scale + offset
    return float(ends.min()), float(ends.max())


def _is_identity(config: PreprocessConfig) -> bool:
    return all(m == 0.0 for m in config.mean) and all(s == 1.0 for s in config.std)


def _double(config: PreprocessConfig, origin: str, in_model: InputNormalization) -> str:
    what = {
        "flags": "--mean/--std",
        "manifest": "the manifest's preprocess",
        "request": "the preprocessing given",
    }[origin]
    lo, hi = seen_range(config, in_model)
    want_lo, want_hi = in_model.range_of(0.0, 255.0)
    mean = ",".join(f"{v:g}" for v in config.mean)
    std = ",".join(f"{v:g}" for v in config.std)
    return (
        f"the model normalizes its input itself ({in_model.describe()}) and {what} (mean "
        f"{mean}, std {std}) normalizes it again: its layers see {lo:.4g}..{hi:.4g} instead of "
        f"{want_lo:.4g}..{want_hi:.4g}. Unless the model was trained on images normalized "
        "twice, leave --mean/--std out (and out of the manifest): edge then feeds raw 0..255 "
        "pixels (mean 0, std 1)"
    )


def spread_alert(spread: OutputSpread, choice: Choice) -> str:
    """The alert for a float model whose outputs barely vary across the calibration images."""
    config = choice.config
    if spread.images_alike():
        return (
            f"the float model's outputs barely vary across {spread.images} calibration images "
            f"(spread {spread.spread:.4f}), because the images themselves hardly differ (input "
            f"spread {spread.input_spread:.4f}): black frames or copies of one frame. Calibrate "
            "on 100 or more varied frames like the ones the model will see; the converter "
            "measures the value ranges of the int8 model on them."
        )
    mean = ",".join(f"{v:g}" for v in config.mean)
    std = ",".join(f"{v:g}" for v in config.std)
    lo, hi = seen_range(config, choice.in_model)
    source = {
        "request": "as given",
        "manifest": "from the manifest",
        "flags": "from --mean/--std",
        "model": "raw pixels, as the model normalizes itself",
        "default": "the default, as nothing said otherwise",
    }[choice.origin]
    return (
        f"the float model's outputs barely vary across {spread.images} calibration images "
        f"(spread {spread.spread:.4f}; a classifier that sees varied images gives about 0.5 or "
        "more). "
        f"The preprocessing is probably wrong: mean {mean}, std {std} ({source}) gives the "
        f"model's layers values in {lo:.4g}..{hi:.4g}. Check --mean/--std against how the "
        "model was trained (0..1 inputs: --mean 0 --std 255; -1..1: --mean 127.5 --std 127.5; "
        "a model with its own Rescaling layer: --mean 0 --std 1), and that the calibration "
        "images are varied frames like the ones the model will see, not all of one class or "
        "scene. Until then the agreement figures compare two models that do not tell the "
        "images apart."
    )
