"""Publishing results, stats and snapshots to an MQTT broker with paho-mqtt 2.x.

Topics, under ``<prefix>/<device>/``: ``status`` (retained: ``online`` on connect, ``stopped`` on
a clean close, ``offline`` as Last Will), ``<camera>/result`` (one JSON result per inference, at
``qos``, through the durable ``Outbox``), ``stats`` (QoS 0, retained) and ``<camera>/snapshot``
(JPEG, QoS 0). Stats and snapshots are best-effort: while disconnected they are dropped.

Threads: producers call ``publish_*`` (never blocking: they append to a deque); paho's network
thread runs the callbacks, which only record events; the ``edge-mqtt-outbox`` thread owns the
Outbox and its SQLite file, feeds paho at most ``inflight`` results at a time and decides when to
spool to disk. Disk I/O therefore never runs on the inference thread (an SD-card fsync can take
tens of milliseconds) nor on paho's thread (it would delay keepalives and acknowledgements), and
one owner needs no lock around the Outbox.

Delivery is at-least-once. On every (re)connect the sink takes back whatever paho still holds
(``drop_out_messages()`` in ``on_connect``) and re-sends it from the Outbox in order, so paho's
own reconnect burst (it ignores ``max_inflight_messages`` after a reconnect) never happens and the
order is the Outbox's. Hence the session choice: ``clean_start`` (MQTT 5) / ``clean_session``
(3.1.1) is true, since the publisher needs no broker-side session; duplicates after an outage are
at most ``inflight``. Consumers deduplicate on the result's ``(boot_id, seq)``.

Refusals: a message the broker rejects (MQTT 5 reason code >= 0x80, e.g. 0x87 "not authorized"
from an ACL) is counted in ``rejected`` and deleted; a message after which connections drop
before it is acknowledged (three times in a row) is treated the same, so one poison message
cannot loop forever. Refusals are counted per topic: after ``REFUSALS_TO_QUARANTINE`` refusals a
topic is quarantined (one ERROR names it and the ACL): its results are counted and dropped
without being sent, so one refused camera cannot starve the others; it is tried again every
``QUARANTINE_RETRY_S`` and on a reload. (An MQTT 3.1.1 broker can only refuse by closing the
connection; mosquitto 2.0 even acknowledges a denied 3.1.1 publish as a success, which no client
can detect.)

Disk: when the outbox file cannot be written (disk full, I/O error), delivery goes on from RAM
while connected; the first failure is logged at ERROR with SQLite's own message and the
recovery at INFO (once per change); writing is retried every ``DISK_RETRY_S``. RAM-only results
are bounded (``ram_max_rows``, oldest dropped and counted). At ``close()`` the results that
could be neither delivered nor written are counted (``lost_at_shutdown``), logged at ERROR and
included in the last stats.

Back-pressure: while disconnected, ``room()`` is false once ``ram_window`` results wait in RAM
for their commit; the pipeline then holds lossless sources back and drops frames of live ones at
capture (counted), so a SIGKILL costs at most about that many results.

With QoS 0 results a "delivery" is the message leaving for the socket: each is sent once while
connected and spooled while not, but one written into a connection that then breaks is lost.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import SinkError
from edge.outbox import Outbox
from edge.sinks.mqtt_settings import (
    MqttSettings,
    check_files,
    read_password,
    secure,
    tls_key_path,
    validate_topic_part,
)

log = logging.getLogger(__name__)
_TLS_HINT = (
    ": check tls_ca (the CA that signed the broker's certificate), that the host name or IP is "
    "in that certificate, and the client certificate and key if the broker requires one"
)

DISK_RETRY_S = 2.0  # a failed outbox write is retried this often
REFUSALS_TO_QUARANTINE = 3
QUARANTINE_RETRY_S = 300.0
# While disconnected, new results go to disk as soon as the outbox thread sees them (results
# that queued up meanwhile share one commit), so a crash loses at most the result being handed
# over. The cost is one commit per result during an outage (about 10-20/s): SD-card wear is
# bounded by outage time, not by uptime, because a healthy link never touches the disk.
OFFLINE_SPOOL_DELAY_S = 0.0
# A message still unacknowledged when this many connections in a row dropped right after it was
# sent is a poison message (e.g. mosquitto 2.0 answers an MQTT 5 publish over
# message_size_limit with PUBACK reason 0x95, which paho 2.2 cannot decode: it drops the
# connection and would re-send the same message on every reconnect).
POISON_STRIKES = 3
_UNSUPPORTED_PROTOCOL = 0x84  # CONNACK reason; paho also maps a 3.1.1 broker's refusal to it
_THREAD_NAME = "edge-mqtt-outbox"


class _Event(NamedTuple):
    """Something paho's thread reports to the outbox thread, in the order it happened."""

    kind: str  # "ack", "socket", "up", "down", "refused_v5", "unquarantine"
    client: mqtt.Client | None
    mid: int = 0
    failed: bool = False
    reason: str = ""


class _Throttle:
    """Rate limit for repeated warnings: ``ready(key)`` returns how many were suppressed since
    the last report when one may be logged now (at most once per ``interval_s``), else None."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)


class _TopicState:
    """Refusals seen for one topic (outbox thread only)."""

    __slots__ = ("reason", "refusals")

    def __init__(self) -> None:
        self.refusals = 0
        self.reason = ""


_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"


class MqttSink:
    """Delivers results through ``outbox`` to the broker in ``settings``; see the module doc.

    ``publish_*`` are thread-safe and never block. Results published before ``start()`` wait in
    RAM; after ``close()`` they are ignored (with a warning).

    Protocol fallback (``protocol = "5"``): the sink switches to MQTT 3.1.1 when the broker
    refuses 5 in its CONNACK, or when, before any MQTT 5 session succeeded, a TCP connection gets
    no CONNACK within ``v5_connack_timeout_s`` (amqtt, for one, never answers an MQTT 5 CONNECT
    that carries a Will: it waits for bytes that will not come)."""

    v5_connack_timeout_s = 10.0

    def __init__(self, settings: MqttSettings, outbox: Outbox) -> None:
        self.settings = settings
        self._outbox = outbox
        # Set by the owner: the stats payload published (QoS 1) just before ``stopped``.
        self.final_stats: Callable[[], bytes] | None = None
        self._base = settings.base_topic
        self._status_topic = f"{self._base}/status"
        self._stats_topic = f"{self._base}/stats"
        self._details_topic = f"{self._base}/status/details"
        self._details: bytes | None = None
        self._result_topics: dict[str, str] = {}
        self._snapshot_topics: dict[str, str] = {}
        self._protocol = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
        self._password: str | None = None
        self._tls_key: Path | None = settings.tls_key
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._state = _NEW
        self._state_lock = threading.Lock()
        self._close_deadline = 0.0
        self._throttle = _Throttle()
        # Producer threads -> outbox thread.
        self._intake: deque[tuple[str, bytes, float]] = deque()
        # paho's thread -> outbox thread.
        self._events: deque[_Event] = deque()
        self._wake = threading.Event()
        self._link_up = False  # as paho's thread sees it; for stats and best-effort publishes
        # Owned by the outbox thread.
        self._connected = False
        self._connections = 0
        # paho mid -> (outbox seq, reached a socket, topic)
        self._mids: dict[int, tuple[int, bool, str]] = {}
        self._suspect: tuple[int, int] | None = None  # (seq, strikes) of a possible poison
        self._probe = False  # after a strike, one result at a time until one is acknowledged
        self._v5_ok = False  # an MQTT 5 CONNACK was seen: never fall back after that
        self._connack_deadline: float | None = None
        self._stopped_mid: int | None = None
        self._stopped_acked = False
        self._write_retry_at = 0.0  # outbox writes (spool, deletes) failed: retry then
        self._read_retry_at = 0.0  # reading the backlog failed: retry then
        self._disk_problem: str | None = None  # the SQLite error while writes fail
        self._topics: dict[str, _TopicState] = {}  # per-topic refusals; outbox thread
        self._quarantined: dict[str, float] = {}  # topic -> when to try again; any thread reads
        self._reconnect_attempt = 0
        # Counters (read by stats() from any thread).
        self._delivered = 0
        self._rejected = 0
        self._oversize = 0
        self._intake_dropped = 0
        self._reconnects = 0
        self._callback_errors = 0
        self._disk_errors = 0
        self._produced = 0
        self._produced_lock = threading.Lock()
        self._dropped_quarantined = 0
        self._lost_at_shutdown = 0

    def __repr__(self) -> str:
        return f"MqttSink({self.settings!r}, state={self._state})"

    # -- public API --------------------------------------------------------------------------

    def start(self) -> None:
        """Read credentials, start paho's network thread and the outbox thread; return at once.

        The broker may be down: paho keeps retrying (``reconnect_min_s`` doubling to
        ``reconnect_max_s``, jittered) and results wait in the outbox. Raises ConfigError when
        the password or TLS files cannot be used, SinkError when called twice."""
        with self._state_lock:
            if self._state != _NEW:
                raise SinkError(
                    f"MqttSink.start() called in state {self._state}; create a new sink"
                )
            check_files(self.settings)
            self._password = read_password(self.settings)
            self._tls_key = tls_key_path(self.settings)
            client = self._build_client(self._protocol)
            self._client = client
            self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
            self._state = _RUNNING
        self._thread.start()
        self._connect(client)
        log.info(
            "MQTT sink for %s: broker %s:%d, MQTT %s, QoS %d, outbox %s",
            self._base,
            self.settings.host,
            self.settings.port,
            self.settings.protocol,
            self.settings.qos,
            self._outbox.path or "in RAM only",
        )

    def publish_result(self, camera: str, payload: bytes) -> None:
        """Queue one result for ``<prefix>/<device>/<camera>/result``. Thread-safe, non-blocking.

        A payload over ``max_payload_bytes`` is refused, logged and counted in ``oversize``.
        Raises ConfigError for a camera name that is not a valid topic level."""
        topic = self._result_topics.get(camera)
        if topic is None:
            validate_topic_part(camera, "camera")
            topic = self._result_topics.setdefault(camera, f"{self._base}/{camera}/result")
        if self._state in (_CLOSING, _CLOSED):
            if (n := self._throttle.ready("closed")) is not None:
                log.warning("result for %s ignored: the MQTT sink is closed (+%d)", camera, n)
            return
        with self._produced_lock:
            self._produced += 1
        if topic in self._quarantined:
            self._dropped_quarantined += 1
            self._wake.set()  # the outbox thread decides when to try the topic again
            return
        if not self._size_ok(len(payload), "result", camera):
            return
        if len(self._intake) >= self.settings.outbox_max_rows:
            # Only when the outbox thread is stalled (e.g. on a dead disk): keep the newest.
            try:
                self._intake.popleft()
                self._intake_dropped += 1
            except IndexError:
                pass
        self._intake.append((topic, payload, time.monotonic()))
        self._wake.set()

    def publish_stats(self, payload: bytes) -> None:
        """Publish ``<prefix>/<device>/stats`` (QoS 0, retained) if connected; else drop it."""
        if self._size_ok(len(payload), "stats", ""):
            self._publish_best_effort(self._stats_topic, payload, retain=True)

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        """Publish ``<prefix>/<device>/<camera>/snapshot`` (QoS 0) if connected; else drop it."""
        topic = self._snapshot_topics.get(camera)
        if topic is None:
            validate_topic_part(camera, "camera")
            topic = self._snapshot_topics.setdefault(camera, f"{self._base}/{camera}/snapshot")
        if self._size_ok(len(jpeg), "snapshot", camera):
            self._publish_best_effort(topic, jpeg, retain=False)

    def set_details(self, payload: bytes) -> None:
        """The retained ``<prefix>/<device>/status/details`` (JSON: what is degraded, the last
        reload), published now if connected and again after every reconnect. Any thread."""
        self._details = payload
        client = self._client
        if client is not None and self._link_up and self._state == _RUNNING:
            client.publish(self._details_topic, payload, qos=1, retain=True)

    def clear_quarantine(self) -> None:
        """Try every quarantined topic again (after a reload: the ACL may have been fixed)."""
        self._push(_Event("unquarantine", self._client))

    def room(self) -> bool:
        """Whether producers may go on: false while disconnected with ``ram_window`` or more
        results waiting in RAM for their commit (see the module doc). Any thread."""
        if self._link_up or self._outbox.path is None:
            return True
        return len(self._intake) + self._outbox.pending_ram < self.settings.ram_window

    def degraded(self) -> list[str]:
        """What is wrong right now, one sentence each (empty when healthy). Any thread."""
        out = []
        if self._disk_problem is not None:
            out.append(f"outbox not writable: {self._disk_problem}")
        for topic in list(self._quarantined):
            out.append(f"broker refuses {topic}: results dropped")
        return out

    def stats(self) -> dict[str, Any]:
        """Counters since construction. ``protocol`` is the MQTT protocol level in use (5 for
        MQTT 5, 4 for 3.1.1); ``inserts`` counts result rows ever written to disk;
        ``produced`` results accepted for delivery; ``uncommitted`` results only in RAM (what
        a SIGKILL would take while disconnected); ``previous_boot`` what the boot before this
        one had produced at its last commit."""
        ob = self._outbox
        prev = ob.previous_boots[-1] if ob.previous_boots else None
        return {
            "connected": self._link_up,
            "produced": self._produced,
            "pending_ram": ob.pending_ram + len(self._intake),
            "pending_disk": ob.pending_disk,
            "uncommitted": ob.pending_ram + len(self._intake) if ob.path is not None else 0,
            "inflight": ob.inflight,
            "delivered": self._delivered,
            "dropped_full": ob.dropped + self._intake_dropped,
            "dropped_ram": ob.dropped_ram,
            "dropped_refused": self._dropped_quarantined,
            "rejected": self._rejected,
            "oversize": self._oversize,
            "reconnects": self._reconnects,
            "protocol": 5 if self._protocol == mqtt.MQTTv5 else 4,
            "inserts": ob.inserts,
            "commits": ob.commits,
            "last_commit_ms": ob.last_commit_ms,
            "max_commit_ms": round(ob.max_commit_ms, 3),
            "callback_errors": self._callback_errors,
            "disk_errors": self._disk_errors,
            "disk_ok": self._disk_problem is None,
            "quarantined": sorted(self._quarantined),
            "lost_at_shutdown": self._lost_at_shutdown,
            "previous_boot": (
                {"boot_id": prev.boot_id, "produced": prev.produced, "at": round(prev.at, 3)}
                if prev is not None
                else None
            ),
        }

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting results; for up to half of ``timeout`` keep delivering; then write
        everything still pending to the outbox file, publish ``stopped`` (retained), disconnect.

        Blocks up to about ``timeout`` seconds (plus paho's thread exit, up to its 5 s connect
        timeout if a connection attempt is under way). Idempotent."""
        with self._state_lock:
            state = self._state
            if state in (_CLOSING, _CLOSED):
                return
            self._state = _CLOSING
        if state == _NEW:
            self._drain_intake()
            self._close_outbox()
            self._state = _CLOSED
            return
        self._close_deadline = time.monotonic() + timeout
        self._wake.set()
        assert self._thread is not None
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            log.error(
                "the MQTT outbox thread did not finish within %.1f s; results pending in RAM may "
                "be lost and delivered ones may be sent again after a restart",
                timeout,
            )
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._link_up = False
        self._state = _CLOSED
        st = self.stats()
        log.info(
            "MQTT sink closed: %d results produced, %d delivered, %d pending on disk, %d "
            "dropped (full %d, RAM %d, refused %d, rejected %d), %d reconnects",
            st["produced"],
            st["delivered"],
            st["pending_disk"],
            st["dropped_full"] + st["dropped_ram"] + st["dropped_refused"] + st["rejected"],
            st["dropped_full"],
            st["dropped_ram"],
            st["dropped_refused"],
            st["rejected"],
            st["reconnects"],
        )

    # -- producer-side helpers ---------------------------------------------------------------

    def _size_ok(self, size: int, what: str, camera: str) -> bool:
        if size <= self.settings.max_payload_bytes:
            return True
        self._oversize += 1
        if (n := self._throttle.ready("oversize")) is not None:
            log.error(
                "refused a %d-byte %s%s: larger than mqtt.max_payload_bytes (%d); raise the limit "
                "(and the broker's message_size_limit) or make the payload smaller (+%d more)",
                size,
                what,
                f" from {camera}" if camera else "",
                self.settings.max_payload_bytes,
                n,
            )
        return False

    def _publish_best_effort(self, topic: str, payload: bytes, retain: bool) -> None:
        client = self._client
        if client is None or not self._link_up or self._state != _RUNNING:
            return
        # QoS 0 while the link is down returns MQTT_ERR_NO_CONN and paho drops it: intended.
        client.publish(topic, payload, qos=0, retain=retain)

    # -- paho client ---------------------------------------------------------------------------

    def _build_client(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.effective_client_id,
            clean_session=None if protocol == mqtt.MQTTv5 else True,
            protocol=protocol,
        )
        # Belt and braces with the try/except in every callback: an exception escaping a
        # callback would end paho's network thread and with it all reconnecting.
        client.suppress_exceptions = True
        client.max_inflight_messages_set(s.inflight)
        client.will_set(self._status_topic, "offline", qos=1, retain=True)
        secure(client, s, self._password, self._tls_key)
        client.on_socket_open = self._cb_socket_open
        client.on_connect = self._cb_connect
        client.on_connect_fail = self._cb_connect_fail
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        return client

    def _next_reconnect_delay(self, client: mqtt.Client) -> None:
        """Set the wait before paho's next connection attempt: ``reconnect_min_s`` doubling per
        failed attempt up to ``reconnect_max_s``, a random 50-100 % of that. paho's own doubling
        has no jitter, so the delay is set for each attempt: every wait of paho's follows an
        on_connect_fail or on_disconnect callback, and those call this."""
        s = self.settings
        ceiling = min(
            s.reconnect_max_s, s.reconnect_min_s * 2.0 ** min(self._reconnect_attempt, 16)
        )
        delay = ceiling * random.uniform(0.5, 1.0)
        self._reconnect_attempt += 1
        # paho annotates the delays as int but only adds them to time.monotonic() values.
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def _connect(self, client: mqtt.Client) -> None:
        s = self.settings
        if client.protocol == mqtt.MQTTv5:
            client.connect_async(s.host, s.port, keepalive=s.keepalive, clean_start=True)
        else:
            client.connect_async(s.host, s.port, keepalive=s.keepalive)
        client.loop_start()

    # -- paho callbacks (paho's network thread) --------------------------------------------------
    # Each is a thin wrapper that runs the real body under _guard; bodies only record events.

    def _guard(self, name: str, body: Callable[..., None], *args: Any) -> None:
        try:
            body(*args)
        except Exception:
            self._callback_errors += 1
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

    def _on_socket_open(self, client: mqtt.Client, sock: Any) -> None:
        self._push(_Event("socket", client))
        # paho never sets TCP_NODELAY; without it Nagle holds small publishes back (measured on
        # loopback: p99.9 publish-to-receive 30 ms without, 2 ms with).
        with contextlib.suppress(OSError, AttributeError):  # unix socket, websocket wrapper
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: mqtt.Client, reason: ReasonCode) -> None:
        s = self.settings
        if reason.is_failure:
            if (
                reason.value == _UNSUPPORTED_PROTOCOL
                and client.protocol == mqtt.MQTTv5
                and s.protocol == "5"
            ):
                self._push(_Event("refused_v5", client, reason=str(reason)))
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
        # Take back what paho still holds from the last connection: the outbox re-sends it, in
        # order and at most `inflight` at a time (paho would send it all at once, #492).
        client.drop_out_messages()
        self._reconnect_attempt = 0  # the next loss waits reconnect_min_s again
        client.publish(self._status_topic, "online", qos=1, retain=True)
        if self._details is not None:
            client.publish(self._details_topic, self._details, qos=1, retain=True)
        self._link_up = True
        self._push(_Event("up", client))
        log.info(
            "connected to MQTT broker %s:%d (MQTT %s)",
            s.host,
            s.port,
            "5" if client.protocol == mqtt.MQTTv5 else "3.1.1",
        )

    def _on_connect_fail(self, client: mqtt.Client) -> None:
        # paho calls this from inside its `except OSError`, so the reason is still at hand.
        exc = sys.exc_info()[1]
        self._next_reconnect_delay(client)
        if (n := self._throttle.ready("connect-fail")) is not None:
            log.warning(
                "cannot reach MQTT broker %s:%d (%s)%s; retrying every %g-%g s, results are kept "
                "in the outbox (+%d attempts)",
                self.settings.host,
                self.settings.port,
                exc or "connection failed",
                _TLS_HINT if isinstance(exc, ssl.SSLError) else "",
                self.settings.reconnect_min_s,
                self.settings.reconnect_max_s,
                n,
            )

    def _on_disconnect(self, client: mqtt.Client, reason: ReasonCode) -> None:
        if client is not self._client:
            return
        was_up = self._link_up
        self._link_up = False
        self._next_reconnect_delay(client)
        self._push(_Event("down", client, reason=str(reason)))
        if not was_up and self._state == _RUNNING:
            if (n := self._throttle.ready("refused")) is not None:
                log.warning(
                    "MQTT broker %s:%d closed the connection before accepting it (%s): check "
                    "%sthe username and password, and the broker's log; retrying, results are "
                    "kept in the outbox (+%d)",
                    self.settings.host,
                    self.settings.port,
                    reason,
                    "the TLS settings (tls_ca, tls_cert, tls_key), "
                    if self.settings.uses_tls
                    else "that the broker does not expect TLS (set mqtt.tls_ca if it does), ",
                    n,
                )
        elif was_up and self._state == _RUNNING:
            log.warning(
                "lost the MQTT broker %s:%d (%s); results are kept in the outbox",
                self.settings.host,
                self.settings.port,
                reason,
            )

    def _on_publish(self, client: mqtt.Client, mid: int, reason: ReasonCode) -> None:
        self._push(_Event("ack", client, mid, reason.is_failure, str(reason)))

    def _push(self, event: _Event) -> None:
        self._events.append(event)
        self._wake.set()

    # -- outbox thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """The outbox thread: owns the Outbox, feeds paho, spools, deletes; exits on close."""
        phase = "run"
        deliver_until = 0.0
        while True:
            self._wake.clear()
            now = time.monotonic()
            try:
                self._drain_events()
                self._drain_intake()
                self._quarantine_timers(now)
                if self._connack_deadline is not None and now >= self._connack_deadline:
                    assert self._client is not None
                    self._fall_back_to_v311(
                        self._client,
                        f"did not answer an MQTT 5 CONNECT within {self.v5_connack_timeout_s} s",
                    )
                if phase == "run" and self._state == _CLOSING:
                    phase = "deliver"
                    deliver_until = now + (self._close_deadline - now) / 2
                if phase == "deliver" and (
                    not self._connected or not self._outbox.pending or now >= deliver_until
                ):
                    phase = "finish"
                    self._spool(now, force=True)
                    self._count_unkept()
                    self._publish_stopped()
                if phase != "finish":
                    self._pump(now)
                self._spool(now)
                self._flush(now)
                if phase == "finish" and (
                    self._stopped_acked
                    or self._stopped_mid is None
                    or not self._connected
                    or now >= self._close_deadline
                ):
                    break
                timeout = self._next_wakeup(now, phase, deliver_until) - now
            except Exception:
                if (n := self._throttle.ready("outbox-loop")) is not None:
                    log.exception("MQTT outbox thread error (+%d); carrying on in 1 s", n)
                timeout = 1.0
                if phase == "finish":
                    break
            self._wake.wait(max(0.0, timeout))
        self._drain_events()
        self._close_outbox()

    def _next_wakeup(self, now: float, phase: str, deliver_until: float) -> float:
        times = [now + 1.0]  # idle heartbeat: cheap, and a safety net for a missed wake-up
        since = self._outbox.ram_since() if self._outbox.path is not None else None
        if since is not None:
            times.append(max(since + self._spool_delay(), self._write_retry_at))
        flush_at = self._outbox.flush_due_at()
        if flush_at is not None:
            times.append(max(flush_at, self._write_retry_at))
        if self._read_retry_at > now:
            times.append(self._read_retry_at)
        if self._connack_deadline is not None:
            times.append(self._connack_deadline)
        if phase == "deliver":
            times.append(deliver_until)
        elif phase == "finish":
            times.append(self._close_deadline)
        return min(times)

    def _drain_intake(self) -> None:
        ob = self._outbox
        while True:
            try:
                topic, payload, created = self._intake.popleft()
            except IndexError:
                break
            ob.put(topic, payload, created)
        ob.produced = self._produced

    def _drain_events(self) -> None:
        ob = self._outbox
        while True:
            try:
                ev = self._events.popleft()
            except IndexError:
                return
            if ev.client is not self._client:
                continue  # from a client replaced by the protocol fallback
            if ev.kind == "ack":
                if ev.mid == self._stopped_mid:
                    self._stopped_acked = True
                    continue
                entry = self._mids.pop(ev.mid, None)
                if entry is None:
                    continue  # status, stats or snapshot
                seq, _reached, topic = entry
                ob.ack(seq)
                self._probe = False
                if self._suspect is not None and self._suspect[0] == seq:
                    self._suspect = None
                if ev.failed:
                    self._rejected += 1
                    self._refused(topic, f"the broker answered {ev.reason}")
                else:
                    self._delivered += 1
                    state = self._topics.get(topic)
                    if state is not None:
                        state.refusals = 0
            elif ev.kind == "socket":
                if self._protocol == mqtt.MQTTv5 and not self._v5_ok:
                    self._connack_deadline = time.monotonic() + self.v5_connack_timeout_s
            elif ev.kind == "up":
                self._connack_deadline = None
                self._v5_ok = self._v5_ok or self._protocol == mqtt.MQTTv5
                self._connections += 1
                if self._connections > 1:
                    self._reconnects += 1
                self._mids.clear()
                ob.requeue()
                self._connected = True
            elif ev.kind == "down":
                self._connack_deadline = None
                if self._connected:
                    self._strike()
                self._connected = False
            elif ev.kind == "unquarantine":
                for topic in self._quarantined:
                    self._quarantined[topic] = 0.0  # due now: _quarantine_timers lifts it
            elif ev.kind == "refused_v5" and ev.client is not None:
                self._fall_back_to_v311(ev.client, f"refused MQTT 5 ({ev.reason})")

    def _refused(self, topic: str, why: str) -> None:
        """One refusal of a message on ``topic``; quarantine the topic after a few in a row."""
        state = self._topics.setdefault(topic, _TopicState())
        state.refusals += 1
        state.reason = why
        if state.refusals < REFUSALS_TO_QUARANTINE or topic in self._quarantined:
            if (n := self._throttle.ready(f"rejected-{topic}")) is not None:
                log.warning("broker refused a result on %s (%s); dropped it (+%d)", topic, why, n)
            return
        self._quarantined[topic] = time.monotonic() + QUARANTINE_RETRY_S
        dropped = self._outbox.discard(topic)
        self._dropped_quarantined += dropped
        log.error(
            "the broker refuses results on %s (%d in a row: %s); dropping that topic's results "
            "(counted as dropped_refused) while the other topics go on. Allow this client to "
            "publish there in the broker's ACL (mosquitto: `topic write %s` for user %s); edge "
            "tries the topic again every %.0f s and on a reload",
            topic,
            state.refusals,
            why,
            topic,
            self.settings.username or "(anonymous)",
            QUARANTINE_RETRY_S,
        )

    def _quarantine_timers(self, now: float) -> None:
        """Let a quarantined topic try again (one refusal re-quarantines it) when due."""
        for topic, until in list(self._quarantined.items()):
            if now >= until:
                del self._quarantined[topic]
                state = self._topics.get(topic)
                if state is not None:
                    state.refusals = REFUSALS_TO_QUARANTINE - 1
                log.info("trying results on %s again after its quarantine", topic)

    def _strike(self) -> None:
        """The connection dropped: the oldest result it carried and that is still unacknowledged
        is suspect. Send it alone next time; after POISON_STRIKES drops, give up on it, and
        count a refusal of its topic (so a broker that refuses by disconnecting, as MQTT 3.1.1
        brokers must, gets the topic quarantined too)."""
        sent = [(seq, topic) for seq, reached, topic in self._mids.values() if reached]
        if not sent:
            return
        seq, topic = min(sent)
        strikes = 1
        if self._suspect is not None and self._suspect[0] == seq:
            strikes = self._suspect[1] + 1
        if strikes < POISON_STRIKES:
            self._suspect = (seq, strikes)
            self._probe = True
            return
        self._suspect = None
        self._probe = False
        self._mids = {mid: v for mid, v in self._mids.items() if v[0] != seq}
        self._outbox.ack(seq)
        self._rejected += 1
        log.error(
            "dropped a result on %s: %d connections in a row broke before the broker "
            "acknowledged it; the broker probably refuses it (message_size_limit, "
            "max_packet_size, ACL)",
            topic,
            POISON_STRIKES,
        )
        self._refused(topic, "the broker closed the connection after it")

    def _pump(self, now: float) -> None:
        """Hand paho the oldest pending results until ``inflight`` are outstanding."""
        client = self._client
        if not self._connected or client is None or now < self._read_retry_at:
            return
        ob = self._outbox
        s = self.settings
        window = 1 if self._probe else s.inflight
        while ob.inflight < window:
            try:
                entry = ob.take()
            except SinkError as exc:
                self._read_retry_at = now + DISK_RETRY_S
                self._disk_error(exc)
                return
            if entry is None:
                return
            if entry.topic in self._quarantined:  # paged in from disk, or queued before
                ob.ack(entry.seq)
                self._dropped_quarantined += 1
                continue
            try:
                info = client.publish(entry.topic, entry.payload, s.qos, s.result_retain)
            except ValueError as exc:  # a topic or payload MQTT cannot carry: never retry it
                ob.ack(entry.seq)
                self._rejected += 1
                log.error("cannot publish a result on %r: %s; dropped", entry.topic, exc)
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                ob.untake(entry.seq)  # paho's message ids are exhausted; try again later
                return
            self._mids[info.mid] = (
                entry.seq,
                info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS,
                entry.topic,
            )

    def _spool_delay(self) -> float:
        return self.settings.spool_after_s if self._connected else OFFLINE_SPOOL_DELAY_S

    def _spool(self, now: float, force: bool = False) -> None:
        ob = self._outbox
        if ob.path is None or (now < self._write_retry_at and not force):
            return
        since = ob.ram_since()
        if since is None or (not force and now - since < self._spool_delay()):
            return
        try:
            n = ob.spool()
        except SinkError as exc:
            self._write_retry_at = now + DISK_RETRY_S
            self._disk_error(exc)
            return
        self._disk_ok()
        log.debug("spooled %d results to %s", n, ob.path)

    def _flush(self, now: float) -> None:
        if now < self._write_retry_at:
            return
        try:
            if self._outbox.flush(now):
                self._disk_ok()
        except SinkError as exc:
            self._write_retry_at = now + DISK_RETRY_S
            self._disk_error(exc)

    def _disk_error(self, exc: SinkError) -> None:
        """An outbox read or write failed: ERROR once per change of the problem, not per try."""
        self._disk_errors += 1
        cause = str(exc.__cause__ or exc)
        if self._disk_problem != cause:
            self._disk_problem = cause
            log.error(
                "%s. Delivery goes on from RAM while the broker is connected; retrying the "
                "disk every %g s",
                exc,
                DISK_RETRY_S,
            )

    def _disk_ok(self) -> None:
        if self._disk_problem is not None:
            log.info(
                "the outbox %s is writable again (%d results pending on disk)",
                self._outbox.path,
                self._outbox.pending_disk,
            )
            self._disk_problem = None

    def _count_unkept(self) -> None:
        """At shutdown, after the final spool: results neither delivered nor on disk."""
        ob = self._outbox
        if ob.path is None:
            return
        unkept = ob.pending_ram + len(self._intake)
        if unkept:
            self._lost_at_shutdown = unkept
            log.error(
                "%d undelivered results could not be written to the outbox %s (%s) and are "
                "lost at this shutdown",
                unkept,
                ob.path,
                self._disk_problem or "not written in time",
            )

    def _publish_stopped(self) -> None:
        client = self._client
        if client is None or not self._connected:
            return
        if self.final_stats is not None:
            try:
                # QoS 0: a QoS 1 message would queue behind a full in-flight window (paho sends
                # no more than `inflight` unacknowledged), which is exactly when it matters.
                client.publish(self._stats_topic, self.final_stats(), qos=0, retain=True)
            except Exception:
                log.exception("building the last stats failed")
        info = client.publish(self._status_topic, "stopped", qos=1, retain=True)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._stopped_mid = info.mid

    def _fall_back_to_v311(self, old: mqtt.Client, why: str) -> None:
        s = self.settings
        self._connack_deadline = None
        log.warning(
            'MQTT broker %s:%d %s; using MQTT 3.1.1 (set mqtt.protocol = "3.1.1" to skip '
            "this). With 3.1.1 a broker that refuses a message cannot say so",
            s.host,
            s.port,
            why,
        )
        self._protocol = mqtt.MQTTv311
        new = self._build_client(mqtt.MQTTv311)
        self._client = new
        old.disconnect()
        old.loop_stop()
        self._connected = False
        self._mids.clear()
        self._outbox.requeue()
        self._connect(new)

    def _close_outbox(self) -> None:
        unkept = self._outbox.close()
        if unkept and self._lost_at_shutdown < unkept and self._outbox.path is not None:
            self._lost_at_shutdown = unkept
            log.error(
                "%d undelivered results could not be written to the outbox %s and are lost",
                unkept,
                self._outbox.path,
            )
