"""Jobs: operations the camera loop completes when frames arrive (same contract as picamera2)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

__all__ = ["CancelledError", "Job"]


class Job:
    """A list of steps, each returning ``(done, result)``; run again on each frame until done.

    ``get_result(timeout)`` raises TimeoutError on timeout and CancelledError once cancelled.
    """

    def __init__(
        self, functions: list[Callable[[], tuple[bool, Any]]], signal_function: Any = None
    ) -> None:
        self._functions = functions
        self._future: Future[Any] = Future()
        self._future.set_running_or_notify_cancel()
        self._signal_function = signal_function
        self._result: Any = None
        self.calls = 0

    def execute(self) -> bool:
        assert self._functions, "Job already completed!"
        try:
            while self._functions:
                done, result = self._functions[0]()
                self.calls += 1
                if not done:
                    break
                self._functions.pop(0)
                self._result = result
        except Exception as exc:
            self._future.set_exception(exc)
            self._functions = []
        return not self._functions

    def signal(self) -> None:
        if not self._future.done():
            self._future.set_result(self._result)
        if self._signal_function:
            self._signal_function(self)

    def get_result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        if not self._future.done():
            self._future.set_exception(CancelledError())
