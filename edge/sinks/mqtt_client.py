"""The connection to an MQTT broker, as edge makes it with paho-mqtt 2.x.

``new_client`` builds a paho client from ``MqttSettings`` (callback API 2, a clean session, the
login and TLS); the sink and ``edge listen`` both use it. ``Connection`` is the sink's side of
paho: one client at a time, connecting and reconnecting in the background on paho's network
thread with a jittered back-off (``Backoff``), TCP_NODELAY on every socket, callbacks that cannot
end paho's thread, everything that happens reported as a ``LinkEvent`` for the sink's outbox
thread, and the MQTT 5 → 3.1.1 fall-back. The session is clean (``clean_start`` under MQTT 5,
``clean_session`` under 3.1.1): the sink re-sends from its outbox what a broken connection
carried, so it needs no broker-side session.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.sinks.mqtt_settings import (
    MqttSettings,
    check_files,
    read_password,
    secure,
    tls_key_path,
)
from edge.sinks.mqtt_throttle import Throttle

log = logging.getLogger(__name__)

_TLS_HINT = (
    ": check tls_ca (the CA that signed the broker's certificate), that the host name or IP is "
    "in that certificate, and the client certificate and key if the broker requires one"
)
_UNSUPPORTED_PROTOCOL = 0x84  # CONNACK reason; paho also maps a 3.1.1 broker's refusal to it


def new_client(
    settings: MqttSettings,
    protocol: MQTTProtocolVersion,
    client_id: str,
    password: str | None,
    tls_key: Path | None,
) -> mqtt.Client:
    """A paho client for ``protocol`` with the login and TLS of ``settings`` (the broker's
    certificate is always verified), not yet connected. Its session is clean (under MQTT 5
    ``clean_start`` is given at connect). Raises ConfigError when the TLS files cannot be
    loaded."""
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
        protocol=protocol,
    )
    # An exception escaping a callback would otherwise end paho's network thread and with it
    # all reconnecting.
    client.suppress_exceptions = True
    secure(client, settings, password, tls_key)
    return client


class _Client(mqtt.Client):
    """paho's client, but reads and writes on a plain (not TLS) socket do not touch ``ssl``.

    paho's ``_sock_recv`` and ``_sock_send`` catch ``ssl.SSLWantReadError`` ahead of everything
    else, so every ``BlockingIOError`` of a plain socket (one ends each read of the network loop)
    evaluates ``ssl`` and would load OpenSSL (edge.deferred_modules) into a daemon that has no
    TLS. These do what paho's do for a plain socket; with TLS they are paho's."""

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if self._ssl or sock is None:
            return super()._sock_recv(bufsize)
        return sock.recv(bufsize)

    def _sock_send(self, buf: bytes | bytearray) -> int:
        sock = self._sock
        if self._ssl or sock is None:
            return super()._sock_send(buf)
        try:
            return sock.send(buf)
        except BlockingIOError as err:
            self._call_socket_register_write()
            raise BlockingIOError() from err


class Backoff:
    """The wait before each reconnection attempt: ``min_s`` doubling per failed attempt up to
    ``max_s``, each wait a random 50-100 % of that (devices that lost one broker do not all come
    back in the same second). paho's own doubling has no jitter, so the delay is set for each
    attempt: every wait of paho's follows an on_connect_fail or on_disconnect callback, which
    call ``failed``; an accepted connection calls ``reset``. Paho's thread only."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self._min_s = min_s
        self._max_s = max_s
        self._attempt = 0

    def failed(self, client: mqtt.Client) -> None:
        """Set the wait before ``client``'s next attempt, one step longer than the last."""
        ceiling = min(self._max_s, self._min_s * 2.0 ** min(self._attempt, 16))
        delay = ceiling * random.uniform(0.5, 1.0)
        self._attempt += 1
        # paho annotates the delays as int but only adds them to time.monotonic() values.
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def reset(self) -> None:
        """The next loss waits ``min_s`` again."""
        self._attempt = 0


LinkEventKind = Literal["socket", "up", "down", "ack", "refused_v5"]


class LinkEvent(NamedTuple):
    """Something paho's thread saw, in the order it happened: ``socket`` (TCP connected,
    CONNECT sent), ``up`` (the broker accepted the connection), ``down`` (it is gone), ``ack``
    (message ``mid`` acknowledged, ``failed`` when its reason code is a refusal), ``refused_v5``
    (the broker refused MQTT 5). ``client`` tells events of a replaced client apart."""

    kind: LinkEventKind
    client: mqtt.Client
    mid: int = 0
    failed: bool = False
    reason: str = ""


class Connection:
    """The sink's connection to the broker in ``settings``, with ``will_topic`` as its Last
    Will (``offline``, retained).

    ``on_up(client)`` runs on paho's thread when the broker accepts a connection, before the
    ``up`` event; ``push(event)`` receives every LinkEvent, on paho's thread;
    ``on_message(message)`` every message of the owner's subscriptions, on paho's thread.
    ``open`` and ``connect`` run on the owner's thread at start; ``seen``, ``fallback_due`` and
    ``fall_back`` on the thread that consumes the events; ``close`` after that thread has
    ended. ``client``, ``up`` and the counters may be read from any thread.

    Protocol fall-back (``protocol = "5"``): the connection switches to MQTT 3.1.1 when the
    broker refuses 5 in its CONNACK, or when, before any MQTT 5 session succeeded, a TCP
    connection gets no CONNACK within the CONNACK timeout (amqtt, for one, never answers an
    MQTT 5 CONNECT that carries a Will: it waits for bytes that will not come)."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        will_topic: str,
        on_up: Callable[[mqtt.Client], None],
        push: Callable[[LinkEvent], None],
        throttle: Throttle,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client: mqtt.Client | None = None
        self.up = False  # as paho's thread sees it
        self.closing = False  # set by the owner when it stops: a lost link is no news then
        self.callback_errors = 0
        self.reconnects = 0
        self.connack_deadline: float | None = None  # monotonic; consuming thread
        self._connections = 0
        self._protocol = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
        self._v5_ok = False  # an MQTT 5 CONNACK was seen: never fall back after that
        self._connack_timeout_s = 10.0
        self._will_topic = will_topic
        self._on_up = on_up
        self._on_message = on_message
        self._push = push
        self._throttle = throttle
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._password: str | None = None
        self._tls_key: Path | None = settings.tls_key

    @property
    def protocol_level(self) -> int:
        """The MQTT protocol level in use: 5, or 4 for 3.1.1."""
        return 5 if self._protocol == mqtt.MQTTv5 else 4

    def open(self, connack_timeout_s: float) -> None:
        """Check the password and TLS files, read them, build the client (not connected yet).
        Raises ConfigError when they cannot be used."""
        s = self.settings
        check_files(s)
        self._password = read_password(s)
        self._tls_key = tls_key_path(s)
        self._connack_timeout_s = connack_timeout_s
        self.client = self._build(self._protocol)

    def connect(self) -> None:
        """Start connecting in the background (paho's thread); returns at once."""
        assert self.client is not None
        self._connect(self.client)

    def seen(self, ev: LinkEvent) -> bool:
        """Track the link from one of its events, on the consuming thread: the CONNACK clock
        of the fall-back, whether MQTT 5 ever worked, reconnects. False for an event of a
        client the fall-back replaced (the owner ignores it)."""
        if ev.client is not self.client:
            return False
        if ev.kind == "socket":
            if self._protocol == mqtt.MQTTv5 and not self._v5_ok:
                self.connack_deadline = time.monotonic() + self._connack_timeout_s
        elif ev.kind == "up":
            self.connack_deadline = None
            self._v5_ok = self._v5_ok or self._protocol == mqtt.MQTTv5
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
        elif ev.kind == "down":
            self.connack_deadline = None
        return True

    def fallback_due(self, now: float) -> str | None:
        """Why to fall back to MQTT 3.1.1 now (no CONNACK in time), or None."""
        if self.connack_deadline is None or now < self.connack_deadline:
            return None
        return f"did not answer an MQTT 5 CONNECT within {self._connack_timeout_s} s"

    def fall_back(self, why: str) -> None:
        """Replace the client by an MQTT 3.1.1 one and connect it (consuming thread). What the
        old one carried is the owner's to send again."""
        s = self.settings
        self.connack_deadline = None
        log.warning(
            'MQTT broker %s:%d %s; using MQTT 3.1.1 (set mqtt.protocol = "3.1.1" to skip '
            "this). With 3.1.1 a broker that refuses a message cannot say so",
            s.host,
            s.port,
            why,
        )
        self._protocol = mqtt.MQTTv311
        old = self.client
        new = self._build(mqtt.MQTTv311)
        self.client = new
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self._connect(new)

    def close(self) -> None:
        """Disconnect and stop paho's thread (blocks until it has ended)."""
        client = self.client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self.up = False

    # -- building and connecting ---------------------------------------------------------------

    def _build(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        s = self.settings
        client = new_client(s, protocol, s.effective_client_id, self._password, self._tls_key)
        client.max_inflight_messages_set(s.inflight)
        client.will_set(self._will_topic, "offline", qos=1, retain=True)
        client.on_socket_open = self._cb_socket_open
        client.on_connect = self._cb_connect
        client.on_connect_fail = self._cb_connect_fail
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        return client

    def _connect(self, client: mqtt.Client) -> None:
        s = self.settings
        if client.protocol == mqtt.MQTTv5:
            client.connect_async(s.host, s.port, keepalive=s.keepalive, clean_start=True)
        else:
            client.connect_async(s.host, s.port, keepalive=s.keepalive)
        client.loop_start()

    # -- paho callbacks (paho's network thread) ------------------------------------------------
    # Each is a thin wrapper that runs the real body under _guard; bodies only record events.

    def _guard(self, name: str, body: Callable[..., None], *args: Any) -> None:
        try:
            body(*args)
        except Exception:
            self.callback_errors += 1
            if (n := self._throttle.ready(f"callback-{name}")) is not None:
                log.exception("MQTT %s callback failed (+%d); paho's thread carries on", name, n)

    def _cb_socket_open(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._guard("on_socket_open", self._on_socket_open, client, sock)

    def _cb_connect(
        self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._guard("on_connect", self._on_connect, client, reason)

    def _cb_connect_fail(self, client: mqtt.Client, _u: Any) -> None:
        self._guard("on_connect_fail", self._on_connect_fail, client)

    def _cb_disconnect(
        self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._guard("on_disconnect", self._on_disconnect, client, reason)

    def _cb_publish(
        self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        self._guard("on_publish", self._on_publish, client, mid, reason)

    def _cb_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is not None and client is self.client:
            self._guard("on_message", self._on_message, msg)

    def _on_socket_open(self, client: mqtt.Client, sock: Any) -> None:
        # paho never sets TCP_NODELAY; without it Nagle holds small publishes back (measured on
        # loopback: p99.9 publish-to-receive 30 ms without, 2 ms with).
        with contextlib.suppress(OSError, AttributeError):  # unix socket, websocket wrapper
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._push(LinkEvent("socket", client))

    def _on_connect(self, client: mqtt.Client, reason: ReasonCode) -> None:
        s = self.settings
        if reason.is_failure:
            if (
                reason.value == _UNSUPPORTED_PROTOCOL
                and client.protocol == mqtt.MQTTv5
                and s.protocol == "5"
            ):
                self._push(LinkEvent("refused_v5", client, reason=str(reason)))
                return
            if (n := self._throttle.ready("refused")) is not None:
                log.error(
                    "broker %s:%d refused the connection: %s; check mqtt.username, the password, "
                    "the client certificate and the broker's ACL (+%d)",
                    s.host,
                    s.port,
                    reason,
                    n,
                )
            return
        self._backoff.reset()
        self._on_up(client)
        self.up = True
        log.info(
            "connected to MQTT broker %s:%d (MQTT %s)",
            s.host,
            s.port,
            "5" if client.protocol == mqtt.MQTTv5 else "3.1.1",
        )
        self._push(LinkEvent("up", client))

    def _on_connect_fail(self, client: mqtt.Client) -> None:
        # paho calls this from inside its `except OSError`, so the reason is still at hand.
        exc = sys.exc_info()[1]
        self._backoff.failed(client)
        if (n := self._throttle.ready("connect-fail")) is not None:
            log.warning(
                "cannot reach MQTT broker %s:%d (%s)%s; retrying every %g-%g s, results are kept "
                "in the outbox (+%d attempts)",
                self.settings.host,
                self.settings.port,
                exc or "connection failed",
                _TLS_HINT if self.settings.uses_tls and isinstance(exc, ssl.SSLError) else "",
                self.settings.reconnect_min_s,
                self.settings.reconnect_max_s,
                n,
            )

    def _on_disconnect(self, client: mqtt.Client, reason: ReasonCode) -> None:
        if client is not self.client:
            return
        was_up = self.up
        self.up = False
        self._backoff.failed(client)
        self._push(LinkEvent("down", client, reason=str(reason)))
        if self.closing:
            return
        s = self.settings
        if not was_up:
            if (n := self._throttle.ready("refused")) is not None:
                log.warning(
                    "MQTT broker %s:%d closed the connection before accepting it (%s): check "
                    "%sthe username and password, and the broker's log; retrying, results are "
                    "kept in the outbox (+%d)",
                    s.host,
                    s.port,
                    reason,
                    "the TLS settings (tls_ca, tls_cert, tls_key), "
                    if s.uses_tls
                    else "that the broker does not expect TLS (set mqtt.tls_ca if it does), ",
                    n,
                )
        else:
            log.warning(
                "lost the MQTT broker %s:%d (%s); results are kept in the outbox",
                s.host,
                s.port,
                reason,
            )

    def _on_publish(self, client: mqtt.Client, mid: int, reason: ReasonCode) -> None:
        self._push(LinkEvent("ack", client, mid, reason.is_failure, str(reason)))
