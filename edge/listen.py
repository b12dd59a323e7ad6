"""``edge listen``: watch what devices publish, as readable lines or as JSON lines for machines.

Subscribes to ``<prefix>/<device or +>/#`` and prints one line per message: results with their
sequence number, labels and end-to-end latency; status changes; stats condensed; snapshots by
size only. Stops after ``--count`` messages or ``--timeout`` seconds; Ctrl-C ends it normally.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import SinkError
from edge.sinks.mqtt_client import new_client
from edge.sinks.mqtt_settings import (
    MqttSettings,
    read_password,
    tls_key_path,
    validate_topic_part,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
MAX_LABELS = 5
MAX_STATS_ITEMS = 12


class _Message(NamedTuple):
    received: float  # time.time() at arrival
    topic: str
    payload: bytes
    retained: bool


def listen(
    host: str,
    port: int,
    prefix: str,
    device: str | None,
    raw: bool,
    count: int | None,
    timeout: float | None,
    out: TextIO,
    until: Callable[[], bool] | None = None,
    *,
    security: MqttSettings | None = None,
) -> int:
    """Print messages below ``<prefix>/<device or +>/`` to ``out`` until ``count`` messages
    (retained ones included) or ``timeout`` seconds; returns 0, also on Ctrl-C.

    Raises SinkError when the broker cannot be reached or refuses the connection. A connection
    lost later is re-established by paho (logged); nothing is printed for it. ``until``: also
    stop once it returns true and nothing is waiting to be printed (``edge demo`` uses it).
    ``security``: the login and TLS settings to use (host, port and device in it are ignored);
    anonymous plain MQTT without. Raises ConfigError when its password or TLS files are
    unusable."""
    if device is not None:
        validate_topic_part(device, "device")
    topic = f"{prefix}/{device or '+'}/#"
    inbox: queue.Queue[_Message] = queue.Queue()
    answered = threading.Event()
    refusal: list[str] = []

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
        else:
            client.subscribe(topic, qos=1)
        answered.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        inbox.put(_Message(time.time(), msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        log.warning("lost the MQTT broker %s:%d (%s); reconnecting", host, port, reason)

    if security is None:  # no password or key lookup (systemd credentials) either
        settings, password, key = MqttSettings(device="edge-listen"), None, None
    else:
        settings, password, key = security, read_password(security), tls_key_path(security)
    # MQTT 3.1.1 with an empty client id and a clean session: every broker accepts it, and a
    # listener needs no session of its own.
    client = new_client(settings, mqtt.MQTTv311, "", password, key)
    client.on_connect = on_connect
    client.on_message = on_message
    # paho's own back-off (1 s doubling to 10 s): one listener on a terminal needs no jitter.
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    login = security is not None and security.username is not None
    try:
        try:
            client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise SinkError(
                f"cannot reach the MQTT broker at {host}:{port} ({exc}); check that it runs and "
                "that --broker HOST:PORT is right"
            ) from exc
        client.loop_start()
        try:
            if not answered.wait(CONNECT_TIMEOUT_S):
                raise SinkError(
                    f"the MQTT broker at {host}:{port} did not answer within "
                    f"{CONNECT_TIMEOUT_S:.0f} s; check that --broker points at an MQTT broker"
                )
            if refusal:
                raise SinkError(
                    f"the MQTT broker at {host}:{port} refused the connection ({refusal[0]}); "
                    + (
                        "check --username and --password-file"
                        if login
                        else "it connected anonymously: give --username and --password-file, "
                        "or --config with the daemon's configuration file"
                    )
                )
            client.on_disconnect = on_disconnect
            _print_messages(inbox, prefix, raw, count, timeout, out, until)
        finally:
            client.on_disconnect = None
            client.disconnect()
            client.loop_stop()
    except KeyboardInterrupt:
        pass
    return 0


def _print_messages(
    inbox: queue.Queue[_Message],
    prefix: str,
    raw: bool,
    count: int | None,
    timeout: float | None,
    out: TextIO,
    until: Callable[[], bool] | None = None,
) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    printed = 0
    while count is None or printed < count:
        wait = 0.5  # short, so that the deadline is checked even when nothing arrives
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return
        try:
            msg = inbox.get(timeout=wait)
        except queue.Empty:
            if until is not None and until():
                return
            continue
        out.write((format_raw(msg) if raw else format_line(msg, prefix)) + "\n")
        out.flush()
        printed += 1


def format_raw(msg: _Message) -> str:
    """One JSON object: topic, retained, payload (parsed JSON, else text); binary payloads
    (snapshots) as ``"payload": null`` plus their size in ``bytes``."""
    obj: dict[str, Any] = {"topic": msg.topic, "retained": msg.retained}
    if msg.topic.endswith("/snapshot"):
        obj["payload"], obj["bytes"] = None, len(msg.payload)
    else:
        try:
            text = msg.payload.decode("utf-8")
        except UnicodeDecodeError:
            obj["payload"], obj["bytes"] = None, len(msg.payload)
        else:
            try:
                obj["payload"] = json.loads(text)
            except ValueError:
                obj["payload"] = text
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def format_line(msg: _Message, prefix: str) -> str:
    """One readable line: local time, device[/camera], then what the message says."""
    stamp = datetime.fromtimestamp(msg.received).strftime("%H:%M:%S.%f")[:-3]
    rest = msg.topic[len(prefix) + 1 :] if msg.topic.startswith(prefix + "/") else msg.topic
    levels = rest.split("/")
    kind = levels[-1] if len(levels) > 1 else ""
    where = "/".join(levels[:-1]) if len(levels) > 1 else rest
    retained = " (retained)" if msg.retained else ""
    if kind == "snapshot":
        return f"{stamp} {where} snapshot {len(msg.payload):,} bytes{retained}"
    try:
        text = msg.payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"{stamp} {where} {kind} {len(msg.payload):,} bytes (binary){retained}"
    if kind == "status":
        return f"{stamp} {where} status {text}{retained}"
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if kind == "result" and isinstance(data, dict):
        return f"{stamp} {where} {_result_summary(data, msg.received)}{retained}"
    if kind == "stats" and isinstance(data, dict):
        return f"{stamp} {where} stats {_stats_summary(data)}{retained}"
    if kind == "events" and isinstance(data, dict):
        return f"{stamp} {where} {_event_summary(data)}{retained}"
    if kind == "state" and isinstance(data, dict):
        return f"{stamp} {where} state {_state_summary(data)}{retained}"
    if kind == "details" and isinstance(data, dict):
        degraded = data.get("degraded") or []
        last = data.get("last_reload")
        reload = ""
        if isinstance(last, dict):
            reload = "; last reload " + (
                "ok" if last.get("ok") else f"refused: {last.get('error')}"
            )
        state = "DEGRADED: " + "; ".join(str(d) for d in degraded) if degraded else "healthy"
        chains = data.get("failover")
        if isinstance(chains, dict):
            state += "".join(f"; {_chain_summary(m, c)}" for m, c in chains.items())
        return f"{stamp} {where} {state}{reload}{retained}"
    shown = text if len(text) <= 120 else text[:117] + "..."
    return f"{stamp} {where} {kind} {shown}{retained}"


def _result_summary(data: dict[str, Any], received: float) -> str:
    parts: list[str] = []
    seq = data.get("seq")
    if seq is None and isinstance(data.get("frame"), dict):
        seq = data["frame"].get("index")
    if seq is not None:
        parts.append(f"#{seq}")
    parts.append(_labels(data))
    captured = data.get("captured_at")
    if isinstance(captured, str):
        try:
            e2e_ms = (received - datetime.fromisoformat(captured).timestamp()) * 1000.0
            parts.append(f"e2e {e2e_ms:.1f} ms")
        except ValueError:
            pass
    elif isinstance(data.get("latency_ms"), int | float):
        parts.append(f"latency {data['latency_ms']:.1f} ms")
    return " ".join(parts)


def _event_summary(data: dict[str, Any]) -> str:
    """``#12 new id 3 square 0.92 (top 0.95) in lawn`` / ``... end id 3 ... after 5.2 s``."""
    parts = [f"#{data.get('seq', '?')}", str(data.get("type", "event"))]
    parts.append(f"id {data.get('id', '?')} {data.get('label', '?')}")
    score, top = data.get("score"), data.get("top_score")
    if isinstance(score, int | float):
        parts.append(f"{score:.2f}" + (f" (top {top:.2f})" if isinstance(top, int | float) else ""))
    zones = data.get("zones")
    if isinstance(zones, list):
        parts.append("in " + ", ".join(str(z) for z in zones) if zones else "in no zone")
    if data.get("type") == "end":
        try:
            first = datetime.fromisoformat(str(data["first_seen"]).replace("Z", "+00:00"))
            last = datetime.fromisoformat(str(data["last_seen"]).replace("Z", "+00:00"))
            parts.append(f"after {(last - first).total_seconds():.1f} s")
        except (KeyError, ValueError):
            pass
    return " ".join(parts)


def _state_summary(data: dict[str, Any]) -> str:
    """``circle 1, triangle 2; lawn: triangle 1`` (labels at 0 left out), or ``nothing``."""

    def counts(obj: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in obj.items() if isinstance(v, int) and v > 0)

    parts = [counts({k: v for k, v in data.items() if k != "zones"}) or "nothing"]
    zones = data.get("zones")
    if isinstance(zones, dict):
        parts += [f"{n}: {counts(c) or 'nothing'}" for n, c in zones.items() if isinstance(c, dict)]
    return "; ".join(parts)


def _labels(data: dict[str, Any]) -> str:
    items: list[str] = []
    for key, score_key, pct in (
        ("detections", "score", False),
        ("classes", "score", False),
        ("segments", "fraction", True),
    ):
        entries = data.get(key)
        if isinstance(entries, list):
            for e in entries:
                if isinstance(e, dict) and isinstance(e.get(score_key), int | float):
                    value = e[score_key]
                    shown = f"{value * 100:.0f}%" if pct else f"{value:.2f}"
                    items.append(f"{e.get('label', '?')} {shown}")
            break
    else:
        outputs = data.get("outputs")
        if isinstance(outputs, list):
            items = [
                f"{o.get('name', '?')}{o.get('shape', '')}" for o in outputs if isinstance(o, dict)
            ]
    if not items:
        return "nothing"
    more = f" (+{len(items) - MAX_LABELS})" if len(items) > MAX_LABELS else ""
    return ", ".join(items[:MAX_LABELS]) + more


def _stats_summary(data: dict[str, Any]) -> str:
    """The figures people watch, from the daemon's stats payload; other payloads are
    flattened to their first few keys."""
    cams = data.get("cameras")
    if not isinstance(cams, dict):
        return _flat_summary(data)
    parts = [
        p
        for p in (
            _figure("rss", data.get("rss_mb"), "MiB"),
            _figure("cpu", data.get("cpu_percent"), "%"),
        )
        if p
    ]
    if isinstance(data.get("cpu_temp_c"), int | float):
        parts.append(f"{data['cpu_temp_c']:.0f} °C")
    for name, cam in cams.items():
        if not isinstance(cam, dict):
            continue
        figures = [
            f"{name}: {cam.get('fps_in')}→{cam.get('fps_out')} fps",
            f"{cam.get('inferred')} inferred",
            f"{cam.get('dropped')} dropped",
            f"{cam.get('skipped_latency', 0) + cam.get('skipped_motion', 0)} skipped",
        ]
        # No percentiles until a frame went through (the first stats, a camera still opening).
        latency = cam.get("latency_ms")
        for stage in ("invoke", "e2e"):
            pct = latency.get(stage) if isinstance(latency, dict) else None
            p50 = pct.get("p50") if isinstance(pct, dict) else None
            figures.append(_figure(f"{stage} p50", p50, "ms") or f"no {stage} times yet")
        parts.append(", ".join(figures))
    models = data.get("models")
    for name, model in models.items() if isinstance(models, dict) else ():
        if isinstance(model, dict) and isinstance(model.get("failover"), dict):
            parts.append(_chain_summary(name, model["failover"]))
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict):
        dropped = sum(
            int(mqtt.get(k) or 0) for k in ("dropped_full", "dropped_ram", "dropped_refused")
        )
        commit = mqtt.get("last_commit_ms")
        parts.append(
            f"outbox {mqtt.get('pending_ram', 0)} ram / {mqtt.get('pending_disk', 0)} "
            f"disk, {mqtt.get('uncommitted', 0)} uncommitted, "
            + (f"last commit {commit:.1f} ms, " if isinstance(commit, int | float) else "")
            + f"{dropped} dropped"
        )
    online = data.get("online")
    if isinstance(online, dict):
        errors = online.get("errors")
        p50 = (online.get("latency_ms") or {}).get("p50")
        parts.append(
            f"online {online.get('answered', 0)} answered, "
            f"{sum(errors.values()) if isinstance(errors, dict) else 0} errors, "
            f"{online.get('expired', 0)} expired"
            + (f", p50 {p50:.1f} ms" if isinstance(p50, int | float) else "")
        )
    if data.get("memory_over_budget"):
        parts.append("MEMORY OVER BUDGET")
    degraded = data.get("degraded")
    if isinstance(degraded, list) and degraded:
        parts.append("DEGRADED: " + "; ".join(str(d) for d in degraded))
    return "; ".join(parts)


def _chain_summary(model: str, chain: object) -> str:
    """``"model M on xnnpack (chain edgetpu,xnnpack; 1 switch, last edgetpu→xnnpack: why)"``,
    from a model's ``failover`` entry in the stats or the status details."""
    if not isinstance(chain, dict):
        return f"model {model}: failover ?"
    names = chain.get("chain")
    listed = ",".join(map(str, names)) if isinstance(names, list) else "?"
    active = chain.get("active") or "NOTHING (no delegate can run it)"
    count = chain.get("switches", 0)
    text = f"model {model} on {active} (chain {listed}; {count} switch{'' if count == 1 else 'es'}"
    last = chain.get("last_switch")
    if isinstance(last, dict):
        text += f", last {last.get('source') or '-'}→{last.get('target') or '-'}"
        text += f": {last.get('reason')}"
    return text + ")"


def _figure(name: str, value: object, unit: str) -> str:
    """``"name value unit"``, or empty when the payload has no number there."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    return f"{name} {value} {unit}"


def _flat_summary(data: dict[str, Any]) -> str:
    flat: list[str] = []

    def walk(obj: dict[str, Any], path: str) -> None:
        for key, value in obj.items():
            name = f"{path}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, float):
                flat.append(f"{name}={value:.3g}")
            elif isinstance(value, bool | int | str):
                flat.append(f"{name}={value}")

    walk(data, "")
    more = f" (+{len(flat) - MAX_STATS_ITEMS})" if len(flat) > MAX_STATS_ITEMS else ""
    return " ".join(flat[:MAX_STATS_ITEMS]) + more
