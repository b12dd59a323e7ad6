"""The MQTT sink's latest-value topics and its subscriptions.

``Retained`` holds the newest payload of each retained topic whose current value is what
matters, not its history (a camera's ``state`` and ``detect/state``, Home Assistant discovery):
it is published when set while connected, and all of it again on every (re)connect, so a
broker that restarted without persistence, or a link that dropped before the message got
through, ends up holding the newest value. That re-send is what makes them reliable, so they go
at QoS 0: a QoS 1 message would take one of paho's in-flight slots, and while those are full
paho can send a queued message after a newer one (it sends new messages directly as slots
free up), which would reorder the results and events of the outbox. An empty payload clears
the broker's retained message and is kept, and re-sent, like any value. ``Subscriptions`` are
the topic filters the sink subscribes to on every connect, with the handler of each: a
``Handler`` gets the topic and payload, a ``MessageHandler`` (online requests, which need the
MQTT 5 properties) the whole message. A shared subscription (``$share/<group>/<filter>``)
matches the topics of its ``<filter>``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

Handler = Callable[[str, bytes], None]
MessageHandler = Callable[[mqtt.MQTTMessage], None]


class Retained:
    """Latest values per topic. ``set`` from any thread; ``link_up`` and ``link_down`` from
    paho's thread (``link_up`` inside the connect callback, before the link counts as up)."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None  # set while a connection is up

    def set(self, topic: str, payload: bytes, force: bool = False) -> None:
        """Keep ``payload`` as ``topic``'s value and publish it if connected. Unchanged values
        are not sent again until the next connect, unless ``force``."""
        with self._lock:
            if self._values.get(topic) == payload and not force:
                return
            self._values[topic] = payload
            if self._client is not None:
                self._client.publish(topic, payload, qos=0, retain=True)

    def get(self, topic: str) -> bytes | None:
        return self._values.get(topic)

    def link_up(self, client: mqtt.Client) -> None:
        """Publish every value on a new connection, and what is set from now on."""
        with self._lock:
            self._client = client
            for topic, payload in self._values.items():
                client.publish(topic, payload, qos=0, retain=True)

    def link_down(self) -> None:
        with self._lock:
            self._client = None


class Subscriptions:
    """Topic filters and their handlers. ``add`` from any thread; ``link_up``, ``link_down``
    and ``dispatch`` from paho's thread."""

    def __init__(self) -> None:
        self._filters: list[tuple[str, Handler | None, MessageHandler | None]] = []
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    def add(
        self,
        topic_filter: str,
        handler: Handler | None = None,
        on_message: MessageHandler | None = None,
    ) -> None:
        """Subscribe to ``topic_filter`` now if connected, and on every connect; its messages
        go to ``handler`` (topic, payload) or ``on_message`` (the whole message)."""
        with self._lock:
            self._filters = [*self._filters, (topic_filter, handler, on_message)]
            if self._client is not None:
                self._client.subscribe(topic_filter, 1)

    def link_up(self, client: mqtt.Client) -> None:
        """Subscribe a new connection to every filter (QoS 1): the session is clean."""
        with self._lock:
            self._client = client
            if self._filters:
                client.subscribe([(f, 1) for f, _, _ in self._filters])

    def link_down(self) -> None:
        with self._lock:
            self._client = None

    def dispatch(self, msg: mqtt.MQTTMessage) -> None:
        """Hand a message to the handler of every filter it matches (paho's thread)."""
        topic = msg.topic
        for topic_filter, handler, on_message in self._filters:
            if mqtt.topic_matches_sub(_unshared(topic_filter), topic):
                if handler is not None:
                    handler(topic, bytes(msg.payload))
                if on_message is not None:
                    on_message(msg)


def _unshared(topic_filter: str) -> str:
    """The filter a shared subscription ``$share/<group>/<filter>`` matches topics against."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter
