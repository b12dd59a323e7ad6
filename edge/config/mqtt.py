"""[mqtt]: the broker, what is published and how (one frozen dataclass, one field per key, as
in :mod:`edge.config.sections`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge.choices import MqttProtocol, PublishPolicy
from edge.config.fields import key, was
from edge.config.names import topic_name_problem

Qos = Literal[0, 1, 2]

_EMPTY = was("")


def _prefix_problem(value: Any) -> str | None:
    parts = str(value).split("/")
    if not value or any(topic_name_problem(p) for p in parts):
        return (
            "must be one or more topic levels separated by '/', each like a device name "
            "(no '+', '#', '$', empty levels)"
        )
    return None


def _not_empty(value: Any) -> str | None:
    return None if value else "must not be empty"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """[mqtt]: the broker and what is published."""

    host: str = key("localhost", "Broker host.", check=_not_empty)
    port: int = key(1883, "Broker port.", min=1, max=65535)
    prefix: str = key("edge", "First topic level(s).", check=_prefix_problem)
    protocol: MqttProtocol = key(
        "5", "MQTT 5, or 3.1.1. With 5 the client falls back to 3.1.1 when the broker refuses it."
    )
    qos: Qos = key(1, "QoS of results (1 = at least once; 0 loses results while offline).")
    keepalive: int = key(30, "Keep-alive seconds.", min=5, max=65535)
    client_id: str | None = key(None, "Client id; unset = edge-<device>.", legacy=_EMPTY)
    username: str | None = key(None, "User name; unset = anonymous.", legacy=_EMPTY)
    password_file: str | None = key(
        None,
        "File holding the password (first line). Unset = "
        "$CREDENTIALS_DIRECTORY/mqtt-password when systemd provides it.",
        legacy=_EMPTY,
    )
    tls_ca: str | None = key(
        None,
        "CA certificate file; setting it turns TLS on. Unset = no TLS unless tls_cert is set, "
        "then the system's CA certificates.",
        legacy=_EMPTY,
    )
    tls_cert: str | None = key(
        None, "Client certificate file (turns TLS on); unset = none.", legacy=_EMPTY
    )
    tls_key: str | None = key(
        None,
        "Client key file; unset = $CREDENTIALS_DIRECTORY/mqtt-client.key when tls_cert is set.",
        legacy=_EMPTY,
    )
    tls_insecure: bool = key(False, "Skip the broker host name check (testing only).")
    publish: PublishPolicy = key(
        "every",
        "When to publish results: every inference, on change of the "
        "label set, or at most every publish_interval seconds.",
    )
    publish_interval: float = key(
        1.0,
        "Seconds between results with publish = interval; with "
        "publish = change, an unchanged result is re-sent this often "
        "as a heartbeat (0 = never).",
        min=0.0,
    )
    stats_interval: float = key(10.0, "Seconds between stats messages.", min=1.0)
    snapshot: bool = key(False, "Publish an annotated JPEG when something is detected.")
    snapshot_interval: float = key(10.0, "Minimum seconds between snapshots per camera.", min=0.5)
    max_payload_kb: int = key(
        256, "Results larger than this are refused client-side.", min=1, max=262144
    )
    inflight: int = key(
        16,
        "Unacknowledged results handed to the client at once; bounds duplicates after an outage.",
        min=1,
        max=1000,
    )
    outbox_max_rows: int = key(
        100_000,
        "Results kept on disk while the broker is away; the "
        "oldest are dropped (and counted) beyond this.",
        min=100,
    )
    spool_after_s: float = key(
        2.0, "A result unacknowledged this long is written to disk.", min=0.1
    )
    ram_max_rows: int = key(
        20_000,
        "Results kept in RAM while the outbox file cannot be written (disk full); the oldest "
        "are dropped (and counted) beyond this.",
        min=100,
    )
    ram_window: int = key(
        32,
        "While the broker is away, results that may wait in RAM for their disk commit; beyond "
        "this, file sources wait and live cameras drop frames (counted). Bounds what a "
        "SIGKILL can take.",
        min=1,
        max=10_000,
    )
    reconnect_min_s: float = key(
        1.0, "First wait before reconnecting to the broker; doubles per failed try.", min=0.1
    )
    reconnect_max_s: float = key(
        5.0,
        "Longest wait between reconnection tries (each wait is a random 50-100 % of the "
        "current step).",
        min=0.1,
        max=600.0,
    )
