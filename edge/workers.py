"""The threads between capture and the listeners, and the per-camera state they share:
:class:`InferenceWorker` (``infer-<model>``) owns one interpreter and only copies in, invokes
and copies out; :class:`ResultWorker` (``results-<model>``) decodes, numbers (``seq``) and hands
each result, as a :class:`~edge.output.ResultEvent`, to the listeners, in order, while the next
frame is being invoked. :class:`~edge.pipeline.Pipeline` builds and starts them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from edge.capture import CaptureThread
from edge.config import CameraSettings
from edge.engine import Engine, Invocation
from edge.motion import MotionGate
from edge.output import ResultEvent, ResultListener
from edge.slots import NO_TENSOR, FrameSlots, Job
from edge.stats import Counters, LatencyWindow, RateMeter

log = logging.getLogger(__name__)

STAGES = ("queue", "preprocess", "invoke", "postprocess", "e2e")
COUNTERS = (
    "captured",
    "dropped",
    "dropped_backpressure",
    "skipped_latency",
    "skipped_motion",
    "skipped_paused",
    "no_tensor",
    "inferred",
    "errors",
)


class CameraState:
    """Everything the pipeline tracks for one camera; read by stats from other threads."""

    def __init__(self, settings: CameraSettings, model: str) -> None:
        self.settings = settings
        self.name = settings.name
        self.model = model
        self.counters = Counters(*COUNTERS)
        self.latency = {s: LatencyWindow() for s in STAGES}
        self.fps_in = RateMeter()
        self.fps_out = RateMeter()
        self.seq = 0  # results produced; the result thread is the only writer
        self.capture: CaptureThread | None = None
        self.motion = MotionGate(settings.motion_threshold, settings.motion_max_skip_s)
        # Input tensors free for the capture thread to fill (deque: thread-safe append/pop).
        self.spare: deque[np.ndarray] = deque()

    def stats(self) -> dict[str, Any]:
        cap = self.capture.status() if self.capture is not None else {}
        return {
            "model": self.model,
            "source_state": cap.get("state", "stopped"),
            "reopens": cap.get("reopens", 0),
            "stale": cap.get("stale", 0),
            "last_error": cap.get("last_error") or None,
            "fps_in": self.fps_in.rate(),
            "fps_out": self.fps_out.rate(),
            **self.counters.snapshot(),
            "latency_ms": {s: w.percentiles() for s, w in self.latency.items()},
        }


class InferenceWorker(threading.Thread):
    """Owns one Engine's interpreter; serves the cameras that share its model until ``stop`` is
    set. It only copies a tensor in, invokes and copies the outputs out: decoding and the
    listeners run on its :class:`ResultWorker`, overlapping the next invoke. A frame that
    carries outputs the camera computed (``frame.sensor``) is not invoked: its outputs are
    handed on as they are, through the same latency budget, order and counting."""

    def __init__(
        self,
        engine: Engine,
        cameras: dict[str, CameraState],
        slots: FrameSlots,
        results: ResultWorker,
        latency_ms: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"infer-{engine.name}", daemon=True)
        self.engine = engine
        self.cameras = cameras
        self.slots = slots
        self.results = results
        self.latency_ms = latency_ms
        self.stop_event = stop
        self.handled = 0  # jobs taken (inferred or skipped): half of the watchdog's heartbeat
        self._offer_lock = threading.Lock()
        self._offered: Engine | None = None
        self._adopted = threading.Event()

    def offer(self, engine: Engine) -> None:
        """Have the thread run ``engine`` from its next frame on (any thread): it takes it
        between two invokes, never during one; :meth:`wait_adopted` says when."""
        with self._offer_lock:
            self._adopted.clear()
            self._offered = engine

    def wait_adopted(self, timeout: float) -> bool:
        """Wait for the offered engine to be taken; if it was not, withdraw it (False)."""
        if self._adopted.wait(timeout):
            return True
        with self._offer_lock:
            self._offered = None
            return self._adopted.is_set()

    def _adopt(self) -> None:
        with self._offer_lock:
            if self._offered is not None:
                self.engine, self._offered = self._offered, None
                self._adopted.set()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self._adopt()
                job = self.slots.take(timeout=0.25)
                if job is None:
                    continue
                try:
                    self._handle(job)
                except Exception:  # one bad frame must not stop the camera
                    log.exception("inference failed on a frame from %s", job.frame.source)
                    self.cameras[job.frame.source].counters.add("errors")
                finally:
                    # The interpreter copied the tensor: it can take the next frame.
                    if job.tensor is not NO_TENSOR:
                        self.cameras[job.frame.source].spare.append(job.tensor)
                    self.handled += 1
                    self.slots.done()  # after handing on, so finished() sees one or the other
        finally:
            self.results.close()

    def _handle(self, job: Job) -> None:
        cam = self.cameras[job.frame.source]
        waited_ms = (time.monotonic() - job.frame.ts_mono) * 1000
        if self.latency_ms and waited_ms > self.latency_ms:
            cam.counters.add("skipped_latency")
            return
        engine = self.engine
        sensor = job.frame.sensor
        if sensor is not None:
            # The camera ran the network: its outputs go to decoding as an invoke's would.
            raw = Invocation.from_sensor(sensor)
        else:
            raw = engine.run_prepared(job.tensor)
        self.results.put(job, raw, waited_ms, engine)


class ResultWorker(threading.Thread):
    """Turns one inference thread's outputs into results, in order: decodes them, numbers them
    per camera (``seq``), keeps the latency windows and hands each, as a ResultEvent, to the
    listener (a FanOut of the pipeline's listeners). A short queue separates it from
    inference; when it is full, inference waits rather than lose a result. Each output is
    decoded by the engine that produced it, so a model swapped in mid-queue
    (:meth:`InferenceWorker.offer`) changes results from its first frame exactly."""

    QUEUE = 4

    def __init__(
        self,
        engine: Engine,
        cameras: dict[str, CameraState],
        listener: ResultListener,
        device: str,
        boot_id: str,
    ) -> None:
        super().__init__(name=f"results-{engine.name}", daemon=True)
        self.engine = engine
        self.cameras = cameras
        self.listener = listener
        self.device = device
        self.boot_id = boot_id
        self._queue: queue.Queue[tuple[Job, Invocation, float, Engine] | None] = queue.Queue(
            self.QUEUE
        )

    def put(self, job: Job, raw: Invocation, waited_ms: float, engine: Engine) -> None:
        self._queue.put((job, raw, waited_ms, engine))

    def close(self) -> None:
        """No more results: the thread ends once it has handled those already queued."""
        self._queue.put(None)

    def idle(self) -> bool:
        """Nothing queued and nothing being handled."""
        return self._queue.unfinished_tasks == 0

    def run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                job, raw, waited_ms, engine = item
                try:
                    self._handle(job, raw, waited_ms, engine)
                except Exception:
                    log.exception("decoding a result from %s failed", job.frame.source)
                    self.cameras[job.frame.source].counters.add("errors")
            finally:
                self._queue.task_done()

    def _handle(self, job: Job, raw: Invocation, waited_ms: float, engine: Engine) -> None:
        frame = job.frame
        cam = self.cameras[frame.source]
        result = engine.decode(
            raw, job.transform, frame.image.shape, job.preprocess_ms, cam.name, frame.index
        )
        cam.seq += 1
        cam.counters.add("inferred")
        cam.fps_out.tick()
        event = ResultEvent(
            self.device, cam.name, cam.seq, self.boot_id, frame, result, time.monotonic()
        )
        t = result.timings
        lat = cam.latency
        lat["queue"].add(waited_ms)
        lat["preprocess"].add(t.preprocess_ms)
        lat["invoke"].add(t.invoke_ms)
        lat["postprocess"].add(t.postprocess_ms)
        lat["e2e"].add(event.e2e_ms)
        self.listener.on_result(event)
