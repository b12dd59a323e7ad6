"""``edge request``'s side of online inference: publish images as requests and print each
answer (formats in :mod:`edge.online`). One connection, one private response topic
(``<prefix>/reply/<random>``), answers matched to images by correlation data."""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import InputError, SinkError
from edge.sinks.mqtt_client import new_client
from edge.sinks.mqtt_settings import MqttSettings, read_password, tls_key_path

CONNECT_TIMEOUT_S = 10.0
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer: ``body`` is what ``edge infer`` would print (or the error JSON);
    ``device`` the device that answered; ``error`` the reason, None for a result."""

    body: bytes
    device: str
    error: str | None


def request(
    settings: MqttSettings,
    topic: str,
    images: Sequence[str],
    *,
    v5: bool = True,
    timeout: float = 10.0,
    ttl: float | None = None,
    model: str | None = None,
) -> list[Answer | None]:
    """Send every image of ``images`` to ``topic`` and wait up to ``timeout`` seconds (from the
    last publish) for the answers: one per image, in order, None where none came. ``v5``
    False sends the JSON envelope over MQTT 3.1.1. Raises InputError for an unreadable image,
    SinkError when the broker cannot be reached or refuses the login."""
    payloads = [_read(p) for p in images]
    reply_topic = f"{settings.prefix}/reply/{uuid.uuid4().hex}"
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    ready = threading.Event()
    refused: list[str] = []
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    client = new_client(settings, protocol, "", read_password(settings), tls_key_path(settings))

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
            ready.set()
        else:
            c.subscribe(reply_topic, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: ready.set()
    client.on_message = lambda _c, _u, msg: inbox.put(msg)
    try:
        if v5:
            client.connect(settings.host, settings.port, keepalive=30, clean_start=True)
        else:
            client.connect(settings.host, settings.port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise SinkError(
            f"cannot reach the MQTT broker at {settings.host}:{settings.port} ({exc}); check "
            "that it runs and that --broker HOST:PORT is right"
        ) from exc
    client.loop_start()
    try:
        if not ready.wait(CONNECT_TIMEOUT_S) or refused:
            why = refused[0] if refused else f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
            raise SinkError(
                f"the MQTT broker at {settings.host}:{settings.port} did not let this client "
                f"subscribe ({why}); check --broker and the login (--config)"
            )
        ids = [uuid.uuid4().hex for _ in images]
        for path, data, cid in zip(images, payloads, ids, strict=True):
            payload, props = _message(path, data, cid, reply_topic, v5, ttl, model)
            client.publish(topic, payload, qos=1, properties=props)
        return _collect(inbox, ids, v5, timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}. Check the path.") from exc


def _message(
    path: str,
    data: bytes,
    cid: str,
    reply_topic: str,
    v5: bool,
    ttl: float | None,
    model: str | None,
) -> tuple[bytes, Properties | None]:
    if not v5:
        env: dict[str, Any] = {
            "image": base64.b64encode(data).decode(),
            "response_topic": reply_topic,
            "correlation": cid,
            "source": path,
        }
        if ttl is not None:
            env["ttl_s"] = ttl
        if model is not None:
            env["model"] = model
        return json.dumps(env).encode(), None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_topic
    props.CorrelationData = cid.encode()
    content_type = _TYPES.get(Path(path).suffix.lower())
    if content_type is not None:
        props.ContentType = content_type
    if ttl is not None:
        props.MessageExpiryInterval = max(1, round(ttl))
    user = [("source", path)] + ([("model", model)] if model is not None else [])
    props.UserProperty = user
    return data, props


def _collect(
    inbox: queue.Queue[mqtt.MQTTMessage], ids: list[str], v5: bool, timeout: float
) -> list[Answer | None]:
    want = {cid.encode(): i for i, cid in enumerate(ids)}
    out: list[Answer | None] = [None] * len(ids)
    deadline = time.monotonic() + timeout
    while any(a is None for a in out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            msg = inbox.get(timeout=left)
        except queue.Empty:
            break
        parsed = _answer(msg, v5)
        if parsed is None:
            continue
        cid, answer = parsed
        i = want.get(cid)
        if i is not None and out[i] is None:
            out[i] = answer
    return out


def _answer(msg: mqtt.MQTTMessage, v5: bool) -> tuple[bytes, Answer] | None:
    payload = bytes(msg.payload)
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if not v5:
        body = (
            json.dumps(doc["result"], separators=(",", ":")).encode()
            if "result" in doc
            else json.dumps(
                {
                    "error": doc.get("error"),
                    "message": doc.get("message"),
                    "device": doc.get("device"),
                },
                separators=(",", ":"),
            ).encode()
        )
        answer = Answer(body, str(doc.get("device", "")), doc.get("error"))
        return str(doc.get("correlation", "")).encode(), answer
    props = msg.properties
    user = dict(getattr(props, "UserProperty", None) or [])
    cid = bytes(getattr(props, "CorrelationData", b"") or b"")
    return cid, Answer(payload, str(user.get("device", "")), doc.get("error"))


def print_answers(
    images: Sequence[str], answers: Sequence[Answer | None], topic: str, out: IO[str], err: IO[str]
) -> int:
    """Print one line per image (the answer's JSON, or a timeout message on ``err``); the
    number of images without a result."""
    missing = 0
    for path, answer in zip(images, answers, strict=True):
        if answer is None:
            missing += 1
            print(
                f"edge: no answer for {path} on time: is a daemon with [online] enabled "
                f"subscribed to {topic} (and its [online] group set for a fleet topic)?",
                file=err,
            )
            continue
        missing += answer.error is not None
        out.write(answer.body.decode("utf-8", "replace") + "\n")
        out.flush()
    return missing
