"""Home Assistant discovery in the daemon: the device as discovery describes it, worked out
from a configuration, and the publishing of its messages through the sink's latest-value
topics (so every reconnect sends them again), with removals for what a reload dropped and a
re-publish, after a random delay, when Home Assistant announces itself (``online`` on
``<discovery_prefix>/status``). :mod:`edge.homeassistant` is imported only once discovery is
on (a daemon without it does not pay for the import at start).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge.config import Config, HomeAssistantSettings
from edge.engine import Engine
from edge.sinks import Sink
from edge.sinks.tracks import TrackedCamera, model_labels

if TYPE_CHECKING:
    from edge.homeassistant import DeviceSpec, DiscoveryMessage

log = logging.getLogger(__name__)


def device_spec(
    config: Config, engines: Mapping[str, Engine], tracked: Mapping[str, TrackedCamera]
) -> DeviceSpec:
    """The device of ``config``: per camera its exposed labels and zones when it is tracked
    (an untracked camera has no counts nor events, only its snapshot, switch and diagnostics); the
    device's model is the names of the models in use."""
    from edge.homeassistant import CameraSpec, DeviceSpec, exposed_labels

    cameras = []
    for cam in config.cameras:
        t = tracked.get(cam.name)
        engine = engines[config.camera_model(cam)]
        labels = exposed_labels(config.homeassistant, model_labels(engine)) if t else ()
        zones = tuple(z.name for z in t.zones) if t else ()
        cameras.append(CameraSpec(cam.name, labels, zones, tracked=t is not None))
    model = ", ".join(sorted({e.name for e in engines.values()}))
    return DeviceSpec(config.device, tuple(cameras), prefix=config.mqtt.prefix, model=model)


class Discovery:
    """What discovery the daemon has published. ``publish``, ``tick``: the main thread;
    ``on_birth``: paho's thread."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.settings: HomeAssistantSettings | None = None  # None: nothing published
        self.spec: DeviceSpec | None = None
        self.published = 0  # discovery messages handed to the sink
        self._rng = rng or random.Random()
        self._due: float | None = None  # monotonic time of a re-publish after a birth

    def publish(self, sink: Sink, settings: HomeAssistantSettings, spec: DeviceSpec | None) -> None:
        """Publish discovery for ``spec`` (None, or ``settings`` not enabled: remove what was
        published), removing the entities the previous one had and this one has not. Raises
        ConfigError on an id clash (the preflight has refused those already)."""
        old_settings, old = self.settings, self.spec
        off = not settings.enabled or spec is None
        if off and (old_settings is None or old is None):
            self.settings = self.spec = None
            return  # nothing published, nothing to publish (nor anything imported)
        from edge.homeassistant import discovery_messages, removal_messages

        if off:
            assert old_settings is not None and old is not None
            self._send(sink, removal_messages(old_settings, old), force=False)
            log.info("Home Assistant discovery removed")
            self.settings = self.spec = None
            return
        assert spec is not None
        if old_settings is not None and old is not None and old_settings != settings:
            self._send(sink, removal_messages(old_settings, old), force=False)
            old = None
        self._send(sink, discovery_messages(settings, spec, old), force=False)
        self.settings, self.spec = settings, spec

    def on_birth(self, _topic: str, payload: bytes) -> None:
        """Home Assistant's status message: ``online`` schedules a re-publish."""
        settings = self.settings
        if settings is not None and payload.strip() == b"online":
            from edge.homeassistant import republish_delay_s

            self._due = time.monotonic() + republish_delay_s(settings, self._rng)

    def tick(self, sink: Sink, now: float) -> None:
        """Re-publish when a birth message asked for it and its delay is up."""
        due = self._due
        if due is None or now < due or self.settings is None or self.spec is None:
            return
        from edge.homeassistant import discovery_messages

        self._due = None
        self._send(sink, discovery_messages(self.settings, self.spec), force=True)
        log.info("Home Assistant came online: discovery published again")

    def _send(self, sink: Sink, messages: list[DiscoveryMessage], force: bool) -> None:
        for m in messages:
            sink.retain(m.topic, m.payload, force=force)
        self.published += len(messages)
