"""One model, ready to run: interpreter + preprocessing + postprocessing built once at load.

The CLI (``edge infer``), the daemon's inference thread, the preview, batch mode and the quantize
tool all call :meth:`Engine.infer`, so a result means the same thing everywhere.
Thread affinity: an Engine belongs to one thread at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.models import ModelSpec, PostprocessConfig, load_spec
from edge.postprocess import Postprocessor, infer_task
from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec, Transform
from edge.result import TASKS, Result, Timings
from edge.runtime import Interpreter, RuntimeOptions, load

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-run settings that take precedence over the model's manifest (CLI flags, config)."""

    task: str | None = None
    threshold: float | None = None
    iou_threshold: float | None = None
    top_k: int | None = None
    max_detections: int | None = None
    allow: frozenset[str] | None = None
    resize: str | None = None


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
class RawOutput:
    """One invoke's output arrays (copies, as stored: quantized values stay quantized) and how
    long the invoke took."""

    values: list[np.ndarray]
    invoke_ms: float


class Engine:
    """A loaded model with its preprocessing and decoder. Build with :meth:`load`."""

    def __init__(self, spec: ModelSpec, interpreter: Interpreter, overrides: Overrides) -> None:
        self.spec = spec
        self.interpreter = interpreter
        guessed_task, layout = infer_task(interpreter.outputs)
        task = overrides.task or spec.task or guessed_task
        if task not in TASKS:
            raise ModelError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
        if task == "detection" and guessed_task != "detection":
            raise ModelError(
                f"{spec.path.name} has outputs {[list(o.shape) for o in interpreter.outputs]}, "
                "which are not a detection layout edge knows (SSD post-process, YOLOv5 "
                "[1,N,5+C], YOLOv8 [1,4+C,N]). Run with --task raw to inspect them."
            )
        self.task = task
        pre = spec.preprocess or default_preprocess(interpreter.inputs[0])
        if overrides.resize:
            pre = replace(pre, resize=overrides.resize)
        self.preprocessor = Preprocessor(interpreter.inputs[0], pre)
        post = spec.postprocess
        changes = {
            k: getattr(overrides, k)
            for k in ("threshold", "iou_threshold", "top_k", "max_detections", "allow")
            if getattr(overrides, k) is not None
        }
        if changes:
            post = replace(post, **changes)
            problems = post.problems()
            if problems:
                raise ModelError("invalid postprocessing settings: " + "; ".join(problems))
        self.postprocessor = Postprocessor(task, layout, interpreter.outputs, spec.labels, post)
        self.postprocessor.set_input_size(self.preprocessor.height, self.preprocessor.width)
        self._n_out = len(interpreter.outputs)

    @classmethod
    def load(
        cls,
        model: str | Path | ModelSpec,
        options: RuntimeOptions | None = None,
        overrides: Overrides | None = None,
    ) -> Engine:
        """Resolve, load and prepare ``model`` (path, directory, bundled name or spec)."""
        ov = overrides or Overrides()
        spec = model if isinstance(model, ModelSpec) else load_spec(model, task=ov.task)
        return cls(spec, load(spec.path, options), ov)

    @property
    def name(self) -> str:
        return self.spec.name

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

    def _invoke(self) -> RawOutput:
        t0 = time.perf_counter()
        self.interpreter.invoke()
        invoke_ms = (time.perf_counter() - t0) * 1000
        return RawOutput([self.interpreter.output(i) for i in range(self._n_out)], invoke_ms)

    def new_preprocessor(self) -> Preprocessor:
        """A separate Preprocessor for this model's input, for another thread to fill tensors
        ahead of :meth:`run_prepared` (the daemon preprocesses on each capture thread, so
        preprocessing overlaps the previous frame's ``invoke()``)."""
        return Preprocessor(self.preprocessor.spec, self.preprocessor.config)

    def run_prepared(self, tensor: np.ndarray) -> RawOutput:
        """Run the model on an input already preprocessed by :meth:`new_preprocessor`'s
        Preprocessor: copy ``tensor`` in (≈ 10 µs for 224×224×3), invoke, copy the outputs out.
        :meth:`decode` turns them into a Result, on any thread, while this interpreter already
        runs the next frame."""
        self.interpreter.set_input(tensor)
        return self._invoke()

    def decode(
        self,
        raw: RawOutput,
        transform: Transform,
        frame_shape: tuple[int, ...],
        preprocess_ms: float,
        source: str = "",
        index: int | None = None,
    ) -> Result:
        """Postprocess outputs from :meth:`run_prepared` into the frame's Result."""
        t2 = time.perf_counter()
        decoded = self.postprocessor(raw.values, transform)
        t3 = time.perf_counter()
        return Result(
            model=self.spec.name,
            model_version=self.spec.version,
            task=self.task,
            source=source,
            width=int(frame_shape[1]),
            height=int(frame_shape[0]),
            timings=Timings(preprocess_ms, raw.invoke_ms, (t3 - t2) * 1000),
            detections=decoded.detections,
            classes=decoded.classes,
            segments=decoded.segments,
            outputs=decoded.outputs,
            index=index,
            mask=decoded.mask,
        )
