"""What the MQTT sink does about results the broker will not take, so that one refused message or
one refused camera cannot stall the others. A message the broker rejects (MQTT 5 reason code >=
0x80, e.g. 0x87 "not authorized" from an ACL) is dropped and counted; so is a *poison* message, one
after which connections drop before it is acknowledged ``POISON_STRIKES`` times in a row
(``PoisonWatch``). Refusals are counted per topic: after ``REFUSALS_TO_QUARANTINE`` in a row a
topic is quarantined (``Quarantine``; one ERROR names it and the ACL): its results are counted and
dropped without being sent, and it is tried again every ``QUARANTINE_RETRY_S`` and on a reload. (An
MQTT 3.1.1 broker can only refuse by closing the connection, which the poison watch turns into a
refusal of the topic; mosquitto 2.0 even acknowledges a denied 3.1.1 publish as a success, which no
client can detect.)
"""

from __future__ import annotations

import logging
import time

from edge.sinks.mqtt_throttle import Throttle

log = logging.getLogger(__name__)

REFUSALS_TO_QUARANTINE = 3
QUARANTINE_RETRY_S = 300.0
# A message still unacknowledged when this many connections in a row dropped right after it was
# sent is a poison message (e.g. mosquitto 2.0 answers an MQTT 5 publish over
# message_size_limit with PUBACK reason 0x95, which paho 2.2 cannot decode: it drops the
# connection and would re-send the same message on every reconnect).
POISON_STRIKES = 3


class Quarantine:
    """Refusals per topic and the topics quarantined for them. Changed only on the sink's
    outbox thread; ``in`` and ``topics`` may be used from any thread."""

    def __init__(self, username: str | None, throttle: Throttle) -> None:
        self._username = username
        self._throttle = throttle
        self._refusals: dict[str, int] = {}  # refusals in a row, per topic
        self._until: dict[str, float] = {}  # quarantined topic -> when to try it again

    def __contains__(self, topic: object) -> bool:
        return topic in self._until

    def topics(self) -> list[str]:
        """The quarantined topics, in the order they were quarantined."""
        return list(self._until)

    def refused(self, topic: str, why: str) -> bool:
        """One refusal of a message on ``topic``; True when it quarantines the topic now (the
        caller then drops that topic's pending results)."""
        refusals = self._refusals.get(topic, 0) + 1
        self._refusals[topic] = refusals
        if refusals < REFUSALS_TO_QUARANTINE or topic in self._until:
            if (n := self._throttle.ready(f"rejected-{topic}")) is not None:
                log.warning("broker refused a result on %s (%s); dropped it (+%d)", topic, why, n)
            return False
        self._until[topic] = time.monotonic() + QUARANTINE_RETRY_S
        log.error(
            "the broker refuses results on %s (%d in a row: %s); dropping that topic's results "
            "(counted as dropped_refused) while the other topics go on. Allow this client to "
            "publish there in the broker's ACL (mosquitto: `topic write %s` for user %s); edge "
            "tries the topic again every %.0f s and on a reload",
            topic,
            refusals,
            why,
            topic,
            self._username or "(anonymous)",
            QUARANTINE_RETRY_S,
        )
        return True

    def accepted(self, topic: str) -> None:
        """The broker took a message on ``topic``: its refusals start again from zero."""
        if topic in self._refusals:
            self._refusals[topic] = 0

    def retry_all(self) -> None:
        """Make every quarantine due now (after a reload: the ACL may have been fixed)."""
        for topic in self._until:
            self._until[topic] = 0.0

    def lift_due(self, now: float) -> None:
        """Let a quarantined topic try again when due; one more refusal quarantines it again."""
        for topic, until in list(self._until.items()):
            if now >= until:
                del self._until[topic]
                if topic in self._refusals:
                    self._refusals[topic] = REFUSALS_TO_QUARANTINE - 1
                log.info("trying results on %s again after its quarantine", topic)


class PoisonWatch:
    """Which sent result a dropping connection may be choking on (outbox thread only).

    After a drop, the oldest result that reached the socket and is still unacknowledged is
    suspect: ``probe`` is then true (send one result at a time until one is acknowledged), and
    after ``POISON_STRIKES`` drops in a row with the same suspect it is given up."""

    def __init__(self) -> None:
        self.probe = False
        self._suspect: tuple[int, int] | None = None  # (seq, strikes)

    def acked(self, seq: int) -> None:
        """The broker answered for result ``seq`` (success or refusal)."""
        self.probe = False
        if self._suspect is not None and self._suspect[0] == seq:
            self._suspect = None

    def dropped(self, sent: list[tuple[int, str]]) -> tuple[int, str] | None:
        """The connection dropped with ``sent`` (seq, topic) unacknowledged on the socket: the
        (seq, topic) to give up on now, or None."""
        if not sent:
            return None
        seq, topic = min(sent)
        strikes = 1
        if self._suspect is not None and self._suspect[0] == seq:
            strikes = self._suspect[1] + 1
        if strikes < POISON_STRIKES:
            self._suspect = (seq, strikes)
            self.probe = True
            return None
        self._suspect = None
        self.probe = False
        log.error(
            "dropped a result on %s: %d connections in a row broke before the broker "
            "acknowledged it; the broker probably refuses it (message_size_limit, "
            "max_packet_size, ACL)",
            topic,
            POISON_STRIKES,
        )
        return seq, topic
