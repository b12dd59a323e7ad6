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

Exit codes: 0 after a clean stop (SIGTERM, --duration, or every finite source ended);
78 for configuration and model errors at start (systemd does not restart those);
66 when an input file is missing; 1 for anything else.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from edge import preflight
from edge.config import Config
from edge.engine import Engine, Overrides
from edge.errors import ConfigError, EdgeError
from edge.notify import Notifier
from edge.outbox import Outbox
from edge.pipeline import Pipeline, new_boot_id
from edge.publisher import Publisher
from edge.runtime import RuntimeOptions
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
SWITCH_INTERVAL_S = 0.0005


def start_sink(config: Config, boot_id: str = "", settings: MqttSettings | None = None) -> MqttSink:
    """The MQTT sink with its durable outbox in the state directory, started (it connects in
    the background; a broker that is down is fine)."""
    settings = settings or MqttSettings.from_config(config)
    state = config.state_path()
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"state_dir: cannot create {state}: {exc.strerror}. Set state_dir to a writable "
            "directory."
        ) from exc
    outbox = Outbox(
        state / OUTBOX_FILE,
        max_rows=config.mqtt.outbox_max_rows,
        ram_max_rows=config.mqtt.ram_max_rows,
        boot_id=boot_id,
    )
    sink = MqttSink(settings, outbox)
    sink.start()
    return sink


class _CurrentSink:
    """What the publisher sends through: whichever sink the daemon holds now (a reload may
    replace it while the publisher stays)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def publish_result(self, camera: str, payload: bytes) -> None:
        sink = self._daemon.sink
        if sink is not None:
            sink.publish_result(camera, payload)

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        sink = self._daemon.sink
        if sink is not None:
            sink.publish_snapshot(camera, jpeg)


_EngineKey = tuple[str, RuntimeOptions, Overrides]


@dataclass(frozen=True, slots=True)
class _Built:
    """A configuration made ready: opened, loaded, nothing started."""

    config: Config
    settings: MqttSettings
    pipeline: Pipeline
    publisher: Publisher
    engines: dict[_EngineKey, Engine]


class Daemon:
    """One run of the service. Thread affinity: the main thread (it owns signals)."""

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
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self.sink: MqttSink | None = None
        self.settings: MqttSettings | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self._engines: dict[_EngineKey, Engine] = {}
        self._last_pipeline_stats: dict[str, Any] | None = None
        self.reloads: dict[str, Any] = {"accepted": 0, "refused": 0, "last": None}
        self._details_sent: bytes | None = None
        self.exit_code = 0

    # -- building ----------------------------------------------------------------------------
    def _start_sink(self, config: Config, settings: MqttSettings) -> None:
        sink = start_sink(config, self.boot_id, settings)
        sink.final_stats = self._final_stats
        self.sink, self.settings = sink, settings

    def _build(self, config: Config) -> _Built:
        """Everything ``config`` needs, opened and loaded, nothing started (raises EdgeError).
        An engine already loaded with the same reference and settings is reused."""
        options = RuntimeOptions.from_settings(config.model)
        post = Overrides.from_settings(config.model)

        def load(ref: str) -> Engine:
            engine = self._engines.get((ref, options, post))
            return engine if engine is not None else Engine.load(ref, options, post)

        checked = preflight.check(config, load=load)
        engines = {(ref, options, post): e for ref, e in checked.engines.items()}
        publisher = Publisher(_CurrentSink(self), config.mqtt)
        try:
            pipeline = Pipeline(
                config,
                [publisher],
                engine_loader=lambda ref: checked.engines[ref],
                boot_id=self.boot_id,
                admit=self._room,
            )
        except BaseException:
            publisher.close()
            raise
        return _Built(config, checked.mqtt, pipeline, publisher, engines)

    def _room(self) -> bool:
        sink = self.sink
        return sink.room() if sink is not None else True

    def _start_pipeline(self, built: _Built, seqs: dict[str, int] | None = None) -> None:
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
        pipeline.start()
        self.pipeline = pipeline
        self.publisher = built.publisher
        self._engines = built.engines

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
        self._install_signals()
        try:
            built = self._build(self.config)
            self._start_sink(self.config, built.settings)
            self._start_pipeline(built)
        except BaseException:
            self._shutdown()
            raise
        cams = ", ".join(f"{c.name} ← {c.source}" for c in self.config.cameras)
        log.info(
            "running: device %s, boot %s, cameras %s, broker %s:%d",
            self.config.device,
            self.boot_id,
            cams,
            self.config.mqtt.host,
            self.config.mqtt.port,
        )
        self.notifier.ready(f"running {len(self.config.cameras)} camera(s)")
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def _loop(self) -> None:
        start = time.monotonic()
        next_stats = start + min(2.0, self.config.mqtt.stats_interval)
        last_captured = last_handled = -1
        while not self._stop.wait(0.5):
            now = time.monotonic()
            pipeline = self.pipeline
            assert pipeline is not None
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._reload()
                next_stats = now  # show the outcome at once
                continue
            fatal = pipeline.failure()
            if fatal is not None:
                log.error("%s", fatal)
                self.exit_code = fatal.exit_code if isinstance(fatal, EdgeError) else 1
                return
            captured, handled, idle = pipeline.progress()
            if captured != last_captured and (handled != last_handled or idle):
                # Liveness means frames flow through inference: a camera that stopped
                # delivering, or an interpreter stuck in invoke(), stops the beat.
                self.notifier.watchdog()
            last_captured, last_handled = captured, handled
            self._publish_details()
            if now >= next_stats:
                next_stats = now + self.config.mqtt.stats_interval
                self._publish_stats()
            if self.duration is not None and now - start >= self.duration:
                log.info("duration of %.1f s reached, stopping", self.duration)
                return
            if pipeline.finished():
                log.info("every source has ended, stopping")
                return

    def stats(self) -> dict[str, Any]:
        """The stats payload: the pipeline's, the sink's (``mqtt``), reloads and what is
        degraded."""
        if self.pipeline is not None:
            stats: dict[str, Any] = self.pipeline.stats()
        else:
            stats = dict(self._last_pipeline_stats or {"boot_id": self.boot_id})
        if self.sink is not None:
            stats["mqtt"] = self.sink.stats()
            if self.publisher is not None:
                stats["mqtt"]["suppressed"] = self.publisher.suppressed
        stats["reloads"] = self.reloads
        stats["degraded"] = self.degraded()
        return stats

    def degraded(self) -> list[str]:
        """Every degraded state right now, one sentence each."""
        out = list(self.sink.degraded()) if self.sink is not None else []
        pipeline = self.pipeline
        if pipeline is not None:
            if pipeline.memory_over_budget:
                out.append(f"RSS over the memory budget of {self.config.budget.memory_mb:g} MiB")
            for e in pipeline.engines.values():
                if e.interpreter.info.degraded:
                    out.append(f"model {e.name}: {e.interpreter.info.degraded}")
        last = self.reloads["last"]
        if last is not None and not last["ok"]:
            out.append(f"last reload refused: {last['error']}")
        return out

    def _final_stats(self) -> bytes:
        stats = self.stats()
        stats["final"] = True
        return json.dumps(stats, separators=(",", ":")).encode()

    def _publish_stats(self) -> None:
        assert self.sink is not None
        stats = self.stats()
        self.sink.publish_stats(json.dumps(stats, separators=(",", ":")).encode())
        cams = stats.get("cameras", {})
        fps = sum(c["fps_out"] for c in cams.values())
        self.notifier.status(
            f"{fps:.1f} results/s, {sum(c['inferred'] for c in cams.values())} inferred, "
            f"{stats['mqtt'].get('pending_disk', 0)} spooled, RSS {stats.get('rss_mb')} MiB"
            + (" OVER BUDGET" if stats.get("memory_over_budget") else "")
            + (f", DEGRADED: {'; '.join(stats['degraded'])}" if stats["degraded"] else "")
        )

    def _publish_details(self) -> None:
        """The retained ``status/details`` topic, whenever what it says changes."""
        if self.sink is None:
            return
        details = {
            "boot_id": self.boot_id,
            "degraded": self.degraded(),
            "last_reload": self.reloads["last"],
        }
        payload = json.dumps(details, separators=(",", ":")).encode()
        if payload != self._details_sent:
            self._details_sent = payload
            self.sink.set_details(payload)

    # -- reload ------------------------------------------------------------------------------
    def _reload(self) -> None:
        if self._reload_config is None:
            log.warning("SIGHUP ignored: no configuration file to reload")
            return
        self.notifier.reloading()
        try:
            built = self._build(self._reload_config())
        except EdgeError as exc:
            self._refused(exc)
            return
        # Everything is ready: from here on only swaps.
        old = self.config
        running = self.pipeline
        self._stop_pipeline()
        # Read after the stop: results still queued when it began get their numbers meanwhile.
        seqs = running.last_seq() if running is not None else {}
        new = built.config
        sink_changed = built.settings != self.settings or new.state_path() != old.state_path()
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
                self._start_pipeline(self._build(old), seqs)
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
        self.notifier.stopping()
        self._stop_pipeline()
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception:
                log.exception("closing the MQTT sink failed")
            self.sink = None
        self.notifier.close()

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        self._stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP received, reloading the configuration")
        self._reload_requested.set()

    def request_stop(self) -> None:
        self._stop.set()
