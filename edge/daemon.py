"""``edge run``: the long-running service. Builds the pipeline and the MQTT sink from a config,
tells systemd when it is ready, proves liveness only while frames flow, publishes stats,
reloads on SIGHUP and shuts down cleanly on SIGTERM.

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
from types import FrameType
from typing import Any

from edge.config import Config
from edge.errors import ConfigError, EdgeError, ModelError
from edge.notify import Notifier
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.publisher import Publisher
from edge.sinks.mqtt import MqttSink
from edge.sinks.mqtt_settings import MqttSettings

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
SWITCH_INTERVAL_S = 0.0005


# The sink's settings from the ``[mqtt]`` section; the old name, kept for its callers.
mqtt_settings = MqttSettings.from_config


def start_sink(config: Config) -> MqttSink:
    """The MQTT sink with its durable outbox in the state directory, started (it connects in
    the background; a broker that is down is fine)."""
    state = config.state_path()
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"state_dir: cannot create {state}: {exc.strerror}. Set state_dir to a writable "
            "directory."
        ) from exc
    outbox = Outbox(state / OUTBOX_FILE, max_rows=config.mqtt.outbox_max_rows)
    sink = MqttSink(mqtt_settings(config), outbox)
    sink.start()
    return sink


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
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self.sink: MqttSink | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.exit_code = 0

    # -- lifecycle -------------------------------------------------------------------------
    def _start_sink(self, config: Config) -> None:
        self.sink = start_sink(config)

    def _start_pipeline(self, config: Config) -> None:
        assert self.sink is not None
        self.publisher = Publisher(self.sink, config.mqtt)
        pipeline = Pipeline(config, [self.publisher])
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

    def _stop_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
            self.pipeline = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        # invoke() releases the GIL; when it returns, the inference thread must win it back
        # from the capture and MQTT threads. With the default 5 ms switch interval it can wait
        # a whole interval behind a busy Python thread, so hand the GIL over more often.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._install_signals()
        try:
            self._start_sink(self.config)
            self._start_pipeline(self.config)
        except BaseException:
            self._shutdown()
            raise
        cams = ", ".join(f"{c.name} ← {c.source}" for c in self.config.cameras)
        log.info(
            "running: device %s, cameras %s, broker %s:%d",
            self.config.device,
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
            if now >= next_stats:
                next_stats = now + self.config.mqtt.stats_interval
                self._publish_stats()
            if self.duration is not None and now - start >= self.duration:
                log.info("duration of %.1f s reached, stopping", self.duration)
                return
            if pipeline.finished():
                log.info("every source has ended, stopping")
                return

    def _publish_stats(self) -> None:
        assert self.pipeline is not None and self.sink is not None
        stats: dict[str, Any] = self.pipeline.stats()
        stats["mqtt"] = self.sink.stats()
        if self.publisher is not None:
            stats["mqtt"]["suppressed"] = self.publisher.suppressed
        self.sink.publish_stats(json.dumps(stats, separators=(",", ":")).encode())
        cams = stats["cameras"]
        fps = sum(c["fps_out"] for c in cams.values())
        self.notifier.status(
            f"{fps:.1f} results/s, {sum(c['inferred'] for c in cams.values())} inferred, "
            f"{stats['mqtt'].get('pending_disk', 0)} spooled, RSS {stats['rss_mb']} MiB"
            + (" OVER BUDGET" if stats["memory_over_budget"] else "")
        )

    def _reload(self) -> None:
        if self._reload_config is None:
            log.warning("SIGHUP ignored: no configuration file to reload")
            return
        self.notifier.reloading()
        try:
            new = self._reload_config()
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready("reload refused: invalid configuration")
            return
        old = self.config
        self._stop_pipeline()
        try:
            if mqtt_settings(new) != mqtt_settings(old):
                assert self.sink is not None
                self.sink.close()
                self._start_sink(new)
            self._start_pipeline(new)
            self.config = new
            log.info("configuration reloaded")
        except (ModelError, ConfigError) as exc:
            log.error("reload failed (%s); restarting with the previous configuration", exc)
            if self.sink is None:
                self._start_sink(old)
            self._start_pipeline(old)
        self.notifier.ready("reloaded")

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
