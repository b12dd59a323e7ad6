"""The main thread of a long-running command (``edge run``, ``edge preview``): it turns
SIGTERM and SIGINT (and, for the daemon, SIGHUP) into events, decides when the run is over,
and shuts down in reverse start order, each close in its own try so that one failure cannot
skip the others.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.pipeline import Pipeline

log = logging.getLogger(__name__)


class Runner:
    """Signals, the done check and shutdown for one run. Thread affinity: the main thread
    (only it may install signal handlers; elsewhere, in tests, none are installed).

    duration: seconds the run lasts once :meth:`begin` was called (None: until stopped).
    reloads: also handle SIGHUP, setting ``reload_requested``.
    """

    def __init__(self, duration: float | None = None, *, reloads: bool = False) -> None:
        self.duration = duration
        self.reloads = reloads
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self.started = time.monotonic()
        self._closers: list[tuple[str, Callable[[], object]]] = []
        self._previous: dict[int, Any] = {}

    # -- signals -------------------------------------------------------------------------------
    def install_signals(self) -> None:
        """Handle SIGTERM and SIGINT (stop) and, with ``reloads``, SIGHUP, remembering the
        handlers they replace for :meth:`restore_signals`."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_stop)
        if self.reloads:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)

    def restore_signals(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        self.stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP received, reloading the configuration")
        self.reload_requested.set()

    # -- the done check ------------------------------------------------------------------------
    def begin(self) -> None:
        """Start counting ``duration`` (once everything runs: loading does not count)."""
        self.started = time.monotonic()

    def done(self, pipeline: Pipeline, *, at_end: bool = True) -> int | None:
        """The exit code if the run is over, else None: the capture error that retrying cannot
        fix (a missing file: its EdgeError's code, 1 for anything else), then the end of
        ``duration`` (0), then, with ``at_end``, every source ended and inferred (0)."""
        fatal = pipeline.failure()
        if fatal is not None:
            log.error("%s", fatal)
            return fatal.exit_code if isinstance(fatal, EdgeError) else 1
        if self.duration is not None and time.monotonic() - self.started >= self.duration:
            log.info("duration of %.1f s reached, stopping", self.duration)
            return 0
        if at_end and pipeline.finished():
            log.info("every source has ended, stopping")
            return 0
        return None

    # -- shutdown ------------------------------------------------------------------------------
    def on_shutdown(self, what: str, close: Callable[[], object]) -> None:
        """Have :meth:`shutdown` call ``close`` (named ``what`` in the log if it fails).
        Register in start order: shutdown runs them the other way round."""
        self._closers.append((what, close))

    def shutdown(self) -> None:
        """Set ``stop``, then run every registered close, last registered first, each in its
        own try; each runs once."""
        self.stop.set()
        while self._closers:
            what, close = self._closers.pop()
            try:
                close()
            except Exception:
                log.exception("stopping the %s failed", what)
