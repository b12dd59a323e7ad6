"""The MQTT topics one device publishes and listens on, named once: ``<prefix>/<device>/...``
as the README's topic table lists them. Home Assistant discovery points its entities at these;
a test holds them to what the MQTT sink really publishes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """The topics of one device. base: ``<prefix>/<device>`` (``MqttSettings.base_topic``)."""

    base: str

    @property
    def status(self) -> str:
        """Retained ``online`` / ``offline`` (Last Will) / ``stopped``."""
        return f"{self.base}/status"

    @property
    def stats(self) -> str:
        """Retained stats JSON, every ``stats_interval``."""
        return f"{self.base}/stats"

    @property
    def models(self) -> str:
        """Retained JSON: per model, the serving version and every version's state (loading,
        serving, failed with its reason; :mod:`edge.modelrepo`)."""
        return f"{self.base}/models"

    def result(self, camera: str) -> str:
        """One JSON result per inference (``edge/schema/result.schema.json``)."""
        return f"{self.base}/{camera}/result"

    def snapshot(self, camera: str) -> str:
        """Annotated JPEG bytes."""
        return f"{self.base}/{camera}/snapshot"

    def state(self, camera: str) -> str:
        """Retained counts: ``{"person": 1, "zones": {"driveway": {"car": 2}}}``."""
        return f"{self.base}/{camera}/state"

    def events(self, camera: str) -> str:
        """Track events ``{"type": "new" | "update" | "end", ...}``, not retained."""
        return f"{self.base}/{camera}/events"

    def detect_set(self, camera: str) -> str:
        """Commands ``ON`` / ``OFF``."""
        return f"{self.base}/{camera}/detect/set"

    def detect_state(self, camera: str) -> str:
        """Retained ``ON`` / ``OFF``."""
        return f"{self.base}/{camera}/detect/state"

    @property
    def infer(self) -> str:
        """Online inference requests to this device (``edge.online``)."""
        return f"{self.base}/infer"


def fleet_infer(prefix: str, group: str) -> str:
    """The topic for online requests any daemon of ``group`` may answer."""
    return f"{prefix}/fleet/{group}/infer"


def shared(topic_filter: str, group: str) -> str:
    """The MQTT 5 shared subscription of ``group`` to ``topic_filter``: the broker hands each
    message to one of the group's subscribers."""
    return f"$share/{group}/{topic_filter}"
