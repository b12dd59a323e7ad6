"""The schema: one frozen dataclass per TOML table, one declared field per key.

A key that can be left unset is ``X | None`` with default None, and its description says what
unset means ("unset = the manifest's"); the names a key may take are the ``Literal`` types of
``edge.choices``. Older files wrote "unset" as an empty string, 0 or a negative threshold; those
values are still read as unset (``legacy=``), with a warning.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal

from edge.choices import (
    Delegate,
    Fallback,
    Flip,
    LogLevel,
    MqttProtocol,
    PublishPolicy,
    ResizeMode,
    Rotation,
    RtspTransport,
    RuntimeName,
    Task,
)
from edge.config.fields import computed, key, was
from edge.config.homeassistant import HomeAssistantSettings
from edge.config.metrics import DriftSettings, MetricsSettings
from edge.config.names import topic_name_problem
from edge.config.online import OnlineSettings
from edge.config.tracking import TrackingSettings, ZoneSettings

# The largest frame side accepted: above every Pi camera sensor (HQ 4056, Camera Module 3 4608)
# and 8K video; a larger request could only exhaust the Pi's memory.
MAX_FRAME_SIDE = 8192

Qos = Literal[0, 1, 2]

# The values older files used for "unset".
_EMPTY = was("")
_ZERO = was(0)
_NO_LABELS = was(())


def _negative(value: Any) -> bool:
    """The old "negative = the manifest's" of a threshold (its range was -1..1)."""
    return bool(-1.0 <= value < 0.0)


def _not_positive(value: Any) -> bool:
    """The old "0 or negative = the manifest's" of the NMS threshold."""
    return bool(-1.0 <= value <= 0.0)


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


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be above 0"


def _chain_problem(value: Any) -> str | None:
    """Why a delegate chain is not one (it is empty, or names a delegate twice), or None."""
    if not value:
        return "name at least one delegate"
    repeated = sorted({v for v in value if value.count(v) > 1})
    return f"names {', '.join(repeated)} more than once" if repeated else None


def _options_problem(value: Any) -> str | None:
    bad = [v for v in value if "=" not in v or not v.partition("=")[0].strip()]
    return f'each must be "key=value": {", ".join(map(repr, bad))}' if bad else None


def default_device() -> str:
    """The host name when it is a valid device id, else ``edge``."""
    host = os.uname().nodename.split(".")[0] if hasattr(os, "uname") else ""
    return host if host and topic_name_problem(host) is None else "edge"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """[model]: the default model and how to run it."""

    path: str = key(
        "shapes-detector",
        "A .tflite, .onnx or .hef file, a model directory, a bundled model name, or a "
        "repository: a folder of numbered versions (1/, 2/, ...), served at its highest valid "
        "version and swapped without a lost frame when a newer one arrives.",
    )
    version: int | None = key(
        None,
        "Repository only: serve this version and no other; unset = the highest valid one.",
        min=0,
    )
    repository_poll_s: float = key(
        2.0,
        "Repository only: how often its folder is looked at for new versions (a version is "
        "taken up once its files are unchanged across two looks).",
        min=0.1,
        max=3600.0,
    )
    task: Task | None = key(
        None,
        "Override the task inferred from the model's outputs; unset = the manifest's, else "
        "inferred.",
        legacy=_EMPTY,
    )
    threads: int | None = key(
        None, "Interpreter threads; unset = all cores, at most 4.", min=1, max=64, legacy=_ZERO
    )
    delegate: tuple[Delegate, ...] = key(
        ("xnnpack",),
        "xnnpack (CPU, default), cpu (XNNPACK off), edgetpu, or external (delegate_library); "
        'or a failover chain in order of preference, such as ["edgetpu", "xnnpack"]: the first '
        "that loads runs the model, a failing or hung invoke moves it to the next, and the "
        "preferred one is re-probed every reprobe_s.",
        check=_chain_problem,
        many=True,
    )
    invoke_timeout_ms: float = key(
        2000.0,
        "Delegate chain: an invoke running longer counts as hung and moves the model to the "
        "next delegate; 0 = no watchdog (only an invoke that raises fails over).",
        min=0.0,
    )
    reprobe_s: float = key(
        30.0,
        "Delegate chain: how often the delegates preferred to the running one are tried "
        "again (switching back when healthy); 0 = never.",
        min=0.0,
    )
    delegate_library: str | None = key(
        None,
        "Advanced: the shared library of an external TFLite delegate (the plugin interface "
        "tflite_plugin_create_delegate), used by the delegate name external; unset = none.",
        legacy=_EMPTY,
    )
    delegate_library_options: tuple[str, ...] = key(
        (),
        'Advanced: the external delegate\'s own settings, as "key=value" strings.',
        check=_options_problem,
    )
    edgetpu_device: str | None = key(
        None,
        "Edge TPU: usb, usb:N, pci, pci:N; unset = the first found.",
        legacy=_EMPTY,
    )
    edgetpu_fallback: Fallback = key(
        "fail",
        "When the Edge TPU cannot be used: run on the CPU "
        "(logged and shown in status) or fail (exit 78).",
    )
    runtime: RuntimeName | None = key(
        None,
        "TFLite runtime package; unset = $EDGE_RUNTIME, else the first one installed.",
        legacy=_EMPTY,
    )
    threshold: float | None = key(
        None,
        "Minimum score 0..1; unset = the model manifest's.",
        min=0.0,
        max=1.0,
        legacy=_negative,
    )
    iou_threshold: float | None = key(
        None,
        "NMS overlap threshold, above 0 and at most 1; unset = the manifest's.",
        max=1.0,
        check=_positive,
        legacy=_not_positive,
    )
    max_detections: int | None = key(
        None, "Most detections per result; unset = the manifest's.", min=1, legacy=_ZERO
    )
    top_k: int | None = key(
        None,
        "Classes per result (classification); unset = the manifest's.",
        min=1,
        legacy=_ZERO,
    )
    labels: tuple[str, ...] | None = key(
        None,
        "Only report these labels, each a label of the model; unset = all.",
        legacy=_NO_LABELS,
    )
    labels_offset: int | None = key(
        None,
        "Added to a class id before the label lookup: 1 for a labels file starting with a "
        "background line the model lacks, -1 for one leaving out the model's background "
        "class 0; unset = the manifest's, else worked out from the labels and classes.",
        min=-1000,
        max=1000,
    )
    segmentation_threshold: float | None = key(
        None,
        "Foreground probability 0..1 of a single-channel segmentation model; unset = the "
        "manifest's (default 0.5).",
        min=0.0,
        max=1.0,
        legacy=_negative,
    )
    resize: ResizeMode | None = key(
        None, "How frames are fitted to the model input; unset = the manifest's.", legacy=_EMPTY
    )


@dataclass(frozen=True, slots=True)
class CameraSettings:
    """[[cameras]]: one table per camera."""

    source: str = key(
        MISSING,
        "picamera2, imx500 (the AI Camera: give network), synthetic, a /dev/videoN path or "
        "camera index, an rtsp:// or http:// URL, a video file, an image folder or glob.",
    )
    network: str | None = key(
        None,
        "source imx500: the network (.rpk) the AI Camera runs on its sensor, e.g. "
        "/usr/share/imx500-models/imx500_network_ssd_mobilenetv2_fpnlite_320x320_pp.rpk; "
        "it is this camera's model. Unset for every other source.",
        legacy=_EMPTY,
    )
    name: str = key("camera", "Camera name: a topic level.", check=topic_name_problem)
    fps: float | None = key(
        None,
        "Target frames per second; unset = as fast as the source delivers (synthetic: unpaced).",
        min=0.0,
        max=1000.0,
        legacy=_ZERO,
    )
    width: int | None = key(
        None,
        "Requested capture width (give height too); unset = the source's default.",
        min=1,
        max=MAX_FRAME_SIDE,
        legacy=_ZERO,
    )
    height: int | None = key(
        None,
        "Requested capture height (give width too); unset = the source's default.",
        min=1,
        max=MAX_FRAME_SIDE,
        legacy=_ZERO,
    )
    rotate: Rotation = key(0, "Clockwise rotation applied after capture.")
    flip: Flip | None = key(
        None, "Mirror after capture: h, v or hv; unset = not mirrored.", legacy=_EMPTY
    )
    loop: bool = key(False, "Files: start again at the end (demos).")
    realtime: bool = key(True, "Files: pace frames at the file's own frame rate, like a camera.")
    model: str | None = key(
        None,
        "This camera's model; unset = [model].path. Cameras naming the same "
        "model share one interpreter.",
        legacy=_EMPTY,
    )
    motion_threshold: float = key(
        0.0,
        "Skip inference while the mean absolute difference of "
        "a small grey thumbnail from the last inferred frame stays "
        "below this (0..255); 0 = off.",
        min=0.0,
        max=255.0,
    )
    motion_max_skip_s: float = key(
        10.0, "With motion gating: run inference at least this often anyway.", min=0.0
    )
    rtsp_transport: RtspTransport | None = key(
        None,
        "RTSP streams: RTP over tcp or udp; unset = TCP, or UDP where the camera refuses TCP.",
        legacy=_EMPTY,
    )
    read_timeout_s: float = key(
        5.0,
        "Streams: seconds to open, or to deliver the next frame, before they are reopened.",
        min=0.1,
        max=600.0,
    )
    stall_after_s: float = key(
        2.0,
        "USB cameras and streams: seconds without a frame before the camera shows as stalled "
        "(no results meanwhile; frames older than this are dropped).",
        min=0.1,
        max=600.0,
    )
    reconnect_min_s: float = key(
        1.0, "Wait before reopening a failed camera; doubles per failure.", min=0.01, max=3600.0
    )
    reconnect_max_s: float = key(
        30.0, "Longest wait between reopening attempts.", min=0.01, max=3600.0
    )
    zones: tuple[ZoneSettings, ...] = ()  # [[cameras.zones]]


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


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """[budget]: latency and memory limits."""

    latency_ms: float = key(
        1000.0,
        "A frame older than this when inference would start is skipped (counted); 0 = no limit.",
        min=0.0,
    )
    memory_mb: float = key(
        0.0, "RSS budget; exceeding it is logged and shown in status; 0 = no check.", min=0.0
    )


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration (top-level keys, then one field per section)."""

    device: str = computed(
        default_device,
        "Device id: the second topic level (`<prefix>/<device>/...`). "
        "Unset = the host name when it is a valid name, else `edge`.",
        check=topic_name_problem,
        legacy=_EMPTY,
    )
    state_dir: str | None = key(
        None,
        "Where the durable MQTT outbox is kept. Unset = "
        "$STATE_DIRECTORY (systemd StateDirectory=), else ./state.",
        legacy=_EMPTY,
    )
    log_level: LogLevel = key("info", "Log level on stderr.")
    model: ModelSettings = ModelSettings()
    mqtt: MqttConfig = MqttConfig()
    budget: BudgetSettings = BudgetSettings()
    tracking: TrackingSettings = TrackingSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    metrics: MetricsSettings = MetricsSettings()
    drift: DriftSettings = DriftSettings()
    online: OnlineSettings = OnlineSettings()
    cameras: tuple[CameraSettings, ...] = ()
    source: str = ""  # the file this came from, for messages

    def state_path(self) -> Path:
        if self.state_dir is not None:
            return Path(self.state_dir)
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else Path("state")

    def camera_model(self, camera: CameraSettings) -> str:
        """The model reference ``camera`` runs: an AI Camera's network, its own model, else
        [model].path."""
        if camera.network is not None:
            return camera.network
        return self.model.path if camera.model is None else camera.model

    def online_model(self) -> str:
        """The model reference online requests run: [online].model, else the first camera's."""
        if self.online.model is not None:
            return self.online.model
        return self.camera_model(self.cameras[0]) if self.cameras else self.model.path


# The tables of a configuration file besides [[cameras]], by name.
SECTIONS: dict[str, type] = {
    "model": ModelSettings,
    "mqtt": MqttConfig,
    "budget": BudgetSettings,
    "tracking": TrackingSettings,
    "homeassistant": HomeAssistantSettings,
    "metrics": MetricsSettings,
    "drift": DriftSettings,
    "online": OnlineSettings,
}
