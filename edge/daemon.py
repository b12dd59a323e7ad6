"""``edge run``: the long-running service. Builds the pipeline and the MQTT sink from a config,
tells systemd when it is ready, proves liveness only while frames flow, publishes stats,
reloads on SIGHUP and shuts down cleanly on SIGTERM.

A reload is a transaction: the new file is validated, then everything it names is opened and
built (MQTT settings and secrets, TLS files, models, sources) while the running configuration
keeps working; only when all of that succeeded is anything swapped, and only what changed
(models whose settings did not change are kept, the MQTT connection is kept unless its
settings changed). A refused reload changes nothing; it is logged and shown on the stats and
``status/details`` topics. ``boot_id`` stays the same for the life of the process and every
camera's ``seq`` continues across reloads, so subscribers see no false gap.
A reload restarts capture, losing the frames in between; so a repository's new version
(:mod:`edge.modelrepo`) is swapped into the running pipeline between two frames instead.

Exit codes: 0 after a clean stop (SIGTERM, --duration, or every finite source ended);
78 for configuration and model errors at start (systemd does not restart those);
66 when an input file is missing; 1 for anything else.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge import daemon_report as report
from edge import dataclass_cache, preflight
from edge.config import Config
from edge.control import DetectControl
from edge.drift_monitor import DriftMonitor
from edge.engine import Engine, Overrides
from edge.errors import ConfigError, EdgeError
from edge.metrics import Endpoint
from edge.modelrepo.serving import EngineKey, Serving, pinned_version
from edge.notify import Notifier
from edge.pipeline import Pipeline, new_boot_id
from edge.runner import Runner
from edge.runtime import RuntimeOptions
from edge.sinks.current import CurrentSink
from edge.sinks.discovery import Discovery, device_spec
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings
from edge.sinks.publisher import Publisher
from edge.sinks.start import start_sink
from edge.sinks.tracks import TrackedCamera, TrackListener
from edge.system import resume_collector
from edge.topics import DeviceTopics

if TYPE_CHECKING:
    from edge.modelrepo.watch import Repository
    from edge.online.server import OnlineServer

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
SEP = (",", ":")  # compact JSON


@dataclass(frozen=True, slots=True)
class _Built:
    """A configuration made ready: opened, loaded, nothing started."""

    config: Config
    settings: MqttSettings
    pipeline: Pipeline
    publisher: Publisher
    engines: dict[EngineKey, Engine]
    tracked: dict[str, TrackedCamera]
    online: Engine | None  # the online requests' own engine; None when [online] is off
    repos: dict[str, Repository]


class Daemon:
    """One run of the service. Thread affinity: the main thread (its :class:`Runner` owns the
    signals, the done check and the shutdown)."""

    def __init__(
        self,
        config: Config,
        reload: Callable[[], Config] | None = None,
        duration: float | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self._reload_config = reload
        self.duration = duration
        self.notifier = notifier or Notifier()
        self.boot_id = new_boot_id()
        self.runner = Runner(duration, reloads=True)
        self.sink: MqttSink | None = None
        self.settings: MqttSettings | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.online: OnlineServer | None = None
        self.tracks = TrackListener(CurrentSink(lambda: self.sink), config.device, self.boot_id)
        self.control = DetectControl(
            DeviceTopics(f"{config.mqtt.prefix}/{config.device}"), config.state_path()
        )
        self.discovery = Discovery()
        self.drift = DriftMonitor()
        self.metrics = Endpoint(
            self.stats, lambda: self.pipeline.latency_totals() if self.pipeline else {}
        )
        self._tracks_ended: frozenset[str] = frozenset()  # paused cameras whose tracks ended
        self._birth_topics: set[str] = set()  # subscribed on the current sink
        self._engines: dict[EngineKey, Engine] = {}
        self.serving = Serving(config.model.repository_poll_s)
        self._last_pipeline_stats: dict[str, Any] | None = None
        self.reloads: dict[str, Any] = {"accepted": 0, "refused": 0, "last": None}
        self._details_sent: bytes | None = None
        self.exit_code = 0

    # -- building ----------------------------------------------------------------------------
    def _start_sink(self, config: Config, settings: MqttSettings) -> None:
        sink = start_sink(config, self.boot_id, settings)
        final = {"final": True}
        sink.final_stats = lambda: json.dumps({**self.stats(), **final}, separators=SEP).encode()
        sink.subscribe(self.control.command_filter, self.control.on_command)
        if self.online is not None:
            self.online.attach(sink)
        self._birth_topics = set()
        self.sink, self.settings = sink, settings

    def _build(self, config: Config) -> _Built:
        """Everything ``config`` needs, opened and loaded, nothing started (raises EdgeError).
        An engine already loaded with the same reference and settings is reused."""
        options, post = (
            RuntimeOptions.from_settings(config.model),
            Overrides.from_settings(config.model),
        )
        repos: dict[str, Repository] = {}
        fresh: list[Engine] = []  # loaded for this configuration: closed if it is refused

        def load(ref: str) -> Engine:
            current = self._engines.get((ref, options, post))
            engine = self.serving.load(
                ref, options, post, pinned_version(config, ref), current, repos
            )
            if all(engine is not e for e in self._engines.values()):
                fresh.append(engine)
            return engine

        publisher = None
        try:
            checked = preflight.check(config, load=load)
            publisher = Publisher(
                CurrentSink(lambda: self.sink), config.mqtt, overlay=self.tracks.overlay
            )
            pipeline = Pipeline(
                config,
                [self.tracks, publisher, self.drift],
                engine_loader=lambda ref: checked.engines[ref],
                boot_id=self.boot_id,
                admit=lambda: self.sink is None or self.sink.room(),
                paused=self.control.is_paused,
            )
        except BaseException:
            if publisher is not None:
                publisher.close()
                if checked.online is not None:
                    checked.online.close()
            report.close_unused(fresh, self._engines.values(), log)
            raise
        engines = {(ref, options, post): e for ref, e in checked.engines.items()}
        tracked, online = checked.tracked, checked.online
        return _Built(config, checked.mqtt, pipeline, publisher, engines, tracked, online, repos)

    def _start_pipeline(self, built: _Built, seqs: dict[str, int] | None = None) -> None:
        self._configure_outputs(built)
        pipeline = built.pipeline
        if seqs:
            pipeline.continue_seq(seqs)
        extra = pipeline.rss_after_models - pipeline.rss_before_models
        log.info(
            "models loaded: %s (+%.1f MiB, RSS %.1f MiB)",
            ", ".join(
                f"{e.name} [{e.interpreter.info.delegate}]" for e in pipeline.engines.values()
            ),
            extra,
            pipeline.rss_after_models,
        )
        pipeline.check_memory()
        self.drift.configure(pipeline.engines.values(), built.config.drift)
        pipeline.start()
        self.pipeline = pipeline
        self.publisher = built.publisher
        report.close_unused(self._engines.values(), built.engines.values(), log)
        self._engines = built.engines
        m = built.config.model
        opts, post = RuntimeOptions.from_settings(m), Overrides.from_settings(m)
        self.serving.follow(built.repos, opts, post, m.repository_poll_s)
        if built.online is not None or self.online is not None:
            from edge.online.server import follow  # only with [online]: about 10 ms of imports

            started = self.online is None
            self.online = follow(self.online, built.config, built.online, self.sink)
            if started and self.online is not None:  # closed first: requests stop, then cameras
                self.runner.on_shutdown("online requests", self.online.close)

    def _close_engines(self) -> None:
        report.close_unused(self._engines.values(), (), log)
        self._engines = {}

    def _configure_outputs(self, built: _Built) -> None:
        """Tracking, the detection switches and discovery for ``built``, through the current
        sink (before its pipeline starts)."""
        assert self.sink is not None
        config, sink = built.config, self.sink
        self.tracks.configure(built.tracked)
        self.tracks.publish_states()
        self.control.attach(sink, [c.name for c in config.cameras])
        ha = config.homeassistant
        if ha.enabled and ha.birth_topic not in self._birth_topics:
            self._birth_topics.add(ha.birth_topic)
            sink.subscribe(ha.birth_topic, self.discovery.on_birth)
        engines = built.pipeline.engines
        spec = device_spec(config, engines, built.tracked) if ha.enabled else None
        self.discovery.publish(sink, ha, spec)

    def _stop_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
            try:
                self._last_pipeline_stats = self.pipeline.stats()
            except Exception:
                log.exception("reading the pipeline's last stats failed")
            self.pipeline = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    # -- running -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        # invoke() releases the GIL; when it returns, the inference thread must win it back
        # from the capture and MQTT threads. With the default 5 ms switch interval it can wait
        # a whole interval behind a busy Python thread, so hand the GIL over more often.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        runner = self.runner
        runner.install_signals()
        # In start order; each looks up what the daemon holds at shutdown (reloads replace them).
        runner.on_shutdown("notifier", self.notifier.close)
        runner.on_shutdown("metrics", self.metrics.close)
        runner.on_shutdown("models", self._close_engines)
        runner.on_shutdown("model repositories", self.serving.close)
        runner.on_shutdown("detection switches", self.control.save)
        runner.on_shutdown("MQTT sink", self._close_sink)
        runner.on_shutdown("tracks", self.tracks.close)  # end events, before the sink closes
        runner.on_shutdown("pipeline", self._stop_pipeline)
        try:
            self.metrics.follow(self.config.metrics)  # a port in use: exit 78 before cameras
            built = self._build(self.config)
            self._start_sink(self.config, built.settings)
            self._start_pipeline(built)
        except BaseException:
            self._shutdown()
            raise
        # `edge run` paused the collector for the imports and the build (edge.cli): what they
        # made lives as long as the daemon, so it is frozen out of every later collection.
        resume_collector(freeze=True)
        dataclass_cache.save(release=True)  # what start-up compiled, for the next start
        c = self.config
        cams = ", ".join(f"{cam.name} ← {cam.source}" for cam in c.cameras)
        where = f"device {c.device}, boot {self.boot_id}, cameras {cams}"
        log.info("running: %s, broker %s:%d", where, c.mqtt.host, c.mqtt.port)
        self.notifier.ready(f"running {len(self.config.cameras)} camera(s)")
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def _loop(self) -> None:
        runner = self.runner
        runner.begin()
        next_stats = runner.started + min(2.0, self.config.mqtt.stats_interval)
        last_captured = last_handled = -1
        while not runner.stop.wait(0.5):
            now = time.monotonic()
            pipeline = self.pipeline
            assert pipeline is not None
            if runner.reload_requested.is_set():
                runner.reload_requested.clear()
                self._reload()
                next_stats = now  # show the outcome at once
                continue
            for ref, engine in self.serving.swap_ready(pipeline, self._engines):
                if self.online is not None:  # requests follow the cameras' new version
                    self.online.follow_swap(ref, engine, self.config)
            captured, handled, idle = pipeline.progress()
            if captured != last_captured and (handled != last_handled or idle):
                # Liveness means frames flow through inference: a camera that stopped
                # delivering, or an interpreter stuck in invoke(), stops the beat.
                self.notifier.watchdog()
            last_captured, last_handled = captured, handled
            self._follow_controls(now)
            self._publish_details()
            if now >= next_stats:
                next_stats = now + self.config.mqtt.stats_interval
                self._publish_stats()
            code = runner.done(pipeline)
            if code is not None:
                self.exit_code = code
                return

    def _follow_controls(self, now: float) -> None:
        """What commands and Home Assistant's birth asked for: end the tracks of cameras just
        switched off, keep the switches on disk, re-publish discovery when due."""
        paused = self.control.paused
        for name in sorted(paused - self._tracks_ended):
            self.tracks.end(name)
        self._tracks_ended = paused
        self.control.save()
        if self.sink is not None:
            self.discovery.tick(self.sink, now)

    def stats(self) -> dict[str, Any]:
        """The stats payload: pipeline's, sink's (``mqtt``), tracking, drift, online, reloads,
        degraded."""
        if self.pipeline is not None:
            stats: dict[str, Any] = self.pipeline.stats()
        else:
            stats = dict(self._last_pipeline_stats or {"boot_id": self.boot_id})
        if self.sink is not None:
            stats["mqtt"] = self.sink.stats()
            if self.publisher is not None:
                stats["mqtt"]["suppressed"] = self.publisher.suppressed
        stats["tracking"] = {
            "cameras": list(self.tracks.tracked()),
            "events": self.tracks.events_sent,
            "detect_off": sorted(self.control.paused),
        }
        stats["drift"] = self.drift.stats()
        if self.online is not None:
            stats["online"] = self.online.stats()
        stats["reloads"] = self.reloads
        stats["degraded"] = self.degraded()
        return stats

    def degraded(self) -> list[str]:
        """Every degraded state right now, one sentence each."""
        out = list(self.sink.degraded()) if self.sink is not None else []
        pipeline = self.pipeline
        if pipeline is not None:
            budget = self.config.budget.memory_mb
            out += report.pipeline_degraded(
                pipeline.engines.values(), pipeline.memory_over_budget, budget
            )
        out += self.drift.degraded()
        out += self.serving.degraded()
        return out + report.reload_degraded(self.reloads["last"])

    def _publish_stats(self) -> None:
        assert self.sink is not None
        stats = self.stats()
        self.sink.publish_stats(json.dumps(stats, separators=SEP).encode())
        self.notifier.status(report.status_line(stats))

    def _publish_details(self) -> None:
        """The retained ``status/details`` topic, whenever what it says changes."""
        if self.sink is None:
            return
        engines = self.pipeline.engines.values() if self.pipeline is not None else ()
        last = self.reloads["last"]
        payload = report.details_payload(self.boot_id, self.degraded(), last, engines)
        if payload != self._details_sent:
            self._details_sent = payload
            self.sink.set_details(payload)
        if self.pipeline is not None and self.settings is not None:
            topic = DeviceTopics(self.settings.base_topic).models
            self.serving.publish(self.sink, topic, self.pipeline, self.boot_id)

    # -- reload ------------------------------------------------------------------------------
    def _reload(self) -> None:
        if self._reload_config is None:
            log.warning("SIGHUP ignored: no configuration file to reload")
            return
        self.notifier.reloading()
        try:
            config = self._reload_config()
            _check_identity_kept(self.config, config)
            built = self._build(config)
        except EdgeError as exc:
            self._refused(exc)
            return
        try:
            self.metrics.follow(built.config.metrics)
        except EdgeError as exc:
            built.publisher.close()
            report.close_unused(built.engines.values(), self._engines.values(), log)
            self._refused(exc)
            return
        # Everything is ready: from here on only swaps.
        old = self.config
        running = self.pipeline
        self._stop_pipeline()
        # Read after the stop: results still queued when it began get their numbers meanwhile.
        seqs = running.last_seq() if running is not None else {}
        new = built.config
        sink_changed = built.settings != self.settings
        if sink_changed:
            assert self.sink is not None and self.settings is not None
            old_settings = self.settings
            self.sink.close()
            self.sink = None
            try:
                self._start_sink(new, built.settings)
            except EdgeError as exc:
                # Checked moments ago, so rare (the disk filled up, a file vanished): go back
                # to the old connection and the old configuration.
                self._start_sink(old, old_settings)
                built.publisher.close()
                restored = self._build(old)
                report.close_unused(built.engines.values(), restored.engines.values(), log)
                self._start_pipeline(restored, seqs)
                self._refused(exc)
                return
        elif self.sink is not None:
            self.sink.clear_quarantine()
        self._start_pipeline(built, seqs)
        self.config = new
        self.reloads["accepted"] += 1
        self.reloads["last"] = {"ok": True, "at": round(time.time(), 3), "error": None}
        log.info(
            "configuration reloaded (%s)",
            "MQTT connection replaced" if sink_changed else "MQTT connection kept",
        )
        self.notifier.ready("reloaded")

    def _refused(self, exc: EdgeError) -> None:
        log.error("reload refused, the running configuration is kept: %s", exc)
        self.reloads["refused"] += 1
        self.reloads["last"] = {"ok": False, "at": round(time.time(), 3), "error": str(exc)}
        self._publish_details()
        self.notifier.ready("reload refused: the running configuration is kept")

    # -- shutdown ----------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Pipeline (and publisher), then the sink, then the notifier; signals restored."""
        self.notifier.stopping()
        self.runner.shutdown()
        self.runner.restore_signals()

    def _close_sink(self) -> None:
        # Cleared only after close: closing publishes the final stats, which read self.sink.
        if self.sink is not None:
            try:
                self.sink.close()
            finally:
                self.sink = None

    def request_stop(self) -> None:
        self.runner.stop.set()


def _check_identity_kept(old: Config, new: Config) -> None:
    """Refuse a reload that changes what names this daemon's topics or holds its outbox, or
    that would drop or move its online request topics.

    The device id and the topic prefix are in every topic the daemon has published, retained
    (status, track states, detection switches, discovery) and subscribed to (commands, online
    requests): swapped while running, the old retained topics would stay behind, "online"
    forever. The state directory holds the outbox of results not yet acknowledged: a new one
    would start empty and leave those unsent.
    """
    restart = "restart the service to apply it (systemctl restart edge)"
    move = (
        "to move it, stop the service, move the directory (it holds the outbox of results not "
        "yet acknowledged) and start the service again"
    )
    changed = [
        f"{key}: {was!r} → {now!r} cannot be applied by a reload; {todo}"
        for key, was, now, todo in (
            ("device", old.device, new.device, restart),
            ("mqtt.prefix", old.mqtt.prefix, new.mqtt.prefix, restart),
            ("state_dir", str(old.state_path()), str(new.state_path()), move),
        )
        if was != now
    ]
    # [online] subscribes its request topics for the life of the connection: turning it on
    # follows at a reload, turning it off or moving it to another group does not.
    if old.online.enabled and not new.online.enabled:
        changed.append(f"online.enabled: true → false cannot be applied by a reload; {restart}")
    elif old.online.enabled and old.online.group != new.online.group:
        changed.append(
            f"online.group: {old.online.group!r} → {new.online.group!r} cannot be applied by a "
            f"reload; {restart}"
        )
    if changed:
        raise ConfigError(changed, source=new.source or None)
