"""What a Hailo HEF file says about itself before HailoRT opens it: the chip architecture it
was compiled for, and which chips HailoRT runs it on.

``hailo_platform`` does not expose a HEF's target (the C++ ``Hef::get_hef_device_arch`` is not
bound), so it is read from the header as HailoRT's ``hef.cpp`` parses it: a big-endian header
(``hef_internal.hpp`` ``hef__header_t``: magic, format version, protobuf size, then a
version-specific part) followed by the ``ProtoHEFHef`` message, whose ``header.hw_arch``
(``hef.proto``) names the target. The compatibility table is ``DeviceBase::is_hef_compatible``
(``device_internal.cpp``) of HailoRT 4.23.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path

from edge.errors import DelegateError, ModelError

log = logging.getLogger(__name__)

SUFFIX = ".hef"

# hef.proto ProtoHEFHwArch: the target a HEF was compiled for.
HEF_ARCHS = {
    0: "HAILO8",
    1: "HAILO8P",
    2: "HAILO8R",
    3: "HAILO8L",
    4: "HAILO15M",
    5: "HAILO10H",
    6: "HAILO15L",
    100: "SAGE_A0",
    101: "SAGE_B0",
    102: "PAPRIKA_B0",
    103: "HAILO15H",
    104: "GINGER",
    105: "LAVENDER",
    106: "PLUTO",
}
# The chip each target is named as (DeviceBase::hef_arch_to_device_arch).
_SHOWN_AS = {
    "HAILO8P": "HAILO8",
    "HAILO8R": "HAILO8",
    "SAGE_B0": "HAILO8",
    "PAPRIKA_B0": "HAILO8",
    "SAGE_A0": "HAILO8_A0",
    "GINGER": "HAILO15H",
    "LAVENDER": "HAILO15H",
    "PLUTO": "HAILO15L",
}
# Which HEF targets HailoRT runs on each chip (DeviceBase::is_hef_compatible): a Hailo-8 also
# runs Hailo-8L HEFs (slower), a Hailo-8L only its own.
ACCEPTS = {
    "HAILO8": frozenset({"HAILO8P", "HAILO8R", "HAILO8L"}),
    "HAILO8L": frozenset({"HAILO8L"}),
    "HAILO10H": frozenset({"GINGER", "LAVENDER", "HAILO15H", "HAILO15M", "HAILO10H"}),
    "HAILO15H": frozenset({"GINGER", "LAVENDER", "HAILO15H", "HAILO15M", "HAILO10H"}),
    "HAILO15L": frozenset({"HAILO15L", "PLUTO"}),
    "HAILO15M": frozenset({"HAILO15M"}),
}
# HEF header (hef_internal.hpp hef__header_t, big-endian): magic, version, proto size, then a
# version-specific part; the ProtoHEFHef message follows.
_MAGIC = 0x01484546
_DISTINCT = {0: 20, 1: 16, 2: 32, 3: 44}


def hef_target(path: Path) -> tuple[str, str]:
    """(target architecture, SDK version) from the HEF's header, read as HailoRT's hef.cpp
    does. Raises ModelError for a file that is not a HEF."""
    from edge.runtime import read_head  # the package is complete before its modules load

    head = read_head(path, 64 * 1024, SUFFIX)
    if len(head) < 12 or struct.unpack_from(">I", head)[0] != _MAGIC:
        raise ModelError(
            f"{path} is not a Hailo HEF (its header does not start with HailoRT's magic). "
            "Compile the model for the Hailo chip with the Dataflow Compiler, or use the .hef "
            "files from the hailo-models package."
        )
    version, proto_size = struct.unpack_from(">II", head, 4)
    if version not in _DISTINCT:
        raise ModelError(
            f"{path} has HEF format version {version}, which edge does not know; update edge "
            "or compile the model with a Dataflow Compiler that matches the installed HailoRT."
        )
    start = 12 + _DISTINCT[version]
    proto = memoryview(head)[start : start + proto_size]
    arch, sdk = 0, ""
    try:
        for field, value in _fields(proto):
            if field == 1 and isinstance(value, memoryview):  # ProtoHEFHef.header
                for f, v in _fields(value):
                    if f == 1 and isinstance(v, int):
                        arch = v
                    elif f == 3 and isinstance(v, memoryview):
                        sdk = bytes(v).decode("utf-8", "replace")
                break
    except ValueError as exc:
        raise ModelError(f"{path} is truncated or corrupt ({exc}): copy the HEF again") from exc
    return HEF_ARCHS.get(arch, f"unknown target {arch}"), sdk


def shown(target: str) -> str:
    """The chip name a HEF target is shown as (HAILO8P is a Hailo-8 HEF)."""
    return _SHOWN_AS.get(target, target)


def check_target(path: Path, target: str, device: str) -> None:
    """DelegateError when HailoRT would refuse to run a HEF compiled for ``target`` on the
    ``device`` chip, saying which HEF to use; a warning for a Hailo-8L HEF on a Hailo-8."""
    if target in ACCEPTS.get(device, frozenset()):
        if target == "HAILO8L" and device == "HAILO8":
            log.warning(
                "%s was compiled for the Hailo-8L; it runs on this Hailo-8 at Hailo-8L speed. "
                "A HEF compiled for hailo8 uses the whole chip",
                path.name,
            )
        return
    runs_on = sorted(d for d, accepted in ACCEPTS.items() if target in accepted)
    where = f"HailoRT runs it on {', '.join(runs_on)}" if runs_on else "no chip runs it"
    raise DelegateError(
        f"{path.name} was compiled for {shown(target)} (HEF target {target}), but the Hailo "
        f"device here is a {device}: {where}. Use the HEF built for the {device} (the "
        "hailo-models package installs them in /usr/share/hailo-models: *_h8l.hef for the "
        "Hailo-8L, *_h8.hef for the Hailo-8, *_h10.hef for the Hailo-10H), or compile the "
        f"model with the Dataflow Compiler for --hw-arch {device.lower()}."
    )


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """One protobuf message's fields as (number, varint value or bytes), read as needed (the
    rest of a HEF's message may lie past what was read). Raises ValueError for a malformed
    message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield key >> 3, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("a field runs past the end of the header")
            yield key >> 3, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire} in the header")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a varint runs past the end of the header")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
