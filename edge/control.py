"""The control plane: ``<prefix>/<device>/<camera>/detect/set`` turns a camera's inference
off (``OFF``) and on (``ON``, either in any case); ``.../detect/state`` (retained) says which
it is, published at start and on every change.

While a camera is off its source keeps running (a camera restarted later would need seconds to
settle) and its capture thread skips every frame before preprocessing, counted as
``skipped_paused``; results stop within one frame period (what is already in inference
finishes), and its tracks end. Anything else on a ``detect/set`` topic (an unknown camera, an
unknown payload) is logged once per (camera, payload) as a WARNING and ignored. Who may send
commands is the broker's ACL to decide.

The switch survives reloads (the daemon keeps it) and restarts: the cameras switched off are
kept in ``detect.json`` in the state directory, written by the main thread after a change and
at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from edge.sinks import Sink
from edge.topics import DeviceTopics

log = logging.getLogger(__name__)

STATE_FILE = "detect.json"
_WARNED_MAX = 100  # distinct bad commands remembered (logged once each); then no more warnings


class DetectControl:
    """Which cameras have detection switched off. ``paused`` and ``is_paused``: any thread
    (``paused`` is replaced, never mutated); ``on_command``: paho's thread; the rest: the main
    thread."""

    def __init__(self, topics: DeviceTopics, state_dir: Path | None) -> None:
        self.topics = topics
        self.path = state_dir / STATE_FILE if state_dir is not None else None
        self.paused: frozenset[str] = self._load()
        self.cameras: frozenset[str] = frozenset()
        self.sink: Sink | None = None
        self.changes = 0  # bumped on every accepted change, for the main thread to notice
        self._saved = 0
        self._warned: set[tuple[str, str]] = set()

    @property
    def command_filter(self) -> str:
        """The subscription that receives every camera's commands."""
        return self.topics.detect_set("+")

    def is_paused(self, camera: str) -> bool:
        return camera in self.paused

    def attach(self, sink: Sink, cameras: Iterable[str]) -> None:
        """Use ``sink`` (a new one, or after a reload) for ``cameras``: publish each camera's
        state, clear the retained state of cameras no longer configured and forget them."""
        names = frozenset(cameras)
        for gone in self.cameras - names:
            sink.retain(self.topics.detect_state(gone), b"")
        if self.paused - names:
            self.paused = self.paused & names
            self.changes += 1
        self.cameras = names
        self.sink = sink
        for name in sorted(names):
            sink.retain(self.topics.detect_state(name), self._state(name))

    def on_command(self, topic: str, payload: bytes) -> None:
        """One message on a ``detect/set`` topic (see the module docstring)."""
        camera = topic[len(self.topics.base) + 1 :].split("/", 1)[0]
        text = payload.decode("utf-8", "replace").strip()
        command = text.upper()
        if camera not in self.cameras or command not in ("ON", "OFF"):
            key = (camera, text[:40])
            if key not in self._warned and len(self._warned) < _WARNED_MAX:
                self._warned.add(key)
                why = "no such camera" if camera not in self.cameras else "not ON or OFF"
                log.warning("ignored %r on %s: %s", text[:40], topic, why)
            return
        off = command == "OFF"
        if off != (camera in self.paused):
            self.paused = self.paused | {camera} if off else self.paused - {camera}
            self.changes += 1
            log.info("detection on camera %s switched %s", camera, command)
        sink = self.sink
        if sink is not None:
            sink.retain(self.topics.detect_state(camera), self._state(camera))

    def save(self) -> None:
        """Write the switched-off cameras if they changed since the last save (main thread);
        a failure is logged and tried again after the next change."""
        changes = self.changes
        if changes == self._saved or self.path is None:
            return
        self._saved = changes
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"off": sorted(self.paused)}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot keep the detection switches in %s: %s", self.path, exc)

    def _state(self, camera: str) -> bytes:
        return b"OFF" if camera in self.paused else b"ON"

    def _load(self) -> frozenset[str]:
        if self.path is None or not self.path.exists():
            return frozenset()
        try:
            off = json.loads(self.path.read_text())["off"]
            names = frozenset(str(n) for n in off)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignored %s (%s): detection is on for every camera", self.path, exc)
            return frozenset()
        if names:
            log.info("detection stays off on %s (switched off before)", ", ".join(sorted(names)))
        return names
