"""``edge listen``: watch what devices publish, as readable lines or as JSON lines for machines.

Subscribes to ``<prefix>/<device or +>/#`` and prints one line per message: results with their
sequence number, labels and end-to-end latency; status changes; stats condensed; snapshots by
size only. Stops after ``--count`` messages or ``--timeout`` seconds; Ctrl-C ends it normally.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.argtypes import broker_address, number, whole
from edge.errors import ConfigError, EdgeError, SinkError
from edge.sinks.mqtt_settings import (
    MqttSettings,
    read_password,
    secure,
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

    # MQTT 3.1.1 with an empty client id and a clean session: every broker accepts it, and a
    # listener needs no session of its own.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="", clean_session=True, protocol=mqtt.MQTTv311
    )
    client.suppress_exceptions = True
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    if security is not None:
        secure(client, security, read_password(security), tls_key_path(security))
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
    parts = [f"rss {data.get('rss_mb')} MiB", f"cpu {data.get('cpu_percent')} %"]
    if data.get("cpu_temp_c") is not None:
        parts.append(f"{data['cpu_temp_c']:.0f} °C")
    for name, cam in cams.items():
        if not isinstance(cam, dict):
            continue
        inv = cam.get("latency_ms", {}).get("invoke", {}).get("p50")
        e2e = cam.get("latency_ms", {}).get("e2e", {}).get("p50")
        parts.append(
            f"{name}: {cam.get('fps_in')}→{cam.get('fps_out')} fps, {cam.get('inferred')} "
            f"inferred, {cam.get('dropped')} dropped, "
            f"{cam.get('skipped_latency', 0) + cam.get('skipped_motion', 0)} skipped, "
            f"invoke p50 {inv} ms, e2e p50 {e2e} ms"
        )
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict):
        parts.append(
            f"outbox {mqtt.get('pending_ram', 0)} ram / {mqtt.get('pending_disk', 0)} "
            f"disk, {mqtt.get('dropped_full', 0)} dropped"
        )
    if data.get("memory_over_budget"):
        parts.append("MEMORY OVER BUDGET")
    return "; ".join(parts)


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


# -- CLI wiring -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``edge listen``'s options to its sub-parser."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="take the broker, prefix, device, login and TLS settings from a daemon's "
        "configuration file; the options below override it",
    )
    parser.add_argument(
        "--broker",
        type=broker_address,
        default=None,
        metavar="HOST:PORT",
        help="MQTT broker to listen on (default localhost:1883; port defaults to 1883)",
    )
    parser.add_argument(
        "--prefix", type=_prefix, default=None, help="topic prefix devices use (default edge)"
    )
    parser.add_argument(
        "--device",
        type=_device,
        default=None,
        help="only this device id (default: all devices, or the --config file's device)",
    )
    parser.add_argument("--username", default=None, help="MQTT login")
    parser.add_argument(
        "--password-file",
        default=None,
        metavar="FILE",
        help="file holding the password for --username (never given on the command line)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="use TLS, trusting the system's certificate authorities"
    )
    parser.add_argument("--tls-ca", default=None, metavar="FILE", help="CA certificate (PEM)")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate (PEM)")
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="client key (PEM)")
    parser.add_argument(
        "--raw", action="store_true", help="print one JSON object per message, for machines"
    )
    parser.add_argument(
        "--count", type=whole(1), default=None, metavar="N", help="stop after N messages"
    )
    parser.add_argument(
        "--timeout",
        type=number(0.0, above=True),
        default=None,
        metavar="S",
        help="stop after S seconds",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``edge listen`` with parsed arguments; returns the exit code (errors go to stderr)."""
    try:
        s = _settings(args)
        return listen(
            s.host,
            s.port,
            s.prefix,
            args.device or (s.device if args.config else None),
            args.raw,
            args.count,
            args.timeout,
            sys.stdout,
            security=s,
        )
    except EdgeError as exc:
        print(f"edge listen: {exc}", file=sys.stderr)
        return exc.exit_code


def _settings(args: argparse.Namespace) -> MqttSettings:
    """Broker, prefix, login and TLS: the --config file's [mqtt] section, then the options."""
    if args.config:
        from edge.config import load
        from edge.daemon import mqtt_settings

        base = mqtt_settings(load(args.config))
    else:
        base = MqttSettings(device="edge-listen")
    changes: dict[str, Any] = {}
    if args.broker is not None:
        changes["host"], changes["port"] = args.broker
    if args.prefix is not None:
        changes["prefix"] = args.prefix
    if args.username is not None:
        changes["username"] = args.username
    for key in ("password_file", "tls_ca", "tls_cert", "tls_key"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.tls:
        changes["tls"] = True
    return replace(base, **changes)


def _device(text: str) -> str:
    try:
        validate_topic_part(text, "--device")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0]) from exc
    return text


def _prefix(text: str) -> str:
    for level in text.split("/"):
        try:
            validate_topic_part(level, "--prefix level")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problems[0]) from exc
    return text
