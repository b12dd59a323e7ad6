"""The two slot hand-offs between threads, each with its drop policy stated once.

:class:`FrameSlots` carries preprocessed frames from the capture threads to an inference
thread: one slot per camera, drop-oldest for live sources or wait for lossless ones, and the
frame captured longest ago is served first so no camera starves.

:class:`Newest` is "newest wins" for everything that only ever wants the latest value of a key
(the MQTT publisher's snapshot job, the preview's latest result and latest JPEG per camera): a
put replaces the value without ever waiting, every value carries a version, and a consumer
waits for a version above the one it has seen, so values put in between are skipped, never
queued.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from edge.frame import Frame
from edge.preprocess import Transform

K = TypeVar("K")
V = TypeVar("V")


# The tensor of a job whose outputs came with the frame (``Frame.sensor``): nothing to invoke.
NO_TENSOR = np.empty(0, np.uint8)


@dataclass(frozen=True, slots=True)
class Job:
    """A captured frame already preprocessed into a model-input tensor on its capture thread.

    preprocess_ms: time spent filling ``tensor`` (perf_counter milliseconds).
    A frame that carries its outputs (``frame.sensor``) comes with :data:`NO_TENSOR` and the
    sensor's transform.
    """

    frame: Frame
    tensor: np.ndarray
    transform: Transform
    preprocess_ms: float


class FrameSlots:
    """One slot per camera; ``put`` replaces an unconsumed job (drop-oldest), ``take``
    returns the one captured longest ago across the cameras, so none starves."""

    def __init__(self) -> None:
        self._slots: dict[str, Job] = {}
        self._taken = 0
        self._cond = threading.Condition()
        self._closed = False

    def put(self, camera: str, job: Job, wait: bool = False) -> Job | None:
        """Store ``job``; returns the job it replaced, which was never taken (dropped).

        wait: block until the previous frame was taken instead (lossless sources: files read
        faster than real time and unpaced synthetic frames, where dropping would only waste
        the work of making the frame). Once closed (also while waiting), nothing is stored.
        """
        with self._cond:
            if wait:
                while camera in self._slots and not self._closed:
                    self._cond.wait()
            if self._closed:
                return None
            old = self._slots.get(camera)
            self._slots[camera] = job
            self._cond.notify_all()
            return old

    def take(self, timeout: float) -> Job | None:
        """The oldest waiting frame, or None after ``timeout`` seconds or when closed and
        empty (a job stored before ``close`` is still handed out)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._slots and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if not self._slots:
                return None
            camera = min(self._slots, key=lambda c: self._slots[c].frame.ts_mono)
            self._taken += 1
            self._cond.notify_all()  # a lossless producer may be waiting for the slot
            return self._slots.pop(camera)

    def done(self) -> None:
        """The consumer finished with the frame it took last."""
        with self._cond:
            self._taken -= 1

    def close(self) -> None:
        """No more frames: wake every waiting ``put`` and ``take``; later puts store nothing."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def idle(self) -> bool:
        """No frame waiting and none taken but not yet done."""
        with self._cond:
            return not self._slots and self._taken == 0


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """A value in a :class:`Newest` and its version: 1 for the key's first value, +1 per put."""

    version: int
    value: V


class Newest(Generic[K, V]):
    """Newest wins, per key: ``put`` replaces the key's value and never blocks; readers see
    only the newest. Any number of consumers, each keeping the versions it has seen (a mapping
    key -> version, absent = nothing seen); values put between two looks are never seen.
    Every method is thread-safe. The newest value stays referenced until replaced."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entries: dict[K, Entry[V]] = {}
        self._closed = False

    def put(self, key: K, value: V) -> int:
        """Make ``value`` the newest of ``key``; returns its version. Ignored once closed (0)."""
        with self._cond:
            if self._closed:
                return 0
            prev = self._entries.get(key)
            entry = Entry(prev.version + 1 if prev is not None else 1, value)
            self._entries[key] = entry
            self._cond.notify_all()
            return entry.version

    def get(self, key: K) -> Entry[V] | None:
        with self._cond:
            return self._entries.get(key)

    def entries(self) -> dict[K, Entry[V]]:
        """The newest entry of every key, in the order the keys first appeared."""
        with self._cond:
            return dict(self._entries)

    def wait(
        self,
        seen: Mapping[K, int],
        timeout: float | None,
        keys: Collection[K] | None = None,
    ) -> dict[K, Entry[V]]:
        """Block until some key (of ``keys``, if given) has a version above ``seen``; returns
        every such entry. Empty after ``timeout`` seconds (None = no limit) or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                found = {
                    k: e
                    for k, e in self._entries.items()
                    if e.version > seen.get(k, 0) and (keys is None or k in keys)
                }
                if found:
                    return found
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return {}
                self._cond.wait(left)
            return {}

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiting consumer; waits return empty and puts are ignored from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
