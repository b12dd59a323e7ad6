"""Reading the normalization of a loaded Keras model: ``Rescaling`` and ``Normalization``
layers (nested ``Sequential``/functional blocks included), through layers that leave pixel
values alone at inference."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.quantize.normalization.affine import Affine, InputNormalization, affine_text, fmt

log = logging.getLogger(__name__)

# Keras layers that pass pixel values through unchanged at inference: augmentation (active only
# in training), noise and dropout, and resampling, which commutes with a per-channel affine map.
KERAS_TRANSPARENT = frozenset(
    {
        "InputLayer",
        "Identity",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Resizing",
        "CenterCrop",
    }
)


def read_keras(model: Any) -> InputNormalization | None:
    """The normalization at the input of a loaded Keras model (Keras 3)."""
    try:
        shape = model.inputs[0].shape
        channels = int(shape[-1]) if shape[-1] is not None else 1
        affine = Affine(channels)
        _keras_walk(model, affine)
    except Exception as exc:  # an unfamiliar model structure: say nothing rather than guess
        log.debug("could not walk the Keras model's input layers: %s", exc)
        return None
    return affine.result()


def _keras_walk(model: Any, affine: Affine) -> bool:
    """Apply the leading normalization layers of ``model`` to ``affine``; True when every
    layer of the model was transparent or a normalization (so the walk may go on after it)."""
    if type(model).__name__ == "Sequential":
        return all(_keras_layer(layer, affine) for layer in model.layers)
    if len(model.inputs) != 1:
        return False
    current = model.inputs[0]
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    while True:
        consumers = [layer for layer in layers if _input_of(layer) is current]
        if len(consumers) != 1 or _consumed_elsewhere(layers, current):
            return len(consumers) == 0 and len(model.outputs) == 1 and current is model.outputs[0]
        layer = consumers[0]
        if not _keras_layer(layer, affine):
            return False
        current = layer.output


def _input_of(layer: Any) -> Any:
    try:
        return layer.input  # raises for a layer called more than once
    except Exception:
        return None


def _consumed_elsewhere(layers: Sequence[Any], tensor: Any) -> bool:
    """True when ``tensor`` also feeds a layer with several inputs (a skip connection)."""
    for layer in layers:
        inp = _input_of(layer)
        if isinstance(inp, list | tuple) and any(t is tensor for t in inp):
            return True
    return False


def _keras_layer(layer: Any, affine: Affine) -> bool:
    """Apply one layer; False when it ends the normalization chain."""
    kind = type(layer).__name__
    if kind == "Rescaling":
        scale, offset = affine.per_channel(layer.scale), affine.per_channel(layer.offset)
        if scale is None or offset is None:
            return False
        affine.mul(scale)
        affine.add(offset)
        affine.steps.append(f"Rescaling layer {layer.name!r} ({affine_text(scale, offset)})")
        return True
    if kind == "Normalization":
        axis = tuple(layer.axis) if isinstance(layer.axis, list | tuple) else (layer.axis,)
        mean = affine.per_channel(np.asarray(layer.mean))
        variance = affine.per_channel(np.asarray(layer.variance))
        if axis not in ((-1,), (3,)) or mean is None or variance is None:
            return False
        std = np.maximum(np.sqrt(variance), 1e-7)  # Keras' epsilon
        if getattr(layer, "invert", False):
            affine.mul(std)
            affine.add(mean)
            text = f"x * {fmt(std)} + {fmt(mean)}"
        else:
            affine.add(-mean)
            affine.mul(1.0 / std)
            text = f"(x - {fmt(mean)}) / {fmt(std)}"
        affine.steps.append(f"Normalization layer {layer.name!r} ({text})")
        return True
    if kind in KERAS_TRANSPARENT or (kind.startswith("Random") and kind != "RandomCrop"):
        return True
    if kind == "Activation" and getattr(layer.activation, "__name__", "") == "linear":
        return True
    if hasattr(layer, "layers") and hasattr(layer, "inputs"):  # a nested model
        return _keras_walk(layer, affine)
    return False
