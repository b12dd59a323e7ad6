"""Reading an online request from an MQTT message, and writing its answer (the formats are in
:mod:`edge.online`). Runs on paho's thread (reading) and the online worker (answering); nothing
here blocks or decodes pixels."""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where and how an answer goes: ``topic`` with ``correlation`` (MQTT 5 Correlation Data,
    or the envelope's ``correlation`` string as UTF-8); ``envelope``: the request was a 3.1.1
    JSON envelope, so the answer is one too."""

    topic: str
    correlation: bytes
    envelope: bool


@dataclass(frozen=True, slots=True)
class Request:
    """One request waiting for its turn. received, expires: ``time.monotonic()`` seconds
    (expires None: never). model: the model the client asked for, None: any."""

    reply: ReplyTo
    image: bytes
    source: str
    model: str | None
    received: float
    expires: float | None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


class RefusalError(Exception):
    """A request answered with an error at once (``reason`` is one of :mod:`edge.online`'s);
    ``reply`` None: it is not answered (no response topic: ``unanswerable``; ``expired``)."""

    def __init__(self, reason: str, message: str, reply: ReplyTo | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.reply = reply


def parse(msg: mqtt.MQTTMessage, max_bytes: int, now: float | None = None) -> Request:
    """The request ``msg`` carries (MQTT 5 properties, else the JSON envelope). ``now``:
    monotonic seconds of its arrival. Raises RefusalError."""
    now = time.monotonic() if now is None else now
    props = msg.properties
    topic = getattr(props, "ResponseTopic", None) if props is not None else None
    if topic:
        return _parse_v5(msg, props, str(topic), max_bytes, now)
    return _parse_envelope(bytes(msg.payload), max_bytes, now)


def _parse_v5(msg: mqtt.MQTTMessage, props: Any, topic: str, max_bytes: int, now: float) -> Request:
    reply = ReplyTo(topic, bytes(getattr(props, "CorrelationData", b"") or b""), envelope=False)
    interval = getattr(props, "MessageExpiryInterval", None)
    expires = now + float(interval) if interval is not None else None
    user = dict(getattr(props, "UserProperty", None) or [])
    content_type = getattr(props, "ContentType", None)
    if content_type is not None and content_type not in IMAGE_TYPES:
        raise RefusalError(
            "unsupported_type",
            f"content type {content_type!r} is not image/jpeg or image/png",
            reply,
        )
    image = bytes(msg.payload)
    _check_size(len(image), max_bytes, reply)
    return Request(reply, image, str(user.get("source", "mqtt")), user.get("model"), now, expires)


def _parse_envelope(payload: bytes, max_bytes: int, now: float) -> Request:
    try:
        env = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        env = None
    if not isinstance(env, dict) or not isinstance(env.get("response_topic"), str):
        raise RefusalError(
            "unanswerable",
            "neither an MQTT 5 Response Topic nor a JSON envelope with response_topic",
            None,
        )
    correlation = env.get("correlation")
    reply = ReplyTo(
        env["response_topic"],
        str(correlation).encode() if correlation is not None else b"",
        envelope=True,
    )
    expires = None
    try:
        if env.get("ttl_s") is not None:
            expires = now + float(env["ttl_s"])
        elif env.get("expires_at") is not None:
            expires = now + float(env["expires_at"]) - time.time()
    except (TypeError, ValueError) as exc:
        raise RefusalError(
            "undecodable", f"ttl_s / expires_at must be numbers: {exc}", reply
        ) from exc
    _check_expiry(expires, now)
    data = env.get("image")
    if not isinstance(data, str):
        raise RefusalError("undecodable", "the envelope has no image (base64 string)", reply)
    _check_size(len(data) * 3 // 4, max_bytes, reply)
    try:
        image = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RefusalError(
            "undecodable", f"the envelope's image is not base64: {exc}", reply
        ) from exc
    model = env.get("model")
    return Request(
        reply,
        image,
        str(env.get("source", "mqtt")),
        str(model) if model is not None else None,
        now,
        expires,
    )


def _check_expiry(expires: float | None, now: float) -> None:
    if expires is not None and now >= expires:
        raise RefusalError("expired", "the request expired before it arrived", None)


def _check_size(n: int, max_bytes: int, reply: ReplyTo) -> None:
    if n > max_bytes:
        raise RefusalError(
            "too_large",
            f"the image has {n} bytes, over this device's max_image_bytes of {max_bytes}",
            reply,
        )


def answer(
    reply: ReplyTo, device: str, body: bytes | None, error: tuple[str, str] | None = None
) -> tuple[bytes, Properties]:
    """The payload and MQTT 5 properties answering ``reply``: ``body`` (the result JSON) or
    ``error`` (reason, message). An envelope's answer embeds ``body`` byte for byte."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    if reply.correlation:
        props.CorrelationData = reply.correlation
    props.UserProperty = [("device", device), ("status", "ok" if error is None else "error")]
    if reply.envelope:
        head = {"correlation": reply.correlation.decode("utf-8", "replace"), "device": device}
        if error is None:
            assert body is not None
            text = json.dumps(head, separators=(",", ":")).encode()
            return text[:-1] + b',"result":' + body + b"}", props
        head.update(error=error[0], message=error[1])
        return json.dumps(head, separators=(",", ":")).encode(), props
    if error is None:
        assert body is not None
        return body, props
    doc = {"error": error[0], "message": error[1], "device": device}
    return json.dumps(doc, separators=(",", ":")).encode(), props
