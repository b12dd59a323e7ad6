"""One ``edge preview`` run: the daemon's pipeline built from the same configuration, plus the
preview listener, encoder, HTTP server and terminal view (or, with ``--snapshot``, just the
first annotated frame written to a file). MQTT is optional and wired like ``edge run``.

When every source has ended (a video file without ``--loop``, a photo) the page stays up and
keeps showing the last annotated frame until Ctrl-C, SIGTERM or ``--duration``.

Exit codes follow ``edge run``: 0 after Ctrl-C, SIGTERM or ``--duration``; 78 for settings and
models; 66 for a missing input file; 1 when ``--snapshot`` got no frame in its time limit.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import cv2

from edge.annotate import annotate
from edge.config import Config
from edge.errors import ConfigError, SourceError
from edge.output import ResultListener
from edge.pipeline import Pipeline, new_boot_id
from edge.preview import SNAPSHOT_TIMEOUT_S
from edge.preview.frames import Encoder, Latest, LatestResults, Streams, figures, render
from edge.preview.server import PreviewServer
from edge.preview.terminal import TerminalView
from edge.runner import Runner
from edge.sinks import NullSink, Sink
from edge.sinks.mqtt import MqttSink
from edge.sinks.publisher import Publisher
from edge.sinks.start import start_sink
from edge.sinks.tracks import TrackListener, plan
from edge.trackevents import Overlay

log = logging.getLogger(__name__)

SNAPSHOT_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_snapshot(path: Path, item: Latest, quality: int = 90) -> None:
    """Write the annotated frame of ``item`` to ``path`` (JPEG or PNG by suffix), atomically."""
    if path.suffix.lower() == ".png":
        image = annotate(item.event.frame.image, item.event.result, figures(item), item.tracked)
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise ValueError("PNG encoding failed")
        data = buf.tobytes()
    else:
        data = render(item, quality)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(
            f"--snapshot {path}: cannot write it: {exc.strerror}; check the folder exists"
        ) from exc


class PreviewSession:
    """Builds and runs one preview. Thread affinity: the main thread (its :class:`Runner` owns
    the signals, the done check and the shutdown). ``stop`` ends the run when set."""

    def __init__(
        self,
        config: Config,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        preview_fps: float = 15.0,
        quality: int = 80,
        mqtt: bool = False,
        snapshot_timeout: float = SNAPSHOT_TIMEOUT_S,
        out: TextIO = sys.stdout,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.preview_fps = preview_fps
        self.quality = quality
        self.mqtt = mqtt
        self.out = out
        self.runner = Runner()
        self.stop = self.runner.stop
        self.latest = LatestResults()
        self.streams = Streams()
        self.encoder: Encoder | None = None
        self.server: PreviewServer | None = None
        self.pipeline: Pipeline | None = None
        self.sink: MqttSink | None = None
        self.publisher: Publisher | None = None
        self.view: TerminalView | None = None
        self.exit_code = 0
        self.snapshot_timeout = snapshot_timeout

    # -- figures -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """``/stats.json``: the pipeline's stats, each camera's latest result, preview figures."""
        assert self.pipeline is not None
        stats = self.pipeline.stats()
        now = time.monotonic()
        for name, item in self.latest.all().items():
            cam = stats["cameras"].get(name)
            if cam is not None:
                event = item.event
                cam["latest"] = {
                    "frame_index": event.frame.index,
                    "age_s": round(now - event.done_mono, 3),
                    "e2e_ms": round(event.e2e_ms, 3),
                    "result": event.result.to_dict(),
                }
        enc = self.encoder
        stats["preview"] = {
            "clients": self.streams.clients(),
            "fps_cap": self.preview_fps,
            "fps": enc.rate.rate() if enc else 0.0,
            "encoded": enc.encoded if enc else 0,
            "encode_ms": enc.encode_ms.percentiles() if enc else {},
        }
        return stats

    # -- lifecycle ---------------------------------------------------------------------------
    def _build(self, serve: bool) -> None:
        boot_id = new_boot_id()
        sink: Sink = NullSink()
        if serve:
            self.server = PreviewServer(
                self.host,
                self.port,
                [c.name for c in self.config.cameras],
                self.latest,
                self.streams,
                self.stats,
                self.quality,
            )
        publisher: list[ResultListener] = []
        if self.mqtt:
            self._start_mqtt()
            assert self.publisher is not None and self.sink is not None
            publisher.append(self.publisher)
            sink = self.sink
        # Tracking runs first, so the preview and snapshots draw this result's tracks.
        tracks = TrackListener(sink, self.config.device, boot_id)
        self.latest.overlay = tracks.overlay
        listeners: list[ResultListener] = [tracks, self.latest, *publisher]
        self.pipeline = Pipeline(self.config, listeners, boot_id=boot_id)
        tracks.configure(plan(self.config, self.pipeline.engines))

    def _overlay(self, camera: str) -> Overlay | None:
        overlay = self.latest.overlay
        return overlay(camera) if overlay is not None else None

    def _start_mqtt(self) -> None:
        # The daemon's own sink, so --mqtt publishes exactly what edge run would.
        self.sink = start_sink(self.config)
        self.publisher = Publisher(self.sink, self.config.mqtt, overlay=self._overlay)

    def run(
        self, duration: float | None = None, snapshot: Path | None = None, terminal: bool = False
    ) -> int:
        """Run until stopped; returns the exit code. With ``snapshot``, write the first
        annotated frame there and return 0 (SourceError if no frame came before the end)."""
        runner = self.runner
        runner.duration = duration
        runner.install_signals()
        self._on_shutdown()
        try:
            self._build(serve=snapshot is None)
            assert self.pipeline is not None
            if self.server is not None:
                self.encoder = Encoder(
                    self.latest, self.streams, self.preview_fps, self.stop, self.quality
                )
                self.encoder.start()
                self.server.start()
                print(f"edge preview: {self.server.url} (Ctrl-C stops)", file=self.out)
                self.out.flush()
                if not is_loopback(self.host):
                    print(
                        f"edge preview: warning: serving on {self.host} WITHOUT authentication: "
                        "anyone who can reach this port can watch the cameras",
                        file=sys.stderr,
                    )
                if terminal:
                    self.view = TerminalView(self.out, self.server.url)
            self.pipeline.start()
            if snapshot is not None:
                self._snapshot(snapshot, duration)
            else:
                self._loop(duration)
        finally:
            runner.shutdown()
            runner.restore_signals()
        if snapshot is None and self.pipeline is not None:
            self._print_summary()
        return self.exit_code

    def _ended(self, *, at_end: bool = True) -> bool:
        """True when the run should end; sets ``exit_code`` for a fatal source error. With
        ``at_end`` False the end of every source does not end the run."""
        assert self.pipeline is not None
        code = self.runner.done(self.pipeline, at_end=at_end)
        if code:
            self.exit_code = code
        return code is not None

    def _loop(self, duration: float | None) -> None:
        self.runner.begin()
        next_draw = self.runner.started
        told = False
        while not self.stop.wait(0.2):
            if self._ended(at_end=False):
                return
            if not told and self.pipeline is not None and self.pipeline.finished():
                told = True
                self._say_ended(duration)
            now = time.monotonic()
            if self.view is not None and now >= next_draw:
                next_draw = now + 1.0
                self.view.draw(self.stats())

    def _say_ended(self, duration: float | None) -> None:
        until = f"Ctrl-C or the end of --duration {duration:g} s" if duration else "Ctrl-C"
        log.info("every source has ended; showing the last frame until %s", until)
        if self.view is None:  # the terminal view shows the camera as ended in place
            print(
                f"edge preview: every source has ended; the page shows the last frame until "
                f"{until} (--loop plays files again)",
                file=self.out,
            )
            self.out.flush()

    def _snapshot(self, path: Path, duration: float | None) -> None:
        self.runner.begin()
        start = self.runner.started
        limit = min(duration, self.snapshot_timeout) if duration else self.snapshot_timeout
        while not self.latest.first.wait(0.1):
            if self.stop.is_set() or self._ended():
                if self.exit_code == 0:
                    raise SourceError(
                        "no frame was inferred before the preview stopped; check the source "
                        "delivers frames (or give a longer --duration)"
                    )
                return
            if time.monotonic() - start >= limit:
                raise SourceError(self._no_frame(limit))
        item = next(iter(self.latest.all().values()))
        write_snapshot(path, item)
        event = item.event
        print(
            f"edge preview: wrote {path} (camera {event.camera}, frame {event.frame.index})",
            file=self.out,
        )

    def _no_frame(self, waited: float) -> str:
        """Why ``--snapshot`` got nothing: each camera's capture state and last error."""
        assert self.pipeline is not None
        why = []
        for name, cam in self.pipeline.stats()["cameras"].items():
            error = cam.get("last_error")
            why.append(
                f"camera {name!r} is {cam['source_state']}" + (f": {error}" if error else "")
            )
        return (
            f"--snapshot: no frame within {waited:g} s; {'; '.join(why)}. Check the source, or "
            "allow longer with --snapshot-timeout"
        )

    def _on_shutdown(self) -> None:
        """What the runner stops, registered outermost first: the HTTP server (which wakes its
        stream clients) stops first and the terminal view is restored last. Each step looks up
        what was built, so a run that failed half-way stops only what it started."""
        on = self.runner.on_shutdown
        on("terminal view", lambda: self.view.close() if self.view is not None else None)
        on("mqtt sink", lambda: self.sink.close() if self.sink is not None else None)
        on("publisher", lambda: self.publisher.close() if self.publisher is not None else None)
        on("pipeline", lambda: self.pipeline.stop() if self.pipeline is not None else None)
        on("encoder", lambda: self.encoder.join(2.0) if self.encoder is not None else None)
        on("http server", lambda: self.server.stop() if self.server is not None else None)

    def _print_summary(self) -> None:
        assert self.pipeline is not None
        for name, c in self.pipeline.stats()["cameras"].items():
            lat = c["latency_ms"]
            invoke = lat["invoke"].get("p50", 0.0)
            e2e = lat["e2e"].get("p50", 0.0)
            print(
                f"edge preview: {name}: {c['inferred']} results, {c['captured']} frames "
                f"captured, {c['dropped']} dropped; infer p50 {invoke:.1f} ms, "
                f"e2e p50 {e2e:.1f} ms",
                file=self.out,
            )
