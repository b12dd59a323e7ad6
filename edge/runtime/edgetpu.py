"""Loading the Coral Edge TPU delegate (libedgetpu) and enumerating what it can find.

``load_delegate`` fails in three ways depending on what is missing: ``ValueError`` (documented),
``OSError`` when ``libedgetpu.so.1`` is not installed, ``AttributeError`` for a library without the
delegate symbols. All three mean "no usable Edge TPU" and are turned into one DelegateError that
says what to check.
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from pathlib import Path
from typing import Any

from edge.errors import DelegateError

log = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"^(usb|pci)(:\d+)?$")


def library_name() -> str:
    """The platform's name for the Edge TPU runtime library."""
    if sys.platform == "darwin":
        return "libedgetpu.1.dylib"
    if sys.platform == "win32":
        return "edgetpu.dll"
    return "libedgetpu.so.1"


def load(backend_module: Any, device: str | None) -> Any:
    """Load the Edge TPU delegate for ``device`` (``usb``, ``usb:N``, ``pci``, ``pci:N`` or None
    for the first one found). Raises DelegateError with the remedy."""
    if device is not None and not DEVICE_PATTERN.match(device):
        raise DelegateError(
            f"Edge TPU device {device!r} is not valid; use usb, usb:N, pci or pci:N "
            "(N counts from 0 in enumeration order)"
        )
    options = {"device": device} if device else {}
    try:
        # Probe the library first: load_delegate on a missing library raises OSError *and*
        # prints an "Exception ignored in Delegate.__del__" traceback from its half-built object.
        ctypes.CDLL(library_name())
        return backend_module.load_delegate(library_name(), options)
    except (ValueError, OSError, AttributeError, RuntimeError) as exc:
        raise DelegateError(
            f"no Edge TPU could be used (device {device or 'any'}): {exc}. "
            "Check that libedgetpu is installed (Coral's apt repository, package "
            "libedgetpu1-std), that the Coral is plugged into a USB 3 port with enough power "
            "(or the PCIe driver gasket/apex is loaded), and that this user is in the plugdev "
            "group. Without a Coral, run on the CPU: --delegate xnnpack, or set "
            '`edgetpu_fallback = "cpu"`.'
        ) from exc


def present_devices() -> list[str]:
    """Best-effort list of Edge TPUs visible to this machine, without loading the delegate."""
    found = []
    apex = sorted(Path("/dev").glob("apex_*"))
    found += [f"pci:{i}" for i in range(len(apex))]
    usb = 0
    for dev in Path("/sys/bus/usb/devices").glob("*"):
        try:
            vid = (dev / "idVendor").read_text().strip()
            pid = (dev / "idProduct").read_text().strip()
        except OSError:
            continue
        # 1a6e:089a before the firmware is loaded, 18d1:9302 after.
        if (vid, pid) in (("1a6e", "089a"), ("18d1", "9302")):
            found.append(f"usb:{usb}")
            usb += 1
    return found
