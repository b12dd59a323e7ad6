"""The daemon's configuration: one TOML file, validated against a declared schema.

The schema below is the single description of every key: validation, ``edge check-config``,
the generated reference (``edge check-config --reference`` → docs/config.md) and the defaults
all come from it. Validation does no I/O beyond reading the file, rejects unknown keys, and
reports every problem at once with its path (``cameras[1].fps: must be > 0``).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.errors import ConfigError

# The largest frame side accepted: above every Pi camera sensor (HQ 4056, Camera Module 3 4608)
# and 8K video; a larger request could only exhaust the Pi's memory.
MAX_FRAME_SIDE = 8192

# A device or camera name becomes one MQTT topic level.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float,),
    "bool": (bool,),
    "tuple[str, ...]": (list, tuple),
    "int | None": (int,),  # TOML has no null: leaving the key out is None
}


def key(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] = (),
    min: float | None = None,
    max: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    required: bool = False,
) -> Any:
    """Declare one setting: its default, description (it feeds the reference docs) and
    constraints. ``check`` returns a problem string or None."""
    return field(
        default=default,
        metadata={
            "help": help,
            "choices": choices,
            "min": min,
            "max": max,
            "check": check,
            "required": required,
        },
    )


def topic_name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a device or camera name (one MQTT topic level), or None."""
    if not isinstance(value, str) or not _NAME.match(value):
        return (
            "must be 1-64 characters of letters, digits, '_', '-', '.', starting with a "
            "letter or digit (it becomes an MQTT topic level: no '/', '+', '#', '$', "
            "spaces or NUL)"
        )
    return None


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
class ModelSettings:
    """[model]: the default model and how to run it."""

    path: str = key(
        "shapes-detector", "A .tflite file, a model directory, or a bundled model name."
    )
    task: str = key(
        "",
        "Override the task inferred from the model's outputs.",
        choices=("", "classification", "detection", "segmentation", "raw"),
    )
    threads: int = key(0, "Interpreter threads; 0 = all cores, at most 4.", min=0, max=64)
    delegate: str = key(
        "xnnpack",
        "xnnpack (CPU, default), cpu (XNNPACK off) or edgetpu.",
        choices=("xnnpack", "cpu", "edgetpu"),
    )
    edgetpu_device: str = key("", "Edge TPU: usb, usb:N, pci, pci:N; empty = the first.")
    edgetpu_fallback: str = key(
        "fail",
        "When the Edge TPU cannot be used: run on the CPU "
        "(logged and shown in status) or fail (exit 78).",
        choices=("cpu", "fail"),
    )
    runtime: str = key(
        "",
        "TFLite runtime package: ai-edge-litert, tflite-runtime or tensorflow; "
        "empty = $EDGE_RUNTIME, else the first one installed.",
        choices=("", "ai-edge-litert", "tflite-runtime", "tensorflow"),
    )
    threshold: float = key(
        -1.0, "Minimum score 0..1; negative = the model manifest's.", min=-1.0, max=1.0
    )
    iou_threshold: float = key(
        -1.0, "NMS overlap threshold; negative = the manifest's.", min=-1.0, max=1.0
    )
    max_detections: int = key(0, "Most detections per result; 0 = the manifest's.", min=0)
    top_k: int = key(0, "Classes per result (classification); 0 = the manifest's.", min=0)
    labels: tuple[str, ...] = key(
        (), "Only report these labels (empty = all); each must be a label of the model."
    )
    labels_offset: int | None = key(
        None,
        "Added to a class id before the label lookup: 1 for a labels file starting with a "
        "background line the model lacks, -1 for one leaving out the model's background "
        "class 0; unset = the manifest's, else worked out from the labels and classes.",
        min=-1000,
        max=1000,
    )
    segmentation_threshold: float = key(
        -1.0,
        "Foreground probability 0..1 of a single-channel segmentation model; negative = the "
        "manifest's (default 0.5).",
        min=-1.0,
        max=1.0,
    )
    resize: str = key(
        "",
        "stretch, letterbox or crop; empty = the manifest's.",
        choices=("", "stretch", "letterbox", "crop"),
    )


@dataclass(frozen=True, slots=True)
class CameraSettings:
    """[[cameras]]: one table per camera."""

    source: str = key(
        "",
        "picamera2, synthetic, a /dev/videoN path or camera index, an "
        "rtsp:// or http:// URL, a video file, an image folder or glob.",
        required=True,
    )
    name: str = key("camera", "Camera name: a topic level.", check=topic_name_problem)
    fps: float = key(
        0.0, "Target frames per second; 0 = as fast as the source delivers.", min=0.0, max=1000.0
    )
    width: int = key(
        0, "Requested capture width; 0 = the source's default.", min=0, max=MAX_FRAME_SIDE
    )
    height: int = key(
        0, "Requested capture height; 0 = the source's default.", min=0, max=MAX_FRAME_SIDE
    )
    rotate: int = key(0, "Clockwise rotation applied after capture.", choices=(0, 90, 180, 270))
    flip: str = key("", "Mirror after capture: h, v or hv.", choices=("", "h", "v", "hv"))
    loop: bool = key(False, "Files: start again at the end (demos).")
    realtime: bool = key(True, "Files: pace frames at the file's own frame rate, like a camera.")
    model: str = key(
        "",
        "This camera's model; empty = [model].path. Cameras naming the same "
        "model share one interpreter.",
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
    rtsp_transport: str = key(
        "",
        "RTSP streams: RTP over tcp or udp; empty = TCP, or UDP where the camera refuses TCP.",
        choices=("", "tcp", "udp"),
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


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """[mqtt]: the broker and what is published."""

    host: str = key("localhost", "Broker host.", check=_not_empty)
    port: int = key(1883, "Broker port.", min=1, max=65535)
    prefix: str = key("edge", "First topic level(s).", check=_prefix_problem)
    protocol: str = key(
        "5",
        "MQTT 5, or 3.1.1. With 5 the client falls back to 3.1.1 when the broker refuses it.",
        choices=("5", "3.1.1"),
    )
    qos: int = key(
        1, "QoS of results (1 = at least once; 0 loses results while offline).", choices=(0, 1, 2)
    )
    keepalive: int = key(30, "Keep-alive seconds.", min=5, max=65535)
    client_id: str = key("", "Client id; empty = edge-<device>.")
    username: str = key("", "User name.")
    password_file: str = key(
        "",
        "File holding the password (first line). Empty: "
        "$CREDENTIALS_DIRECTORY/mqtt-password when systemd provides it.",
    )
    tls_ca: str = key("", "CA certificate file; setting it turns TLS on.")
    tls_cert: str = key("", "Client certificate file.")
    tls_key: str = key("", "Client key file.")
    tls_insecure: bool = key(False, "Skip the broker host name check (testing only).")
    publish: str = key(
        "every",
        "When to publish results: every inference, on change of the "
        "label set, or at most every publish_interval seconds.",
        choices=("every", "change", "interval"),
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

    device: str = key(
        "",
        "Device id: the second topic level (`<prefix>/<device>/...`). "
        "Empty = the host name when it is a valid name, else `edge`.",
        check=lambda v: None if v == "" else topic_name_problem(v),
    )
    state_dir: str = key(
        "",
        "Where the durable MQTT outbox is kept. Empty = "
        "$STATE_DIRECTORY (systemd StateDirectory=), else ./state.",
    )
    log_level: str = key(
        "info", "Log level on stderr.", choices=("debug", "info", "warning", "error")
    )
    model: ModelSettings = ModelSettings()
    mqtt: MqttConfig = MqttConfig()
    budget: BudgetSettings = BudgetSettings()
    cameras: tuple[CameraSettings, ...] = ()
    source: str = ""  # the file this came from, for messages

    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else Path("state")

    def camera_model(self, camera: CameraSettings) -> str:
        return camera.model or self.model.path


SECTIONS: dict[str, type] = {"model": ModelSettings, "mqtt": MqttConfig, "budget": BudgetSettings}
_TOP_KEYS = ("device", "state_dir", "log_level")


def _check_value(f: Field[Any], value: Any, path: str, problems: list[str]) -> Any:
    meta = f.metadata
    types = _TYPES[str(f.type)]
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = {
            str: "a string",
            int: "an integer",
            float: "a number",
            bool: "true or false",
            list: "a list",
        }[types[0]]
        problems.append(f"{path}: must be {want}, got {type(value).__name__} {value!r}")
        return f.default
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{path}: must be a finite number")
        return f.default
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            problems.append(f"{path}: must be a list of strings")
        value = tuple(str(v) for v in value)
    if meta["choices"] and value not in meta["choices"]:
        shown = ", ".join(repr(c) for c in meta["choices"])
        problems.append(f"{path}: {value!r} is not one of {shown}")
    if meta["min"] is not None and isinstance(value, int | float) and value < meta["min"]:
        problems.append(f"{path}: must be at least {meta['min']:g}, got {value}")
    if meta["max"] is not None and isinstance(value, int | float) and value > meta["max"]:
        problems.append(f"{path}: must be at most {meta['max']:g}, got {value}")
    if meta["check"] is not None:
        problem = meta["check"](value)
        if problem:
            problems.append(f"{path}: {problem} (got {value!r})")
    return value


def _section(
    cls: type, data: Any, path: str, problems: list[str], only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Validated keyword arguments for ``cls`` from a TOML table."""
    if not isinstance(data, dict):
        problems.append(f"{path}: must be a table")
        data = {}
    settings = [f for f in fields(cls) if only is None or f.name in only]
    known = {f.name for f in settings}
    if only is None:
        for name in data:
            if name not in known:
                close = [k for k in known if k.startswith(name[:3])]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{path}.{name}: unknown key{hint}")
    out = {}
    for f in settings:
        where = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            out[f.name] = _check_value(f, data[f.name], where, problems)
        elif f.metadata.get("required"):
            problems.append(f"{where}: required")
    return out


def default_device() -> str:
    """The host name when it is a valid device id, else ``edge``."""
    host = os.uname().nodename.split(".")[0] if hasattr(os, "uname") else ""
    return host if host and topic_name_problem(host) is None else "edge"


def validate(data: Mapping[str, Any], source: str = "") -> Config:
    """Validate parsed TOML; raises ConfigError listing every problem."""
    problems: list[str] = []
    known = set(_TOP_KEYS) | set(SECTIONS) | {"cameras"}
    for name in data:
        if name not in known:
            problems.append(f"{name}: unknown key (known: {', '.join(sorted(known))})")
    top = _section(Config, dict(data), "", problems, only=_TOP_KEYS)
    sections = {
        name: cls(**_section(cls, data.get(name, {}), name, problems))
        for name, cls in SECTIONS.items()
    }
    cams_raw = data.get("cameras", [])
    if not isinstance(cams_raw, list) or not cams_raw:
        problems.append("cameras: add at least one [[cameras]] table with a source")
        cams_raw = []
    cameras = tuple(
        CameraSettings(**_section(CameraSettings, c, f"cameras[{i}]", problems))
        for i, c in enumerate(cams_raw)
    )
    for i, c in enumerate(cameras):
        if c.reconnect_min_s > c.reconnect_max_s:
            problems.append(
                f"cameras[{i}].reconnect_min_s: {c.reconnect_min_s:g} is above reconnect_max_s "
                f"({c.reconnect_max_s:g}); lower it or raise reconnect_max_s"
            )
    names = [c.name for c in cameras]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"cameras: name {n!r} is used more than once; names must be unique")
    m = sections["mqtt"]
    assert isinstance(m, MqttConfig)
    if m.reconnect_min_s > m.reconnect_max_s:
        problems.append(
            f"mqtt.reconnect_min_s: {m.reconnect_min_s} is larger than mqtt.reconnect_max_s "
            f"({m.reconnect_max_s})"
        )
    if m.ram_window > m.ram_max_rows:
        problems.append(
            f"mqtt.ram_window: {m.ram_window} is larger than mqtt.ram_max_rows ({m.ram_max_rows})"
        )
    if problems:
        raise ConfigError(problems, source=source or None)
    top["device"] = top.get("device") or default_device()
    return Config(**top, **sections, cameras=cameras, source=source)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; raises ConfigError naming the file and the problem."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"file not found: {p}. Create it (see systemd/config.example.toml) "
            "or pass another with --config",
            source=str(p),
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}", source=str(p)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(p)) from exc


def load(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read (when ``path`` is given), apply dotted-key ``overrides`` and validate."""
    data = read_toml(path) if path is not None else {}
    if overrides:
        data = merge(data, overrides)
    return validate(data, source=str(path) if path is not None else "")


def merge(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (``mqtt.host``, ``cameras.0.source``) to parsed TOML."""
    out: dict[str, Any] = {
        k: (
            dict(v)
            if isinstance(v, dict)
            else [dict(c) for c in v]
            if k == "cameras" and isinstance(v, list)
            else v
        )
        for k, v in data.items()
    }
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt_is_index = parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({})
                node = node[idx]
                continue
            if part not in node:
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            idx = int(last)
            while len(node) <= idx:
                node.append({})
            node[idx] = value
        else:
            node[last] = value
    return out


def reference() -> str:
    """The configuration reference in Markdown, generated from the schema."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `edge/config.py` by `edge check-config --reference`; do not edit.",
        "",
        "One TOML file (`edge run --config FILE`). Unknown keys are errors. "
        "`edge check-config FILE` validates a file and exits 0 or 78 listing every "
        "problem.",
        "",
    ]

    def table(title: str, cls: type, only: tuple[str, ...] | None = None) -> None:
        doc = (cls.__doc__ or "").split(":", 1)[-1].strip() if only is None else ""
        lines.extend(
            [f"## {title}", ""]
            + ([doc, ""] if doc else [])
            + ["| key | type | default | description |", "|---|---|---|---|"]
        )
        for f in fields(cls):
            if (only is not None and f.name not in only) or "help" not in f.metadata:
                continue
            meta = f.metadata
            default = "(required)" if meta["required"] else f"`{f.default!r}`"
            desc = meta["help"]
            if meta["choices"]:
                desc += " One of: " + ", ".join(f"`{c!r}`" for c in meta["choices"]) + "."
            kind = str(f.type).replace(" | None", ", optional")  # a "|" would split the cell
            lines.append(f"| `{f.name}` | {kind} | {default} | {desc} |")
        lines.append("")

    table("Top level", Config, _TOP_KEYS)
    table("[model]", ModelSettings)
    table("[[cameras]]", CameraSettings)
    table("[mqtt]", MqttConfig)
    table("[budget]", BudgetSettings)
    return "\n".join(lines)
