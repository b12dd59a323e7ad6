"""A model run over an ordered chain of delegates ("Edge TPU, else XNNPACK"), switching to the
next one when the running one fails, and back when the preferred one is healthy again.

:func:`load` tries the chain in order: the first entry that loads and answers a verification
invoke runs the model; the others' reasons are kept. :class:`FailoverInterpreter` has the
interface of :class:`edge.runtime.Interpreter`, so an Engine runs on it unchanged. An invoke that
raises, or that has not returned after ``invoke_timeout_ms`` (a USB Coral pulled out can hang
inside ``invoke()``), makes it load the next entry and run the *same* input on it before
returning, so the caller loses no frame and sees only a slower invoke. Every ``reprobe_s`` the
entries above the running one are loaded afresh and verified on a background thread; the first
healthy one takes over at the next invoke.

Thread affinity: one thread calls the interpreter methods (the inference thread), as for an
Interpreter; ``status`` may be read from any thread. With a timeout, each entry's ``invoke()``
runs on a thread of its own ("invoke-MODEL-ENTRY", see :mod:`edge.runtime.watchdog`), which is
what lets a hang be seen; re-probing runs on "reprobe-MODEL".
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import DelegateError, ModelError
from edge.runtime import Interpreter, LoadInfo, check_file
from edge.runtime import load as load_one
from edge.runtime.backends import Backend
from edge.runtime.chain import FailoverStatus, Link, Switch
from edge.runtime.watchdog import Invoker

log = logging.getLogger(__name__)

INVOKE_TIMEOUT_MS = 2000.0  # far above any healthy invoke of edge's models on a Pi
REPROBE_S = 30.0
VERIFY_FACTOR = 10  # a first invoke may upload weights (Edge TPU) or pack them (XNNPACK)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A loaded link: its place in the chain and the invoker of its interpreter."""

    index: int
    link: Link
    runner: Invoker

    @property
    def interp(self) -> Interpreter:
        return self.runner.interp


def model_name(path: Path) -> str:
    """The name logs and thread names use: the model's directory for a bundled-style
    ``DIR/model.tflite``, else the file's stem."""
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


class FailoverInterpreter:
    """A model over a delegate chain, with the interface of :class:`Interpreter`. Build with
    :func:`load`."""

    def __init__(
        self,
        path: Path,
        links: tuple[Link, ...],
        invoke_timeout_ms: float,
        reprobe_s: float,
    ) -> None:
        self.path = path
        self.links = links
        self.name = model_name(path)
        self._timeout_s = invoke_timeout_ms / 1000
        self._verify_s = self._timeout_s * VERIFY_FACTOR
        self._reprobe_s = reprobe_s
        self._lock = threading.Lock()  # guards what the re-probe thread shares: below
        self._reasons: dict[str, str] = {}
        self._ready: _Entry | None = None
        self._last: Switch | None = None
        self._switches = 0
        self._probe: threading.Thread | None = None
        self._wake = threading.Event()  # set by close(): the re-probe thread ends
        self._closed = False
        self._entry: _Entry | None = None
        self._index = len(links)  # of the running entry; len(links) when none runs
        self._staged = False  # input 0 was written through input_view() (our own buffer)
        self._info: LoadInfo | None = None
        self._specs: tuple[object, object] | None = None  # inputs, outputs: every entry's
        first = self._first()
        self.inputs = first.interp.inputs
        self.outputs = first.interp.outputs
        self._specs = (self.inputs, self.outputs)
        self._inputs: list[np.ndarray | None] = [None] * len(self.inputs)
        spec = self.inputs[0]
        self._staging = np.zeros(spec.shape, spec.dtype)
        self._run(first)

    # -- the Interpreter interface ------------------------------------------------------------

    @property
    def info(self) -> LoadInfo:
        """The running entry's LoadInfo; ``degraded`` says why it is not the preferred one."""
        entry = self._entry
        info = entry.interp.info if entry is not None else self._info
        assert info is not None
        if entry is not None and entry.index == 0:
            return info
        head = self.links[0].name
        with self._lock:
            why = self._reasons.get(head, "not tried")
        running = f"running on {entry.link.name}" if entry else "nothing can run it"
        return replace(info, degraded=f"{running}, not {head}: {why}")

    @property
    def backend(self) -> Backend:
        return self._current().interp.backend

    def input_view(self) -> np.ndarray:
        """A writable view of input 0, kept by this wrapper (so the input survives a switch) and
        copied into the running interpreter by ``invoke()``."""
        self._staged = True
        self._inputs[0] = self._staging
        return self._staging

    def set_input(self, values: np.ndarray, index: int = 0) -> None:
        """Copy ``values`` into input ``index``; they are kept (not copied) to run the same input
        again after a switch, so leave them unchanged until ``invoke()`` returns."""
        entry = self._entry
        if entry is not None:  # with none (all failed) the values wait for a re-probed one
            entry.interp.set_input(values, index)
        self._inputs[index] = values
        if index == 0:
            self._staged = False

    def invoke(self) -> None:
        """Run the model once on the running entry, failing over (and running the same input on
        the next entry) when it raises or times out. Raises DelegateError when no entry is left;
        a later re-probe may find one again."""
        if self._ready is not None:
            self._take_ready()
        entry = self._current()
        if self._staged:
            entry.interp.set_input(self._staging, 0)
        t0 = time.perf_counter()
        failure = entry.runner.invoke(self._timeout_s)
        if failure:
            self._fail_over(entry, failure, t0)

    def output(self, i: int) -> np.ndarray:
        """A copy of output ``i`` of the last invoke, in its stored dtype."""
        return self._current().interp.output(i)

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    # -- status and life cycle ---------------------------------------------------------------

    @property
    def status(self) -> FailoverStatus:
        """A snapshot of the chain's state (any thread)."""
        with self._lock:
            entry = self._entry
            return FailoverStatus(
                active=entry.link.name if entry else "",
                chain=tuple(link.name for link in self.links),
                last_switch=self._last,
                switches=self._switches,
                reasons=dict(self._reasons),
                pending=self._ready.link.name if self._ready else "",
            )

    def close(self) -> None:
        """Stop the invoke threads and re-probing (an invoke in progress ends on its own); the
        interpreter cannot be used afterwards."""
        self._wake.set()
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, None
        for entry in (self._entry, ready):
            if entry is not None:
                entry.runner.retire()

    def __del__(self) -> None:
        if getattr(self, "_entry", None) is not None:
            self.close()

    # -- internals ----------------------------------------------------------------------------

    def _current(self) -> _Entry:
        entry = self._entry
        if self._closed:
            raise DelegateError(f"{self.name}: the failover interpreter was closed")
        if entry is None:
            again = f"re-probing every {self._reprobe_s:g} s" if self._reprobe_s else "no re-probe"
            raise self._nothing(f"; {again}")
        return entry

    def _nothing(self, tail: str = "") -> DelegateError:
        """The error for a chain none of whose entries runs the model, with each one's reason."""
        with self._lock:
            tried = "; ".join(f"{k}: {v}" for k, v in self._reasons.items())
        names = ", ".join(lk.name for lk in self.links)
        return DelegateError(f"no delegate of the chain {names} can run {self.path}: {tried}{tail}")

    def _note(self, name: str, reason: str) -> None:
        with self._lock:
            self._reasons[name] = reason

    def _open(self, index: int, verify: bool) -> _Entry:
        """Load chain entry ``index`` and start its invoke thread; with ``verify``, also run a
        verification invoke (input values do not matter for it). Raises ModelError (or
        DelegateError) on failure."""
        link = self.links[index]
        interp = load_one(self.path, link.options, verify=False)
        if self._specs not in (None, (interp.inputs, interp.outputs)):
            raise DelegateError(f"{link.name} gives {self.name} other input or output tensors")
        runner = Invoker(interp, f"invoke-{self.name}-{link.name}", threaded=bool(self._timeout_s))
        if verify:
            failure = runner.invoke(self._verify_s)
            if failure:
                runner.retire()
                raise DelegateError(f"verification {failure}")
        return _Entry(index, link, runner)

    def _first(self) -> _Entry:
        """The first entry that loads and verifies, trying each in order (at start-up)."""
        for i, link in enumerate(self.links):
            try:
                entry = self._open(i, verify=True)
            except ModelError as exc:
                self._note(link.name, str(exc))
                log.warning("%s: %s cannot run it: %s", self.name, link.name, exc)
                continue
            return entry
        raise self._nothing()

    def _run(self, entry: _Entry) -> None:
        """Make ``entry`` the running one (the inference thread, between invokes)."""
        with self._lock:
            self._entry = entry
            self._reasons.pop(entry.link.name, None)
        self._index = entry.index
        self._info = entry.interp.info
        if entry.index:
            self._start_probe()

    def _record(self, source: str, target: str, reason: str, detect: float, took: float) -> None:
        with self._lock:
            self._last = Switch(time.monotonic(), time.time(), source, target, reason, detect, took)
            self._switches += 1

    def _apply_inputs(self, entry: _Entry) -> None:
        for i, values in enumerate(self._inputs):
            if values is not None:
                entry.interp.set_input(values, i)

    def _fail_over(self, failed: _Entry, failure: str, t0: float) -> None:
        """Leave ``failed`` and run the same input on the next entry that answers it."""
        t1 = time.perf_counter()
        detect_ms = (t1 - t0) * 1000
        failed.runner.retire()
        self._note(failed.link.name, failure)
        with self._lock:
            self._entry = None
        self._index = len(self.links)
        log.warning("%s: %s failed: %s", self.name, failed.link.name, failure)
        for i in range(failed.index + 1, len(self.links)):
            link = self.links[i]
            try:
                entry = self._open(i, verify=False)  # the frame's own invoke verifies it
            except ModelError as exc:
                self._note(link.name, str(exc))
                continue
            self._apply_inputs(entry)
            answer = entry.runner.invoke(self._timeout_s)
            if answer:
                entry.runner.retire()
                self._note(link.name, answer)
                continue
            switch_ms = (time.perf_counter() - t1) * 1000
            self._run(entry)
            self._record(failed.link.name, link.name, failure, detect_ms, switch_ms)
            took = f"failure seen in {detect_ms:.1f} ms, switch took {switch_ms:.1f} ms"
            log.warning(
                "%s: switched from %s to %s (%s)", self.name, failed.link.name, link.name, took
            )
            return
        self._record(failed.link.name, "", failure, detect_ms, (time.perf_counter() - t1) * 1000)
        self._start_probe()
        self._current()  # raises: nothing is left

    def _start_probe(self) -> None:
        """Start the re-probe thread unless it runs (one stuck loading a hung device is not
        started twice) or re-probing is off."""
        if not self._reprobe_s or self._closed:
            return
        if self._probe is not None and self._probe.is_alive():
            return
        self._probe = threading.Thread(
            target=_reprobe_loop,
            args=(weakref.ref(self), self._wake, self._reprobe_s),
            name=f"reprobe-{self.name}",
            daemon=True,
        )
        self._probe.start()

    def _reprobe(self) -> None:
        """One round of re-probing (re-probe thread): load and verify each entry above the
        running one in order, and hand the first healthy one to the inference thread."""
        above = self._index
        if self._closed or self._ready is not None:
            return  # a healthy entry found earlier has not been taken yet
        for i in range(above):
            try:
                entry = self._open(i, verify=True)
            except ModelError as exc:
                self._note(self.links[i].name, str(exc))
                log.debug("%s: re-probe of %s failed: %s", self.name, self.links[i].name, exc)
                continue
            with self._lock:
                closed = self._closed
                if not closed:
                    self._ready = entry
            if closed:
                entry.runner.retire()
                return
            log.info("%s: re-probe: %s is healthy", self.name, self.links[i].name)
            return

    def _take_ready(self) -> None:
        """Switch to the entry a re-probe found healthy, if it is still better than the running
        one (inference thread, before an invoke)."""
        t0 = time.perf_counter()
        with self._lock:
            entry, self._ready = self._ready, None
        if entry is None or entry.index >= self._index or self._closed:
            if entry is not None:
                entry.runner.retire()
            return
        old = self._entry
        self._apply_inputs(entry)  # input_view()'s buffer too
        self._run(entry)
        if old is not None:
            old.runner.retire()
        source = old.link.name if old else ""
        took = (time.perf_counter() - t0) * 1000
        self._record(source, entry.link.name, "re-probe: healthy again", 0.0, took)
        log.info("%s: %s is healthy again; switched back to it", self.name, entry.link.name)


def _reprobe_loop(
    ref: weakref.ReferenceType[FailoverInterpreter], wake: threading.Event, every_s: float
) -> None:
    """The re-probe thread: a round every ``every_s`` (a round with the preferred entry running
    does nothing). It holds its interpreter only weakly between rounds, so dropping it ends the
    thread, as does ``close()``."""
    while not wake.wait(every_s):
        owner = ref()
        if owner is None:
            return
        owner._reprobe()
        del owner


def load(
    path: Path,
    links: Sequence[Link],
    invoke_timeout_ms: float = INVOKE_TIMEOUT_MS,
    reprobe_s: float = REPROBE_S,
) -> FailoverInterpreter:
    """Load ``path`` on the first entry of ``links`` that loads and answers a verification
    invoke (within ``VERIFY_FACTOR`` × ``invoke_timeout_ms``).

    invoke_timeout_ms: how long an invoke may take before its entry counts as hung (0: no
    watchdog, invokes run on the calling thread and only a raise fails over). reprobe_s: how
    often to try the entries above the running one again (0: never).

    Raises ModelError when the file itself is unusable, DelegateError naming each entry's reason
    when no entry can run it.
    """
    if not links:
        raise ModelError("the delegate chain is empty; give at least one delegate")
    check_file(path)
    return FailoverInterpreter(path, tuple(links), invoke_timeout_ms, reprobe_s)


def stats_entry(interp: object) -> dict[str, Any]:
    """``{"failover": ...}`` (the chain's :class:`FailoverStatus` as a dict) for a model's
    stats when ``interp`` runs it on a chain, else nothing."""
    if not isinstance(interp, FailoverInterpreter):
        return {}
    return {"failover": asdict(interp.status)}


def details_entry(interp: object) -> dict[str, Any] | None:
    """What the retained status details say of a model on a chain (the active entry, the
    chain and the last switch; it changes only at a switch), None for a model that is not."""
    if not isinstance(interp, FailoverInterpreter):
        return None
    status = interp.status
    last = status.last_switch
    return {
        "active": status.active,
        "chain": list(status.chain),
        "switches": status.switches,
        "last_switch": None if last is None else asdict(last),
    }
