"""The capture thread, which owns a frame source.

A :class:`CaptureThread` opens its source, reads frames as fast as the source delivers them and
hands each to its ``on_frame`` callback, on the capture thread. In the daemon that callback is
the pipeline's: motion gate, preprocessing, then :class:`~edge.slots.FrameSlots`, which keeps
only the newest frame of a live camera, so latency never grows when inference is slower. A
source that fails (SourceError) is closed and reopened with exponential backoff; a live source
that delivers nothing for ``stall_after`` seconds is ``stalled`` (no frames, so no results) until
frames come again or its read times out and it is reopened. The thread's :class:`CaptureStatus`
tells the daemon what is happening for its status topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from edge.errors import InputError, SourceError
from edge.frame import Frame
from edge.sources import Source, SourceSpec, open_source
from edge.sources.base import BaseSource

log = logging.getLogger(__name__)

STATES = ("starting", "streaming", "stalled", "reconnecting", "ended", "failed", "stopped")
FINAL_STATES = frozenset({"ended", "failed", "stopped"})


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """A consistent snapshot of a capture thread.

    state: one of STATES (``stalled``: a live source is open but has delivered nothing for
    ``stall_after`` seconds). frames: frames delivered since the thread started. reopens: times
    the source was closed after a failure and a reopen scheduled. last_error: the message
    of the most recent failure, kept after recovery. since: ``time.monotonic()`` of the last
    state change. last_frame: ``ts_mono`` of the last frame delivered, None before the first.
    stale: frames of a live source dropped because they were captured more than ``stall_after``
    seconds before they arrived, or (streams without timestamps) came in the burst after a
    pause: the backlog a stalled stream delivers when it recovers.
    """

    state: str
    frames: int
    reopens: int
    last_error: str | None
    since: float
    last_frame: float | None
    stale: int = 0


class CaptureStatus:
    """Thread-safe state and counters of one capture thread; written by it, read by anyone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state = "starting"
        self._since = time.monotonic()
        self._frames = 0
        self._reopens = 0
        self._last_error: str | None = None
        self._last_frame: float | None = None
        self._stale = 0
        # The exception that put the thread in "failed" (an InputError makes the daemon exit 66).
        self.error: Exception | None = None
        # The latest state changes, oldest first, for diagnostics and tests.
        self.history: deque[str] = deque(maxlen=32)
        self.history.append(self._state)

    @property
    def state(self) -> str:
        return self._state

    def snapshot(self) -> CaptureStats:
        with self._cond:
            return CaptureStats(
                self._state,
                self._frames,
                self._reopens,
                self._last_error,
                self._since,
                self._last_frame,
                self._stale,
            )

    def wait_for(self, *states: str, timeout: float | None = None) -> bool:
        """Block until the state is one of ``states``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._state in states, timeout)

    def set_state(
        self, state: str, error: Exception | None = None, *, only_from: str | None = None
    ) -> bool:
        """Change the state (keeping ``error``); with ``only_from``, only if the state is that
        one, atomically. True if the state changed."""
        with self._cond:
            if only_from is not None and self._state != only_from:
                return False
            if error is not None:
                self._last_error = str(error)
                if state == "failed":
                    self.error = error
            if state == self._state:
                return False
            self._state = state
            self._since = time.monotonic()
            self.history.append(state)
            self._cond.notify_all()
            return True

    def count_frame(self, ts_mono: float) -> float | None:
        """Count a delivered frame; if the source was stalled it is streaming again, and the
        seconds it spent stalled are returned (else None)."""
        with self._cond:
            self._frames += 1
            self._last_frame = ts_mono
            if self._state != "stalled":
                return None
            now = time.monotonic()
            stalled_for = now - self._since
            self._state = "streaming"
            self._since = now
            self.history.append("streaming")
            self._cond.notify_all()
            return stalled_for

    def count_stale(self) -> None:
        with self._cond:
            self._stale += 1

    def count_reopen(self, error: Exception) -> None:
        with self._cond:
            self._reopens += 1
            self._last_error = str(error)


class CaptureThread(threading.Thread):
    """Owns a source: opens it, reads it, reopens it after failures; named ``capture-<name>``.

    source: a Source, or a SourceSpec to build one from (ConfigError surfaces here).
    on_frame: called on this thread with each frame (it must be quick: the next read waits).
    stop: an event shared with other threads, set to stop them all; one is made if not given.

    Failures: SourceError → state ``reconnecting``, the source is closed and reopened after
    ``backoff`` seconds, doubling up to ``backoff_max``; the delay resets once a reopened source
    delivers a frame. A live source (camera, stream) that is open but has delivered no frame for
    ``stall_after`` seconds → ``stalled`` (set by a small watch thread, ``capture-<name>-watch``,
    as the capture thread is then blocked in the backend), back to ``streaming`` at its next
    frame; its read timeout turns a longer stall into a failure.
    InputError (a file that cannot be read) → ``failed``, the error kept for
    ``fatal_error()``. Any other exception is a bug or an unwrapped library error → ``failed``.
    End of a finite source → ``ended``. After ``stop()`` → ``stopped``.
    """

    def __init__(
        self,
        source: Source | SourceSpec,
        on_frame: Callable[[Frame], object],
        *,
        stop: threading.Event | None = None,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        stall_after: float = 2.0,
    ) -> None:
        if isinstance(source, SourceSpec):
            source = open_source(source)
        super().__init__(name=f"capture-{source.name}", daemon=True)
        self.source = source
        self._deliver = on_frame
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.stall_after = stall_after
        self._status = CaptureStatus()
        self._stop_event = stop if stop is not None else threading.Event()
        self._delay = backoff

    # -- what the daemon reads (any thread) ---------------------------------------------------

    def stats(self) -> CaptureStats:
        """A consistent snapshot of state and counters (``stale`` adds the frames the source
        itself skipped as backlog)."""
        st = self._status.snapshot()
        skipped = self.source.stale if isinstance(self.source, BaseSource) else 0
        return replace(st, stale=st.stale + skipped) if skipped else st

    def status(self) -> dict[str, object]:
        """The snapshot as a dict for the status topic: state, frames, reopens, last_error,
        since (monotonic seconds), last_frame (ts_mono of the newest frame), stale."""
        st = self.stats()
        return {
            "state": st.state,
            "frames": st.frames,
            "reopens": st.reopens,
            "last_error": st.last_error,
            "since": st.since,
            "last_frame": st.last_frame,
            "stale": st.stale,
        }

    def fatal_error(self) -> Exception | None:
        """The error that made capture fail for good (InputError: exit 66), else None."""
        return self._status.error

    def wait_for_state(self, *states: str, timeout: float | None = None) -> bool:
        """Block until the state is one of ``states``; False on timeout."""
        return self._status.wait_for(*states, timeout=timeout)

    @property
    def history(self) -> list[str]:
        """The latest state changes, oldest first."""
        return list(self._status.history)

    def stop(self) -> None:
        """Ask the thread to end and close the source so a blocked read returns; does not join.

        Source.close() is safe from this thread (backends defer releasing the device to the
        reading thread), so ``join()`` returns as soon as the read does: at once for files and
        the synthetic source, within one frame or ~0.1 s for cameras, and within the backend's
        stall timeout only if the device has stopped delivering (the thread is a daemon thread
        and never holds up process exit).
        """
        self._stop_event.set()
        try:
            self.source.close()
        except Exception:
            log.exception("closing source %r from stop() failed", self.source.name)

    def run(self) -> None:
        name = self.source.name
        watch = self._start_watch()
        try:
            while not self._stop_event.is_set():
                try:
                    self.source.open()
                    if self._pump():
                        self._status.set_state("ended")
                        log.info("capture %r: end of stream", name)
                        return
                except InputError as exc:
                    self._status.set_state("failed", exc)
                    log.error("capture %r: %s", name, exc)
                    return
                except SourceError as exc:
                    if self._stop_event.is_set():
                        break
                    self._close_source()
                    self._status.count_reopen(exc)
                    self._status.set_state("reconnecting", exc)
                    log.warning("capture %r: %s; reopening in %.3g s", name, exc, self._delay)
                    if self._stop_event.wait(self._delay):
                        break
                    self._delay = min(self._delay * 2, self.backoff_max)
                except Exception as exc:
                    self._status.set_state("failed", exc)
                    log.exception("capture %r: unexpected error; capture stops", name)
                    return
        finally:
            if watch is not None:
                watch.set()
            self._close_source()
            if self._status.state not in FINAL_STATES:
                self._status.set_state("stopped")
                log.info("capture %r: stopped", name)

    def _pump(self) -> bool:
        """Read and deliver until end of stream (True) or stop (False); SourceError propagates."""
        first = True
        live = isinstance(self.source, BaseSource) and self.source.live
        stale = 0
        while not self._stop_event.is_set():
            frame = self.source.read()
            if frame is None:
                return True
            # A frame taken before a stall, handed over when the stream recovers, is not news:
            # delivering it would give results for a time the stream showed nothing.
            if live and time.monotonic() - frame.ts_mono > self.stall_after:
                stale += 1
                self._status.count_stale()
                continue
            if stale:
                log.warning(
                    "capture %r: dropped %d frames captured more than %.3g s before they arrived "
                    "(the backlog of a stall)",
                    self.source.name,
                    stale,
                    self.stall_after,
                )
                stale = 0
            if first:
                first = False
                self._delay = self.backoff
                self._status.set_state("streaming")
                log.info("capture %r: streaming", self.source.name)
            self._deliver(frame)
            stalled_for = self._status.count_frame(frame.ts_mono)
            if stalled_for is not None:
                log.info(
                    "capture %r: frames again after %.1f s stalled", self.source.name, stalled_for
                )
        return False

    def _start_watch(self) -> threading.Event | None:
        """Start the stall watch for a live source; the event it returns ends it."""
        source = self.source
        if not isinstance(source, BaseSource) or not source.live:
            return None
        done = threading.Event()
        period = min(0.25, self.stall_after / 4)

        def watch() -> None:
            while not done.wait(period):
                quiet = time.monotonic() - source.heartbeat
                if quiet >= self.stall_after and self._status.set_state(
                    "stalled", only_from="streaming"
                ):
                    log.warning(
                        "capture %r: no frame for %.1f s; stalled (no results until frames "
                        "come again; reopened when the read times out)",
                        source.name,
                        quiet,
                    )

        threading.Thread(target=watch, name=f"capture-{source.name}-watch", daemon=True).start()
        return done

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            log.exception("closing source %r failed", self.source.name)
