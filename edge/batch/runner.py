"""The batch run itself: planning the files, the feeder and worker threads, and the main
thread's writing loop.

Threads: the main thread loads the models, writes lines and shows progress; ``batch-feed``
lists the inputs and decodes videos (decoding a video is sequential by nature); ``batch-N``
workers each own an Engine, decode image files and run the model. ``invoke()`` releases the GIL,
so N workers keep N cores busy. The task queue holds at most two items per worker, so memory
stays bounded whatever the number of files.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edge.batch.output import (
    Key,
    counted_labels,
    csv_path,
    error_record,
    read_done,
    record_key,
    result_record,
    write_csv,
)
from edge.batch.progress import PROGRESS_HZ, Progress
from edge.errors import ConfigError, EdgeError, InputError

if TYPE_CHECKING:
    import numpy as np

    from edge.choices import Delegate
    from edge.engine import Engine, Overrides
    from edge.runtime import RuntimeOptions

log = logging.getLogger(__name__)

QUEUE_PER_WORKER = 2  # tasks waiting per worker: enough to hide decode jitter, little memory


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """One batch run. workers: interpreters (one thread each); threads_per_worker: TFLite
    threads of each; every: keep video frames whose index is a multiple of this; chain: the
    delegates to fail over to after ``delegate``."""

    inputs: tuple[str, ...]
    output: Path
    model: str
    workers: int = 1
    threads_per_worker: int = 1
    every: int = 1
    csv: bool = False
    delegate: Delegate = "xnnpack"
    chain: tuple[Delegate, ...] = ()
    overrides: Overrides | None = None


@dataclass(slots=True)
class Summary:
    """What a run did. items: lines written by this run (results + errors); done_before: items
    skipped because the output already had them; seconds: from the first item to the last
    (model loading excluded); labels: per-label counts (each detection, each segment, the top
    class of a classification)."""

    items: int = 0
    errors: int = 0
    done_before: int = 0
    seconds: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Items per second of this run."""
        return self.items / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Task:
    """One image file (``image`` None: the worker decodes it) or one decoded video frame."""

    path: str
    frame_index: int
    image: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    record: dict[str, Any]
    labels: tuple[str, ...] = ()
    error: bool = False


@dataclass(frozen=True, slots=True)
class _Input:
    path: str
    video: bool
    frames: int  # expected items (images 1; videos from the container header, may be 0)


# -- planning -------------------------------------------------------------------------------


def expand(inputs: Sequence[str]) -> tuple[list[_Input], list[dict[str, Any]]]:
    """The files named by ``inputs`` (in order, each once) and error records for inputs that
    name nothing readable.

    A folder gives its image files (not recursive), a glob every file it matches, a file
    itself; files with an image extension are images, anything else is tried as a video.
    Raises ConfigError for cameras, streams and ``synthetic``: batch reads files.
    """
    import cv2

    from edge.sources import parse_source
    from edge.sources.images import EXTENSIONS, list_images
    from edge.sources.opencv import classify

    files: list[_Input] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for text in inputs:
        spec = parse_source(text)
        if spec.kind == "images":
            try:
                paths = list_images(spec.target)
            except InputError as exc:
                errors.append(error_record(text, None, str(exc)))
                continue
        elif spec.kind == "opencv" and classify(spec.target) == "file":
            paths = [spec.target]
        else:
            raise ConfigError(
                f"{text!r} is a camera or stream; edge batch reads files, folders and globs "
                "(use edge preview or edge run for live sources)"
            )
        for p in paths:
            if p in seen:
                continue
            seen.add(p)
            if p.lower().endswith(EXTENSIONS):
                files.append(_Input(p, False, 1))
            else:
                cap = cv2.VideoCapture(p)  # header only, for the progress total
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
                cap.release()
                files.append(_Input(p, True, max(0, count)))
    return files, errors


# -- threads --------------------------------------------------------------------------------


class _Feeder(threading.Thread):
    """Turns the planned files into tasks (decoding videos), skipping keys already done.

    Puts ``None`` for each worker when it ends, whatever happens, so the workers always stop.
    """

    def __init__(
        self,
        files: list[_Input],
        done: set[Key],
        every: int,
        tasks: queue.Queue[_Task | None],
        outcomes: queue.Queue[_Outcome | None],
        workers: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="batch-feed", daemon=True)
        self.files = files
        self.done = done
        self.every = every
        self.tasks = tasks
        self.outcomes = outcomes
        self.workers = workers
        self.stop_event = stop
        self.skipped = 0  # items already in the output
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for f in self.files:
                if self.stop_event.is_set():
                    break
                if f.video:
                    self._video(f.path)
                elif (f.path, 0) in self.done:
                    self.skipped += 1
                else:
                    self._put(_Task(f.path, 0))
        except BaseException as exc:  # reported by the main thread after the run
            self.failure = exc
        finally:
            for _ in range(self.workers):
                self.tasks.put(None)

    def _put(self, task: _Task) -> None:
        while not self.stop_event.is_set():
            try:
                self.tasks.put(task, timeout=0.2)
                return
            except queue.Full:
                continue

    def _video(self, path: str) -> None:
        from edge.sources import SourceSpec, open_source

        if (path, None) in self.done:
            self.skipped += 1
            return
        source = open_source(SourceSpec(kind="opencv", target=path, name="batch"))
        try:
            source.open()
        except EdgeError as exc:
            self.outcomes.put(_Outcome(error_record(path, None, str(exc)), error=True))
            return
        try:
            while not self.stop_event.is_set():
                frame = source.read()
                if frame is None:
                    break
                if frame.index % self.every:
                    continue
                if (path, frame.index) in self.done:
                    self.skipped += 1
                else:
                    self._put(_Task(path, frame.index, frame.image))
        finally:
            source.close()


class _Worker(threading.Thread):
    """Owns one Engine; decodes image files and runs the model on each task."""

    def __init__(
        self,
        number: int,
        engine: Engine,
        tasks: queue.Queue[_Task | None],
        outcomes: queue.Queue[_Outcome | None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"batch-{number}", daemon=True)
        self.engine = engine
        self.tasks = tasks
        self.outcomes = outcomes
        self.stop_event = stop

    def run(self) -> None:
        try:
            while (task := self.tasks.get()) is not None:
                if not self.stop_event.is_set():  # after Ctrl-C, drain without working
                    self.outcomes.put(self._process(task))
        finally:
            self.outcomes.put(None)

    def _process(self, task: _Task) -> _Outcome:
        from edge.decode import read_image

        try:
            image = task.image if task.image is not None else read_image(task.path)
            result = self.engine.infer(
                image, source=task.path, index=task.frame_index if task.image is not None else None
            )
        except InputError as exc:
            return _Outcome(error_record(task.path, task.frame_index, str(exc)), error=True)
        except Exception as exc:  # one bad item must not stop the batch; it is in the output
            log.warning("%s frame %d failed", task.path, task.frame_index, exc_info=True)
            message = f"inference failed: {type(exc).__name__}: {exc}"
            return _Outcome(error_record(task.path, task.frame_index, message), error=True)
        return _Outcome(result_record(task.path, task.frame_index, result), counted_labels(result))


# -- the run --------------------------------------------------------------------------------


def load_engines(settings: BatchSettings) -> list[Engine]:
    """One Engine per worker (ModelError surfaces here, before any file is touched)."""
    from edge.engine import Engine
    from edge.runtime import RuntimeOptions

    options: RuntimeOptions = RuntimeOptions(
        threads=settings.threads_per_worker, delegate=settings.delegate, chain=settings.chain
    )
    return [
        Engine.load(settings.model, options, settings.overrides) for _ in range(settings.workers)
    ]


def run_batch(settings: BatchSettings, progress: TextIO | None = None) -> Summary:
    """Process ``settings.inputs`` into ``settings.output``; returns what this run did.

    progress: where to draw the progress bar (None: no bar). Ctrl-C (KeyboardInterrupt in the
    calling thread) stops after the items in flight, which are written; ``interrupted`` is set.
    Raises ModelError (the model), ConfigError (a live source given, an output that is not
    ours, or one holding another model's results), InputError (output not readable/writable).
    """
    if settings.csv and settings.output.suffix.lower() == ".csv":
        raise ConfigError(
            f"-o {settings.output}: give the JSON Lines path (e.g. results.jsonl); --csv "
            "writes a .csv next to it"
        )
    files, planning_errors = expand(settings.inputs)
    engines = load_engines(settings)
    done, model = read_done(settings.output)
    if model is not None and model != engines[0].name:
        raise ConfigError(
            f"{settings.output} holds results of model {model!r}, not {engines[0].name!r}; "
            "choose another output file (-o) or delete it"
        )
    summary = Summary()
    stop = threading.Event()
    tasks: queue.Queue[_Task | None] = queue.Queue(maxsize=QUEUE_PER_WORKER * settings.workers)
    outcomes: queue.Queue[_Outcome | None] = queue.Queue()
    for rec in planning_errors:
        if record_key(rec) in done:
            summary.done_before += 1
        else:
            outcomes.put(_Outcome(rec, error=True))
    total = _expected(files, done, settings.every) + outcomes.qsize()
    feeder = _Feeder(files, done, settings.every, tasks, outcomes, settings.workers, stop)
    workers = [_Worker(i, e, tasks, outcomes, stop) for i, e in enumerate(engines)]
    bar = Progress(progress, total)
    try:
        out = settings.output.open("ab", buffering=0)
    except OSError as exc:
        raise InputError(
            f"cannot write {settings.output}: {exc.strerror}; check the folder exists and is "
            "writable"
        ) from exc
    start = time.monotonic()
    with out:
        for w in workers:
            w.start()
        feeder.start()
        running = len(workers)
        while running:
            try:
                outcome = outcomes.get(timeout=1 / PROGRESS_HZ)
            except queue.Empty:
                bar.update(summary.items, summary.errors)
                continue
            except KeyboardInterrupt:
                summary.interrupted = True
                stop.set()
                continue
            if outcome is None:
                running -= 1
                continue
            line = json.dumps(outcome.record, separators=(",", ":")) + "\n"
            out.write(line.encode())  # one write per line: a crash never interleaves two
            summary.items += 1
            summary.errors += outcome.error
            summary.labels.update(outcome.labels)
            bar.update(summary.items, summary.errors)
    summary.seconds = time.monotonic() - start
    feeder.join()
    summary.done_before += feeder.skipped
    bar.finish(summary.items, summary.errors)
    if feeder.failure is not None:
        raise feeder.failure
    if settings.csv:
        write_csv(settings.output, csv_path(settings.output))
    return summary


def _expected(files: list[_Input], done: set[Key], every: int) -> int:
    """Items this run should produce (video frame counts come from headers: an estimate)."""
    per_path = Counter(path for path, _ in done)
    return sum(max(0, math.ceil(f.frames / every) - per_path[f.path]) for f in files)


def format_summary(summary: Summary, settings: BatchSettings) -> str:
    """The end-of-run report for stderr."""
    results = summary.items - summary.errors
    lines = [
        f"edge batch: {results} result{'s' * (results != 1)} and {summary.errors} "
        f"error{'s' * (summary.errors != 1)} in {summary.seconds:.1f} s "
        f"({summary.rate:.1f} items/s, {settings.workers} worker{'s' * (settings.workers != 1)}"
        f" × {settings.threads_per_worker} thread{'s' * (settings.threads_per_worker != 1)});"
        f" {summary.done_before} already done"
    ]
    if summary.labels:
        counts = ", ".join(f"{k} {v}" for k, v in summary.labels.most_common())
        lines.append(f"  labels: {counts}")
    written = str(settings.output)
    if settings.csv:
        written += f" and {csv_path(settings.output)}"
    lines.append(f"  output: {written}")
    if summary.interrupted:
        lines.append("  interrupted: run the same command again to finish the rest")
    return "\n".join(lines)
