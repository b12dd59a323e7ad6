"""IMX500 network files (``.rpk``) written for tests, in the layout picamera2's ``IMX500`` reads
(``picamera2/devices/imx500/imx500.py``, ``__ni_from_network``): firmware blocks (``9464``, a
big-endian payload size, 8 flag bytes, the payload, ``3695``; the footer sits ``size + 60`` bytes
after the block starts) and then a cpio ``newc`` archive with ``network_intrinsics`` and
``network_info.txt``. The firmware payload is filler: only the fake sensor "runs" it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHAPES_LABELS = ["circle", "square", "triangle"]
DETECTOR_INTRINSICS: dict[str, Any] = {
    "task": "object detection",
    "inference_rate": 30.0,
    "classes": {"labels": SHAPES_LABELS},
}


def _block(size: int, lock: bool = False) -> bytes:
    flags = bytes([0, 0, 0, 0, 0, 0, 1 if lock else 0, 0])
    body = b"\x5a" * (size + 60 - 16)
    return (
        b"9464" + size.to_bytes(4, "big") + flags + body + b"3695" + (b"\0" * 32 if lock else b"")
    )


def _newc(name: str, data: bytes) -> bytes:
    fields = [1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(f"{v:08X}".encode() for v in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def network_info(width: int, height: int) -> bytes:
    return (
        f"networkID=00000001\napParamSize=0\nnetworkNum=1\nnetworkOrdinal=0\n"
        f"inputTensorWidth={width}\ninputTensorHeight={height}\ninputTensorFormat=RGB\n"
    ).encode()


def write_rpk(
    path: Path,
    intrinsics: dict[str, Any] | None = DETECTOR_INTRINSICS,
    input_size: tuple[int, int] = (192, 192),
    blocks: int = 2,
) -> Path:
    """A network file at ``path``; ``intrinsics`` None leaves them out of the archive."""
    data = b"".join(_block(256 + 64 * i, lock=i == 1) for i in range(blocks))
    if intrinsics is not None:
        data += _newc("network_intrinsics", json.dumps(intrinsics).encode())
    data += _newc("network_info.txt", network_info(*input_size))
    data += _newc("TRAILER!!!", b"")
    path.write_bytes(data)
    return path
