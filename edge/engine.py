"""One model, ready to run: interpreter + preprocessing + postprocessing built once at load.

A frame goes through three parts, which the daemon runs on three threads so that they overlap:

- preprocess: a :class:`~edge.preprocess.Preprocessor` (one per camera, from
  :meth:`Engine.new_preprocessor`) fills an input tensor, on the camera's capture thread;
- :meth:`Engine.run_prepared`: copy that tensor in, invoke, copy the outputs out as an
  :class:`Invocation`, on the model's inference thread, the only one that touches the
  interpreter;
- :meth:`Engine.decode`: postprocess the Invocation into a Result, on the model's result thread,
  while the interpreter already runs the next frame.

:meth:`Engine.infer` runs all three on the calling thread; ``edge infer``, batch mode and the
quantize tool use it, and since both paths share the same parts a result means the same thing
everywhere. Thread affinity: the interpreter (``prepare``, ``infer``, ``run_prepared``) belongs
to one thread at a time; ``decode`` may run on another one meanwhile.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.choices import TASKS, ResizeMode, Task
from edge.config import ModelSettings
from edge.errors import ModelError
from edge.frame import SensorOutput
from edge.labels import fit_labels
from edge.models import MANIFEST, ModelSpec, PostprocessConfig, load_spec
from edge.postprocess import Postprocessor
from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec, Transform
from edge.result import Result, Timings
from edge.runtime import ModelInterpreter, RuntimeOptions, load_model
from edge.tasks import (
    PROBABILITY,
    SCORE_OPS,
    SSD,
    class_count,
    describe,
    detection_layout,
    feature_reason,
    fit_problem,
    infer_task,
    segmentation_mode,
)
from edge.tflite_metadata import output_producers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-run settings that take precedence over the model's manifest (CLI flags, config).

    labels_offset and segmentation_threshold are :class:`PostprocessConfig`'s. allow: labels to
    report; every one must be a label of the model (:meth:`Engine.load` refuses others).
    """

    task: Task | None = None
    threshold: float | None = None
    iou_threshold: float | None = None
    top_k: int | None = None
    max_detections: int | None = None
    allow: frozenset[str] | None = None
    resize: ResizeMode | None = None
    labels_offset: int | None = None
    segmentation_threshold: float | None = None

    @classmethod
    def from_settings(cls, m: ModelSettings) -> Overrides:
        """The overrides a daemon configuration's [model] table sets (its unset keys leave the
        manifest's values)."""
        return cls(
            task=m.task,
            threshold=m.threshold,
            iou_threshold=m.iou_threshold,
            top_k=m.top_k,
            max_detections=m.max_detections,
            allow=None if m.labels is None else frozenset(m.labels),
            resize=m.resize,
            labels_offset=m.labels_offset,
            segmentation_threshold=m.segmentation_threshold,
        )


# Overrides fields that replace the PostprocessConfig field of the same name.
_POSTPROCESS_OVERRIDES = (
    "threshold",
    "iou_threshold",
    "top_k",
    "max_detections",
    "allow",
    "labels_offset",
    "segmentation_threshold",
)
# Labels shown in full in a message before the list is cut short.
_LISTED_LABELS = 20


def default_preprocess(spec: TensorSpec) -> PreprocessConfig:
    """Normalization implied by the input tensor when nothing else says.

    A quantized input's scale and zero point give the real range the model was calibrated on;
    pixels 0..255 are mapped linearly onto it, which is the identity for the usual uint8 models.
    A float input without metadata is assumed to take 0..1 (the most common convention); a
    manifest or embedded metadata should say otherwise.
    """
    if spec.quantized:
        info = np.iinfo(spec.dtype)
        lo = spec.scale * (info.min - spec.zero_point)
        hi = spec.scale * (info.max - spec.zero_point)
        std = 255.0 / (hi - lo)
        return PreprocessConfig(mean=(-lo * std,), std=(std,))
    if spec.dtype == np.float32:
        log.warning(
            "float model input %r has no normalization metadata: assuming 0..1 "
            "inputs (mean 0, std 255); set preprocess.mean/std in a manifest.json if "
            "the model was trained otherwise",
            spec.name,
        )
        return PreprocessConfig(mean=(0.0,), std=(255.0,))
    return PreprocessConfig()


@dataclass(frozen=True, slots=True)
class Invocation:
    """What one invoke produced: its output arrays (copies, as stored: quantized values stay
    quantized) and how long the invoke took (perf_counter milliseconds)."""

    values: list[np.ndarray]
    invoke_ms: float

    @classmethod
    def from_sensor(cls, sensor: SensorOutput) -> Invocation:
        """The outputs a camera's sensor computed, as an invoke's: the sensor's own network
        time as the invoke time, 0 when the frame carries none."""
        return cls(list(sensor.values), sensor.dnn_ms or 0.0)


class Engine:
    """A loaded model with its preprocessing and decoder. Build with :meth:`load`."""

    def __init__(
        self, spec: ModelSpec, interpreter: ModelInterpreter, overrides: Overrides
    ) -> None:
        self.spec = spec
        self.interpreter = interpreter
        outputs = interpreter.outputs
        pre = spec.preprocess or default_preprocess(interpreter.inputs[0])
        if overrides.resize:
            pre = replace(pre, resize=overrides.resize)
        self.preprocessor = Preprocessor(interpreter.inputs[0], pre)
        input_hw = (self.preprocessor.height, self.preprocessor.width)
        producers = output_producers(spec.path)
        guessed, layout = infer_task(outputs, producers, bool(spec.labels), input_hw)
        task = overrides.task or spec.task or guessed
        if task not in TASKS:
            raise ModelError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
        problem = fit_problem(task, outputs, input_hw)
        if problem:
            raise ModelError(
                self._mismatch(task, problem, guessed, input_hw, overrides.task is not None)
            )
        if task == "detection":
            layout = detection_layout(outputs)
        elif task == "raw" and guessed == "raw" and not (overrides.task or spec.task):
            reason = feature_reason(outputs[0], producers.get(outputs[0].index, ""), False)
            if len(outputs) == 1 and reason:
                log.info(
                    "%s: reporting its output as features (task raw), not classes: %s; "
                    "run with --task classification to read it as class scores",
                    spec.name,
                    reason,
                )
        self.task = task
        post = self._postprocess_config(overrides, layout, producers)
        self.postprocessor = Postprocessor(task, layout, outputs, spec.labels, post)
        self.postprocessor.set_input_size(self.preprocessor.height, self.preprocessor.width)
        self._check_allow(post.allow, overrides.allow is not None)
        self._n_out = len(outputs)

    def _postprocess_config(
        self, overrides: Overrides, layout: str, producers: dict[int, str]
    ) -> PostprocessConfig:
        """The manifest's settings with the overrides applied, what the graph tells about the
        outputs, and the labels offset worked out when nothing sets it."""
        post = self.spec.postprocess
        changes = {
            k: getattr(overrides, k)
            for k in _POSTPROCESS_OVERRIDES
            if getattr(overrides, k) is not None
        }
        if changes:
            post = replace(post, **changes)
            problems = post.problems()
            if problems:
                raise ModelError("invalid postprocessing settings: " + "; ".join(problems))
        outputs = self.interpreter.outputs
        producer = producers.get(outputs[0].index, "") if len(outputs) == 1 else ""
        if post.logits is None and producer in SCORE_OPS:
            post = replace(post, logits=False)  # SOFTMAX/LOGISTIC: probabilities already
        if post.labels_offset is None and self.task != "raw":
            fit = fit_labels(
                self.spec.labels,
                class_count(self.task, layout, outputs),
                self.spec.labels_source or "the labels",
                binary=self.task == "segmentation" and segmentation_mode(outputs[0]) == PROBABILITY,
                background_excluded=self.task == "detection" and layout == SSD,
            )
            if fit.note:
                log.warning(
                    "%s: %s. Set labels_offset (manifest.json postprocess, or [model] "
                    "labels_offset) to confirm it, or fix the labels file",
                    self.spec.name,
                    fit.note,
                )
            post = replace(post, labels_offset=fit.offset)
        return post

    def _mismatch(
        self, task: str, problem: str, guessed: str, input_hw: tuple[int, int], forced: bool
    ) -> str:
        """The message for a task that does not fit the outputs: what the task needs, what the
        model has, and which task fits."""
        outputs = self.interpreter.outputs
        if forced:
            asked, undo = f"--task {task} (or [model] task)", "run without --task"
        else:
            where = str(self.spec.directory / MANIFEST) if self.spec.directory else "the spec"
            asked, undo = f"the task {task!r} in {where}", f'remove "task" from {where}'
        n = len(outputs)
        head = (
            f"{self.spec.name}: {asked} does not fit the model's outputs: {problem}. The model "
            f"has {n} output{'' if n == 1 else 's'}: {describe(outputs)}."
        )
        if guessed != "raw":
            return (
                f"{head} They fit task {guessed}: {undo} (edge then picks {guessed}) or use "
                f"--task {guessed}; --task raw prints their statistics."
            )
        fitting = [t for t in TASKS if t != "raw" and not fit_problem(t, outputs, input_hw)]
        if fitting:
            return (
                f"{head} They fit task raw (edge reads them as features, not class scores; by "
                f"shape they would also fit {', '.join(fitting)}): {undo} or use --task raw "
                "to see their statistics."
            )
        return (
            f"{head} They fit no task edge decodes, only raw: {undo} (edge then reports them "
            "as raw) or use --task raw to see their statistics; outputs like these (such as "
            "BlazeFace's anchor rows) need a decoder made for the model."
        )

    def _check_allow(self, allow: frozenset[str], from_overrides: bool) -> None:
        """Refuse labels to report that the model does not have (they would silently match
        nothing)."""
        if not allow:
            return
        where = (
            "--labels (or [model] labels)"
            if from_overrides
            else f"postprocess.allow in {self.spec.directory or self.spec.path}"
        )
        name = self.spec.name
        known = self.postprocessor.known_labels()
        if known is None:
            unknown = sorted(a for a in allow if not a.isdigit())
            if unknown:
                raise ModelError(
                    f"{name} has no labels, so it names classes by number, but {where} asks "
                    f"for {', '.join(map(repr, unknown))}. Give class numbers, or add a "
                    "labels.txt to the model directory."
                )
            return
        if not known:
            raise ModelError(
                f"{where} selects labels ({', '.join(sorted(allow))}), but {name} reports task "
                f"{self.task}, which has no labels. Drop the labels filter, or use a task that "
                "reports classes."
            )
        unknown = sorted(allow - known)
        if not unknown:
            return
        import difflib  # only for this message: the daemon does not load it otherwise

        close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        ids = range(self.postprocessor.classes or 0) or sorted(self.postprocessor.names)
        listed = [self.postprocessor.label(c) for c in ids]
        shown = ", ".join(listed[:_LISTED_LABELS])
        if len(listed) > _LISTED_LABELS:
            source = self.spec.labels_source or "the labels"
            shown += f", … ({len(listed)} in all, see {source})"
        raise ModelError(
            f"{where} names {', '.join(map(repr, unknown))}, which {name} does not "
            f"have{hint}; it would never be reported. The model's labels: {shown}."
        )

    @classmethod
    def load(
        cls,
        model: str | Path | ModelSpec,
        options: RuntimeOptions | None = None,
        overrides: Overrides | None = None,
    ) -> Engine:
        """Resolve, load and prepare ``model`` (path, directory, bundled name or spec); on a
        failover interpreter when ``options`` name a delegate chain."""
        ov = overrides or Overrides()
        spec = model if isinstance(model, ModelSpec) else load_spec(model, task=ov.task)
        interpreter = load_model(spec.path, options)
        try:
            return cls(spec, interpreter, ov)
        except BaseException:
            interpreter.close()
            raise

    def close(self) -> None:
        """Release the interpreter's threads (a failover chain's invoke and re-probe threads);
        the engine cannot run afterwards."""
        self.interpreter.close()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def on_sensor(self) -> bool:
        """Whether the camera's sensor runs this model (an AI Camera network): its outputs
        arrive with the frames (``Frame.sensor``) and the interpreter is never invoked."""
        # By attribute: edge.runtime.sensor (and the .rpk reader) load with the first network.
        return bool(getattr(self.interpreter, "runs_on_sensor", False))

    @property
    def postprocess_config(self) -> PostprocessConfig:
        return self.postprocessor.config

    def prepare(self, image: np.ndarray) -> Transform:
        """Preprocess ``image`` (BGR or grey uint8) into the interpreter's input tensor."""
        view = self.interpreter.input_view()
        try:
            return self.preprocessor.run(image, view)
        finally:
            del view  # TFLite refuses to invoke while a view of its buffers is alive

    def infer(self, image: np.ndarray, source: str = "", index: int | None = None) -> Result:
        """Run the whole model on one frame and return its result.

        Raises ValueError for a frame that is not uint8 HxW or HxWx3.
        """
        t0 = time.perf_counter()
        transform = self.prepare(image)
        pre_ms = (time.perf_counter() - t0) * 1000
        return self.decode(self._invoke(), transform, image.shape, pre_ms, source, index)

    def _invoke(self) -> Invocation:
        t0 = time.perf_counter()
        self.interpreter.invoke()
        invoke_ms = (time.perf_counter() - t0) * 1000
        return Invocation([self.interpreter.output(i) for i in range(self._n_out)], invoke_ms)

    def new_preprocessor(self) -> Preprocessor:
        """A separate Preprocessor for this model's input, for another thread to fill tensors
        ahead of :meth:`run_prepared` (the daemon preprocesses on each capture thread, so
        preprocessing overlaps the previous frame's ``invoke()``)."""
        return Preprocessor(self.preprocessor.spec, self.preprocessor.config)

    def run_prepared(self, tensor: np.ndarray) -> Invocation:
        """Run the model on an input already preprocessed by :meth:`new_preprocessor`'s
        Preprocessor: copy ``tensor`` in (≈ 10 µs for 224×224×3), invoke, copy the outputs out.
        :meth:`decode` turns them into a Result, on any thread, while this interpreter already
        runs the next frame."""
        self.interpreter.set_input(tensor)
        return self._invoke()

    def decode(
        self,
        invocation: Invocation,
        transform: Transform,
        frame_shape: tuple[int, ...],
        preprocess_ms: float,
        source: str = "",
        index: int | None = None,
    ) -> Result:
        """Postprocess what :meth:`run_prepared` returned into the frame's Result (any thread:
        it uses the postprocessor only, never the interpreter)."""
        t2 = time.perf_counter()
        decoded = self.postprocessor(invocation.values, transform)
        t3 = time.perf_counter()
        return Result(
            model=self.spec.name,
            model_version=self.spec.version,
            task=self.task,
            source=source,
            width=int(frame_shape[1]),
            height=int(frame_shape[0]),
            timings=Timings(preprocess_ms, invocation.invoke_ms, (t3 - t2) * 1000),
            detections=decoded.detections,
            classes=decoded.classes,
            segments=decoded.segments,
            outputs=decoded.outputs,
            index=index,
            mask=decoded.mask,
        )
