"""Every accelerator edge can use and what this machine has of each, for ``edge info``: the
TFLite runtimes, XNNPACK, the Coral Edge TPU (libedgetpu, its TensorFlow build and the
lock-step verdict, the Coral devices present), ONNX Runtime, and the Hailo and IMX500 backends
when their modules are installed (each module's ``probe()`` returns a dict with ``name``,
``found``, ``version``, ``devices``, ``problem``, optionally ``would_use``; a missing module is
not listed).

No probe raises and none loads a model or a delegate: a probe that fails reports why in its
``problem``. Probing imports the runtimes (TensorFlow among them, when installed: seconds), so it
is for ``edge info``, not for start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from edge.errors import RuntimeUnavailableError
from edge.runtime import RuntimeOptions, edgetpu, libedgetpu, lockstep
from edge.runtime.backends import BACKENDS, Backend, load_backend

# Modules of other backends that plug in by exposing probe() -> dict.
PLUGINS = ("edge.runtime.hailo", "edge.sources.imx500")


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator (or runtime) and what this machine has of it.

    found: installed and loadable; version: its version ("" when not found); devices: the
    hardware it can reach (Coral ``usb:N``/``pci:N``; for ONNX Runtime its execution providers);
    problem: what stops it or may break it, with what to do ("" when nothing); would_use: edge
    would use it with the options probed (for runtimes of other model formats: for a model of
    that format); detail: where it was found and other facts (the library path, the TensorFlow
    version libedgetpu was built against).
    """

    name: str
    found: bool
    version: str = ""
    devices: tuple[str, ...] = ()
    problem: str = ""
    would_use: bool = False
    detail: str = ""


def probes(
    options: RuntimeOptions | None = None,
    *,
    root: Path = Path("/"),
    plugins: Sequence[str] = PLUGINS,
) -> list[Accelerator]:
    """Every accelerator, in a fixed order: the TFLite runtimes (preferred first), XNNPACK, the
    Edge TPU, ONNX Runtime, then the plug-in modules that exist. ``options`` (default: edge's
    defaults) decide ``would_use``: the runtime ``load_backend`` picks, and the first of
    ``options.delegates`` this machine can run. root: where ``dev/`` and ``sys/`` are (``/``
    but for tests); plugins: the modules whose ``probe()`` to call."""
    opts = options or RuntimeOptions()
    runtimes = [_guarded(name, partial(_runtime, name, opts)) for name in BACKENDS]
    chosen = next((r for r in runtimes if r.would_use), None)
    backend = _backend(opts) if chosen else None
    xnnpack = _xnnpack(backend)
    tpu = _guarded("edgetpu", lambda: _edgetpu(backend, root))
    usable = {"xnnpack": xnnpack.found, "cpu": xnnpack.found, "edgetpu": tpu.would_use}
    first = next((d for d in opts.delegates if usable.get(d, d == "external")), "")
    out = [
        *runtimes,
        _with_use(xnnpack, first == "xnnpack"),
        _with_use(tpu, first == "edgetpu"),
        _guarded("onnxruntime", _onnxruntime),
    ]
    for module in plugins:
        plugged = _plugin(module)
        if plugged is not None:
            out.append(plugged)
    return out


def _with_use(a: Accelerator, use: bool) -> Accelerator:
    return replace(a, would_use=use)


def _backend(opts: RuntimeOptions) -> Backend | None:
    try:
        return load_backend(opts.backend)
    except RuntimeUnavailableError:
        return None


def _runtime(name: str, opts: RuntimeOptions) -> Accelerator:
    try:
        b = load_backend(name)
    except RuntimeUnavailableError as exc:
        why = str(exc).partition(f"{name}: ")[2].partition("). Install")[0]
        return Accelerator(name, False, problem=f"not installed ({why or exc})")
    picked = _backend(opts)
    use = picked is not None and picked.name == name
    return Accelerator(name, True, b.version, (), "", use, "runs .tflite models")


def _xnnpack(backend: Backend | None) -> Accelerator:
    if backend is None:
        return Accelerator("xnnpack", False, problem="no TFLite runtime is installed")
    problem = (
        "tflite-runtime does not hand int8 models to XNNPACK: `pip install ai-edge-litert`"
        if backend.name == "tflite-runtime"
        else ""
    )
    return Accelerator(
        "xnnpack", True, backend.version, ("cpu",), problem, detail=f"built into {backend.name}"
    )


def _edgetpu(backend: Backend | None, root: Path) -> Accelerator:
    """would_use here means "usable": the library loads, a Coral is present, no refusal."""
    lib = libedgetpu.read(edgetpu.library_name(), root / "var/lib/dpkg")
    devices = tuple(edgetpu.present_devices(root))
    if not lib.found:
        problem = (
            "a Coral is plugged in but libedgetpu is not installed: install libedgetpu1-std "
            "from Coral's apt repository (or feranick's build matching the runtime)"
            if devices
            else "libedgetpu is not installed"
        )
        return Accelerator("edgetpu", False, "", devices, problem)
    parts = [lib.path]
    if lib.package:
        parts.append(f"package {lib.package}")
    parts.append(
        f"built against TensorFlow {lib.tensorflow} ({lib.tensorflow_from})"
        if lib.tensorflow
        else "TensorFlow build unknown"
    )
    problems = []
    verdict = lockstep.Verdict("ok")
    if backend is not None and lib.version:
        verdict = lockstep.check(lib, backend.name, backend.version)
        if verdict.level != "ok":
            problems.append(verdict.message)
    elif lib.problem:
        problems.append(lib.problem)
    if not devices:
        problems.append("no Coral found (USB 1a6e:089a or 18d1:9302, or /dev/apex_N)")
    version = f"RuntimeVersion {lib.runtime_version}" if lib.runtime_version else lib.version
    usable = bool(devices) and verdict.level != "refuse" and bool(lib.version)
    return Accelerator(
        "edgetpu", True, version, devices, " ".join(problems), usable, "; ".join(parts)
    )


def _onnxruntime() -> Accelerator:
    if importlib.util.find_spec("onnxruntime") is None:
        return Accelerator("onnxruntime", False, problem="not installed: pip install 'edge[onnx]'")
    ort = importlib.import_module("onnxruntime")
    providers = tuple(str(p) for p in ort.get_available_providers())
    return Accelerator(
        "onnxruntime",
        True,
        str(getattr(ort, "__version__", "unknown")),
        providers,
        "",
        True,
        "runs .onnx models, on CPUExecutionProvider",
    )


def _guarded(name: str, probe: Callable[[], Accelerator]) -> Accelerator:
    try:
        return probe()
    except Exception as exc:  # a probe never raises
        return Accelerator(name, False, problem=f"probe failed: {type(exc).__name__}: {exc}")


def _plugin(module: str) -> Accelerator | None:
    """The plug-in module's probe, or None when the module does not exist."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ImportError:  # a parent package is missing
        return None
    name = module.rpartition(".")[2]
    try:
        found = importlib.import_module(module).probe()
        return from_probe(found)
    except Exception as exc:  # a probe never raises, whatever the plug-in does
        return Accelerator(name, False, problem=f"probe failed: {type(exc).__name__}: {exc}")


def from_probe(d: Mapping[str, object]) -> Accelerator:
    """An Accelerator from a plug-in's ``probe()`` dict (``devices`` a list of strings)."""
    devices = d.get("devices") or ()
    return Accelerator(
        str(d["name"]),
        bool(d.get("found", False)),
        str(d.get("version") or ""),
        tuple(str(x) for x in devices) if isinstance(devices, list | tuple) else (str(devices),),
        str(d.get("problem") or ""),
        bool(d.get("would_use", False)),
        str(d.get("detail") or ""),
    )
