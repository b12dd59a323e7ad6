"""The real-time pipeline: capture threads hand their newest frame to inference threads, which
run the model, and result threads that pass each result, as a
:class:`~edge.output.ResultEvent`, to the listeners (the MQTT publisher, the preview).

Threads and ownership: one ``capture-<camera>`` thread per camera owns its source, its motion
gate (:mod:`edge.motion`) and its preprocessing; one ``infer-<model>`` thread per distinct model
owns its interpreter and serves, oldest frame first, every camera that uses that model, so a
model shared by cameras is loaded once. Between them :class:`~edge.slots.FrameSlots`, one slot
per camera, drops the older frame when inference falls behind (counted as ``dropped``), so
latency never grows with a queue. The inference thread only invokes: a ``results-<model>``
thread decodes each output, numbers it and hands it to the listeners (a
:class:`~edge.output.FanOut`) while the next frame is already running, in order. Listeners must
not block: they keep the event and do slow work (network, JPEG) on their own threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge.capture import CaptureThread
from edge.config import CameraSettings, Config
from edge.engine import Engine, Overrides
from edge.frame import Frame
from edge.output import FanOut, ResultListener
from edge.runtime import RuntimeOptions, chain_stats
from edge.slots import NO_TENSOR, FrameSlots, Job
from edge.sources import from_camera, lossless
from edge.system import cpu_seconds, cpu_temperature_c, rss_mb
from edge.workers import CameraState, InferenceWorker, ResultWorker

log = logging.getLogger(__name__)

BACKPRESSURE_POLL_S = 0.02  # how often a held-back lossless source looks for room again


def new_boot_id() -> str:
    """A fresh id for one life of the process (12 hex digits)."""
    return uuid.uuid4().hex[:12]


class Pipeline:
    """All cameras and models of one configuration.

    Build loads every model (ModelError surfaces here, before anything starts); ``start``
    launches the threads; ``stop`` stops capture first, then inference, each within a bound.

    listeners: get every result, in order, each call in its own try (a
    :class:`~edge.output.FanOut`). boot_id: names the process's life in every result; the
    daemon keeps one across reloads (a new one is drawn when not given). admit: asked by each
    capture thread before it preprocesses a frame (the MQTT sink's back-pressure,
    ``MqttSink.room``); while it says no, lossless sources wait and live sources drop the frame
    (counted as ``dropped_backpressure``). paused: whether a camera's detection is switched
    off (``edge.control``): its frames are skipped at capture (``skipped_paused``).
    """

    def __init__(
        self,
        config: Config,
        listeners: Sequence[ResultListener] = (),
        engine_loader: Callable[[str], Engine] | None = None,
        boot_id: str | None = None,
        admit: Callable[[], bool] | None = None,
        paused: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.boot_id = boot_id or new_boot_id()
        self.started_mono = time.monotonic()
        self._cpu0 = cpu_seconds()
        self._stop = threading.Event()
        self._owns_engines = engine_loader is None  # closed by stop(); else the caller's
        load = engine_loader or (
            lambda ref: Engine.load(
                ref,
                RuntimeOptions.from_settings(config.model),
                Overrides.from_settings(config.model),
            )
        )
        self.rss_before_models = rss_mb()
        groups: dict[str, list[CameraSettings]] = {}
        for cam in config.cameras:
            groups.setdefault(config.camera_model(cam), []).append(cam)
        self.cameras: dict[str, CameraState] = {}
        self.workers: list[InferenceWorker] = []
        self.engines: dict[str, Engine] = {}
        self._worker_of: dict[str, InferenceWorker] = {}
        fan_out = FanOut(listeners)
        for ref, cams in groups.items():
            engine = load(ref)
            self.engines[ref] = engine
            slots = FrameSlots()
            states = {c.name: CameraState(c, engine.name) for c in cams}
            self.cameras.update(states)
            results = ResultWorker(engine, states, fan_out, config.device, self.boot_id)
            worker = InferenceWorker(
                engine, states, slots, results, config.budget.latency_ms, self._stop
            )
            self.workers.append(worker)
            self._worker_of[ref] = worker
            pre = engine.preprocessor
            for cam in cams:
                state = states[cam.name]
                spec = from_camera(cam, lores=(pre.width, pre.height))
                hand_off = self._deliver(slots, state, engine, lossless(spec), admit, paused)
                state.capture = CaptureThread(
                    spec,
                    on_frame=hand_off,
                    stop=self._stop,
                    backoff=cam.reconnect_min_s,
                    backoff_max=cam.reconnect_max_s,
                    stall_after=cam.stall_after_s,
                )
        self.rss_after_models = rss_mb()
        self.memory_over_budget = False

    def _deliver(
        self,
        slots: FrameSlots,
        state: CameraState,
        engine: Engine,
        lossless: bool,
        admit: Callable[[], bool] | None,
        paused: Callable[[str], bool] | None,
    ) -> Callable[[Frame], None]:
        """The capture thread's hand-off: motion gate, then preprocess into a spare input
        tensor (overlapping the previous frame's invoke on the inference thread), then the
        slot. Tensors circulate: at most three per camera ever exist (being filled, waiting,
        being copied into the interpreter). A frame whose outputs the camera computed (an AI
        Camera's, ``frame.sensor``) goes to the slot as it is; one from such a camera without
        outputs is counted (``no_tensor``) and goes no further."""
        pre = engine.new_preprocessor()
        shape = (1, pre.height, pre.width, pre.channels)
        on_sensor = engine.on_sensor

        def deliver(frame: Frame) -> None:
            state.counters.add("captured")
            state.fps_in.tick(frame.ts_mono)
            if on_sensor and frame.sensor is None:
                # The sensor had no result for this frame (still loading its network, or
                # running slower than the frame rate): nothing to decode.
                state.counters.add("no_tensor")
                return
            if paused is not None and paused(state.name):
                state.counters.add("skipped_paused")
                return
            if not state.motion.moved(frame):
                state.counters.add("skipped_motion")
                return
            if admit is not None and not admit():
                if not lossless:
                    state.counters.add("dropped_backpressure")
                    return
                while not admit() and not self._stop.wait(BACKPRESSURE_POLL_S):
                    pass
            if frame.sensor is not None:
                # Outputs computed by the camera: no preprocessing, the frame's own transform.
                job = Job(frame, NO_TENSOR, frame.sensor.transform, 0.0)
            else:
                t0 = time.perf_counter()
                tensor = state.spare.pop() if state.spare else np.empty(shape, pre.spec.dtype)
                transform = pre.run(frame.image, tensor)
                job = Job(frame, tensor, transform, (time.perf_counter() - t0) * 1000)
            old = slots.put(state.name, job, wait=lossless)
            if old is not None:
                state.counters.add("dropped")
                if old.tensor is not NO_TENSOR:
                    state.spare.append(old.tensor)

        return deliver

    def continue_seq(self, seqs: dict[str, int]) -> None:
        """Number results on from ``seqs`` (camera name -> last seq), so a reload shows
        subscribers no false gap. Before ``start``."""
        for name, seq in seqs.items():
            if name in self.cameras:
                self.cameras[name].seq = seq

    def last_seq(self) -> dict[str, int]:
        """Camera name -> the seq of its last result."""
        return {name: cam.seq for name, cam in self.cameras.items()}

    def swap(self, ref: str, engine: Engine, timeout: float = 5.0) -> Engine | None:
        """Run ``engine`` instead of model ``ref``'s from the next frame on, without stopping
        anything: the inference thread takes it between two invokes, so no frame is lost and
        ``seq`` runs on. ``engine`` must take the same input as the one it replaces (the
        capture threads keep preprocessing for it). Returns the replaced engine (the caller
        closes it), or None when the inference thread did not take it within ``timeout``
        (an invoke hung); the caller still owns ``engine`` then."""
        worker = self._worker_of[ref]
        if worker.is_alive():
            worker.offer(engine)
            if not worker.wait_adopted(timeout):
                return None
        old = self.engines[ref]
        worker.engine = engine
        self.engines[ref] = engine
        return old

    def start(self) -> None:
        for w in self.workers:
            w.results.start()
            w.start()
        for cam in self.cameras.values():
            assert cam.capture is not None
            cam.capture.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop capture, then inference; threads that do not finish in time are left (daemon
        threads) and named in the log."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for cam in self.cameras.values():
            if cam.capture is not None:
                cam.capture.stop()
        for w in self.workers:
            w.slots.close()
        threads: list[threading.Thread] = [
            c.capture for c in self.cameras.values() if c.capture is not None
        ]
        # Inference ends first and then tells its result thread, which finishes what is queued.
        for t in [*threads, *self.workers, *(w.results for w in self.workers)]:
            if t.ident is None:
                continue  # never started (stop() after a failed start)
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("thread %s did not stop within %.1f s", t.name, timeout)
        for engine in self.engines.values() if self._owns_engines else ():
            engine.close()
        for cam in self.cameras.values():
            c = cam.counters.snapshot()
            log.info(
                "camera %s: %d results (last seq %d, boot %s), %d frames captured, %d "
                "dropped, %d skipped over the latency budget, %d skipped without motion",
                cam.name,
                c["inferred"],
                cam.seq,
                self.boot_id,
                c["captured"],
                c["dropped"],
                c["skipped_latency"],
                c["skipped_motion"],
            )

    def progress(self) -> tuple[int, int, bool]:
        """(frames captured, frames taken by inference, inference idle) over all cameras: the
        daemon's liveness check wants both counts to move, or inference to have nothing to
        do (a hung interpreter stops the second count while capture keeps dropping)."""
        captured = sum(c.counters["captured"] for c in self.cameras.values())
        handled = sum(w.handled for w in self.workers)
        return captured, handled, all(w.slots.idle() and w.results.idle() for w in self.workers)

    def finished(self) -> bool:
        """True when every source has ended (finite files) and its last frame was inferred."""
        caps = [c.capture for c in self.cameras.values()]
        return all(c is not None and not c.is_alive() for c in caps) and all(
            w.slots.idle() and w.results.idle() for w in self.workers
        )

    def failure(self) -> Exception | None:
        """The first capture error that retrying cannot fix (a missing file), if any."""
        for cam in self.cameras.values():
            err = cam.capture.fatal_error() if cam.capture is not None else None
            if err is not None:
                return err
        return None

    def check_memory(self) -> float:
        """Current RSS in MiB, flagging (and logging once per crossing) an over-budget state."""
        rss = rss_mb()
        budget = self.config.budget.memory_mb
        over = bool(budget) and rss > budget
        if over and not self.memory_over_budget:
            log.warning("RSS %.1f MiB is over the memory budget of %.0f MiB", rss, budget)
        elif self.memory_over_budget and not over:
            log.info("RSS %.1f MiB is back within the memory budget", rss)
        self.memory_over_budget = over
        return rss

    def latency_totals(self) -> dict[str, dict[str, tuple[int, float]]]:
        """Camera → stage → (results ever timed, their sum in ms): the metrics' summaries."""
        return {
            name: {stage: w.totals() for stage, w in cam.latency.items()}
            for name, cam in self.cameras.items()
        }

    def stats(self) -> dict[str, Any]:
        """The stats payload (without the MQTT part, which the daemon adds)."""
        uptime = time.monotonic() - self.started_mono
        rss = self.check_memory()
        models = {}
        for ref, e in self.engines.items():
            info = e.interpreter.info
            models[e.name] = {
                "path": ref,
                "version": e.spec.version,
                "task": e.task,
                "runtime": info.backend,
                "runtime_version": info.backend_version,
                "delegate": info.delegate,
                "runs_on": "sensor" if e.on_sensor else "host",
                "threads": info.threads,
                "degraded": info.degraded or None,
                **chain_stats(e.interpreter),
            }
        return {
            "device": self.config.device,
            "boot_id": self.boot_id,
            "ts": round(time.time(), 3),
            "uptime_s": round(uptime, 1),
            "rss_mb": round(rss, 1),
            "memory_budget_mb": self.config.budget.memory_mb or None,
            "memory_over_budget": self.memory_over_budget,
            "cpu_percent": round(100 * (cpu_seconds() - self._cpu0) / max(uptime, 1e-3), 1),
            "cpu_temp_c": cpu_temperature_c(),
            "models": models,
            "cameras": {name: cam.stats() for name, cam in self.cameras.items()},
        }
