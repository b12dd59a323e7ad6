"""``OnlineServer``: the daemon's side of online inference (formats in :mod:`edge.online`).

Policy: the camera pipelines keep their priority. Requests run on an interpreter of their own
(one thread, loaded from ``[online] model``), in one worker thread (``online-infer``) whose
Linux nice value is raised by 10, so the scheduler favours the capture and inference threads
when the CPU is short; no request ever touches a camera's interpreter, frame slots or result
queue. At most ``queue_size`` requests wait, oldest first; one more is answered ``busy`` at
once from paho's thread, and a request whose expiry passed by the time its turn comes is
dropped unanswered. Answers go out at QoS 0 (see ``MqttSink.reply``): one lost with a broken
connection is not sent again, so a client times out and may ask again.

Thread affinity: ``on_message`` on paho's thread; ``attach``, ``start``, ``set_engine``,
``close`` on the main thread; ``stats`` on any.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from edge.commands.infer import one_shot_engine, result_json
from edge.config import Config
from edge.config.online import OnlineSettings
from edge.decode import decode_image
from edge.engine import Engine, Overrides
from edge.errors import EdgeError, InputError
from edge.online.request import RefusalError, ReplyTo, Request, answer, parse
from edge.runtime import RuntimeOptions
from edge.sinks.mqtt_throttle import Throttle
from edge.stats import LatencyWindow
from edge.topics import DeviceTopics, fleet_infer, shared

log = logging.getLogger(__name__)

_THREAD_NAME = "online-infer"
_NICE = 10


class ReplySink(Protocol):
    """What the server needs of the daemon's sink (``MqttSink``)."""

    def subscribe_messages(self, topic_filter: str, on_message: Any) -> None: ...

    def reply(self, topic: str, payload: bytes, properties: Properties | None) -> bool: ...


class OnlineServer:
    """Answers the requests of ``settings`` with ``engine`` (which it owns and closes) for
    ``device``; see the module docstring."""

    def __init__(
        self, settings: OnlineSettings, prefix: str, device: str, ref: str, engine: Engine
    ) -> None:
        self.settings = settings
        self.device = device
        self.filters = [DeviceTopics(f"{prefix}/{device}").infer]
        if settings.group is not None:
            self.filters.append(shared(fleet_infer(prefix, settings.group), settings.group))
        self._ref = ref
        self._engine = engine
        self._next: Engine | None = None  # handed over by set_engine, taken by the worker
        self._sink: ReplySink | None = None
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._throttle = Throttle()
        self.latency = LatencyWindow(256)
        # received, answered, expired, unanswerable, unsent (the broker was away); errors by
        # reason. Bumped by paho's thread and the worker, under _counts_lock.
        self.counts = dict.fromkeys(
            ("received", "answered", "expired", "unanswerable", "unsent"), 0
        )
        self.errors: dict[str, int] = {}
        self._counts_lock = threading.Lock()

    def attach(self, sink: ReplySink) -> None:
        """Take requests from ``sink``'s subscriptions and answer through it (at start and
        whenever a reload replaces the sink)."""
        self._sink = sink
        for f in self.filters:
            sink.subscribe_messages(f, self.on_message)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
        self._thread.start()
        log.info(
            "online inference: model %s, requests on %s, queue %d",
            self._engine.name,
            ", ".join(self.filters),
            self.settings.queue_size,
        )

    def set_engine(self, ref: str, engine: Engine) -> None:
        """Answer with ``engine`` from the next request on (a reload); the worker closes the
        one it replaces."""
        with self._cond:
            stale, self._next, self._ref = self._next, engine, ref
            self._cond.notify()
        if stale is not None:
            stale.close()

    def follow_swap(self, ref: str, swapped: Engine, config: Config) -> None:
        """A repository's new version (``swapped``, now serving the cameras of ``ref``) answers
        the requests for ``ref`` too, on an interpreter of its own as at start (one thread),
        loaded here on the main thread; one that fails to load leaves the old one answering."""
        if config.online_model() != ref:
            return
        options = replace(RuntimeOptions.from_settings(config.model), threads=1)
        try:
            engine = one_shot_engine(swapped.spec, options, Overrides.from_settings(config.model))
        except EdgeError as exc:
            log.warning("online requests keep the old version of %s: %s", ref, exc)
            return
        self.set_engine(ref, engine)

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        """One message on a request topic (paho's thread): refused, queued or answered busy."""
        now = time.monotonic()
        self._bump("received")
        try:
            request = parse(msg, self.settings.max_image_bytes, now)
        except RefusalError as exc:
            if exc.reason == "expired":
                self._bump("expired")
                return
            if exc.reply is None:
                self._bump("unanswerable")
                if (n := self._throttle.ready("unanswerable")) is not None:
                    log.warning("ignored a message on %s: %s (+%d)", msg.topic, exc, n)
                return
            self._error(exc.reply, exc.reason, str(exc), now)
            return
        with self._cond:
            busy = len(self._queue) >= self.settings.queue_size
            if not busy:
                self._queue.append(request)
                self._cond.notify()
        if busy:
            self._error(
                request.reply,
                "busy",
                f"{self.settings.queue_size} requests are waiting already; try again later "
                "or another device",
                now,
            )

    def stats(self) -> dict[str, Any]:
        """Counters since start; latency: arrival to answer handed to the socket, ms."""
        return {
            "model": self._engine.name,
            "topics": self.filters,
            **self.counts,
            "errors": dict(self.errors),
            "queued": len(self._queue),
            "latency_ms": self.latency.percentiles((50, 99)),
        }

    def close(self) -> None:
        """Stop the worker (the request in progress finishes; queued ones are dropped
        unanswered) and close the engines."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10.0)
        for engine in (self._engine, self._next):
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.close()

    def _bump(self, key: str) -> None:
        with self._counts_lock:
            self.counts[key] += 1

    # -- the worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: nice applies per thread
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                request = self._queue.popleft()
                fresh, self._next = self._next, None
            if fresh is not None:
                old, self._engine = self._engine, fresh
                with contextlib.suppress(Exception):
                    old.close()
            if request.expired(time.monotonic()):
                self._bump("expired")
                continue
            try:
                self._serve(request)
            except Exception as exc:  # one bad request must not end the worker
                log.exception("online request from %s failed", request.reply.topic)
                self._error(request.reply, "internal", f"inference failed: {exc}", request.received)

    def _serve(self, request: Request) -> None:
        engine = self._engine
        if request.model is not None and request.model not in (engine.name, self._ref):
            self._error(
                request.reply,
                "unknown_model",
                f"this device answers with model {engine.name!r}, not {request.model!r}",
                request.received,
            )
            return
        try:
            image = decode_image(np.frombuffer(request.image, np.uint8), request.source)
        except InputError as exc:
            self._error(request.reply, "undecodable", str(exc), request.received)
            return
        body = result_json(engine, image, request.source)
        self._bump("answered")
        self._send(request.reply, answer(request.reply, self.device, body), request.received)

    def _error(self, reply: ReplyTo, reason: str, message: str, received: float) -> None:
        with self._counts_lock:
            self.errors[reason] = self.errors.get(reason, 0) + 1
        self._send(reply, answer(reply, self.device, None, (reason, message)), received)

    def _send(self, reply: ReplyTo, message: tuple[bytes, Properties], received: float) -> None:
        sink = self._sink
        if sink is None or not sink.reply(reply.topic, message[0], message[1]):
            self._bump("unsent")
            return
        self.latency.add((time.monotonic() - received) * 1000)


def follow(
    server: OnlineServer | None, config: Config, engine: Engine | None, sink: ReplySink | None
) -> OnlineServer | None:
    """The server for ``config`` once its pipeline starts (at start and after a reload):
    started and attached to ``sink`` when ``[online]`` is first enabled, else handed the
    new ``engine`` and limits. Its topics are subscribed for the life of the sink, so the
    daemon refuses a reload that changes ``group`` or turns ``[online]`` off (a restart
    does both)."""
    if engine is None:
        return server
    ref = config.online_model()
    if server is None:
        server = OnlineServer(config.online, config.mqtt.prefix, config.device, ref, engine)
        server.start()
        if sink is not None:
            server.attach(sink)
        return server
    server.settings = config.online
    server.set_engine(ref, engine)
    return server
