"""What a connection to an MQTT broker needs, apart from the sink itself: the settings, the
check that a device or camera name is a safe topic level, and the login and TLS set-up (password
from a file or systemd's ``$CREDENTIALS_DIRECTORY``, never logged). Used by the sink and by
``edge listen``.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.choices import MQTT_PROTOCOLS
from edge.config import Config, topic_name_problem
from edge.errors import ConfigError

log = logging.getLogger(__name__)

TOPIC_PART_MAX = 64
MAX_PAYLOAD_MQTT = 268_435_455  # MQTT's own packet limit


def validate_topic_part(name: str, what: str) -> None:
    """Raise ConfigError unless ``name`` is safe as one MQTT topic level.

    Refused: empty, longer than 64 characters, ``+``, ``#`` or ``/`` (wildcards and level
    separators would publish into other topics), a leading ``$`` (reserved for broker topics such
    as ``$SYS``), NUL or other non-printable characters, text that is not valid UTF-8, and
    anything else ``edge.config.topic_name_problem`` refuses (non-ASCII letters, spaces, a
    leading ``-``): one rule for names in the configuration and on the command line."""
    problem = _topic_part_problem(name)
    if problem is not None:
        raise ConfigError(
            f"{what}: {name!r} {problem}; use letters, digits, '-', '_' or '.' "
            f"(1 to {TOPIC_PART_MAX} characters)"
        )


def _topic_part_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return "is not a string"
    if not name:
        return "is empty"
    if len(name) > TOPIC_PART_MAX:
        return f"is longer than {TOPIC_PART_MAX} characters"
    for bad in ("+", "#", "/"):
        if bad in name:
            return f"contains {bad!r}, which MQTT gives a meaning in topics"
    if name.startswith("$"):
        return "starts with '$', which brokers reserve for their own topics"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if not name.isprintable():
        return "contains NUL or another non-printable character"
    if topic_name_problem(name) is not None:
        # The same rule as the configuration's device and camera names (one validator): plain
        # ASCII names also make valid Home Assistant ids and shell-safe arguments.
        return "has characters other than letters, digits, '_', '-' and '.', or starts with one"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """How to reach the broker and what to publish. Validated on construction (no I/O there):
    a ConfigError lists every problem as ``mqtt.<field>: ...``.

    password_file: read at ``start()``; when unset and ``$CREDENTIALS_DIRECTORY`` (systemd
    ``LoadCredential=``) holds ``mqtt-password``, that is used. ``password`` exists for callers
    that already hold the secret; it never appears in ``repr``. Likewise ``tls_key`` defaults to
    ``$CREDENTIALS_DIRECTORY/mqtt-client.key`` when ``tls_cert`` is set.
    tls: TLS is used when this is true or any ``tls_*`` path is set; without ``tls_ca`` the
    system trust store is used. ``tls_insecure`` skips the hostname check (never in production).
    protocol: "5" (falls back to "3.1.1" by itself when the broker refuses 5) or "3.1.1".
    keepalive: seconds; a dead link is noticed after about 1.5× this.
    max_payload_bytes: larger payloads are refused before sending (counted in ``oversize``);
    keep it at or below the broker's ``message_size_limit``.
    inflight: results handed to paho at once; keep it at or below the broker's
    ``max_inflight_messages`` (mosquitto: 20). It bounds the duplicates after an outage.
    spool_after_s: a result unacknowledged for this long is written to disk.
    outbox_max_rows: pending results kept (RAM plus disk); beyond, the oldest are dropped.
    ram_max_rows: results kept in RAM while the outbox file cannot be written (disk full);
    beyond, the oldest are dropped and counted.
    ram_window: while disconnected, how many results may wait in RAM for their commit before
    producers are held back (``MqttSink.room()``); bounds what a SIGKILL can take.
    reconnect_min_s, reconnect_max_s: reconnect back-off, doubling from min to max, each wait
    drawn at random between half and all of it (so devices that lost one broker do not all
    come back in the same second).
    """

    device: str
    host: str = "localhost"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False
    protocol: str = "5"
    qos: int = 1
    keepalive: int = 30
    prefix: str = "edge"
    max_payload_bytes: int = 256 * 1024
    inflight: int = 16
    spool_after_s: float = 2.0
    outbox_max_rows: int = 100_000
    ram_max_rows: int = 20_000
    ram_window: int = 32
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 5.0
    result_retain: bool = False

    def __post_init__(self) -> None:
        # Config files give paths as text; accept that and hold Path objects.
        for name in ("password_file", "tls_ca", "tls_cert", "tls_key"):
            value: object = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value) if value else None)
        problems: list[str] = []
        part = _topic_part_problem(self.device)
        if part:
            problems.append(f"mqtt.device: {self.device!r} {part}")
        if not isinstance(self.prefix, str) or not self.prefix:
            problems.append("mqtt.prefix: must not be empty")
        else:
            for level in self.prefix.split("/"):
                part = _topic_part_problem(level)
                if part:
                    problems.append(f"mqtt.prefix: level {level!r} of {self.prefix!r} {part}")
        if not self.host:
            problems.append("mqtt.host: must not be empty")
        if not 1 <= self.port <= 65535:
            problems.append(f"mqtt.port: {self.port} is not a TCP port (1-65535)")
        if self.client_id is not None and not self.client_id:
            problems.append("mqtt.client_id: must not be empty (leave it unset for edge-<device>)")
        if self.password is not None and self.password_file is not None:
            problems.append("mqtt.password_file: set either password_file or password, not both")
        if self.protocol not in MQTT_PROTOCOLS:
            shown = ", ".join(map(repr, MQTT_PROTOCOLS))
            problems.append(f"mqtt.protocol: {self.protocol!r} is not one of {shown}")
        if self.qos not in (0, 1, 2):
            problems.append(f"mqtt.qos: {self.qos} is not 0, 1 or 2")
        if not 5 <= self.keepalive <= 65535:
            problems.append(f"mqtt.keepalive: {self.keepalive} s is outside 5-65535")
        if not 1 <= self.max_payload_bytes <= MAX_PAYLOAD_MQTT:
            problems.append(
                f"mqtt.max_payload_bytes: {self.max_payload_bytes} is outside 1-{MAX_PAYLOAD_MQTT}"
            )
        if not 1 <= self.inflight <= 1000:
            problems.append(f"mqtt.inflight: {self.inflight} is outside 1-1000")
        if not self.spool_after_s > 0:
            problems.append(f"mqtt.spool_after_s: {self.spool_after_s} must be positive")
        if self.outbox_max_rows <= self.inflight:
            problems.append(
                f"mqtt.outbox_max_rows: {self.outbox_max_rows} must be larger than "
                f"mqtt.inflight ({self.inflight})"
            )
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            problems.append(
                f"mqtt.reconnect_min_s: {self.reconnect_min_s} must be positive and at most "
                f"mqtt.reconnect_max_s ({self.reconnect_max_s})"
            )
        if self.ram_window < 1 or self.ram_max_rows < self.ram_window:
            problems.append(
                f"mqtt.ram_window: {self.ram_window} must be at least 1 and at most "
                f"ram_max_rows ({self.ram_max_rows})"
            )
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_config(cls, config: Config) -> MqttSettings:
        """The settings of a configuration's ``[mqtt]`` section and device (the daemon's sink,
        ``edge listen --config``)."""
        m = config.mqtt
        return cls(
            host=m.host,
            port=m.port,
            client_id=m.client_id or f"edge-{config.device}",
            username=m.username or None,
            password_file=_optional_path(m.password_file),
            tls_ca=_optional_path(m.tls_ca),
            tls_cert=_optional_path(m.tls_cert),
            tls_key=_optional_path(m.tls_key),
            tls_insecure=m.tls_insecure,
            protocol=m.protocol,
            qos=m.qos,
            keepalive=m.keepalive,
            prefix=m.prefix,
            device=config.device,
            max_payload_bytes=m.max_payload_kb * 1024,
            inflight=m.inflight,
            spool_after_s=m.spool_after_s,
            outbox_max_rows=m.outbox_max_rows,
            ram_max_rows=m.ram_max_rows,
            ram_window=m.ram_window,
            reconnect_min_s=m.reconnect_min_s,
            reconnect_max_s=m.reconnect_max_s,
        )

    @property
    def effective_client_id(self) -> str:
        """``client_id``, or ``edge-<device>``."""
        return self.client_id or f"edge-{self.device}"

    @property
    def base_topic(self) -> str:
        """``<prefix>/<device>``; every topic this device publishes is below it."""
        return f"{self.prefix}/{self.device}"

    def delivery(self, topic: str) -> tuple[int, bool]:
        """(QoS, retain) of a message from the outbox on ``topic``: results at ``qos`` and
        ``result_retain``; track events (``.../events``) at least at QoS 1, never retained."""
        if topic.endswith("/events"):
            return max(1, self.qos), False
        return self.qos, self.result_retain

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key))


def _optional_path(text: str | None) -> Path | None:
    return Path(text) if text else None


def read_password(s: MqttSettings) -> str | None:
    """The broker password: ``s.password``, else ``s.password_file``, else systemd's
    ``$CREDENTIALS_DIRECTORY/mqtt-password``; None when none is set. Raises ConfigError naming
    the file when it cannot be read or is empty, or when a password has no username."""
    if s.password is not None:
        return s.password
    path = s.password_file
    if path is None:
        path = _credential("mqtt-password")
    if path is None:
        return None
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"mqtt.password_file: cannot read {path} ({exc}); check the path and that the "
            "daemon's user may read it"
        ) from exc
    if not secret:
        raise ConfigError(f"mqtt.password_file: {path} is empty; write the password into it")
    if s.username is None:
        raise ConfigError(
            f"mqtt.username: a password is configured ({path}) but no username; set one"
        )
    return secret


def check_files(s: MqttSettings) -> None:
    """Open every file the connection will use (password, CA, client certificate and key) the
    way the connection will, so a configuration check refuses what a start would refuse.
    Raises ConfigError naming the file and what to do."""
    read_password(s)
    if not s.uses_tls:
        return
    key = tls_key_path(s)
    for name, path in (("tls_ca", s.tls_ca), ("tls_cert", s.tls_cert), ("tls_key", key)):
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"mqtt.{name}: cannot read {path} ({exc.strerror}); check the path and that the "
                "daemon's user may read it"
            ) from exc
    try:
        context = ssl.create_default_context(cafile=str(s.tls_ca) if s.tls_ca else None)
        if s.tls_cert is not None:
            # An empty password: an encrypted key fails here instead of prompting on a terminal.
            context.load_cert_chain(str(s.tls_cert), str(key) if key else None, password="")
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"mqtt.tls_ca/tls_cert/tls_key: cannot load the TLS files ({exc}); check the "
            "paths, that the daemon's user may read them, that they are PEM and that the key "
            "is not encrypted"
        ) from exc


def tls_key_path(s: MqttSettings) -> Path | None:
    """The client key: ``s.tls_key``, or systemd's ``$CREDENTIALS_DIRECTORY/mqtt-client.key``
    when a client certificate is set without one."""
    if s.tls_key is None and s.tls_cert is not None:
        return _credential("mqtt-client.key")
    return s.tls_key


def secure(client: mqtt.Client, s: MqttSettings, password: str | None, key: Path | None) -> None:
    """Set the login and TLS of ``s`` on a paho client (the broker's certificate is always
    verified). Raises ConfigError when the TLS files cannot be loaded."""
    if s.username is not None:
        client.username_pw_set(s.username, password)
    if not s.uses_tls:
        return
    try:
        client.tls_set(
            ca_certs=str(s.tls_ca) if s.tls_ca else None,
            certfile=str(s.tls_cert) if s.tls_cert else None,
            keyfile=str(key) if key else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"mqtt.tls_ca/tls_cert/tls_key: cannot load the TLS files ({exc}); check the "
            "paths, that they are PEM and that the key is not encrypted"
        ) from exc
    if s.tls_insecure:
        client.tls_insecure_set(True)
        log.warning("mqtt.tls_insecure: the broker's hostname is NOT checked")


def _credential(name: str) -> Path | None:
    """A systemd credential file: ``LoadCredential=NAME:FILE`` gives ``NAME``; the unit we
    ship loads the secrets directory (``LoadCredential=secrets:/etc/edge/secrets``), which gives
    ``secrets_NAME``."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        return None
    for candidate in (Path(creds) / name, Path(creds) / f"secrets_{name}"):
        if candidate.is_file():
            return candidate
    return None
