"""edge's discovery messages against a real Home Assistant core (2024.3, from scripts/ha_venv)
and a real mosquitto: the entities appear on one device with the unique ids we sent, follow the
state, stats, snapshot and event topics, go unavailable on ``offline`` and ``stopped``, the
switch commands reach the broker, and a removal takes entities away. One Home Assistant serves
the module (about 10 s to start and set up).

Most tests publish the device's topics by hand: they need exact values the bundled detector
cannot produce (labels ``person`` and ``car``, two cars in a zone, a given event) or states the
daemon only passes through (``offline``). The last one runs the real daemon with
``[homeassistant] enabled``: its own discovery, state, events, switch, reloads and stop.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt
import pytest
from broker import Broker, Subscriber
from homeassistant_server import HomeAssistant
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import HomeAssistantSettings
from edge.homeassistant import (
    CameraSpec,
    DeviceSpec,
    DiscoveryMessage,
    discovery_messages,
)

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.homeassistant

SETTINGS = HomeAssistantSettings(enabled=True, labels=("person", "car"))
SPEC = DeviceSpec(
    "porch-pi",
    (
        CameraSpec("porch", ("person", "car"), ("driveway",)),
        CameraSpec("garage", ("person", "car")),
    ),
    model="shapes-detector 1.1.0",
)
TOPICS = SPEC.topics
# The stats payload's fields as the daemon publishes them (edge/pipeline.py, edge/sinks/mqtt.py).
STATS = {
    "device": "porch-pi",
    "cpu_temp_c": 51.2,
    "models": {"shapes-detector": {"delegate": "xnnpack", "runtime": "ai-edge-litert"}},
    "cameras": {
        "porch": {
            "model": "shapes-detector",
            "fps_out": 9.8,
            "latency_ms": {"invoke": {"p50": 4.2}},
        },
        "garage": {"model": "shapes-detector", "fps_out": 0.0, "latency_ms": {"invoke": {}}},
    },
    "mqtt": {"pending_ram": 3, "pending_disk": 40},
}


class Publisher:
    """A plain MQTT client that publishes and waits for each acknowledgement."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def discovery(self, messages: list[DiscoveryMessage]) -> None:
        for m in messages:
            self.send(m.topic, m.payload, m.retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HomeAssistant, Broker]]:
    """A mosquitto and a Home Assistant whose MQTT integration uses it, shared by the module."""
    if (why := HomeAssistant.missing()) is not None:
        pytest.fail(why)
    broker = Broker(tmp_path_factory.mktemp("ha-broker"))
    broker.start()
    hass = HomeAssistant(tmp_path_factory.mktemp("ha-config"), broker.host, broker.port)
    try:
        hass.start()
        print(f"Home Assistant up in {hass.start_s:.1f} s, set up in {hass.setup_s:.1f} s")
        yield hass, broker
    finally:
        hass.stop()
        broker.kill()


@pytest.fixture(scope="module")
def published(ha: tuple[HomeAssistant, Broker]) -> Iterator[tuple[HomeAssistant, Publisher]]:
    """SPEC's discovery, status ``online``, the state and the stats, all seen by Home Assistant."""
    hass, broker = ha
    pub = Publisher(broker, "test-publisher")
    messages = discovery_messages(SETTINGS, SPEC)
    pub.discovery(messages)
    pub.send(TOPICS.status, "online")
    pub.send(TOPICS.state("porch"), json.dumps({"person": 1, "zones": {"driveway": {"car": 2}}}))
    pub.send(TOPICS.state("garage"), json.dumps({}))
    pub.send(TOPICS.stats, json.dumps(STATS))
    pub.send(TOPICS.detect_state("porch"), "ON")
    hass.wait(lambda: len(hass.by_name()) >= len(messages), 20, "every discovered entity")
    hass.wait(lambda: state(hass, "porch-pi porch person") == "on", 10, "the porch state")
    try:
        yield hass, pub
    finally:
        pub.close()


def state(hass: HomeAssistant, name: str) -> str:
    entity = hass.by_name().get(name)
    return str(entity["state"]) if entity is not None else "<absent>"


def settle(hass: HomeAssistant, name: str, expected: str) -> None:
    hass.wait(lambda: state(hass, name) == expected, 10, f"{name!r} to become {expected!r}")


def test_every_entity_is_on_one_device_with_our_ids(
    published: tuple[HomeAssistant, Publisher],
) -> None:
    """Home Assistant registers one device with our identifiers, model and versions, and one
    entity per discovery message with the unique id we sent; its log has no complaint."""
    hass, _ = published
    devices, entities = hass.registry("config/device_registry/list", "config/entity_registry/list")
    ours = [d for d in devices if ["mqtt", "edge:porch-pi"] in d["identifiers"]]
    assert len(ours) == 1
    device = ours[0]
    assert (device["name"], device["model"], device["sw_version"]) == (
        "porch-pi",
        "shapes-detector 1.1.0",
        SPEC.sw_version,
    )
    sent = {json.loads(m.payload)["unique_id"] for m in discovery_messages(SETTINGS, SPEC)}
    registered = {e["unique_id"] for e in entities if e["device_id"] == device["id"]}
    assert registered == sent
    assert hass.log_problems() == []


def test_states_follow_the_state_and_stats_topics(
    published: tuple[HomeAssistant, Publisher],
) -> None:
    """Occupancy and counts per camera and zone come from the retained state topic, diagnostics
    from the stats topic; a figure the stats lack reads unknown; a new state is followed."""
    hass, pub = published
    expected = {
        "porch-pi porch person": "on",
        "porch-pi porch car": "off",
        "porch-pi porch person count": "1",
        "porch-pi porch car count": "0",
        "porch-pi porch driveway car": "on",
        "porch-pi porch driveway car count": "2",
        "porch-pi porch driveway person": "off",
        "porch-pi garage person count": "0",
        "porch-pi porch fps": "9.8",
        "porch-pi porch inference p50": "4.2",
        "porch-pi garage inference p50": "unknown",
        "porch-pi porch delegate": "xnnpack",
        "porch-pi CPU temperature": "51.2",
        "porch-pi outbox backlog": "43",
        "porch-pi porch detection": "on",
    }
    names = hass.by_name()
    assert {n: names[n]["state"] for n in expected} == expected
    assert names["porch-pi porch driveway car"]["attributes"]["device_class"] == "occupancy"
    assert names["porch-pi CPU temperature"]["attributes"]["unit_of_measurement"] == "°C"
    assert names["porch-pi porch inference p50"]["attributes"]["unit_of_measurement"] == "ms"
    pub.send(TOPICS.state("porch"), json.dumps({"car": 1, "zones": {}}))
    settle(hass, "porch-pi porch person", "off")
    assert state(hass, "porch-pi porch car count") == "1"
    assert state(hass, "porch-pi porch driveway car") == "off"
    assert hass.log_problems() == []


def test_offline_and_stopped_make_entities_unavailable(
    published: tuple[HomeAssistant, Publisher],
) -> None:
    """``offline`` (Last Will) and ``stopped`` (clean shutdown) both make every entity
    unavailable; ``online`` brings them back with their state."""
    hass, pub = published
    for status in ("stopped", "online", "offline", "online"):
        pub.send(TOPICS.status, status)
        want = "unavailable" if status != "online" else "1"
        settle(hass, "porch-pi porch car count", want)
        states = {n: s["state"] for n, s in hass.by_name().items() if n.startswith("porch-pi ")}
        assert (set(states.values()) == {"unavailable"}) == (status != "online"), states


def test_a_track_event_fires_the_event_entity(published: tuple[HomeAssistant, Publisher]) -> None:
    """An ``events`` message becomes the event entity's event with its type and attributes."""
    hass, pub = published
    event = {"type": "new", "id": 7, "label": "car", "score": 0.91, "zones": ["driveway"]}
    pub.send(TOPICS.events("porch"), json.dumps(event), retain=False)
    hass.wait(
        lambda: hass.by_name()["porch-pi porch objects"]["state"] not in ("unknown", "unavailable"),
        10,
        "the event",
    )
    attrs = hass.by_name()["porch-pi porch objects"]["attributes"]
    assert attrs["event_type"] == "new"
    assert attrs["event_types"] == ["new", "update", "end"]
    assert (attrs["id"], attrs["label"], attrs["zones"]) == (7, "car", ["driveway"])
    pub.send(TOPICS.events("porch"), json.dumps({**event, "type": "end"}), retain=False)
    hass.wait(
        lambda: hass.by_name()["porch-pi porch objects"]["attributes"]["event_type"] == "end",
        10,
        "the end event",
    )


def test_the_snapshot_is_the_image(published: tuple[HomeAssistant, Publisher]) -> None:
    """JPEG bytes on the snapshot topic are what Home Assistant serves for the image entity."""
    hass, pub = published
    frame = cv2.imread(str(Path(__file__).parent / "data" / "shapes" / "red_circle.png"))
    assert frame is not None
    ok, encoded = cv2.imencode(".jpg", frame)
    assert ok
    data = encoded.tobytes()
    pub.send(TOPICS.snapshot("porch"), data, retain=False)
    image = "porch-pi porch snapshot"
    hass.wait(lambda: state(hass, image) not in ("unknown", "unavailable"), 10, "the image")
    entity_id = hass.by_name()[image]["entity_id"]
    assert hass.call("GET", f"/api/image_proxy/{entity_id}", raw=True) == data


def test_the_switch_commands_detection(published: tuple[HomeAssistant, Publisher]) -> None:
    """Turning the switch off in Home Assistant publishes ``OFF`` on detect/set; the switch
    shows what detect/state says."""
    hass, pub = published
    sub = Subscriber(hass.broker, TOPICS.detect_set("porch"), client_id="test-ha-cmd")
    try:
        entity_id = hass.by_name()["porch-pi porch detection"]["entity_id"]
        hass.call("POST", "/api/services/switch/turn_off", {"entity_id": entity_id})
        assert sub.wait_for_count(1, 10)
        assert sub.payloads() == [b"OFF"]
        assert not sub.messages[0].retain
    finally:
        sub.close()
    pub.send(TOPICS.detect_state("porch"), "OFF")
    settle(hass, "porch-pi porch detection", "off")


def test_removed_zone_and_camera_disappear(published: tuple[HomeAssistant, Publisher]) -> None:
    """A reload without the zone and the garage camera sends empty configs that remove exactly
    their entities from Home Assistant, states and registry; the rest stay."""
    hass, pub = published
    smaller = DeviceSpec("porch-pi", (CameraSpec("porch", ("person", "car")),), model=SPEC.model)
    messages = discovery_messages(SETTINGS, smaller, previous=SPEC)
    removed = [m for m in messages if not m.payload]
    pub.discovery(messages)
    gone = ("porch-pi porch driveway car", "porch-pi garage person count", "porch-pi garage fps")
    hass.wait(lambda: not set(gone) & set(hass.by_name()), 10, "the removals")
    names = set(hass.by_name())
    kept = {json.loads(m.payload)["name"] for m in messages if m.payload}
    assert {f"porch-pi {k}" for k in kept} <= names
    _, entities = hass.registry("config/device_registry/list", "config/entity_registry/list")
    ids = {e["unique_id"] for e in entities if e["platform"] == "mqtt"}
    assert ids == {json.loads(m.payload)["unique_id"] for m in messages if m.payload}
    assert len(removed) == len(discovery_messages(SETTINGS, SPEC)) - len(kept)
    assert hass.log_problems() == []


def daemon_config(tmp: Path, broker: Broker, cameras: str, enabled: bool = True) -> Path:
    path = tmp / "config.toml"
    path.write_text(
        f'device = "edge-ha"\nstate_dir = "{tmp / "state"}"\n'
        '[model]\npath = "shapes-detector"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nstats_interval = 1\n'
        "snapshot = true\nsnapshot_interval = 0.5\n"
        f'[homeassistant]\nenabled = {str(enabled).lower()}\nlabels = ["circle", "square"]\n'
        "birth_delay_max_s = 0.5\n" + cameras
    )
    return path


def test_the_running_daemon_feeds_the_entities(
    ha: tuple[HomeAssistant, Broker], tmp_path: Path
) -> None:
    """The real daemon, with [homeassistant] enabled, publishes its own discovery, state,
    events and switch state: its entities appear on one device, the diagnostic sensors show
    its stats, counts follow its state, the image entity serves its snapshot, the switch
    turned off in Home Assistant pauses the camera, a reload that drops a camera removes
    exactly that camera's entities, one that turns discovery off removes the device's, and
    its clean stop makes every entity unavailable."""
    hass, broker = ha
    sub = Subscriber(broker, "edge/edge-ha/#", client_id="test-ha-daemon")
    cam = f'[[cameras]]\nname = "cam"\nsource = "{REPO / "samples" / "shapes.mp4"}"\n'
    cam += "loop = true\nrealtime = true\nfps = 30\n"
    cam += '[[cameras.zones]]\nname = "left"\npoints = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]\n'
    gate = '[[cameras]]\nname = "gate"\nsource = "synthetic"\nfps = 5\n'
    config = daemon_config(tmp_path, broker, cam + gate)
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )

    def daemon_log() -> str:
        return (tmp_path / "daemon.log").read_text(errors="replace")

    try:
        fps = "edge-ha cam fps"
        hass.wait(lambda: number(state(hass, fps)) > 0, 30, "a positive fps from the daemon")
        devices, entities = hass.registry(
            "config/device_registry/list", "config/entity_registry/list"
        )
        ours = [d for d in devices if ["mqtt", "edge:edge-ha"] in d["identifiers"]]
        assert len(ours) == 1 and ours[0]["model"] == "shapes-detector"
        mine = {e["unique_id"] for e in entities if e["device_id"] == ours[0]["id"]}
        assert "edge:edge-ha:cam_zone_left_circle_count" in mine
        assert "edge:edge-ha:gate_detection" in mine
        assert sub.wait_until(lambda ms: any(m.topic.endswith("/snapshot") for m in ms), 20)
        hass.wait(lambda: state(hass, "edge-ha cam snapshot") != "unknown", 10, "the snapshot")
        stats = json.loads(sub.payloads("/stats")[-1])
        names = hass.by_name()
        assert number(names["edge-ha cam inference p50"]["state"]) > 0
        assert (
            names["edge-ha cam delegate"]["state"] == stats["models"]["shapes-detector"]["delegate"]
        )
        assert number(names["edge-ha outbox backlog"]["state"]) >= 0
        temperature = names["edge-ha CPU temperature"]["state"]
        if stats["cpu_temp_c"] is None:  # no thermal zone on this machine
            assert temperature == "unknown"
        else:
            assert number(temperature) > 0
        entity_id = names["edge-ha cam snapshot"]["entity_id"]
        jpeg = hass.call("GET", f"/api/image_proxy/{entity_id}", raw=True)
        assert jpeg[:2] == b"\xff\xd8" and jpeg in sub.payloads("/snapshot")
        # Counts follow the daemon's own state topic.
        assert sub.wait_until(lambda ms: any(m.topic.endswith("cam/events") for m in ms), 20)
        last = json.loads(sub.payloads("cam/state")[-1])
        hass.wait(
            lambda: (
                state(hass, "edge-ha cam circle count")
                == str(json.loads(sub.payloads("cam/state")[-1])["circle"])
            ),
            10,
            f"the circle count of {last}",
        )
        # The switch: Home Assistant -> detect/set -> the daemon -> detect/state.
        switch = hass.by_name()["edge-ha gate detection"]["entity_id"]
        hass.call("POST", "/api/services/switch/turn_off", {"entity_id": switch})
        settle(hass, "edge-ha gate detection", "off")
        assert sub.wait_until(
            lambda ms: any(
                m.topic.endswith("/stats")
                and json.loads(m.payload)["cameras"]["gate"]["skipped_paused"] > 0
                for m in ms
            ),
            10,
        ), daemon_log()
        # A reload without the gate camera removes its entities, and only those.
        daemon_config(tmp_path, broker, cam)
        daemon.send_signal(signal.SIGHUP)
        hass.wait(
            lambda: not [n for n in hass.by_name() if n.startswith("edge-ha gate")],
            20,
            "the removal of every entity of the gate camera",
        )
        assert "edge-ha cam left circle count" in hass.by_name()
        # Turning discovery off removes the device's entities.
        daemon_config(tmp_path, broker, cam, enabled=False)
        daemon.send_signal(signal.SIGHUP)
        # One empty retained config per entity: Home Assistant removes them one by one.
        hass.wait(
            lambda: not [n for n in hass.by_name() if n.startswith("edge-ha ")],
            20,
            "the removal of every entity of the device",
        )
        # Back on, then the clean stop: every entity unavailable.
        daemon_config(tmp_path, broker, cam)
        daemon.send_signal(signal.SIGHUP)
        hass.wait(lambda: number(state(hass, fps)) > 0, 30, "the entities back")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon_log()
        log.close()
        sub.close()
    settle(hass, fps, "unavailable")
    states = {n: s["state"] for n, s in hass.by_name().items() if n.startswith("edge-ha ")}
    assert set(states.values()) == {"unavailable"}
    assert hass.log_problems() == []


def number(text: str) -> float:
    """A numeric entity state; -1 while Home Assistant has none (unknown, unavailable)."""
    try:
        return float(text)
    except ValueError:
        return -1.0
