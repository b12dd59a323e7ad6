"""``[homeassistant]``: whether and how the daemon publishes Home Assistant MQTT discovery
(the messages themselves are built by ``edge.homeassistant``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from edge.config.fields import key
from edge.config.names import topic_name_problem
from edge.errors import ConfigError

DiscoveryForm = Literal["component", "device"]
FORMS: tuple[str, ...] = get_args(DiscoveryForm)


def _prefix_problem(value: Any) -> str | None:
    if not isinstance(value, str) or any(topic_name_problem(p) for p in value.split("/")):
        return "must be one or more topic levels separated by '/', each like a device name"
    return None


def _labels_problem(value: Any) -> str | None:
    labels = list(value)
    if any(not isinstance(x, str) or not x.strip() for x in labels):
        return "labels must be non-empty strings"
    if len(set(labels)) != len(labels):
        return "a label is listed twice"
    return None


@dataclass(frozen=True, slots=True)
class HomeAssistantSettings:
    """[homeassistant]: MQTT discovery for Home Assistant (off unless ``enabled``)."""

    enabled: bool = key(False, "Publish Home Assistant MQTT discovery for this device.")
    discovery_prefix: str = key(
        "homeassistant",
        "Home Assistant's discovery prefix; its birth message is <prefix>/status.",
        check=_prefix_problem,
    )
    labels: tuple[str, ...] = key(
        (),
        "Labels that get an occupancy and a count entity per camera and zone; empty = every "
        "label of the camera's model (a COCO model has 80: list the few you use).",
        check=_labels_problem,
    )
    discovery: DiscoveryForm = key(
        "component",
        "component: one config per entity (every Home Assistant since 2023.8); device: one "
        "config for the whole device (Home Assistant 2024.11 and later).",
    )
    device_name: str = key("", "The device's name in Home Assistant; empty = the device id.")
    support_url: str = key("", "A URL shown as the discovery origin's support link.")
    birth_delay_max_s: float = key(
        5.0,
        "After Home Assistant's birth message, wait a random 0 to this many seconds before "
        "publishing discovery again (spreads a fleet's messages).",
        min=0.0,
        max=300.0,
    )

    def __post_init__(self) -> None:
        # The config loader checks the same rules; this covers settings built in code.
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        problems = [
            f"homeassistant.{name}: {why}"
            for name, why in (
                ("discovery_prefix", _prefix_problem(self.discovery_prefix)),
                ("labels", _labels_problem(self.labels)),
                ("discovery", None if self.discovery in FORMS else f"one of {', '.join(FORMS)}"),
                (
                    "birth_delay_max_s",
                    None if 0 <= self.birth_delay_max_s <= 300 else "must be within 0-300",
                ),
            )
            if why is not None
        ]
        if problems:
            raise ConfigError(problems)

    @property
    def birth_topic(self) -> str:
        """Where Home Assistant publishes ``online`` when it (re)starts: a cue to publish
        discovery and current state again."""
        return f"{self.discovery_prefix}/status"
