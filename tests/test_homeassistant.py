"""Discovery messages checked against Home Assistant's documented schema (both forms), the ids'
stability and uniqueness, removals between two configurations, the settings, and the topics
the MQTT sink really publishes. tests/test_homeassistant_live.py runs them in Home Assistant.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, Subscriber

from edge.config import HomeAssistantSettings
from edge.errors import ConfigError
from edge.homeassistant import (
    EVENT_TYPES,
    CameraSpec,
    DeviceSpec,
    DiscoveryMessage,
    device_topic,
    discovery_messages,
    exposed_labels,
    node_id,
    removal_messages,
    republish_delay_s,
)
from edge.outbox import Outbox
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings

SETTINGS = HomeAssistantSettings(enabled=True, labels=("person", "car"))
DEVICE_FORM = HomeAssistantSettings(enabled=True, labels=("person", "car"), discovery="device")
SPEC = DeviceSpec(
    "porch-pi",
    (CameraSpec("porch", ("person", "car"), ("driveway", "path")), CameraSpec("garage", ("car",))),
)
# Home Assistant's discovery topic rule (its TOPIC_MATCHER) and required options per platform.
TOPIC = re.compile(
    r"^homeassistant/(?P<platform>\w+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config$"
)
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "image": {"image_topic"},
    "event": {"state_topic", "event_types"},
    "switch": {"command_topic"},
}


def configs(messages: list[DiscoveryMessage]) -> dict[str, dict[str, Any]]:
    return {m.topic: json.loads(m.payload) for m in messages if m.payload}


def test_every_component_config_has_what_home_assistant_requires() -> None:
    """Each per-entity config is on a valid discovery topic, retained, and carries its
    platform's required options, a unique id, a name, the device and the origin."""
    messages = discovery_messages(SETTINGS, SPEC)
    assert all(m.retain and m.payload for m in messages)
    for topic, config in configs(messages).items():
        match = TOPIC.match(topic)
        assert match is not None, topic
        assert match["node"] == "porch-pi"
        assert REQUIRED[match["platform"]] <= set(config), topic
        assert config["unique_id"] == f"edge:porch-pi:{match['object']}"
        assert config["name"] and config["qos"] == 1
        assert config["device"] == {
            "identifiers": ["edge:porch-pi"],
            "name": "porch-pi",
            "model": "edge",
            "manufacturer": "edge",
            "sw_version": SPEC.sw_version,
        }
        assert config["origin"]["name"] == "edge" and config["origin"]["sw_version"]


def test_an_untracked_camera_gets_no_event_entity() -> None:
    """A camera that publishes no track events (not tracked: a classifier, or tracking off)
    gets its snapshot, switch and diagnostics but no event entity, which would never fire."""
    spec = DeviceSpec("d", (CameraSpec("cam", tracked=False), CameraSpec("yard", ("car",))))
    platforms = sorted(topic.split("/")[1] for topic in configs(discovery_messages(SETTINGS, spec)))
    assert platforms.count("event") == 1
    events = [c for c in configs(discovery_messages(SETTINGS, spec)).values() if "event_types" in c]
    assert [e["unique_id"] for e in events] == ["edge:d:yard_objects"]
    assert platforms.count("image") == 2 and platforms.count("switch") == 2


def test_the_entities_are_the_ones_the_issue_lists() -> None:
    """Per camera and label an occupancy binary_sensor and a count sensor, the same per zone;
    per camera an image, an event with new/update/end, a switch and three diagnostics; two
    device diagnostics."""
    platforms: dict[str, int] = {}
    for topic in configs(discovery_messages(SETTINGS, SPEC)):
        platform = topic.split("/")[1]
        platforms[platform] = platforms.get(platform, 0) + 1
    # porch: 2 labels x (camera + 2 zones) = 6; garage: 1 label x 1 = 1.
    assert platforms == {
        "binary_sensor": 7,
        "sensor": 7 + 2 * 3 + 2,
        "image": 2,
        "event": 2,
        "switch": 2,
    }
    by_id = {c["unique_id"]: c for c in configs(discovery_messages(SETTINGS, SPEC)).values()}
    zone = by_id["edge:porch-pi:porch_zone_driveway_car_occupancy"]
    assert (
        zone["device_class"] == "occupancy" and zone["state_topic"] == "edge/porch-pi/porch/state"
    )
    event = by_id["edge:porch-pi:porch_objects"]
    assert event["event_types"] == list(EVENT_TYPES) == ["new", "update", "end"]
    assert event["state_topic"] == "edge/porch-pi/porch/events"
    switch = by_id["edge:porch-pi:porch_detection"]
    assert (switch["command_topic"], switch["state_topic"]) == (
        "edge/porch-pi/porch/detect/set",
        "edge/porch-pi/porch/detect/state",
    )
    assert by_id["edge:porch-pi:garage_snapshot"]["image_topic"] == "edge/porch-pi/garage/snapshot"
    diagnostics = [c for c in by_id.values() if c.get("entity_category") == "diagnostic"]
    assert {c["state_topic"] for c in diagnostics} == {"edge/porch-pi/stats"}
    assert {c["name"] for c in diagnostics} == {
        "porch fps", "porch inference p50", "porch delegate",
        "garage fps", "garage inference p50", "garage delegate",
        "CPU temperature", "outbox backlog",
    }  # fmt: skip


def test_availability_maps_everything_but_online_to_offline() -> None:
    """Every entity is available only while the status topic says ``online``: its template
    turns ``offline`` and ``stopped`` into the one payload_not_available."""
    for config in configs(discovery_messages(SETTINGS, SPEC)).values():
        assert config["availability"] == [
            {
                "topic": "edge/porch-pi/status",
                "payload_available": "online",
                "payload_not_available": "offline",
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
            }
        ]


def test_unique_ids_are_unique_and_stable() -> None:
    """No two entities share a unique id or a topic; the ids do not change between builds or
    when a camera is added."""
    ids = [c["unique_id"] for c in configs(discovery_messages(SETTINGS, SPEC)).values()]
    assert len(ids) == len(set(ids)) == len(discovery_messages(SETTINGS, SPEC))
    more = DeviceSpec(SPEC.device, (*SPEC.cameras, CameraSpec("yard", ("person",))))
    again = [c["unique_id"] for c in configs(discovery_messages(SETTINGS, more)).values()]
    assert set(ids) < set(again)
    assert ids == [c["unique_id"] for c in configs(discovery_messages(SETTINGS, SPEC)).values()]


def test_devices_whose_names_differ_only_in_dots_stay_apart() -> None:
    """``porch.pi`` and ``porch_pi`` get different node ids (a short hash marks the
    replacement), so neither device overwrites the other's configs."""
    assert node_id("porch_pi") == "porch_pi"
    dotted = node_id("porch.pi")
    assert re.fullmatch(r"porch_pi_[0-9a-f]{6}", dotted)
    a = discovery_messages(SETTINGS, DeviceSpec("porch.pi", SPEC.cameras))
    b = discovery_messages(SETTINGS, DeviceSpec("porch_pi", SPEC.cameras))
    assert not {m.topic for m in a} & {m.topic for m in b}
    assert not {c["unique_id"] for c in configs(a).values()} & {
        c["unique_id"] for c in configs(b).values()
    }


def test_labels_with_spaces_and_quotes_make_valid_ids_and_templates() -> None:
    """A label such as ``traffic light`` or one with quotes gets a topic-safe id, and its
    name appears in the template as a JSON-quoted (valid Jinja) literal."""
    spec = DeviceSpec("d", (CameraSpec("cam", ("traffic light", 'say "hi"')),))
    by_id = {c["unique_id"]: c for c in configs(discovery_messages(SETTINGS, spec)).values()}
    light = by_id["edge:d:cam_traffic_light_count"]
    assert light["value_template"] == '{{ value_json.get("traffic light", 0) }}'
    quoted = by_id["edge:d:cam_say__hi__occupancy"]
    assert '"say \\"hi\\""' in quoted["value_template"]
    for m in discovery_messages(SETTINGS, spec):
        assert TOPIC.match(m.topic), m.topic


def test_two_entities_that_would_share_an_id_are_refused() -> None:
    """Labels ``traffic light`` and ``traffic_light`` on one camera would share ids: a
    ConfigError names both instead of one silently replacing the other."""
    spec = DeviceSpec("d", (CameraSpec("cam", ("traffic light", "traffic_light")),))
    with pytest.raises(ConfigError, match="'cam traffic_light' and 'cam traffic light'"):
        discovery_messages(SETTINGS, spec)


def test_a_reload_removes_exactly_the_dropped_zone_and_camera() -> None:
    """Between two configurations, the removals are empty retained payloads on the configs of
    the dropped zone, label and camera, published before the new configs; nothing is removed
    when nothing changed; without a new configuration everything is removed."""
    smaller = DeviceSpec(SPEC.device, (CameraSpec("porch", ("person",), ("driveway",)),))
    messages = discovery_messages(SETTINGS, smaller, previous=SPEC)
    removed = [m for m in messages if not m.payload]
    assert messages[: len(removed)] == removed and all(m.retain for m in removed)
    old = {m.topic for m in discovery_messages(SETTINGS, SPEC)}
    new = {m.topic for m in discovery_messages(SETTINGS, smaller)}
    assert {m.topic for m in removed} == old - new
    assert any("/porch_zone_path_person_" in t for t in old - new)
    assert any("/porch_car_count/" in t for t in old - new)
    assert any("/garage_" in t for t in old - new)
    assert not [m for m in discovery_messages(SETTINGS, SPEC, previous=SPEC) if not m.payload]
    everything = removal_messages(SETTINGS, SPEC)
    assert {m.topic for m in everything} == old and not any(m.payload for m in everything)


def test_device_form_is_one_message_with_every_component() -> None:
    """The device form publishes one config on ``homeassistant/device/<node>/config`` with
    device, origin (required there), shared availability and every entity as a component
    with its platform and unique id, keyed by the same object ids as the component form."""
    (message,) = discovery_messages(DEVICE_FORM, SPEC)
    assert (
        message.topic == device_topic(DEVICE_FORM, SPEC) == "homeassistant/device/porch-pi/config"
    )
    payload = json.loads(message.payload)
    assert payload["origin"]["name"] == "edge" and payload["device"]["identifiers"]
    assert payload["availability"][0]["topic"] == "edge/porch-pi/status"
    components = payload["components"]
    per_component = configs(discovery_messages(SETTINGS, SPEC))
    assert len(components) == len(per_component)
    for topic, config in per_component.items():
        match = TOPIC.match(topic)
        assert match is not None
        component = components[match["object"]]
        assert component["platform"] == match["platform"]
        assert component["unique_id"] == config["unique_id"]
        assert REQUIRED[component["platform"]] <= set(component)


def test_device_form_removes_components_as_bare_platforms_and_the_device_with_empty() -> None:
    """A reload lists each removed entity as a component with only its platform; retiring the
    device is one empty retained payload on the device topic."""
    smaller = DeviceSpec(SPEC.device, (CameraSpec("porch", ("person", "car")),))
    (message,) = discovery_messages(DEVICE_FORM, smaller, previous=SPEC)
    components = json.loads(message.payload)["components"]
    bare = {k: v for k, v in components.items() if set(v) == {"platform"}}
    assert "porch_zone_driveway_car_occupancy" in bare and "garage_snapshot" in bare
    assert bare["garage_snapshot"] == {"platform": "image"}
    assert len(components) - len(bare) == len(discovery_messages(SETTINGS, smaller))
    assert removal_messages(DEVICE_FORM, SPEC, keep=smaller) == []
    assert removal_messages(DEVICE_FORM, SPEC) == [
        DiscoveryMessage("homeassistant/device/porch-pi/config", b"")
    ]


def test_settings_report_every_problem_and_derive_the_rest() -> None:
    """Invalid settings raise one ConfigError listing each problem; the birth topic follows
    the prefix, the re-publish delay stays within its bound, and unset labels mean the
    model's own."""
    with pytest.raises(ConfigError) as err:
        HomeAssistantSettings(
            discovery_prefix="ha/+",
            labels=("car", "car"),
            discovery="x",  # type: ignore[arg-type]
            birth_delay_max_s=-1,
        )
    assert [p.split(":")[0] for p in err.value.problems] == [
        "homeassistant.discovery_prefix",
        "homeassistant.labels",
        "homeassistant.discovery",
        "homeassistant.birth_delay_max_s",
    ]
    settings = HomeAssistantSettings(discovery_prefix="ha/main", birth_delay_max_s=2.0)
    assert settings.birth_topic == "ha/main/status"
    assert not settings.enabled and settings.discovery == "component"
    rng = random.Random(1)
    delays = [republish_delay_s(settings, rng) for _ in range(200)]
    assert 0 <= min(delays) < 0.2 and 1.8 < max(delays) <= 2.0
    assert exposed_labels(settings, ["circle", "", "square", "circle"]) == ("circle", "square")
    assert exposed_labels(SETTINGS, ["circle"]) == ("person", "car")
    m = discovery_messages(settings, SPEC)[0]
    assert m.topic.startswith("ha/main/binary_sensor/porch-pi/")


def test_discovery_points_at_the_topics_the_sink_publishes(broker: Broker, tmp_path: Path) -> None:
    """The status, stats and snapshot topics in the discovery configs are the ones a real
    MqttSink publishes for the same device and prefix."""
    mqtt = MqttSettings(device="porch-pi", host=broker.host, port=broker.port, prefix="site/a")
    spec = DeviceSpec("porch-pi", (CameraSpec("porch", ("person",)),), prefix="site/a")
    assert spec.topics.base == mqtt.base_topic
    sub = Subscriber(broker, "site/a/#")
    sink = MqttSink(mqtt, Outbox(None, mqtt.outbox_max_rows))
    sink.start()
    try:
        assert sub.wait_until(lambda ms: any(m.payload == b"online" for m in ms), 10)
        sink.publish_stats(b"{}")
        sink.publish_snapshot("porch", b"\xff\xd8\xff\xd9")
        assert sub.wait_until(lambda ms: len({m.topic for m in ms}) >= 3, 10)
    finally:
        sink.close()
        sub.close()
    published = {m.topic for m in sub.messages}
    by_id = {c["unique_id"]: c for c in configs(discovery_messages(SETTINGS, spec)).values()}
    assert by_id["edge:porch-pi:porch_snapshot"]["image_topic"] in published
    assert by_id["edge:porch-pi:porch_fps"]["state_topic"] in published
    assert by_id["edge:porch-pi:porch_fps"]["availability"][0]["topic"] in published
    assert {spec.topics.status, spec.topics.stats, spec.topics.snapshot("porch")} <= published
