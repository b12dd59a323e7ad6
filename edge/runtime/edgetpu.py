"""Loading the Coral Edge TPU delegate (libedgetpu) and enumerating what it can find.

``load_delegate`` fails in three ways depending on what is missing: ``ValueError`` (documented),
``OSError`` when ``libedgetpu.so.1`` is not installed, ``AttributeError`` for a library without the
delegate symbols. All three mean "no usable Edge TPU" and are turned into one DelegateError that
says what to check. Before the delegate is loaded, :mod:`edge.runtime.lockstep` checks that
libedgetpu was built for the TFLite runtime in use: a pair known to crash is a DelegateError,
other mismatches a warning (each logged once per process).
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import DelegateError

if TYPE_CHECKING:
    from edge.runtime import lockstep
    from edge.runtime.backends import Backend

log = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"^(usb|pci)(:\d+)?$")
# (library name, runtime, version) → verdict: libedgetpu is read and judged once per process,
# not at every re-probe of a failover chain (a newly installed libedgetpu needs a restart
# anyway: the process keeps the one the dynamic linker loaded).
_verdicts: dict[tuple[str, str, str], lockstep.Verdict] = {}


def library_name() -> str:
    """The platform's name for the Edge TPU runtime library."""
    if sys.platform == "darwin":
        return "libedgetpu.1.dylib"
    if sys.platform == "win32":
        return "edgetpu.dll"
    return "libedgetpu.so.1"


def load(backend: Backend, device: str | None) -> object:
    """Load the Edge TPU delegate for ``device`` (``usb``, ``usb:N``, ``pci``, ``pci:N`` or None
    for the first one found) into ``backend``'s runtime. Raises DelegateError with the remedy,
    including when libedgetpu and the runtime are a pair known to crash."""
    if device is not None and not DEVICE_PATTERN.match(device):
        raise DelegateError(
            f"Edge TPU device {device!r} is not valid; use usb, usb:N, pci or pci:N "
            "(N counts from 0 in enumeration order)"
        )
    options = {"device": device} if device else {}
    verdict = check_lockstep(backend)
    if verdict.level == "refuse":
        raise DelegateError(verdict.message)
    try:
        # Probe the library first: load_delegate on a missing library raises OSError *and*
        # prints an "Exception ignored in Delegate.__del__" traceback from its half-built object.
        plugin = ctypes.CDLL(library_name())
        # ... and its plugin symbols, for the same reason (a foreign library raises
        # AttributeError there).
        for symbol in ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate"):
            getattr(plugin, symbol)
        return backend.module.load_delegate(library_name(), options)
    except (ValueError, OSError, AttributeError, RuntimeError) as exc:
        raise DelegateError(
            f"no Edge TPU could be used (device {device or 'any'}): {exc}. "
            "Check that libedgetpu is installed (Coral's apt repository, package "
            "libedgetpu1-std), that the Coral is plugged into a USB 3 port with enough power "
            "(or the PCIe driver gasket/apex is loaded), and that this user is in the plugdev "
            "group. Without a Coral, run on the CPU: --delegate xnnpack, or set "
            '`edgetpu_fallback = "cpu"`.'
        ) from exc


def check_lockstep(backend: Backend) -> lockstep.Verdict:
    """The lock-step verdict for the installed libedgetpu and ``backend`` (``ok`` when the
    library is missing: loading then fails with its own message). Warnings are logged once."""
    from edge.runtime import libedgetpu, lockstep  # read only when an Edge TPU is asked for

    key = (library_name(), backend.name, backend.version)
    verdict = _verdicts.get(key)
    if verdict is None:
        lib = libedgetpu.read(library_name())
        verdict = (
            lockstep.check(lib, backend.name, backend.version)
            if lib.found and lib.version
            else lockstep.Verdict("ok")
        )
        _verdicts[key] = verdict
        if verdict.level == "warn":
            log.warning("%s", verdict.message)
        elif verdict.level == "unknown":
            log.info("%s", verdict.message)
    return verdict


def present_devices(root: Path = Path("/")) -> list[str]:
    """Best-effort list of Edge TPUs visible to this machine, without loading the delegate
    (``root``: where ``dev/`` and ``sys/`` are, ``/`` but for tests)."""
    found = []
    apex = sorted((root / "dev").glob("apex_*"))
    found += [f"pci:{i}" for i in range(len(apex))]
    usb = 0
    for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
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
