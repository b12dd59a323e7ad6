"""Home Assistant MQTT discovery: pure functions that turn one device's cameras, zones and
exposed labels into the messages (topic, payload, retain) from which Home Assistant builds one
device with its entities, and into the empty retained payloads that remove the entities a new
configuration no longer has. Nothing here does I/O: a sink publishes what these return.

Two forms, chosen by ``[homeassistant] discovery``:

- ``component`` (default): one retained config per entity on
  ``<discovery_prefix>/<platform>/<node_id>/<object_id>/config``. Home Assistant reads it since
  2023.8 (the ``event`` platform); the tests run it against a real Home Assistant 2024.3.
- ``device``: one retained config on ``<discovery_prefix>/device/<node_id>/config`` whose
  ``components`` map holds every entity; Home Assistant 2024.11 and later. A removed entity is
  sent as a component with only its ``platform``. It uses the same node and object ids as the
  component form, so Home Assistant's ``migrate_discovery`` can move entities from one form
  to the other without recreating them. Checked against the documented schema only.

Availability: Home Assistant compares an availability payload (after its ``value_template``)
with one ``payload_available`` and one ``payload_not_available`` and ignores any other payload,
leaving the entity as it was. A plain availability on the status topic would therefore keep
entities available after ``stopped``; the template maps every payload but ``online`` to
``offline``, so ``offline`` (Last Will) and ``stopped`` (clean shutdown) both mean unavailable.

Ids: ``node_id`` is the device name with characters Home Assistant refuses in topic ids
(``.``) replaced by ``_`` and, when anything was replaced, 6 hex digits of its SHA-256 appended
(``porch.pi`` and ``porch_pi`` stay apart). Object ids join camera, zone and label the same way
without the hash; two entities of one device that would share an id raise ConfigError.
``unique_id`` is ``edge:<node_id>:<object_id>``: stable across restarts and reloads, and
unique across devices because device names are.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge import __version__
from edge.config import HomeAssistantSettings
from edge.errors import ConfigError
from edge.topics import DeviceTopics

ORIGIN_NAME = "edge"
EVENT_TYPES = ("new", "update", "end")
# Home Assistant's discovery topic ids: [a-zA-Z0-9_-] (its TOPIC_MATCHER).
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")
_AVAILABLE = "{{ 'online' if value == 'online' else 'offline' }}"


def republish_delay_s(settings: HomeAssistantSettings, rng: random.Random) -> float:
    """Seconds to wait after a birth message before re-publishing: uniform in
    [0, ``birth_delay_max_s``], as Home Assistant recommends so devices do not answer at once."""
    return rng.uniform(0.0, settings.birth_delay_max_s)


def exposed_labels(settings: HomeAssistantSettings, model_labels: Iterable[str]) -> tuple[str, ...]:
    """The labels that get entities on a camera: the configured ones, else every distinct,
    non-empty label of its model in model order."""
    if settings.labels:
        return settings.labels
    return tuple(dict.fromkeys(x for x in model_labels if x.strip()))


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera as discovery describes it. labels: those with occupancy and count entities
    (see :func:`exposed_labels`); zones: zone names, each getting the same per label;
    tracked: whether it publishes track events (only then does it get the event entity)."""

    name: str
    labels: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    tracked: bool = True


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One edge device: ``device`` and ``prefix`` as in ``[mqtt]``; ``model`` is shown as the
    device's model in Home Assistant (e.g. the model names in use); ``sw_version`` defaults to
    edge's version."""

    device: str
    cameras: tuple[CameraSpec, ...]
    prefix: str = "edge"
    model: str = "edge"
    sw_version: str = __version__

    @property
    def topics(self) -> DeviceTopics:
        return DeviceTopics(f"{self.prefix}/{self.device}")


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One message to publish: ``payload`` is JSON, or empty to remove what ``topic`` held.
    Discovery is published with QoS 1."""

    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True, slots=True)
class _Entity:
    platform: str
    object_id: str
    config: dict[str, Any]


def node_id(device: str) -> str:
    """The device's id in discovery topics and unique ids (see the module docstring)."""
    clean = _NOT_ID.sub("_", device)
    if clean == device:
        return clean
    return f"{clean}_{hashlib.sha256(device.encode()).hexdigest()[:6]}"


def _id(*parts: str) -> str:
    return "_".join(_NOT_ID.sub("_", p) for p in parts)


def _lit(text: str) -> str:
    """``text`` as a Jinja string literal: JSON quoting is valid Jinja and escapes every quote."""
    return json.dumps(text)


def _count(label: str, zone: str | None) -> str:
    if zone is None:
        return f"value_json.get({_lit(label)}, 0)"
    return f"value_json.get('zones', {{}}).get({_lit(zone)}, {{}}).get({_lit(label)}, 0)"


def _entity(platform: str, object_id: str, **config: Any) -> _Entity:
    return _Entity(platform, object_id, config)


def _camera_entities(spec: DeviceSpec, cam: CameraSpec) -> list[_Entity]:
    t, c = spec.topics, cam.name
    out: list[_Entity] = []
    scopes: list[tuple[str | None, str, str]] = [(None, _id(c), c)]
    scopes += [(z, _id(c, "zone", z), f"{c} {z}") for z in cam.zones]
    for zone, oid, title in scopes:
        for label in cam.labels:
            count, lid = _count(label, zone), f"{oid}_{_id(label)}"
            out.append(
                _entity(
                    "binary_sensor",
                    f"{lid}_occupancy",
                    name=f"{title} {label}",
                    device_class="occupancy",
                    state_topic=t.state(c),
                    value_template=f"{{{{ 'ON' if {count} > 0 else 'OFF' }}}}",
                )
            )
            out.append(
                _entity(
                    "sensor",
                    f"{lid}_count",
                    name=f"{title} {label} count",
                    state_class="measurement",
                    state_topic=t.state(c),
                    value_template=f"{{{{ {count} }}}}",
                )
            )
    cam_stats = f"((value_json.get('cameras') or {{}}).get({_lit(c)}) or {{}})"
    invoke = f"(({cam_stats}.get('latency_ms') or {{}}).get('invoke') or {{}})"
    models = "(value_json.get('models') or {})"
    if cam.tracked:
        out.append(
            _entity(
                "event",
                _id(c, "objects"),
                name=f"{c} objects",
                state_topic=t.events(c),
                event_types=list(EVENT_TYPES),
                # Home Assistant wants the type in ``event_type``; the rest become attributes.
                value_template="{{ dict(value_json, event_type=value_json.type) | to_json }}",
            )
        )
    return [
        *out,
        _entity(
            "image",
            _id(c, "snapshot"),
            name=f"{c} snapshot",
            image_topic=t.snapshot(c),
            content_type="image/jpeg",
        ),
        _entity(
            "switch",
            _id(c, "detection"),
            name=f"{c} detection",
            command_topic=t.detect_set(c),
            state_topic=t.detect_state(c),
            payload_on="ON",
            payload_off="OFF",
            icon="mdi:motion-sensor",
        ),
        _diagnostic(t.stats, _id(c, "fps"), f"{c} fps", f"{cam_stats}.get('fps_out')", "fps"),
        _diagnostic(
            t.stats,
            _id(c, "inference_p50"),
            f"{c} inference p50",
            f"{invoke}.get('p50')",
            "ms",
            "duration",
        ),
        _diagnostic(
            t.stats,
            _id(c, "delegate"),
            f"{c} delegate",
            f"({models}.get({cam_stats}.get('model')) or {{}}).get('delegate')",
        ),
    ]


def _diagnostic(
    stats_topic: str,
    object_id: str,
    name: str,
    expression: str,
    unit: str | None = None,
    device_class: str | None = None,
) -> _Entity:
    """A sensor read from the stats topic. Numeric ones render ``None`` while the figure is
    missing (no samples yet, a camera being reloaded), which Home Assistant shows as unknown."""
    e = _entity(
        "sensor",
        object_id,
        name=name,
        entity_category="diagnostic",
        state_topic=stats_topic,
        value_template=f"{{{{ {expression} }}}}",
    )
    if unit is not None:
        e.config.update(unit_of_measurement=unit, state_class="measurement")
    if device_class is not None:
        e.config["device_class"] = device_class
    return e


def _entities(spec: DeviceSpec) -> list[_Entity]:
    """Every entity of the device, in a stable order; raises ConfigError when two would share
    an object id (e.g. labels ``traffic light`` and ``traffic_light`` on one camera)."""
    stats = spec.topics.stats
    out: list[_Entity] = []
    for cam in spec.cameras:
        out += _camera_entities(spec, cam)
    out += [
        _diagnostic(
            stats,
            "cpu_temperature",
            "CPU temperature",
            "value_json.get('cpu_temp_c')",
            unit="°C",
            device_class="temperature",
        ),
        _diagnostic(
            stats,
            "outbox_backlog",
            "outbox backlog",
            "(value_json.get('mqtt') or {}).get('pending_ram', 0)"
            " + (value_json.get('mqtt') or {}).get('pending_disk', 0)",
            unit="results",
        ),
    ]
    seen: dict[str, str] = {}
    for e in out:
        if (other := seen.setdefault(e.object_id, e.config["name"])) != e.config["name"]:
            raise ConfigError(
                f"homeassistant: {e.config['name']!r} and {other!r} would both have the id "
                f"{e.object_id!r}; rename a camera, zone or label"
            )
    return out


def _device(spec: DeviceSpec, settings: HomeAssistantSettings) -> dict[str, Any]:
    return {
        "identifiers": [f"edge:{node_id(spec.device)}"],
        "name": settings.device_name or spec.device,
        "model": spec.model,
        "manufacturer": "edge",
        "sw_version": spec.sw_version,
    }


def _origin(settings: HomeAssistantSettings) -> dict[str, Any]:
    origin = {"name": ORIGIN_NAME, "sw_version": __version__}
    if settings.support_url:
        origin["support_url"] = settings.support_url
    return origin


def _availability(spec: DeviceSpec) -> list[dict[str, str]]:
    avail = {"payload_available": "online", "payload_not_available": "offline"}
    return [{"topic": spec.topics.status, **avail, "value_template": _AVAILABLE}]


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _component_topic(settings: HomeAssistantSettings, spec: DeviceSpec, e: _Entity) -> str:
    return f"{settings.discovery_prefix}/{e.platform}/{node_id(spec.device)}/{e.object_id}/config"


def device_topic(settings: HomeAssistantSettings, spec: DeviceSpec) -> str:
    """The device-form config topic."""
    return f"{settings.discovery_prefix}/device/{node_id(spec.device)}/config"


def _unique_id(spec: DeviceSpec, e: _Entity) -> str:
    return f"edge:{node_id(spec.device)}:{e.object_id}"


def discovery_messages(
    settings: HomeAssistantSettings, spec: DeviceSpec, previous: DeviceSpec | None = None
) -> list[DiscoveryMessage]:
    """What to publish for ``spec`` in the configured form: in the component form the
    removals of what ``previous`` (the configuration before a reload) had and ``spec`` has
    not, then one config per entity; in the device form one config that also lists the
    removed entities as bare platforms. Raises ConfigError on an id clash."""
    entities = _entities(spec)
    old = _entities(previous) if previous is not None else []
    device, origin, availability = _device(spec, settings), _origin(settings), _availability(spec)
    if settings.discovery == "device":
        keep = {e.object_id for e in entities}
        components: dict[str, Any] = {
            e.object_id: {"platform": e.platform} for e in old if e.object_id not in keep
        }
        for e in entities:
            components[e.object_id] = {
                "platform": e.platform,
                "unique_id": _unique_id(spec, e),
                **e.config,
            }
        payload = {
            "device": device,
            "origin": origin,
            "availability": availability,
            "qos": 1,
            "components": components,
        }
        return [DiscoveryMessage(device_topic(settings, spec), _json(payload))]
    out: list[DiscoveryMessage] = []
    if previous is not None:
        out += removal_messages(settings, previous, keep=spec)
    for e in entities:
        payload = {
            "unique_id": _unique_id(spec, e),
            **e.config,
            "availability": availability,
            "qos": 1,
            "device": device,
            "origin": origin,
        }
        out.append(DiscoveryMessage(_component_topic(settings, spec, e), _json(payload)))
    return out


def removal_messages(
    settings: HomeAssistantSettings, spec: DeviceSpec, keep: DeviceSpec | None = None
) -> list[DiscoveryMessage]:
    """Empty retained payloads that remove ``spec``'s entities from Home Assistant (and the
    retained configs from the broker), except those ``keep`` still has: for a reload that
    dropped cameras, zones or labels, or with ``keep=None`` when discovery is turned off or
    the device retired. The device form removes the whole device with one message."""
    if settings.discovery == "device":
        if keep is not None:
            return []  # discovery_messages() lists the removed components itself
        return [DiscoveryMessage(device_topic(settings, spec), b"")]
    kept = {_component_topic(settings, keep, e) for e in _entities(keep)} if keep else set()
    topics = [_component_topic(settings, spec, e) for e in _entities(spec)]
    return [DiscoveryMessage(t, b"") for t in topics if t not in kept]
