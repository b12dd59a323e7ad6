"""Publishing results, stats and snapshots to an MQTT broker: ``MqttSink``, the delivery side of
the sink. Topics, under ``<prefix>/<device>/``: ``status`` (retained: ``online`` on connect,
``stopped`` on a clean close, ``offline`` as Last Will), ``<camera>/result`` (one JSON result per
inference, at ``qos``, through the durable ``Outbox``), ``stats`` (QoS 0, retained) and
``<camera>/snapshot`` (JPEG, QoS 0); stats and snapshots are best-effort, dropped while
disconnected. Track events (``<camera>/events``) go through the Outbox like results; latest-value
topics (``<camera>/state``, ``<camera>/detect/state``, discovery) and subscriptions (commands):
:mod:`edge.sinks.mqtt_retained`. Producers call ``publish_*``, which never block; paho's network
thread runs the callbacks of the connection (:mod:`edge.sinks.mqtt_client`), which only record
events; the ``edge-mqtt-outbox`` thread owns the Outbox and its SQLite file. Disk I/O therefore
never runs on the inference thread (an SD-card fsync can take tens of milliseconds) nor on
paho's thread (it would delay keepalives and acknowledgements), and one owner needs no lock
around the Outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties

from edge.errors import SinkError
from edge.outbox import Outbox
from edge.sinks.mqtt_client import Connection, LinkEvent
from edge.sinks.mqtt_inflight import InflightWindow
from edge.sinks.mqtt_intake import Intake
from edge.sinks.mqtt_refusals import Quarantine
from edge.sinks.mqtt_retained import Handler, MessageHandler, Retained, Subscriptions
from edge.sinks.mqtt_settings import MqttSettings
from edge.sinks.mqtt_spool import Spooler
from edge.sinks.mqtt_throttle import Throttle

log = logging.getLogger(__name__)

_THREAD_NAME = "edge-mqtt-outbox"
_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"


class MqttSink:
    """Delivers results through ``outbox`` to the broker in ``settings``; see the module doc.

    ``publish_*`` are thread-safe and never block. Results published before ``start()`` wait in
    RAM; after ``close()`` they are ignored (with a warning). ``v5_connack_timeout_s``: how long
    a TCP connection may wait for its MQTT 5 CONNACK before the connection falls back to 3.1.1
    (see :class:`edge.sinks.mqtt_client.Connection`); set it before ``start()``.

    Delivery is at-least-once. The outbox thread feeds paho at most ``inflight`` results
    (:mod:`edge.sinks.mqtt_inflight`) and decides when to spool to disk
    (:mod:`edge.sinks.mqtt_spool`). On every (re)connect the sink takes back whatever paho still
    holds (``drop_out_messages()`` when the broker accepts the connection) and re-sends it from
    the Outbox in order, so paho's own reconnect burst (it ignores ``max_inflight_messages``
    after a reconnect) never happens and the order is the Outbox's. The session is clean, so
    duplicates after an outage are at most ``inflight``; consumers deduplicate on the result's
    ``(boot_id, seq)``. Refused results, poison messages and quarantined topics:
    :mod:`edge.sinks.mqtt_refusals`.

    Back-pressure: while disconnected, ``room()`` is false once ``ram_window`` results wait in
    RAM for their commit; the pipeline then holds lossless sources back and drops frames of live
    ones at capture (counted), so a SIGKILL costs at most about that many results. At
    ``close()`` the results that could be neither delivered nor written are counted
    (``lost_at_shutdown``), logged at ERROR and included in the last stats. With QoS 0 results
    a "delivery" is the message leaving for the socket: each is sent once while connected and
    spooled while not, but one written into a connection that then breaks is lost."""

    v5_connack_timeout_s = 10.0

    def __init__(self, settings: MqttSettings, outbox: Outbox) -> None:
        self.settings = settings
        self._outbox = outbox
        # Set by the owner: the stats payload published (QoS 0, retained) just before ``stopped``.
        self.final_stats: Callable[[], bytes] | None = None
        self._base = settings.base_topic
        self._status_topic = f"{self._base}/status"
        self._stats_topic = f"{self._base}/stats"
        self._details_topic = f"{self._base}/status/details"
        self._details: bytes | None = None
        self._thread: threading.Thread | None = None
        self._state = _NEW
        self._state_lock = threading.Lock()
        self._close_deadline = 0.0
        self._throttle = Throttle()
        self._wake = threading.Event()  # wakes the outbox thread
        self._retained = Retained()
        self._subscriptions = Subscriptions()
        self._link = Connection(
            settings,
            will_topic=self._status_topic,
            on_up=self._on_link_up,
            push=self._push,
            throttle=self._throttle,
            on_message=self._subscriptions.dispatch,
        )
        self._quarantine = Quarantine(settings.username, self._throttle)
        # Producer threads -> outbox thread.
        self._intake = Intake(settings, self._quarantine, self._throttle, self._wake)
        # paho's thread -> outbox thread.
        self._events: deque[LinkEvent] = deque()
        self._retry_quarantine = False  # set by clear_quarantine(), any thread
        # Owned by the outbox thread (their counters may be read from any thread).
        self._spooler = Spooler(outbox, settings.spool_after_s)
        self._window = InflightWindow(settings, outbox, self._quarantine, self._spooler)
        self._stopped_mid: int | None = None
        self._stopped_acked = False

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
            self._link.open(self.v5_connack_timeout_s)
            self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
            self._state = _RUNNING
        self._thread.start()
        self._link.connect()
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
        self._intake.put(camera, payload)

    def publish_event(self, camera: str, payload: bytes) -> None:
        """Queue one track event for ``<prefix>/<device>/<camera>/events``: durable like a
        result (same outbox, same order, same limits), at QoS 1 or ``qos`` if higher, not
        retained. Thread-safe, non-blocking."""
        self._intake.put(camera, payload, "events")

    def publish_state(self, camera: str, payload: bytes) -> None:
        """Set the retained ``<prefix>/<device>/<camera>/state`` (see :meth:`retain`)."""
        self.retain(self._intake.topic(camera, "state"), payload)

    def retain(self, topic: str, payload: bytes, force: bool = False) -> None:
        """Set ``topic``'s retained value (QoS 0): published now if connected (an unchanged
        value only with ``force``) and again on every reconnect; empty clears it
        (:mod:`edge.sinks.mqtt_retained`). Any thread."""
        self._retained.set(topic, payload, force)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Subscribe to ``topic_filter`` on every connect; ``handler(topic, payload)`` runs on
        paho's thread for each message and must return quickly. Any thread."""
        self._subscriptions.add(topic_filter, handler)

    def subscribe_messages(self, topic_filter: str, on_message: MessageHandler) -> None:
        """:meth:`subscribe`, with the whole paho message (MQTT 5 properties included) handed
        to ``on_message``; ``topic_filter`` may be a shared subscription."""
        self._subscriptions.add(topic_filter, on_message=on_message)

    def reply(self, topic: str, payload: bytes, properties: Properties | None) -> bool:
        """Publish ``payload`` to ``topic`` at QoS 0, with ``properties`` when the connection is
        MQTT 5 (the answer to an online request): False when not connected (nothing is sent).
        QoS 0 because a QoS 1 message would take an in-flight slot of the results (see
        :mod:`edge.sinks.mqtt_retained`). Any thread."""
        client = self._link.client
        if client is None or not self._link.up or self._state != _RUNNING:
            return False
        props = properties if client.protocol == mqtt.MQTTv5 else None
        info = client.publish(topic, payload, qos=0, properties=props)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_stats(self, payload: bytes) -> None:
        """Publish ``<prefix>/<device>/stats`` (QoS 0, retained) if connected; else drop it."""
        if self._intake.size_ok(len(payload), "stats", ""):
            self._publish_best_effort(self._stats_topic, payload, retain=True)

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        """Publish ``<prefix>/<device>/<camera>/snapshot`` (QoS 0) if connected; else drop it."""
        topic = self._intake.topic(camera, "snapshot")
        if self._intake.size_ok(len(jpeg), "snapshot", camera):
            self._publish_best_effort(topic, jpeg, retain=False)

    def set_details(self, payload: bytes) -> None:
        """The retained ``<prefix>/<device>/status/details`` (JSON: what is degraded, the last
        reload), published now if connected and again after every reconnect. Any thread."""
        self._details = payload
        client = self._link.client
        if client is not None and self._link.up and self._state == _RUNNING:
            client.publish(self._details_topic, payload, qos=1, retain=True)

    def clear_quarantine(self) -> None:
        """Try every quarantined topic again (after a reload: the ACL may have been fixed)."""
        self._retry_quarantine = True
        self._wake.set()

    def room(self) -> bool:
        """Whether producers may go on: false while disconnected with ``ram_window`` or more
        results waiting in RAM for their commit (see the module doc). Any thread."""
        if self._link.up or self._outbox.path is None:
            return True
        return len(self._intake) + self._outbox.pending_ram < self.settings.ram_window

    def degraded(self) -> list[str]:
        """What is wrong right now, one sentence each (empty when healthy). Any thread."""
        out = []
        problem = self._spooler.problem
        if problem is not None:
            out.append(f"outbox not writable: {problem}")
        for topic in self._quarantine.topics():
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
            "connected": self._link.up,
            "produced": self._intake.produced,
            "pending_ram": ob.pending_ram + len(self._intake),
            "pending_disk": ob.pending_disk,
            "uncommitted": ob.pending_ram + len(self._intake) if ob.path is not None else 0,
            "inflight": ob.inflight,
            "delivered": self._window.delivered,
            "dropped_full": ob.dropped + self._intake.dropped_full,
            "dropped_ram": ob.dropped_ram,
            "dropped_refused": self._intake.dropped_refused + self._window.dropped_refused,
            "rejected": self._window.rejected,
            "oversize": self._intake.oversize,
            "reconnects": self._link.reconnects,
            "protocol": self._link.protocol_level,
            "inserts": ob.inserts,
            "commits": ob.commits,
            "last_commit_ms": ob.last_commit_ms,
            "max_commit_ms": round(ob.max_commit_ms, 3),
            "callback_errors": self._link.callback_errors,
            "disk_errors": self._spooler.errors,
            "disk_ok": self._spooler.problem is None,
            "quarantined": sorted(self._quarantine.topics()),
            "lost_at_shutdown": self._spooler.lost_at_shutdown,
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
            self._intake.closed = True
            self._link.closing = True
        if state == _NEW:
            self._intake.drain(self._outbox)
            self._spooler.close()
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
        self._link.close()
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

    # -- helpers -------------------------------------------------------------------------------

    def _publish_best_effort(self, topic: str, payload: bytes, retain: bool) -> None:
        client = self._link.client
        if client is None or not self._link.up or self._state != _RUNNING:
            return
        # QoS 0 while the link is down returns MQTT_ERR_NO_CONN and paho drops it: intended.
        client.publish(topic, payload, qos=0, retain=retain)

    # -- paho's network thread -------------------------------------------------------------------

    def _on_link_up(self, client: mqtt.Client) -> None:
        """The broker accepted a connection: take back what paho still holds from the last one
        (the outbox re-sends it, in order and at most ``inflight`` at a time; paho would send it
        all at once, #492), then announce ``online``, the details and the retained values,
        and subscribe."""
        client.drop_out_messages()
        client.publish(self._status_topic, "online", qos=1, retain=True)
        if self._details is not None:
            client.publish(self._details_topic, self._details, qos=1, retain=True)
        self._retained.link_up(client)
        self._subscriptions.link_up(client)

    def _push(self, event: LinkEvent) -> None:
        if event.kind == "down":
            self._retained.link_down()
            self._subscriptions.link_down()
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
                self._intake.drain(self._outbox)
                if self._retry_quarantine:
                    self._retry_quarantine = False
                    self._quarantine.retry_all()
                self._quarantine.lift_due(now)
                why = self._link.fallback_due(now)
                if why is not None:
                    self._fall_back(why)
                if phase == "run" and self._state == _CLOSING:
                    phase = "deliver"
                    deliver_until = now + (self._close_deadline - now) / 2
                if phase == "deliver" and (
                    not self._window.connected or not self._outbox.pending or now >= deliver_until
                ):
                    phase = "finish"
                    self._spooler.spool(now, self._window.connected, force=True)
                    self._spooler.count_unkept(len(self._intake))
                    self._publish_stopped()
                if phase != "finish":
                    self._pump(now)
                self._spooler.spool(now, self._window.connected)
                self._spooler.flush(now)
                if phase == "finish" and (
                    self._stopped_acked
                    or self._stopped_mid is None
                    or not self._window.connected
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
        self._spooler.close()

    def _next_wakeup(self, now: float, phase: str, deliver_until: float) -> float:
        # The idle heartbeat: cheap, and a safety net for a missed wake-up.
        times = [now + 1.0, *self._spooler.wake_times(now, self._window.connected)]
        if self._link.connack_deadline is not None:
            times.append(self._link.connack_deadline)
        if phase == "deliver":
            times.append(deliver_until)
        elif phase == "finish":
            times.append(self._close_deadline)
        return min(times)

    def _drain_events(self) -> None:
        while True:
            try:
                ev = self._events.popleft()
            except IndexError:
                return
            if not self._link.seen(ev):
                continue  # from a client replaced by the protocol fallback
            if ev.kind == "ack":
                if ev.mid == self._stopped_mid:
                    self._stopped_acked = True
                else:
                    self._window.ack(ev.mid, ev.failed, ev.reason)
            elif ev.kind == "up":
                self._window.up()
            elif ev.kind == "down":
                self._window.down()
            elif ev.kind == "refused_v5":
                self._fall_back(f"refused MQTT 5 ({ev.reason})")

    def _pump(self, now: float) -> None:
        client = self._link.client
        if client is not None:
            self._window.pump(client, now)

    def _fall_back(self, why: str) -> None:
        """Switch the connection to MQTT 3.1.1; what the old one carried is sent again."""
        self._link.fall_back(why)
        self._window.reset()

    def _publish_stopped(self) -> None:
        client = self._link.client
        if client is None or not self._window.connected:
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
