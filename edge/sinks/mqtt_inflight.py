"""The MQTT sink's in-flight window: the results handed to paho and not yet answered for.

The outbox thread hands paho the oldest pending results until ``inflight`` are outstanding (one
at a time while a poison message is suspected), maps each paho message id back to its outbox
entry, and turns what comes back into outcomes: an acknowledgement deletes the entry (delivered),
a refusal deletes and counts it (rejected) and may quarantine its topic, a dropped connection
makes the oldest result it carried suspect (:mod:`edge.sinks.mqtt_refusals`), and a new
connection takes everything back into the outbox to be sent again in order.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge.errors import SinkError
from edge.outbox import Outbox
from edge.sinks.mqtt_refusals import PoisonWatch, Quarantine
from edge.sinks.mqtt_settings import MqttSettings
from edge.sinks.mqtt_spool import Spooler

log = logging.getLogger(__name__)


class InflightWindow:
    """Results between ``outbox`` and the broker of ``settings``. Outbox thread only; the
    counters (``delivered``, ``rejected``, ``dropped_refused``) may be read from any thread.

    ``quarantine`` says which topics to drop instead of sending; ``spooler`` is told when
    reading the outbox's backlog fails."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        quarantine: Quarantine,
        spooler: Spooler,
    ) -> None:
        self.connected = False  # as the outbox thread has seen the events so far
        self.delivered = 0
        self.rejected = 0
        self.dropped_refused = 0  # results of quarantined topics dropped here
        self._settings = settings
        self._outbox = outbox
        self._quarantine = quarantine
        self._spooler = spooler
        self._poison = PoisonWatch()
        # paho mid -> (outbox seq, reached a socket, topic)
        self._mids: dict[int, tuple[int, bool, str]] = {}

    def up(self) -> None:
        """A connection was accepted: what the last one carried goes out again, in order."""
        self.reset()
        self.connected = True

    def down(self) -> None:
        """The connection dropped: a result it choked on may be a poison message."""
        if self.connected:
            self._strike()
        self.connected = False

    def reset(self) -> None:
        """Forget what paho holds (its client is gone or took it back): not connected, and
        every in-flight result back in the outbox."""
        self.connected = False
        self._mids.clear()
        self._outbox.requeue()

    def ack(self, mid: int, failed: bool, reason: str) -> None:
        """paho answered for message ``mid`` (ignored unless it is a result in flight)."""
        entry = self._mids.pop(mid, None)
        if entry is None:
            return  # status, stats or snapshot
        seq, _reached, topic = entry
        self._outbox.ack(seq)
        self._poison.acked(seq)
        if failed:
            self.rejected += 1
            self._refused(topic, f"the broker answered {reason}")
        else:
            self.delivered += 1
            self._quarantine.accepted(topic)

    def pump(self, client: mqtt.Client, now: float) -> None:
        """Hand ``client`` the oldest pending results until ``inflight`` are outstanding."""
        if not self.connected or not self._spooler.can_read(now):
            return
        ob = self._outbox
        s = self._settings
        window = 1 if self._poison.probe else s.inflight
        while ob.inflight < window:
            try:
                entry = ob.take()
            except SinkError as exc:
                self._spooler.read_failed(exc, now)
                return
            if entry is None:
                return
            if entry.topic in self._quarantine:  # paged in from disk, or queued before
                ob.ack(entry.seq)
                self.dropped_refused += 1
                continue
            try:
                info = client.publish(entry.topic, entry.payload, *s.delivery(entry.topic))
            except ValueError as exc:  # a topic or payload MQTT cannot carry: never retry it
                ob.ack(entry.seq)
                self.rejected += 1
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

    def _refused(self, topic: str, why: str) -> None:
        """One refusal of a message on ``topic``; a quarantine drops its pending results."""
        if self._quarantine.refused(topic, why):
            self.dropped_refused += self._outbox.discard(topic)

    def _strike(self) -> None:
        """Give up on a poison result (see PoisonWatch), counting it as a refusal of its topic,
        so that a broker that refuses by disconnecting, as MQTT 3.1.1 brokers must, gets the
        topic quarantined too."""
        sent = [(seq, topic) for seq, reached, topic in self._mids.values() if reached]
        poison = self._poison.dropped(sent)
        if poison is None:
            return
        seq, topic = poison
        self._mids = {mid: v for mid, v in self._mids.items() if v[0] != seq}
        self._outbox.ack(seq)
        self.rejected += 1
        self._refused(topic, "the broker closed the connection after it")
