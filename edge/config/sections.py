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
from typing import Any

from edge.choices import (
    Delegate,
    Fallback,
    Flip,
    LogLevel,
    ResizeMode,
    Rotation,
    RtspTransport,
    RuntimeName,
    Task,
)
from edge.config.fields import computed, key, was
from edge.config.homeassistant import HomeAssistantSettings
from edge.config.metrics import DriftSettings, MetricsSettings
from edge.config.mqtt import MqttConfig
from edge.config.names import topic_name_problem
from edge.config.online import OnlineSettings
from edge.config.tracking import TrackingSettings, ZoneSettings

# The largest frame side accepted: above every Pi camera sensor (HQ 4056, Camera Module 3 4608)
# and 8K video; a larger request could only exhaust the Pi's memory.
MAX_FRAME_SIDE = 8192

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
