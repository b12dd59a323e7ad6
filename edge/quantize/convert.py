"""Float model → float ``.tflite`` and full-integer ``.tflite``.

Keras files (``.keras``, ``.h5``) and SavedModel folders go through TensorFlow's TFLite converter
with a representative dataset; a float ``.tflite`` goes through ai-edge-quantizer (static int8
weights and activations), which needs the model to carry a signature and gives int8 inputs and
outputs. TensorFlow and ai-edge-quantizer are imported here, at the point of use, so the rest
of edge (and the daemon) never needs them; a missing one is a RuntimeUnavailableError naming the
extra to install.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError, ModelError, RuntimeUnavailableError
from edge.quantize.normalization import (
    InputNormalization,
    read_keras,
    read_saved_model,
    read_tflite,
)

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
IO_TYPES = ("uint8", "int8")
INSTALL = "pip install 'edge[quantize]'"


@dataclass(frozen=True, slots=True)
class SourceModel:
    """The model given to the quantize tool. kind: ``keras``, ``saved_model`` or ``tflite``;
    size_bytes: the file (or SavedModel folder) size on disk."""

    path: Path
    kind: str
    size_bytes: int


def identify(path: str | Path) -> SourceModel:
    """Tell what kind of model ``path`` is; ModelError when it is missing or not supported."""
    p = Path(path)
    if not p.exists():
        raise ModelError(
            f"model not found: {p}. Give a Keras file (.keras, .h5), a SavedModel folder or a "
            "float .tflite."
        )
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelError(
                f"{p} is a folder without saved_model.pb, so it is not a SavedModel. Give a "
                "SavedModel folder, a Keras file (.keras, .h5) or a float .tflite."
            )
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return SourceModel(p, "saved_model", size)
    suffix = p.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return SourceModel(p, "keras", p.stat().st_size)
    if suffix == ".tflite":
        return SourceModel(p, "tflite", p.stat().st_size)
    hint = ""
    if suffix == ".onnx":
        hint = " Convert ONNX to a SavedModel first (for example with onnx2tf)."
    elif suffix in (".pt", ".pth"):
        hint = " Export the PyTorch model to ONNX, then to a SavedModel (for example onnx2tf)."
    raise ModelError(
        f"{p} is not a model format edge quantize reads ({suffix or 'no extension'}). Give a "
        f"Keras file (.keras, .h5), a SavedModel folder or a float .tflite.{hint}"
    )


def tensorflow(what: str) -> Any:
    """Import TensorFlow or explain how to get it."""
    try:
        with quiet():
            import tensorflow as tf
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"{what} needs TensorFlow, which is not installed here ({exc}). Install the "
            f"quantize extra: {INSTALL}"
        ) from exc
    return tf


class Converter:
    """Converts one source model; holds the loaded Keras model so it is read once."""

    def __init__(self, source: SourceModel) -> None:
        self.source = source
        self._keras: Any = None
        self._float: bytes | None = None
        if source.kind == "keras":
            tf = tensorflow(f"reading the Keras model {source.path.name}")
            try:
                with quiet():
                    self._keras = tf.keras.models.load_model(str(source.path), compile=False)
            except Exception as exc:  # Keras raises many types for unreadable files
                raise ModelError(
                    f"cannot load Keras model {source.path}: {_first_line(exc)}. Check that it "
                    "was saved with model.save() by a compatible Keras and that custom layers "
                    "are not needed (export a SavedModel with model.export() instead)."
                ) from exc
            if len(self._keras.inputs) != 1:
                raise ModelError(
                    f"{source.path} has {len(self._keras.inputs)} inputs; edge feeds one image "
                    "input. Quantize a model with a single [height, width, channels] input."
                )

    def float_tflite(self) -> bytes:
        """The float32 ``.tflite`` of the source model (the reference for comparisons)."""
        if self._float is None:
            if self.source.kind == "tflite":
                self._float = self.source.path.read_bytes()
            else:
                self._float = self._convert(None, "")
        return self._float

    def input_normalization(self) -> InputNormalization | None:
        """The normalization the model applies to its own input (a Rescaling layer, say), read
        from the Keras layers or the SavedModel graph, else from the float ``.tflite``."""
        found = None
        if self._keras is not None:
            found = read_keras(self._keras)
        elif self.source.kind == "saved_model":
            tf = tensorflow(f"reading {self.source.path.name}")
            with quiet():
                found = read_saved_model(str(self.source.path), tf)
        if found is None:
            with quiet():  # the interpreter announces its delegate on stderr
                found = read_tflite(self.float_tflite())
        return found

    def quantize(self, samples: Sequence[np.ndarray], io: str) -> bytes:
        """Full-integer model calibrated on ``samples`` (float32 [1,H,W,C] arrays exactly as
        edge's preprocessing produces them). io: ``uint8`` or ``int8`` inputs and outputs."""
        if io not in IO_TYPES:
            raise ConfigError(f"--io: {io!r} is not one of {', '.join(IO_TYPES)}")
        if self.source.kind == "tflite":
            if io != "int8":
                raise ConfigError(
                    "--io: a float .tflite is quantized by ai-edge-quantizer, which gives int8 "
                    "inputs and outputs only. Use --io int8 (edge feeds int8 inputs just as "
                    "cheaply), or quantize the original Keras/SavedModel for uint8."
                )
            return _quantize_tflite(self.float_tflite(), samples, self.source.path)
        return self._convert(samples, io)

    def _convert(self, samples: Sequence[np.ndarray] | None, io: str) -> bytes:
        tf = tensorflow(f"converting {self.source.path.name}")
        with quiet():
            try:
                if self._keras is not None:
                    conv = tf.lite.TFLiteConverter.from_keras_model(self._keras)
                else:
                    conv = tf.lite.TFLiteConverter.from_saved_model(str(self.source.path))
            except Exception as exc:  # TensorFlow's loaders raise many types
                raise ModelError(
                    f"cannot read SavedModel {self.source.path}: {_first_line(exc)}"
                ) from exc
            if samples is not None:
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = lambda: ([s] for s in samples)
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                conv.inference_input_type = tf.uint8 if io == "uint8" else tf.int8
                conv.inference_output_type = conv.inference_input_type
            try:
                model: bytes = conv.convert()
            except Exception as exc:  # ConverterError and friends
                what = "full-integer quantization" if samples else "TFLite conversion"
                raise ModelError(
                    f"{what} of {self.source.path} failed: {_first_line(exc)}. Ops without "
                    "int8 kernels (custom layers, some resize/NMS ops) must be replaced or "
                    "moved out of the model."
                ) from exc
        return model


def _quantize_tflite(model: bytes, samples: Sequence[np.ndarray], path: Path) -> bytes:
    """Static int8 quantization of a float ``.tflite`` with ai-edge-quantizer."""
    try:
        # importlib keeps the type checker from requiring the optional package.
        quantizer = importlib.import_module("ai_edge_quantizer.quantizer")
        recipe = importlib.import_module("ai_edge_quantizer.recipe")
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"quantizing a .tflite needs ai-edge-quantizer, which is not installed here ({exc})."
            f" Install the quantize extra: {INSTALL}"
        ) from exc
    from edge.runtime.backends import load_backend

    raw = load_backend().module.Interpreter(model_content=model)
    signatures = raw.get_signature_list()
    if not signatures:
        raise ModelError(
            f"{path} has no signature, which ai-edge-quantizer needs to feed it. Quantize the "
            "original Keras/SavedModel instead, or re-export the .tflite with a signature "
            "(TFLiteConverter.from_saved_model / from_keras_model add one)."
        )
    key = next(iter(signatures))
    inputs = signatures[key]["inputs"]
    if len(inputs) != 1:
        raise ModelError(f"{path} has {len(inputs)} inputs; edge feeds one image input")
    data = {key: [{inputs[0]: s} for s in samples]}
    try:
        with quiet():
            q = quantizer.Quantizer(bytearray(model), recipe.static_wi8_ai8())
            calibration = q.calibrate(data)
            result = q.quantize(calibration, enable_progress_report=False)
    except Exception as exc:  # the quantizer raises ValueError/RuntimeError/KeyError
        raise ModelError(
            f"ai-edge-quantizer could not quantize {path}: {_first_line(exc)}. Quantize the "
            "original Keras/SavedModel with TensorFlow instead."
        ) from exc
    out = bytes(result.quantized_model)
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Collect what TensorFlow and the quantizer print while they work.

    They write progress and debug dumps straight to file descriptors 1 and 2 (C++ logs) and to
    ``sys.stdout`` (Keras' "Saved artifact at ..."), which would corrupt ``--json`` output; both
    descriptors are pointed at a temporary file and ``sys.stdout``/``sys.stderr`` at a buffer
    for the duration (the latter matters when they are not the descriptors, as under pytest or
    in a notebook), and the text is logged at DEBUG. Their Python warnings (deprecations,
    "statistics for quantized inputs") are silenced the same way. Not thread-safe: the CLI runs
    one conversion at a time.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    buffer = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(buffer),
                contextlib.redirect_stderr(buffer),
            ):
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            text = "\n".join(t for t in (buffer.getvalue().strip(), text) if t)
            if text:
                log.debug("converter output:\n%s", text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
