"""The MQTT sink as ``edge run`` and ``edge preview --mqtt`` use it: with its durable outbox in
the configuration's state directory, started.
"""

from __future__ import annotations

from edge.config import Config
from edge.errors import ConfigError
from edge.outbox import Outbox
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings

OUTBOX_FILE = "outbox.sqlite3"


def start_sink(config: Config, boot_id: str = "", settings: MqttSettings | None = None) -> MqttSink:
    """The MQTT sink with its durable outbox in the state directory, started (it connects in
    the background; a broker that is down is fine)."""
    settings = settings or MqttSettings.from_config(config)
    state = config.state_path()
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"state_dir: cannot create {state}: {exc.strerror}. Set state_dir to a writable "
            "directory."
        ) from exc
    outbox = Outbox(
        state / OUTBOX_FILE,
        max_rows=config.mqtt.outbox_max_rows,
        ram_max_rows=config.mqtt.ram_max_rows,
        boot_id=boot_id,
    )
    sink = MqttSink(settings, outbox)
    sink.start()
    return sink
