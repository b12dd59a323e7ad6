"""Read the labels, input normalization and description that many published .tflite models carry
inside themselves (TFLite Metadata, as written by TFLite Model Maker, TF Hub, MediaPipe and
Coral tools), and which operator computes each output, without TensorFlow or tflite-support.
The metadata is a second flatbuffer (``metadata_schema.fbs``, file identifier ``M001``) stored
in a model buffer that the model's ``metadata`` list names ``TFLITE_METADATA``; the files it
refers to (``labels.txt``, …) are a ZIP archive appended to the model. A small flatbuffer table
reader below walks exactly the fields edge needs; field ids are the declaration order in the two
schemas, noted beside each use.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edge.errors import ModelError
from edge.labels import parse_labels

log = logging.getLogger(__name__)

METADATA_NAME = b"TFLITE_METADATA"
_MODEL_ID = b"TFL3"
_METADATA_ID = b"M001"
# AssociatedFileType: TENSOR_AXIS_LABELS = 2 (one label per output index), TENSOR_VALUE_LABELS = 3
# (labels for the class ids a tensor holds, as detectors attach them).
_LABEL_TYPES = (2, 3)
_NORMALIZATION_OPTIONS = 1  # first member of the ProcessUnitOptions union (0 is NONE)
# What a damaged flatbuffer or archive can raise while being read; all mean "malformed".
_BAD_DATA = (struct.error, ValueError, KeyError, EOFError, NotImplementedError, zlib.error)


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a model says about itself. ``mean``/``std`` are per channel (or one value for all) in
    the units the model's metadata uses, for image models 0..255 pixel values: the model wants
    ``(pixel - mean) / std``. ``labels`` maps class id → label."""

    name: str = ""
    version: str = ""
    description: str = ""
    labels: dict[int, str] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class _MalformedError(ValueError):
    """An offset or length in a flatbuffer points outside it."""


class _Table:
    """One flatbuffer table at byte ``pos`` of ``buf``. Every read is bounds-checked, so a
    damaged buffer raises ``_MalformedError`` or ``struct.error`` instead of returning garbage."""

    __slots__ = ("buf", "pos", "vt_size", "vtable")

    def __init__(self, buf: Any, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        # The table starts with a signed offset back (usually) to its vtable: u16 vtable size in
        # bytes, u16 table size, then one u16 per field id: the field's offset from ``pos``.
        self.vtable = pos - _read(buf, "<i", pos)
        self.vt_size = _read(buf, "<H", self.vtable)

    def _field(self, fid: int) -> int | None:
        slot = 4 + 2 * fid
        if slot + 2 > self.vt_size:  # written by an older schema: field absent
            return None
        off = _read(self.buf, "<H", self.vtable + slot)
        return self.pos + off if off else None

    def scalar(self, fid: int, fmt: str, default: int = 0) -> int:
        at = self._field(fid)
        return default if at is None else int(_read(self.buf, fmt, at))

    def _target(self, fid: int) -> int | None:
        # Tables, strings and vectors are stored as a u32 offset forward from the field itself.
        at = self._field(fid)
        return None if at is None else at + _read(self.buf, "<I", at)

    def table(self, fid: int) -> _Table | None:
        at = self._target(fid)
        return None if at is None else _Table(self.buf, at)

    def _vector(self, fid: int, item: int) -> tuple[int, int]:
        """(first element position, element count) of a vector field; (0, 0) when absent."""
        at = self._target(fid)
        if at is None:
            return 0, 0
        n = _read(self.buf, "<I", at)
        _check(self.buf, at + 4, n * item)
        return at + 4, n

    def blob(self, fid: int) -> tuple[int, int]:
        """(start, length) of a ``[ubyte]`` field or of a string's bytes."""
        return self._vector(fid, 1)

    def raw(self, fid: int) -> bytes:
        start, n = self._vector(fid, 1)
        return bytes(self.buf[start : start + n])

    def string(self, fid: int) -> str:
        return self.raw(fid).decode("utf-8")

    def ints(self, fid: int) -> tuple[int, ...]:
        start, n = self._vector(fid, 4)
        return tuple(int(v) for v in struct.unpack_from(f"<{n}i", self.buf, start))

    def floats(self, fid: int) -> tuple[float, ...]:
        start, n = self._vector(fid, 4)
        return tuple(float(v) for v in struct.unpack_from(f"<{n}f", self.buf, start))

    def tables(self, fid: int) -> list[_Table]:
        start, n = self._vector(fid, 4)
        slots = (start + 4 * i for i in range(n))
        return [_Table(self.buf, s + _read(self.buf, "<I", s)) for s in slots]


def _check(buf: Any, pos: int, size: int) -> None:
    # struct.unpack_from accepts negative offsets (counting from the end): refuse them here.
    if pos < 0 or pos + size > len(buf):
        raise _MalformedError(f"{size} bytes at {pos} lie outside a {len(buf)}-byte buffer")


def _read(buf: Any, fmt: str, pos: int) -> int:
    _check(buf, pos, struct.calcsize(fmt))
    return int(struct.unpack_from(fmt, buf, pos)[0])


def read_metadata(path: Path) -> Metadata | None:
    """The metadata embedded in the .tflite file at ``path``, or None when it has none (or is not
    a TFLite flatbuffer at all: the runtime reports that better). A damaged metadata block never
    raises: it logs a WARNING and returns what could be read, taking labels from any ``*label*.txt``
    in the appended archive when the metadata cannot say which file holds them. The file is
    memory-mapped, so only the pages holding the metadata are read. Raises ModelError when the
    file cannot be opened."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ModelError(
            f"cannot read model {path}: {exc}; check the path and permissions"
        ) from exc
    with f:
        if os.fstat(f.fileno()).st_size < 8:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm[4:8] != _MODEL_ID:
                log.debug("%s has no TFL3 identifier; not looking for metadata", path)
                return None
            try:
                blob = _metadata_blob(mm)
            except _BAD_DATA as exc:
                log.warning(
                    "%s: the model flatbuffer is malformed (%s); ignoring its metadata", path, exc
                )
                return None
            if blob is None:
                return None
            return _parse(blob, f, path)


def _metadata_blob(mm: mmap.mmap) -> bytes | None:
    """The bytes of the buffer that Model.metadata names TFLITE_METADATA, or None."""
    model = _Table(mm, _read(mm, "<I", 0))
    for entry in model.tables(6):  # Model.metadata (schema.fbs Model field 6)
        # Metadata.name, compared undecoded: a damaged name of another entry is no concern here.
        if entry.raw(0) != METADATA_NAME:
            continue
        index = entry.scalar(1, "<I")  # Metadata.buffer
        buffers = model.tables(4)  # Model.buffers
        if index >= len(buffers):
            raise _MalformedError(f"metadata names buffer {index} of {len(buffers)}")
        buf = buffers[index]
        start, n = buf.blob(0)  # Buffer.data
        if n == 0:
            # Models over 2 GB keep buffer data after the flatbuffer: Buffer.offset (from the
            # start of the file, valid when > 1) and Buffer.size.
            start, n = buf.scalar(1, "<Q"), buf.scalar(2, "<Q")
            if start <= 1:
                return b""
            _check(mm, start, n)
        return bytes(mm[start : start + n])
    return None


def _parse(blob: bytes, f: IO[bytes], path: Path) -> Metadata:
    found: dict[str, Any] = {}
    label_file: str | None = None
    try:
        if blob[4:8] != _METADATA_ID:
            raise _MalformedError(f"identifier {blob[4:8]!r} is not {_METADATA_ID!r}")
        root = _Table(blob, _read(blob, "<I", 0))
        # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, associated_files 6
        found["name"] = root.string(0)
        found["description"] = root.string(1)
        found["version"] = root.string(2)
        graphs = root.tables(3)
        graph = graphs[0] if graphs else None
        # SubGraphMetadata: input_tensor_metadata 2, output_tensor_metadata 3, associated_files 4
        inputs = graph.tables(2) if graph else []
        if inputs:
            found.update(_normalization(inputs[0]))
        # TensorMetadata.associated_files is field 6. The first output usually holds the labels,
        # but detectors attach them to their class-id output, so every output is tried in order.
        holders = [(t, 6) for t in (graph.tables(3) if graph else [])]
        holders += [(graph, 4)] if graph else []
        holders.append((root, 6))
        label_file = _first_label_file(holders)
    except _BAD_DATA as exc:
        log.warning("%s: malformed TFLite metadata (%s); using what could be read", path, exc)
        found["labels"] = _labels_from_archive(f, path, None)
    else:
        if label_file is not None:
            found["labels"] = _labels_from_archive(f, path, label_file)
    return Metadata(**found)


def _normalization(tensor: _Table) -> dict[str, tuple[float, ...] | None]:
    """mean/std of the first NormalizationOptions among a tensor's process units."""
    for unit in tensor.tables(4):  # TensorMetadata.process_units
        # ProcessUnit.options is a union: field 0 holds its type tag, field 1 the table.
        if unit.scalar(0, "<B") == _NORMALIZATION_OPTIONS:
            opts = unit.table(1)
            if opts is not None:  # NormalizationOptions: mean 0, std 1
                return {"mean": opts.floats(0) or None, "std": opts.floats(1) or None}
    return {}


def _first_label_file(holders: list[tuple[_Table, int]]) -> str | None:
    for table, fid in holders:
        for assoc in table.tables(fid):  # AssociatedFile: name 0, description 1, type 2
            if assoc.scalar(2, "<b") in _LABEL_TYPES:
                return assoc.string(0)
    return None


def _labels_from_archive(f: IO[bytes], path: Path, name: str | None) -> dict[int, str]:
    """Labels from the ZIP appended to the model: member ``name``, or when None the first
    ``*.txt`` member whose name contains "label". Empty (with a WARNING) when unreadable."""
    import zipfile  # only for models that pack their labels

    try:
        with zipfile.ZipFile(f) as archive:
            if name is None:
                names = archive.namelist()
                name = next((n for n in names if n.endswith(".txt") and "label" in n.lower()), None)
                if name is None:
                    return {}
            return parse_labels(archive.read(name).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, *_BAD_DATA) as exc:
        log.warning("%s: cannot read labels %r from the packed files (%s)", path, name, exc)
        return {}


def structure_problem(path: Path) -> str | None:
    """Why the model flatbuffer at ``path`` is cut short or corrupt, or None when every table
    and vector the interpreter will read lies inside the file.

    ai-edge-litert verifies flatbuffers itself, but tflite-runtime 2.14 does not and can crash
    the process on a truncated model; this walk of the Model's operator codes, subgraphs
    (tensors, operators and their index vectors) and buffers catches truncation first. It is a
    bounds check, not a full schema verification.
    """
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            model = _Table(mm, _read(mm, "<I", 0))
            for code in model.tables(1):  # Model.operator_codes
                code.raw(1)  # OperatorCode.custom_code
            for graph in model.tables(2):  # Model.subgraphs
                for tensor in graph.tables(0):  # SubGraph.tensors
                    tensor.blob(0)  # Tensor.shape (as bytes: only bounds matter)
                graph.blob(1)  # SubGraph.inputs
                graph.blob(2)  # SubGraph.outputs
                for op in graph.tables(3):  # SubGraph.operators
                    op.blob(1)  # Operator.inputs
                    op.blob(2)  # Operator.outputs
            for buf in model.tables(4):  # Model.buffers
                _, n = buf.blob(0)
                if n == 0:
                    offset, size = buf.scalar(1, "<Q"), buf.scalar(2, "<Q")
                    if offset > 1:
                        _check(mm, offset, size)
    except (OSError, ValueError, *_BAD_DATA) as exc:
        return str(exc)
    return None


# BuiltinOperator codes (schema.fbs) of the operators whose meaning edge reads from a graph.
_OP_NAMES = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE",
    9: "FULLY_CONNECTED",
    11: "L2_NORMALIZATION",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    25: "SOFTMAX",
    28: "TANH",
    39: "TRANSPOSE",
    40: "MEAN",
    43: "SQUEEZE",
    50: "LOG_SOFTMAX",
    53: "CAST",
    56: "ARG_MAX",
    70: "EXPAND_DIMS",
    74: "SUM",
    82: "REDUCE_MAX",
    97: "RESIZE_NEAREST_NEIGHBOR",
    114: "QUANTIZE",
    126: "BATCH_MATMUL",
}
BUILTIN_OPS = frozenset(_OP_NAMES.values())
_CUSTOM = 32
# Operators that re-encode or re-shape values without changing what they mean.
_PASS_THROUGH = frozenset({"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CAST"})


def output_producers(path: Path) -> dict[int, str]:
    """For each output of the model's first subgraph (keyed by tensor index, as the interpreter's
    output details number them), the operator that computes its values: the last one writing
    it, looking through operators that only re-encode or re-shape values (QUANTIZE, DEQUANTIZE,
    RESHAPE, SQUEEZE, EXPAND_DIMS, CAST) along their first input. Builtin operators are named as
    in the TFLite schema (``SOFTMAX``, ``MEAN``, ``"op 97"`` for codes not listed here), custom
    ones by their custom code (``edgetpu-custom-op``); an output written by no operator maps to
    ``""``. Empty when the file cannot be read as a model: the runtime reports that better."""
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm[4:8] != _MODEL_ID:  # an ONNX model, say: its graph is not a flatbuffer
                return {}
            model = _Table(mm, _read(mm, "<I", 0))
            names = []
            for code in model.tables(1):  # Model.operator_codes
                # OperatorCode: deprecated_builtin_code 0 (int8), custom_code 1, builtin_code 3;
                # writers since schema 3a fill both codes, older ones only the first.
                number = max(code.scalar(0, "<b"), code.scalar(3, "<i"))
                name = code.string(1) if number == _CUSTOM else ""
                names.append(name or _OP_NAMES.get(number, f"op {number}"))
            graphs = model.tables(2)  # Model.subgraphs
            if not graphs:
                return {}
            graph = graphs[0]
            writer: dict[int, tuple[str, tuple[int, ...]]] = {}
            for op in graph.tables(3):  # SubGraph.operators; Operator: opcode_index 0, inputs 1
                index = op.scalar(0, "<I")
                name = names[index] if index < len(names) else f"op code {index}"
                for t in op.ints(2):  # Operator.outputs
                    writer[t] = (name, op.ints(1))
            found = {}
            for out in graph.ints(2):  # SubGraph.outputs
                t, name = out, ""
                for _ in range(len(writer)):  # a cycle would be a broken model: stop anyway
                    if t not in writer:
                        break
                    name, inputs = writer[t]
                    if name not in _PASS_THROUGH or not inputs:
                        break
                    t = inputs[0]
                else:
                    name = ""
                found[out] = name if t in writer else ""
            return found
    except (OSError, ValueError, *_BAD_DATA) as exc:
        log.debug("%s: cannot read the operator graph (%s)", path, exc)
        return {}
