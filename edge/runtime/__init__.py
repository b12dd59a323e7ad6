"""One small interface over a TFLite interpreter: load a model file, feed the input tensor in
place, invoke, read outputs.

Every way a model can fail to load is turned into a ModelError (or DelegateError) whose message
names the cause and the remedy, so the CLI and daemon exit 78 with one line instead of a
traceback. Thread affinity: an :class:`Interpreter` belongs to one thread; ``invoke()`` releases
the GIL, so other threads (capture, MQTT) keep running while it works.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge.choices import DELEGATES, FALLBACKS, Delegate, Fallback, RuntimeName
from edge.errors import DelegateError, ModelError
from edge.preprocess import TensorSpec
from edge.runtime import edgetpu, external
from edge.runtime.backends import Backend, load_backend
from edge.tflite_metadata import structure_problem

if TYPE_CHECKING:
    from edge.config import ModelSettings

log = logging.getLogger(__name__)

EDGETPU_OP = "edgetpu-custom-op"
_CUSTOM_OP = re.compile(r"unresolved custom op: ([\w\-.]+)", re.IGNORECASE)


def default_threads() -> int:
    """Threads used when none are given: every core up to 4 (unset, TFLite would use 1)."""
    return max(
        1,
        min(
            4,
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1),
        ),
    )


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How to run a model.

    delegate: ``xnnpack`` (CPU with the XNNPACK delegate, the default), ``cpu`` (builtin kernels
    only, XNNPACK off), or ``edgetpu`` (Coral). device: Edge TPU ``usb``, ``usb:N``, ``pci``,
    ``pci:N``. fallback: when the Edge TPU cannot be used, ``cpu`` runs the model on the CPU
    (and says so in the log and status), ``fail`` raises DelegateError. threads: ``None`` =
    :func:`default_threads`. backend: ``None`` = ``$EDGE_RUNTIME``, else the first installed.
    library: an external delegate (a shared library with the TFLite plugin interface) applied
    before ``delegate``, which runs whatever it leaves (``delegate`` ``external`` needs it: it
    is XNNPACK after the library); library_options: its settings, as key/value pairs.
    chain: the delegates to fail over to after ``delegate``, in order (:func:`load_model` runs a
    chain of more than one on :mod:`edge.runtime.failover`; in a chain only the ``external``
    entry loads ``library``); invoke_timeout_ms and reprobe_s: that chain's watchdog and
    re-probe period (see :func:`edge.runtime.failover.load`).
    """

    threads: int | None = None
    delegate: Delegate = "xnnpack"
    device: str | None = None
    fallback: Fallback = "fail"
    backend: RuntimeName | None = None
    library: str = ""
    library_options: tuple[tuple[str, str], ...] = ()
    chain: tuple[Delegate, ...] = ()
    invoke_timeout_ms: float = 2000.0
    reprobe_s: float = 30.0

    @classmethod
    def from_settings(cls, m: ModelSettings) -> RuntimeOptions:
        """The options a daemon configuration's [model] table sets."""
        pairs = (o.partition("=") for o in m.delegate_library_options)
        return cls(
            threads=m.threads,
            delegate=m.delegate[0],
            device=m.edgetpu_device,
            fallback=m.edgetpu_fallback,
            backend=m.runtime,
            library=m.delegate_library or "",
            library_options=tuple((k.strip(), v.strip()) for k, _, v in pairs),
            chain=m.delegate[1:],
            invoke_timeout_ms=m.invoke_timeout_ms,
            reprobe_s=m.reprobe_s,
        )

    @property
    def delegates(self) -> tuple[Delegate, ...]:
        """Every delegate to try, preferred first."""
        return (self.delegate, *self.chain)


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """What loading produced, for ``edge bench``/``edge info`` and the status topic.

    degraded: why the requested delegate is not the one running (empty when it is).
    """

    backend: str
    backend_version: str
    delegate: str
    threads: int
    init_ms: float
    op_counts: dict[str, int] = field(default_factory=dict)
    delegate_partitions: int = 0
    degraded: str = ""


class ModelInterpreter(Protocol):
    """What an Engine needs of an interpreter: :class:`Interpreter` (TFLite or ONNX Runtime)
    and :class:`edge.runtime.failover.FailoverInterpreter` both have it. One thread at a time
    calls its methods; ``info`` may be read from any thread."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def info(self) -> LoadInfo: ...
    def input_view(self) -> np.ndarray: ...
    def set_input(self, values: np.ndarray, index: int = 0) -> None: ...
    def invoke(self) -> None: ...
    def output(self, i: int) -> np.ndarray: ...
    def output_names(self) -> list[str]: ...
    def close(self) -> None: ...


class Interpreter:
    """A loaded, allocated model. Build with :func:`load`."""

    def __init__(self, raw: Any, backend: Backend, info: LoadInfo, path: Path) -> None:
        self._raw = raw
        self.backend = backend
        self.info = info
        self.path = path
        self.inputs = tuple(TensorSpec.from_details(d) for d in raw.get_input_details())
        self.outputs = tuple(TensorSpec.from_details(d) for d in raw.get_output_details())
        self._input_fn = raw.tensor(self.inputs[0].index)
        self._get = raw.get_tensor

    def input_view(self) -> np.ndarray:
        """A writable zero-copy view of input 0. Drop it before ``invoke()``: TFLite refuses to
        run while a view of its buffers is alive."""
        view: np.ndarray = self._input_fn()
        return view

    def set_input(self, values: np.ndarray, index: int = 0) -> None:
        """Copy ``values`` into input ``index`` (for callers that built their own array)."""
        self._raw.set_tensor(self.inputs[index].index, values)

    def invoke(self) -> None:
        """Run the model once. Releases the GIL."""
        self._raw.invoke()

    def output(self, i: int) -> np.ndarray:
        """A copy of output ``i`` in its stored dtype (quantized values stay quantized)."""
        out: np.ndarray = self._get(self.outputs[i].index)
        return out

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def close(self) -> None:
        """Nothing to release early: the runtime frees the model with this object."""


def load_model(path: Path, options: RuntimeOptions | None = None) -> ModelInterpreter:
    """:func:`load` for one delegate, :func:`edge.runtime.failover.load` for a chain of more
    (verified at load either way), :func:`edge.runtime.sensor.load` for an AI Camera network.
    Raises as they do; a chain for an ONNX or HEF model is a ModelError (onnxruntime has one
    execution provider here, a HEF runs only on the Hailo device: there is nothing to fail
    over to).
    """
    if path.suffix.lower() == ".rpk":
        # An AI Camera network runs on the sensor: no delegate or chain applies to it.
        from edge.runtime import sensor

        return sensor.load(path)
    opts = options or RuntimeOptions()
    if not opts.chain:
        return load(path, opts)
    names = ", ".join(opts.delegates)
    if path.suffix.lower() == ".onnx":
        raise ModelError(
            f"a delegate chain ({names}) applies to .tflite models; {path.name} runs on "
            "onnxruntime's CPU provider: give one delegate (xnnpack)"
        )
    if path.suffix.lower() == ".hef":
        raise ModelError(
            f"a delegate chain ({names}) applies to .tflite models; {path.name} runs on the "
            "Hailo device: leave [model] delegate at its default"
        )
    from edge.runtime import failover  # it builds on this module
    from edge.runtime.chain import chain

    return failover.load(path, chain(opts.delegates, opts), opts.invoke_timeout_ms, opts.reprobe_s)


def chain_stats(interp: object) -> dict[str, Any]:
    """What a model's stats entry adds for ``interp``: its chain's ``{"failover": ...}`` when it
    runs on one, else nothing (:func:`edge.runtime.failover.stats_entry`)."""
    failover = _failover_if_loaded()
    return {} if failover is None else failover.stats_entry(interp)


def chain_details(interp: object) -> dict[str, Any] | None:
    """The status details' entry for ``interp``'s chain, None when it runs on none
    (:func:`edge.runtime.failover.details_entry`)."""
    failover = _failover_if_loaded()
    return None if failover is None else failover.details_entry(interp)


def _failover_if_loaded() -> Any:
    """:mod:`edge.runtime.failover` if this process has imported it, else None. A process that
    loaded no chain never imports it (the daemon's start does not pay for it), and then no
    interpreter of it can be on one."""
    return sys.modules.get("edge.runtime.failover")


def read_head(path: Path, size: int, kind: str = ".tflite") -> bytes:
    """The first ``size`` bytes of a model file, after the checks every model format gets:
    missing, a directory, unreadable, empty (each a ModelError saying what to do)."""
    if not path.exists():
        raise ModelError(
            f"model file not found: {path}. Check the path, or run `edge info` to list the "
            "bundled models."
        )
    if path.is_dir():
        raise ModelError(f"{path} is a directory without a {kind} model in it")
    try:
        with path.open("rb") as f:
            head = f.read(size)
    except OSError as exc:
        raise ModelError(
            f"cannot read model file {path}: {exc.strerror}. Check its "
            "permissions (the service user must be able to read it)."
        ) from exc
    if not head:
        raise ModelError(
            f"model file {path} is empty (0 bytes): the copy or download was cut "
            "short. Copy the model again."
        )
    return head


def check_file(path: Path) -> None:
    """Cheap checks that catch the common bad files before the runtime sees them."""
    head = read_head(path, 8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        shown = head[4:8].decode("latin-1") if len(head) >= 8 else head.decode("latin-1")
        raise ModelError(
            f"{path} is not a TFLite model: its file identifier is {shown!r}, expected 'TFL3'. "
            "Was an HTML page, an ONNX/Keras file or a zip saved as .tflite? Convert the model "
            "with the TFLite converter (or `edge quantize`) and try again."
        )
    problem = structure_problem(path)
    if problem is not None:
        raise ModelError(
            f"{path} is truncated or corrupt ({problem}). Copy or export the model again and "
            "compare its size with the original."
        )


def load(path: Path, options: RuntimeOptions | None = None, verify: bool = True) -> Interpreter:
    """Load and allocate ``path`` with ``options``.

    verify: also run one inference on a zero input, so that errors TFLite only finds at the
    first ``invoke()`` (ops after a dynamic-shape tensor are prepared then, including unknown
    custom ops) surface here as ModelError, not on the first camera frame. ``edge bench`` turns
    it off to time that first inference itself.

    Raises ModelError for bad files and unsupported ops, DelegateError when the Edge TPU cannot
    be used and the fallback is ``fail``, RuntimeUnavailableError when no runtime is installed.
    """
    opts = options or RuntimeOptions()
    if opts.delegate not in DELEGATES:
        raise ModelError(f"unknown delegate {opts.delegate!r}; use one of {', '.join(DELEGATES)}")
    if opts.fallback not in FALLBACKS:
        raise ModelError(f"unknown fallback {opts.fallback!r}; use cpu or fail")
    if opts.delegate == "external" and not opts.library:
        raise ModelError(
            "delegate external needs the delegate's shared library: set [model] delegate_library"
        )
    if path.suffix.lower() == ".onnx":
        from edge.runtime import onnx  # onnxruntime is imported only for ONNX models

        return onnx.load(path, opts, verify)
    if path.suffix.lower() == ".hef":
        from edge.runtime import hailo  # HailoRT is imported only for HEF models

        return hailo.load(path, opts, verify)
    check_file(path)
    backend = load_backend(opts.backend)
    threads = opts.threads or default_threads()
    mod = backend.module
    degraded = ""
    delegates = []
    delegate = opts.delegate
    if delegate == "edgetpu":
        try:
            delegates.append(edgetpu.load(backend, opts.device))
        except DelegateError as exc:
            if opts.fallback == "fail":
                raise
            degraded = f"Edge TPU unavailable, running on the CPU: {exc}"
            log.warning("%s", degraded)
            delegate = "xnnpack"
    if opts.library:
        delegates.append(external.load(mod, opts.library, opts.library_options))
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if delegate == "cpu":
        kwargs["experimental_op_resolver_type"] = (
            mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    t0 = time.perf_counter()
    try:
        with _native_stderr_to_log():
            raw = mod.Interpreter(**kwargs)
            raw.allocate_tensors()
            if verify:
                raw.invoke()  # input values do not matter for this check
    except (ValueError, RuntimeError) as exc:
        raise _explain(path, exc, delegate, backend) from exc
    init_ms = (time.perf_counter() - t0) * 1000
    counts, partitions = _op_counts(raw)
    info = LoadInfo(
        backend.name, backend.version, delegate, threads, init_ms, counts, partitions, degraded
    )
    interp = Interpreter(raw, backend, info, path)
    if not interp.inputs:
        raise ModelError(f"{path} has no input tensor; edge needs an image input")
    log.info(
        "loaded %s with %s %s (delegate %s, %d threads) in %.1f ms",
        path.name,
        backend.name,
        backend.version,
        delegate,
        threads,
        init_ms,
    )
    return interp


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Route what the C++ runtime prints on fd 2 while loading into our log.

    LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to fd 2,
    ignoring TF_CPP_MIN_LOG_LEVEL; under systemd that lands in the journal as noise. INFO lines
    become DEBUG records, anything else a WARNING, so nothing is lost.

    fd 2 belongs to the whole process, so this is only done while no other thread runs (at
    start-up, before the pipeline's threads): later loads (a reload) would otherwise swallow
    other threads' log lines and re-emit them as runtime warnings. Those loads leave the
    runtime's one INFO line on stderr.
    """
    if threading.active_count() > 1:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to redirect
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    level = logging.DEBUG if line.startswith("INFO:") else logging.WARNING
                    log.log(level, "runtime: %s", line)


def _op_counts(raw: Any) -> tuple[dict[str, int], int]:
    """Ops by type and the number of delegate partitions, where the runtime exposes them."""
    try:
        ops = raw._get_ops_details()
    except Exception:  # private API: absent in some runtime versions
        return {}, 0
    counts = Counter(str(o.get("op_name", "?")) for o in ops)
    partitions = counts.pop("DELEGATE", 0)
    return dict(counts), partitions


def _explain(path: Path, exc: Exception, delegate: str, backend: Backend) -> ModelError:
    """Turn a runtime load error into a ModelError with a cause and a remedy."""
    text = str(exc)
    runtime = f"{backend.name} {backend.version}"
    match = _CUSTOM_OP.search(text)
    op = match.group(1).rstrip(".") if match else ""  # the message ends the name with a "."
    if op == EDGETPU_OP:
        return ModelError(
            f"{path} was compiled for the Coral Edge TPU (it contains {EDGETPU_OP}) but no "
            "Edge TPU delegate is loaded. Run it with --delegate edgetpu on a machine with a "
            "Coral and libedgetpu, or use the CPU version of the model (the .tflite you gave "
            "to edgetpu_compiler)."
        )
    if op:
        hint = (
            " XNNPACK is off (--delegate cpu); some custom ops are implemented by XNNPACK, so "
            "try --delegate xnnpack."
            if delegate == "cpu"
            else ""
        )
        return ModelError(
            f"{path} uses the custom op {op}, which {runtime} does not implement."
            f"{hint} Re-export the model with builtin ops only (TFLite converter: "
            "target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] or "
            "TFLITE_BUILTINS), or run it with a runtime that registers that op."
        )
    if "not a valid Flatbuffer" in text or "model identifier" in text:
        return ModelError(
            f"{path} is truncated or corrupt (the TFLite flatbuffer does not verify). Copy or "
            "export the model again and compare its size with the original."
        )
    if "mmap of size 0" in text:
        return ModelError(f"model file {path} is empty: copy the model again.")
    if "Didn't find op for builtin opcode" in text or "Op builtin_code out of range" in text:
        return ModelError(
            f"{path} needs an op version that {runtime} does not have ({text.strip()}). "
            "Upgrade the runtime (`pip install -U ai-edge-litert`) or export the model with an "
            "older converter."
        )
    return ModelError(f"{path} could not be loaded by {runtime}: {text.strip()}")
