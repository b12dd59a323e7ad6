"""The normalization a model applies to its own input, read from its graph.

Keras models often scale pixels themselves: a ``Rescaling(1/255)`` or
``Rescaling(1/127.5, offset=-1)`` layer right after the input (the Keras tutorials' pattern),
a ``Normalization`` layer, or both (``keras.applications`` with ``include_preprocessing``).
Such a model wants raw 0..255 pixels; normalizing them again before it divides the input
twice. This package finds that per-channel affine map ``x * scale + offset`` by walking from the
input through layers (or ops) that apply it and layers that leave pixel values alone at
inference (augmentation, dropout, resizing), and stops at the first one that does anything
else:

- Keras files: the layers (nested ``Sequential``/functional blocks included).
- SavedModel folders: the serving signature's TensorFlow graph (``Mul``/``RealDiv``/``Sub``/
  ``AddV2`` with constant operands, through ``Identity``/``Cast`` and function calls).
  Augmentation layers exported into a SavedModel leave random-op graphs behind that this walk
  does not see through.
- Float ``.tflite`` files (and, as a fallback, the float conversion of the others):
  ``MUL``/``DIV``/``SUB``/``ADD`` with constant operands at the input. The TFLite converter
  folds a scale into the first convolution's weights, and an offset too when that convolution
  does not pad its input, so a ``Rescaling(1/255)`` is usually invisible here; an offset before
  a zero-padded (``same``) convolution survives.

Readers return None when the input is not normalized in a way they recognize; they never
raise for an unfamiliar graph.

One reader per model format (``keras``, ``saved_model``, ``tflite``), all building on the
per-channel arithmetic of ``affine``.
"""

from __future__ import annotations

from edge.quantize.normalization.affine import InputNormalization
from edge.quantize.normalization.keras import read_keras
from edge.quantize.normalization.saved_model import read_saved_model
from edge.quantize.normalization.tflite import read_tflite

__all__ = ["InputNormalization", "read_keras", "read_saved_model", "read_tflite"]
