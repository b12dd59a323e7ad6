"""Running an interpreter's ``invoke()`` so that a call that hangs in native code can be given
up on: the call runs on a thread of its own and the caller waits for it with a timeout.

A hung native call cannot be interrupted, so giving up means abandoning the interpreter to its
thread: nothing touches it again, and that thread frees it if the call ever returns. The cost on
a healthy invoke is two thread hand-offs, nothing polls: tens of microseconds with a core free,
but on a machine whose cores are all busy the woken invoke thread waits for the scheduler (up to
milliseconds). Without a timeout (``threaded`` False) there is no such cost, and no watchdog.
"""

from __future__ import annotations

import queue
import threading

from edge.runtime import Interpreter


def _describe(exc: Exception) -> str:
    return f"invoke failed: {str(exc).strip() or type(exc).__name__}"


def _serve(
    interp: Interpreter, jobs: queue.SimpleQueue[bool], done: queue.SimpleQueue[str]
) -> None:
    """An invoke thread's loop: one ``invoke()`` per job until told to stop; each answer is ""
    or the failure. Its reference is what keeps an abandoned interpreter alive until then."""
    while jobs.get():
        try:
            interp.invoke()
        except Exception as exc:  # the runtime raises RuntimeError; anything else fails too
            done.put(_describe(exc))
        else:
            done.put("")


class Invoker:
    """Runs ``interp.invoke()`` on the thread ``name`` (daemon), or, with ``threaded`` False, on
    the caller's thread (no timeout then: only a raise counts as a failure).

    One caller at a time; after :meth:`retire` the interpreter must not be used again.
    """

    def __init__(self, interp: Interpreter, name: str, threaded: bool = True) -> None:
        self.interp = interp
        self._jobs: queue.SimpleQueue[bool] | None = None
        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()
        if threaded:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(interp, self._jobs, self._done), name=name, daemon=True
            ).start()

    def invoke(self, timeout_s: float) -> str:
        """Run one invoke: "" when it succeeded, else why not (it raised, or had not returned
        after ``timeout_s`` seconds: then retire this invoker, the call may never end)."""
        if self._jobs is None:
            try:
                self.interp.invoke()
            except Exception as exc:
                return _describe(exc)
            return ""
        self._jobs.put(True)
        try:
            return self._done.get(timeout=timeout_s)
        except queue.Empty:
            return f"invoke timed out after {timeout_s * 1000:.0f} ms"

    def retire(self) -> None:
        """Let the thread end once any invoke in progress returns (never touches the
        interpreter itself, so it is safe on a hung one)."""
        if self._jobs is not None:
            self._jobs.put(False)
