"""Small ONNX files written by hand with the protobuf wire format, for the ONNX backend's tests
of inputs it must refuse or reshape (the onnx package is no test dependency). Field numbers
are onnx.proto's: ModelProto ir_version 1, graph 7, opset_import 8 (OperatorSetIdProto version
2); GraphProto node 1, name 2, initializer 5, input 11, output 12; NodeProto input 1, output 2,
op_type 4; TensorProto data_type 2, name 8, raw_data 9; ValueInfoProto name 1, type 2; TypeProto
tensor_type 1 (elem_type 1, shape 2); a shape's dim 1 (dim_value 1, dim_param 2)."""

from __future__ import annotations

import struct
from pathlib import Path


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _msg(*fields: tuple[int, int | str | bytes]) -> bytes:
    """One protobuf message from (field number, varint or string/bytes/sub-message) pairs."""
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            out += _key(number, 0) + _varint(value)
        else:
            data = value.encode() if isinstance(value, str) else value
            out += _key(number, 2) + _varint(len(data)) + data
    return out


def _value_info(name: str, dims: list[int | str], elem_type: int = 1) -> bytes:
    shape = _msg(*[(1, _msg((1, d) if isinstance(d, int) else (2, d))) for d in dims])
    return _msg((1, name), (2, _msg((1, _msg((1, elem_type), (2, shape))))))


def identity_model(path: Path, *inputs: list[int | str], elem_type: int = 1) -> Path:
    """An ONNX file (IR 8, opset 17) whose outputs are its inputs, one Identity node each;
    ``elem_type`` is onnx's TensorProto.DataType (1 float, 2 uint8, 3 int8)."""
    graph = b""
    for k in range(len(inputs)):
        graph += _msg((1, _msg((1, f"x{k}"), (2, f"y{k}"), (4, "Identity"))))
    graph += _msg((2, "g"))
    for k, dims in enumerate(inputs):
        graph += _msg((11, _value_info(f"x{k}", dims, elem_type)))
    for k, dims in enumerate(inputs):
        graph += _msg((12, _value_info(f"y{k}", dims, elem_type)))
    path.write_bytes(_msg((1, 8), (7, graph), (8, _msg((2, 17)))))
    return path


def quantize_model(path: Path, size: int, scale: float, zero_point: int) -> Path:
    """An ONNX file (IR 8, opset 17) of one QuantizeLinear: float ``[size]`` in, uint8 out,
    with ``scale`` (as float32) and ``zero_point`` as scalar initializers."""
    node = _msg((1, "x"), (1, "scale"), (1, "zp"), (2, "y"), (4, "QuantizeLinear"))
    graph = _msg((1, node), (2, "g"))
    graph += _msg((5, _msg((2, 1), (8, "scale"), (9, struct.pack("<f", scale)))))
    graph += _msg((5, _msg((2, 2), (8, "zp"), (9, bytes([zero_point])))))
    graph += _msg((11, _value_info("x", [size])))
    graph += _msg((12, _value_info("y", [size], 2)))
    path.write_bytes(_msg((1, 8), (7, graph), (8, _msg((2, 17)))))
    return path
