"""What the installed Edge TPU runtime library (libedgetpu) is: where the dynamic linker finds
it, the version it reports, and the TensorFlow Lite version it was built against.

The Edge TPU delegate only works with a TFLite runtime close to the TensorFlow source it was
built from (pycoral's README: libcoral and libedgetpu "all share the same TENSORFLOW_COMMIT";
google-coral/edgetpu#812: every TFLite after 2.11.1 crashes with Coral's own libedgetpu), and
``edgetpu_version()`` does not say which TensorFlow that was: it returns
``"BuildLabel(COMPILER=...,DATE=...,TIME=...), RuntimeVersion(14)"``, the runtime's model
format version (tflite/edgetpu_manager_direct.cc). The TensorFlow version is read, in order,
from the ``TENSORFLOW_COMMIT=<sha>`` label libedgetpu's Makefile embeds in the binary
(``--embed_label``; known commits are listed below), from a feranick build's package version
(``16.0tf2.16.1-1``), or from Coral's own package version (15.0 and 16.0, which pycoral's
packaging pairs with tflite-runtime 2.5.0.post1). Nothing here loads a delegate or opens a
device.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DPKG_ADMIN = Path("/var/lib/dpkg")
# TensorFlow release commits libedgetpu has been built from (google-coral/libedgetpu
# workspace.bzl, where each is commented with its release).
TENSORFLOW_COMMITS = {
    "a4dfb8d1a71385bd6d122e4f27f86dcebb96712d": "2.5.0",
    "1b8f5c396f0c016ebe81fe1af029e6f205c926a4": "2.8.4",
    "a5ed5f39b675a1c6f315e0caf3ad4b38478fa571": "2.9.3",
    "fdfc646704c37bdf450525f6ced9d80df86e4993": "2.10.1",
    "a3e2c692c18649329c4210cf8df2487d2028e267": "2.11.1",
    "8e2b6655c0c488290179ab90a0daed0f6d3006f7": "2.12.1",
    "f841394b1b714c5cc5366536411cf146c8c570df": "2.13.1",
    "99d80a9e254c9df7940b2902b14d15914dbbbcd9": "2.14.1",
    "6887368d6d46223f460358323c4b76d61d1558a8": "2.15.0",
    "5bc9d26649cca274750ad3625bd93422617eed4b": "2.16.1",
}
# Coral's own packages (no "tf" in the version) were built against TensorFlow 2.5.
CORAL_RELEASES = {"15.0": "2.5.0", "16.0": "2.5.0"}
_EMBEDDED = re.compile(rb"TENSORFLOW_COMMIT=([0-9a-f]{40})")
_PACKAGE_TF = re.compile(r"tf(\d+\.\d+(?:\.\d+)?)", re.IGNORECASE)
_RUNTIME_VERSION = re.compile(r"RuntimeVersion\((\d+)\)")


@dataclass(frozen=True, slots=True)
class EdgeTpuLibrary:
    """The libedgetpu this process would load.

    found: it loads; path: the file the dynamic linker resolved (the name asked for when it does
    not load); version: what ``edgetpu_version()`` returned ("" when it could not be called);
    runtime_version: the N of its ``RuntimeVersion(N)`` (0 when absent); package: the dpkg
    package owning the file, as ``name version`` ("" when none does); tensorflow: the
    TensorFlow version it was built against ("" when unknown); tensorflow_from: how that was
    learnt; commit: the embedded TensorFlow commit ("" when none); problem: why it is unusable
    or unknown ("" when nothing is wrong).
    """

    found: bool
    path: str
    version: str = ""
    runtime_version: int = 0
    package: str = ""
    tensorflow: str = ""
    tensorflow_from: str = ""
    commit: str = ""
    problem: str = ""


def read(library: str, dpkg_admin: Path = DPKG_ADMIN) -> EdgeTpuLibrary:
    """Load ``library`` (a name the dynamic linker finds, or a path) with ctypes, call its
    ``edgetpu_version()`` and find the TensorFlow version it was built against. Never raises:
    a missing or foreign library comes back with ``found`` False or a ``problem``."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        return EdgeTpuLibrary(False, library, problem=f"{library} does not load: {exc}")
    try:
        fn = lib.edgetpu_version
    except AttributeError:
        return EdgeTpuLibrary(
            True,
            library,
            problem=f"{library} has no edgetpu_version(): it is not an Edge TPU runtime",
        )
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn() or b""
    version = raw.decode("utf-8", "replace")
    path = _resolved_path(fn) or library
    match = _RUNTIME_VERSION.search(version)
    commit = _embedded_commit(path)
    package = _dpkg_owner(path, dpkg_admin)
    tensorflow, source = _tensorflow(commit, package)
    label = f"TENSORFLOW_COMMIT {commit} is not a release edge knows" if commit else "no label"
    problem = (
        ""
        if tensorflow
        else f"cannot tell which TensorFlow it was built against ({label}, and no libedgetpu "
        "package version names one)"
    )
    return EdgeTpuLibrary(
        True,
        path,
        version,
        int(match.group(1)) if match else 0,
        package,
        tensorflow,
        source,
        commit,
        problem,
    )


def _tensorflow(commit: str, package: str) -> tuple[str, str]:
    """(TensorFlow version, where it was read) from the embedded commit or the package."""
    if commit in TENSORFLOW_COMMITS:
        return TENSORFLOW_COMMITS[commit], f"its embedded TENSORFLOW_COMMIT {commit[:7]}"
    version = package.partition(" ")[2]
    match = _PACKAGE_TF.search(version)
    if match:
        return match.group(1), f"package {package}"
    coral = CORAL_RELEASES.get(version.split("-")[0])
    if coral:
        return coral, f"Coral's package {package}"
    return "", ""


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _resolved_path(symbol: Any) -> str:
    """The file holding ``symbol`` (a ctypes function), by dladdr; "" when unavailable."""
    for libc in (None, "libdl.so.2"):  # dladdr is in libc from glibc 2.34, libdl before
        try:
            dladdr = ctypes.CDLL(libc).dladdr
        except (OSError, AttributeError):
            continue
        info = _DlInfo()
        address = ctypes.cast(symbol, ctypes.c_void_p)
        if dladdr(address, ctypes.byref(info)) and info.dli_fname:
            return str(info.dli_fname.decode("utf-8", "replace"))
    return ""


def _embedded_commit(path: str) -> str:
    """The ``TENSORFLOW_COMMIT=`` build label in the library file ("" when absent)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    match = _EMBEDDED.search(data)
    return match.group(1).decode() if match else ""


def _dpkg_owner(path: str, admin: Path) -> str:
    """``"package version"`` of the installed libedgetpu package listing ``path``, or ""."""
    try:
        status = (admin / "status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    target = os.path.realpath(path)
    for stanza in status.split("\n\n"):
        if "Package: libedgetpu" not in stanza:  # skip the other thousand packages cheaply
            continue
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        name = fields.get("Package", "")
        if not name.startswith("libedgetpu") or not fields.get("Status", "").endswith(" installed"):
            continue
        info = admin / "info"
        for listing in [*info.glob(f"{name}.list"), *info.glob(f"{name}:*.list")]:
            try:
                files = listing.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            if any(os.path.realpath(f) == target for f in files if f):
                return f"{name} {fields.get('Version', '')}".strip()
    return ""
