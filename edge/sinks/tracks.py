"""Tracking in the daemon: a result listener that runs each tracked camera's
:class:`~edge.tracking.Tracker` and :class:`~edge.trackevents.TrackEvents` on the result thread
and hands what they produce to the sink: every event (``<camera>/events``, durable, in order)
and the camera's state (``<camera>/state``, retained) when it changes.

Which cameras are tracked, with which zones, is worked out once per configuration by
:func:`plan` (the preflight runs it, so ``edge check-config`` refuses what ``edge run`` would).
The listener lives as long as the daemon: a reload hands it the new plan, a camera whose
tracking did not change keeps its tracks, a removed or changed one ends them. Numbering: each
camera's events carry a ``seq`` of their own, from 1 per ``boot_id``, continued across reloads
like results'; a camera's track ids are never reused within a ``boot_id`` either.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.config import Config, TrackingSettings
from edge.engine import Engine
from edge.errors import ConfigError
from edge.labels import is_background
from edge.output import ResultEvent
from edge.sinks import Sink
from edge.trackevents import ZONES_KEY, Overlay, TrackEvents
from edge.tracking import Tracker
from edge.zones import Zone, build_zones

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrackedCamera:
    """One tracked camera as configured: its zones, and the labels its state lists from the
    start (the model's reportable labels, in model order)."""

    name: str
    zones: tuple[Zone, ...]
    labels: tuple[str, ...]
    settings: TrackingSettings


def model_labels(engine: Engine) -> tuple[str, ...]:
    """The labels ``engine`` can report, in class order: background classes and those the
    labels filter leaves out are not among them."""
    post = engine.postprocessor
    if post.classes is not None:
        names: Iterable[str] = (post.label(c) for c in range(post.classes))
    else:
        names = (post.names[k] for k in sorted(post.names))
    allow = post.config.allow
    return tuple(
        dict.fromkeys(n for n in names if not is_background(n) and (not allow or n in allow))
    )


def plan(config: Config, engines: Mapping[str, Engine]) -> dict[str, TrackedCamera]:
    """The tracked cameras of ``config`` (``engines``: one per model reference, loaded).
    Raises ConfigError listing every problem: bad zones (with their paths), tracking asked for
    a model that does not detect, zones on an untracked camera, a label named ``zones``."""
    problems: list[str] = []
    out: dict[str, TrackedCamera] = {}
    enabled = config.tracking.enabled
    for i, cam in enumerate(config.cameras):
        engine = engines[config.camera_model(cam)]
        detects = engine.task == "detection"
        try:
            zones = build_zones(cam.zones, path=f"cameras[{i}].zones")
        except ConfigError as exc:
            problems.extend(exc.problems)
            zones = ()
        if enabled and not detects:
            problems.append(
                f"tracking.enabled: camera {cam.name!r} runs {engine.name}, a {engine.task} "
                "model: only detections can be tracked; leave tracking.enabled unset (on for "
                "detection models only) or give the camera a detection model"
            )
            continue
        if enabled is False or not detects:
            if cam.zones:
                why = "tracking.enabled is false" if detects else f"{engine.name} does not detect"
                problems.append(
                    f"cameras[{i}].zones: zones need tracking, and {why}; remove the zones "
                    "or turn tracking on"
                )
            continue
        labels = model_labels(engine)
        if ZONES_KEY in labels:
            problems.append(
                f"cameras[{i}]: {engine.name} has a label named {ZONES_KEY!r}, which the "
                "state cannot count beside its zone counts; rename it in the model's labels "
                "file, or leave it out with [model] labels"
            )
            continue
        out[cam.name] = TrackedCamera(cam.name, zones, labels, config.tracking)
    if problems:
        raise ConfigError(problems, source=config.source or None)
    return out


class _Camera:
    """One tracked camera's tracker, events and overlay; ``lock`` serialises the result thread
    and the main thread (a pause, a reload, the shutdown ending its tracks)."""

    def __init__(self, spec: TrackedCamera, events: TrackEvents, first_id: int) -> None:
        self.spec = spec
        self.tracker = Tracker(spec.settings, first_id)
        self.events = events
        self.lock = threading.Lock()
        self.overlay = Overlay(spec.zones, ())


class TrackListener:
    """The result listener of tracking (see the module docstring). ``on_result``: result
    threads (one per model, each with its own cameras); everything else: the main thread,
    while no pipeline runs or, for :meth:`end`, at any time."""

    def __init__(self, sink: Sink, device: str, boot_id: str) -> None:
        self.sink = sink
        self.device = device
        self.boot_id = boot_id
        self._cameras: dict[str, _Camera] = {}
        self._seq: dict[str, int] = {}
        self._next_id: dict[str, int] = {}
        self.events_sent = 0

    def configure(self, cameras: Mapping[str, TrackedCamera]) -> None:
        """Track ``cameras`` from now on: a camera no longer tracked, or tracked differently,
        ends its tracks (``end`` events); one unchanged keeps them. A camera new to tracking
        publishes its (empty) state at once."""
        for name, cam in list(self._cameras.items()):
            if cameras.get(name) != cam.spec:
                self.end(name)
                del self._cameras[name]
        for name, spec in cameras.items():
            if name in self._cameras:
                continue
            events = TrackEvents(
                name,
                self.device,
                spec.zones,
                spec.settings,
                labels=spec.labels,
                stamp=self._stamper(name),
            )
            cam = _Camera(spec, events, self._next_id.get(name, 1))
            self._cameras[name] = cam
            self._state(cam)

    def publish_states(self) -> None:
        """Hand the sink every camera's current state (a new sink starts with none; the
        sink skips values it already holds)."""
        for cam in self._cameras.values():
            self._state(cam)

    def tracked(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def on_result(self, event: ResultEvent) -> None:
        cam = self._cameras.get(event.camera)
        if cam is None:
            return
        frame = event.frame
        with cam.lock:
            update = cam.tracker.update(event.result.detections, frame.ts_mono, frame.index)
            self._send(cam, cam.events.step(update, frame.ts_wall))
            cam.overlay = Overlay(cam.spec.zones, update.tracks)

    def overlay(self, camera: str) -> Overlay | None:
        """What to draw on ``camera``'s latest frame: its zones and tracks (None: untracked)."""
        cam = self._cameras.get(camera)
        return cam.overlay if cam is not None else None

    def end(self, camera: str) -> None:
        """End every track of ``camera`` now (detection paused, the camera removed or
        stopping): ``end`` events, and the state counted down to nothing."""
        cam = self._cameras.get(camera)
        if cam is None:
            return
        with cam.lock:
            now = time.monotonic()
            ended = cam.tracker.close(now)
            self._next_id[camera] = cam.tracker.next_id
            self._send(cam, cam.events.close(ended, now, time.time()))
            cam.overlay = Overlay(cam.spec.zones, ())

    def close(self) -> None:
        """End every camera's tracks (the daemon is stopping: before the sink closes)."""
        for name in self._cameras:
            self.end(name)

    def last_seq(self) -> dict[str, int]:
        """Camera name -> the seq of its last event."""
        return dict(self._seq)

    def _stamper(self, camera: str) -> Any:
        def stamp(event: dict[str, Any]) -> dict[str, Any]:
            seq = self._seq[camera] = self._seq.get(camera, 0) + 1
            event["seq"] = seq
            event["boot_id"] = self.boot_id
            return event

        return stamp

    def _send(self, cam: _Camera, events: list[dict[str, Any]]) -> None:
        name = cam.spec.name
        for e in events:
            self.sink.publish_event(name, json.dumps(e, separators=(",", ":")).encode())
        self.events_sent += len(events)
        if cam.events.state.changed():
            self._state(cam)

    def _state(self, cam: _Camera) -> None:
        state = cam.events.state.to_dict()
        self.sink.publish_state(cam.spec.name, json.dumps(state, separators=(",", ":")).encode())
