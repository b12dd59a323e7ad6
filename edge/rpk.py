"""Reading what an IMX500 network file (``.rpk``) says about itself, without the camera.

An ``.rpk`` is the firmware the AI Camera's sensor runs: a series of firmware blocks (each
``9464``, a big-endian size, flags, payload, ``3695``), followed by a cpio archive holding
``network_intrinsics`` (JSON: task, labels, box conventions, inference rate) and
``network_info.txt`` (``key=value`` lines: the input tensor's size and format). The layout is
the one picamera2's ``IMX500`` reads (``picamera2/devices/imx500/imx500.py``,
``__ni_from_network``); reading it here lets ``edge check-config`` and model loading know the
task and labels before any camera is opened. Archives in cpio's ``newc`` and ``odc`` formats are
read; a network without an archive simply has no intrinsics.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ModelError

BLOCK_MAGIC = b"9464"
FOOTER_MAGIC = b"3695"
TRAILER = "TRAILER!!!"
INTRINSICS = "network_intrinsics"
INFO = "network_info.txt"


@dataclass(frozen=True, slots=True)
class NetworkFile:
    """What an ``.rpk`` holds besides the firmware.

    intrinsics: the parsed ``network_intrinsics`` JSON object, empty when absent.
    info: the first network's ``network_info.txt`` keys (``inputTensorWidth``, …), as text.
    """

    path: Path
    intrinsics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the network's input tensor, when network_info.txt gives it."""
        try:
            return int(self.info["inputTensorWidth"]), int(self.info["inputTensorHeight"])
        except (KeyError, ValueError):
            return None


def read_network(path: Path) -> NetworkFile:
    """The intrinsics and network info of ``path``. Raises ModelError for a file that is not
    an IMX500 network (no firmware block, a block without its footer, a broken archive)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"cannot read IMX500 network {path}: {exc.strerror}. Check its permissions (the "
            "service user must be able to read it)."
        ) from exc
    offset = _archive_offset(data, path)
    entries = _cpio_entries(data[offset:], path) if offset < len(data) else {}
    intrinsics: dict[str, Any] = {}
    if INTRINSICS in entries:
        try:
            parsed = json.loads(entries[INTRINSICS])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: its network_intrinsics is not JSON ({exc})") from exc
        if not isinstance(parsed, dict):
            raise ModelError(f"{path}: its network_intrinsics is not a JSON object")
        intrinsics = parsed
    info: dict[str, str] = {}
    if INFO in entries:
        for line in entries[INFO].decode("ascii", "replace").splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key not in info:  # the first network's value
                info[key] = value
    return NetworkFile(path, intrinsics, info)


def _archive_offset(data: bytes, path: Path) -> int:
    """Where the cpio archive starts: after the last firmware block."""
    offset = 0
    while data[offset : offset + 4] == BLOCK_MAGIC:
        (size,) = struct.unpack(">I", data[offset + 4 : offset + 8])
        lock_flags = data[offset + 14] if offset + 14 < len(data) else 0
        footer = offset + size + 60
        if data[footer : footer + 4] != FOOTER_MAGIC:
            raise ModelError(
                f"{path} is truncated or corrupt: a firmware block has no footer. Copy the "
                "network again (or reinstall imx500-models)."
            )
        offset = footer + 4 + (32 if lock_flags & 1 else 0)
    if offset == 0:
        raise ModelError(
            f"{path} is not an IMX500 network (.rpk): it starts with no firmware block. "
            "Package the converted model with imx500-package, or use one of "
            "/usr/share/imx500-models (sudo apt install imx500-all)."
        )
    return offset


def _cpio_entries(data: bytes, path: Path) -> dict[str, bytes]:
    """Name → contents of the regular files of a cpio archive (newc or odc)."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        magic = data[pos : pos + 6]
        try:
            if magic in (b"070701", b"070702"):
                fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
                size, namesize = fields[6], fields[11]
                name_at = pos + 110
                body = _align4(name_at + namesize)
                end = _align4(body + size)
            elif magic == b"070707":
                namesize = int(data[pos + 59 : pos + 65], 8)
                size = int(data[pos + 65 : pos + 76], 8)
                name_at = pos + 76
                body = name_at + namesize
                end = body + size
            else:
                break  # padding after the trailer, or no archive at all
        except ValueError as exc:
            raise ModelError(f"{path}: the archive after the firmware is corrupt ({exc})") from exc
        name = data[name_at : name_at + namesize].rstrip(b"\0").decode("utf-8", "replace")
        if name == TRAILER:
            break
        if body + size > len(data):
            raise ModelError(f"{path} is truncated: archive entry {name!r} is cut short")
        out[name.removeprefix("./")] = data[body : body + size]
        pos = end
    return out


def _align4(n: int) -> int:
    return (n + 3) & ~3
