"""The lock-step check between libedgetpu and the TFLite runtime that would load it, made
before the Edge TPU delegate is loaded (at start, and at each re-probe of a failover chain).

The delegate works with matched builds only: libedgetpu is compiled against one TensorFlow
source (:mod:`edge.runtime.libedgetpu` finds which), and pycoral pins its pairs (libedgetpu
16.0 with tflite-runtime 2.5.0.post1). One mismatch is known to crash the process rather than
fail: "The last version of TensorFlow Lite to support EdgeTPU is 2.11.1. Any later version leads
to a segmentation fault" with Coral's libedgetpu, built against TensorFlow 2.5
(google-coral/edgetpu#812). That one is refused (a DelegateError, so ``edgetpu_fallback`` and
failover chains apply; exit 78 otherwise); other mismatches are warnings saying what to
install. ai-edge-litert is LiteRT, the renamed TensorFlow Lite (2024, after TensorFlow 2.17),
with its own version numbers: newer than 2.11, and matched by no libedgetpu build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edge.runtime.libedgetpu import EdgeTpuLibrary

Level = Literal["ok", "unknown", "warn", "refuse"]
# The newest TFLite reported to work with a libedgetpu built against TensorFlow 2.5 (#812).
LAST_FOR_TF25 = (2, 11)
FERANICK = (
    "feranick/libedgetpu's releases (packages libedgetpu1-std/-max 16.0tfX.Y.Z, e.g. "
    "16.0tf2.17.1) with the tflite_runtime of the same version from feranick/TFlite-builds"
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The check's outcome.

    level: ``ok`` (libedgetpu was built against the runtime's TensorFlow minor version),
    ``unknown`` (one of the two cannot be told), ``warn`` (different, not known to fail),
    ``refuse`` (a pair known to crash). message: what was found and what to install ("" for
    ``ok``).
    """

    level: Level
    message: str = ""


def runtime_tensorflow(runtime: str, version: str) -> str:
    """The TensorFlow version a TFLite runtime package was built from: tflite-runtime and
    tensorflow carry it as their own version (``2.5.0.post1`` → ``2.5.0``); ai-edge-litert
    does not (""). An unknown package name gives ""."""
    if runtime not in ("tflite-runtime", "tensorflow"):
        return ""
    match = re.match(r"\d+\.\d+(\.\d+)?", version)
    return match.group(0) if match else ""


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check(lib: EdgeTpuLibrary, runtime: str, runtime_version: str) -> Verdict:
    """Whether ``lib`` can be loaded by ``runtime`` ``runtime_version`` (a name of
    :data:`edge.runtime.backends.BACKENDS`). Pure: no I/O."""
    built = lib.tensorflow
    uses = runtime_tensorflow(runtime, runtime_version)
    litert = runtime == "ai-edge-litert"
    there = f"libedgetpu at {lib.path}"
    running = f"{runtime} {runtime_version}"
    if not built:
        return Verdict(
            "unknown",
            f"{there} ({lib.version or 'no version'}) does not say which TensorFlow it was built "
            f"against, so its match with {running} cannot be checked; if the Edge TPU delegate "
            f"crashes or fails to prepare, install a build that names it: {FERANICK}.",
        )
    origin = f"{there} was built against TensorFlow {built} ({lib.tensorflow_from})"
    if _minor(built) == (2, 5) and (litert or (uses and _minor(uses) > LAST_FOR_TF25)):
        newer = " (LiteRT, newer than TensorFlow 2.11)" if litert else ""
        return Verdict(
            "refuse",
            f"{origin} and the runtime is {running}{newer}: TensorFlow Lite runtimes after 2.11 "
            "crash with a libedgetpu built against TensorFlow 2.5 (google-coral/edgetpu#812), so "
            "the Edge TPU delegate is not loaded. Install a libedgetpu built for a current "
            f'TensorFlow, {FERANICK}, and set runtime = "tflite-runtime" (or '
            "EDGE_RUNTIME=tflite-runtime); or run tflite-runtime 2.5.0.post1 (Python 3.9 or "
            "older), the runtime this libedgetpu was made for.",
        )
    if litert:
        return Verdict(
            "warn",
            f"{origin} and the runtime is {running}, a LiteRT build that names no TensorFlow "
            f"version, so the two are not a matched pair. If the Edge TPU delegate crashes or "
            f"fails to prepare, use the matched runtime: tflite_runtime {built} "
            '(feranick/TFlite-builds) with runtime = "tflite-runtime".',
        )
    if not uses:
        return Verdict("unknown", f"{origin}; the TensorFlow version of {running} is unknown.")
    if _minor(built) == _minor(uses):
        return Verdict("ok")
    return Verdict(
        "warn",
        f"{origin} but the runtime is {running} (TensorFlow {uses}): the Edge TPU delegate is "
        f"only known to work with matched builds. If it crashes or fails to prepare, install "
        f"the libedgetpu built against TensorFlow {uses} ({FERANICK}), or tflite_runtime "
        f"{built} to match this libedgetpu.",
    )
