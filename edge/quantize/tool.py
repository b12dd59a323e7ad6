"""The quantize tool's Python API: float model + calibration images → an int8 model directory
edge can run, with a report of what quantization cost.

Calibration images go through edge's own :class:`~edge.preprocess.Preprocessor` with the
float model's input tensor, so the value ranges the converter measures are those of the
tensors edge will feed at run time; which normalization that is, including for models that
normalize their input themselves, is decided by :mod:`edge.quantize.preprocessing`, and
:mod:`edge.quantize.variation` checks that the float model responds to the images at all.
The int8 result is then loaded back through :class:`~edge.engine.Engine` next to the float
model and both are compared on held-out images (:mod:`edge.quantize.compare`) and timed with
:func:`edge.bench.bench`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge import baseline
from edge.bench import bench
from edge.choices import Task
from edge.engine import Engine, Overrides
from edge.errors import ConfigError, ModelError
from edge.labels import parse_labels
from edge.models import MANIFEST
from edge.preprocess import PreprocessConfig, Preprocessor, TensorSpec
from edge.quantize.cli import DEFAULT_MAX_DROP
from edge.quantize.compare import agreement
from edge.quantize.compiler import compile_model
from edge.quantize.convert import Converter, SourceModel, identify, quiet
from edge.quantize.images import MIN_CALIBRATION
from edge.quantize.preprocessing import choose, spread_alert
from edge.quantize.report import Latency, Report, preprocess_dict
from edge.quantize.variation import measure
from edge.runtime import RuntimeOptions
from edge.runtime.backends import load_backend

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"


@dataclass(frozen=True, slots=True)
class Request:
    """One quantization job.

    calibration: BGR uint8 images (any size); at least ``MIN_CALIBRATION``. holdout: images to
    compare float and int8 on; empty means the calibration images are reused (the report says
    so, and the figure is then optimistic). io: ``uint8``/``int8``, None = uint8 for Keras and
    SavedModel, int8 for a float .tflite. preprocess/labels/task: None = from the manifest
    next to the model, else (preprocess) raw pixels for a model that normalizes its input
    itself, else 0..1; preprocess_overrides: fields replaced on top of that (the command-line
    flags). manifest: extra manifest fields to write (name, version, description, made_by,
    postprocess, metrics). max_drop: percent, see :mod:`edge.quantize.compare`; None turns the
    gate off. bench_runs: 0 skips timing. threads: interpreter threads for
    comparison and timing (None = edge's default). edgetpu: compile for the Edge TPU when the
    compiler is installed.
    """

    model: Path
    out: Path
    calibration: Sequence[np.ndarray]
    holdout: Sequence[np.ndarray] = ()
    io: str | None = None
    preprocess: PreprocessConfig | None = None
    preprocess_overrides: Mapping[str, Any] = field(default_factory=dict)
    labels: Path | None = None
    task: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    max_drop: float | None = DEFAULT_MAX_DROP
    bench_runs: int = 50
    threads: int | None = None
    edgetpu: bool = True
    calibration_skipped: int = 0
    holdout_skipped: int = 0


def read_source_manifest(source: SourceModel) -> tuple[dict[str, Any], Path | None]:
    """The manifest.json next to the model (inside a SavedModel folder, or beside a file), and
    the folder it was found in."""
    places = [source.path] if source.kind == "saved_model" else []
    places.append(source.path.parent)
    for d in places:
        path = d / MANIFEST
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelError(f"cannot read {path}: {exc}. Fix the JSON or remove it.") from exc
            if not isinstance(data, dict):
                raise ModelError(f"{path} must hold a JSON object")
            return data, d
    return {}, None


def preprocess_from(manifest: dict[str, Any], where: str) -> PreprocessConfig | None:
    """The manifest's ``preprocess`` object as a validated PreprocessConfig (None if absent)."""
    raw = manifest.get("preprocess")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: preprocess must be an object")
    values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()}
    try:
        config = PreprocessConfig(**values)
    except TypeError as exc:
        raise ModelError(f"{where}: preprocess: {exc}") from exc
    problems = config.problems()
    if problems:
        raise ModelError(f"{where}: " + "; ".join(f"preprocess.{p}" for p in problems))
    return config


def quantize(req: Request) -> Report:
    """Run the whole job: convert, calibrate, write ``req.out``, compare, time, compile.

    Raises ModelError (unusable model), ConfigError (bad settings, too few images) or
    RuntimeUnavailableError (TensorFlow / ai-edge-quantizer missing). A failed ``max_drop``
    gate is not an exception: ``Report.passed`` is False and the files are still written.
    Alerts (likely wrong preprocessing, the gate off on a large drop) are logged as WARNING
    when found and listed in ``Report.alerts``.
    """
    t_start = time.perf_counter()
    source = identify(req.model)
    manifest, manifest_dir = read_source_manifest(source)
    where = str(manifest_dir / MANIFEST) if manifest_dir else ""
    warnings: list[str] = []
    alerts: list[str] = []
    manifest_pre = None if req.preprocess else preprocess_from(manifest, where)
    if req.preprocess is not None and req.preprocess.problems():
        raise ConfigError(req.preprocess.problems())
    if len(req.calibration) < MIN_CALIBRATION:
        raise ConfigError(
            f"--calibration: {len(req.calibration)} image(s) given; at least {MIN_CALIBRATION} "
            "representative images are needed"
        )
    out = _check_out(req.out, source)
    labels_text = _labels(req.labels, manifest, manifest_dir, source)
    io = req.io or ("int8" if source.kind == "tflite" else "uint8")
    converter = Converter(source)
    float_model = converter.float_tflite()
    spec = _float_input(float_model, source.path)
    choice = choose(
        given=req.preprocess,
        manifest=manifest_pre,
        overrides=req.preprocess_overrides,
        in_model=converter.input_normalization(),
    )
    pre = choice.config
    problems = pre.problems()
    if problems:
        raise ConfigError(problems)
    warnings.extend(choice.notes)
    _alert(alerts, *choice.alerts)
    preprocessor = Preprocessor(spec, pre)
    samples = [preprocessor.to_array(image)[0] for image in req.calibration]
    with quiet():  # the interpreter announces its delegate on stderr
        spread = measure(float_model, samples)
    if spread.barely_varies():
        _alert(alerts, spread_alert(spread, choice))
    log.info("calibrating %s on %d images", source.path.name, len(samples))
    int8_model = converter.quantize(samples, io)

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-quantize-") as tmp:
        float_dir = Path(tmp) / "float"
        float_dir.mkdir()
        base = _manifest(req, manifest, pre, io, out.name)
        if labels_text is not None:
            base["labels"] = LABELS_FILE
        _write_dir(float_dir, float_model, labels_text, base)
        options = RuntimeOptions(threads=req.threads)
        probe = Engine.load(float_dir, options, Overrides(task=base.get("task")))
        task = probe.task
        base["task"] = task
        overrides = _compare_overrides(probe)
        warnings.extend(_label_problems(probe, labels_text))
        del probe
        _write_dir(float_dir, float_model, labels_text, base)
        _write_dir(out, int8_model, labels_text, base)
        ref = Engine.load(float_dir, options, overrides)
        cand = Engine.load(out, options, overrides)
        holdout = req.holdout or req.calibration
        holdout_from = "holdout" if req.holdout else "calibration"
        if not req.holdout:
            warnings.append(
                "no holdout images: float and int8 were compared on the calibration images, "
                "which flatters the int8 model; pass --holdout DIR for an honest figure"
            )
        agree = agreement(ref, cand, holdout)
        _baseline(base, out, options, task, holdout, f"{len(holdout)} {holdout_from}", warnings)
        float_latency = _latency(float_dir / MODEL_FILE, options, req.bench_runs)
        int8_latency = _latency(out / MODEL_FILE, options, req.bench_runs)
    edgetpu = compile_model(out / MODEL_FILE, out) if req.edgetpu else None
    passed = req.max_drop is None or agree.drop <= req.max_drop + 1e-9
    if req.max_drop is None and agree.drop > DEFAULT_MAX_DROP:
        _alert(
            alerts,
            f"the quality gate is off (--max-drop none) and quantization cost "
            f"{agree.drop:.2f} % ({agree.drop_meaning}), more than the default limit "
            f"{DEFAULT_MAX_DROP:g} %. Check the int8 model before deploying it: the "
            "preprocessing (--mean/--std) and the calibration images are the usual causes.",
        )
    elif req.max_drop is None:
        warnings.append("no quality gate (--max-drop none)")
    metrics = dict(base.get("metrics") or {})
    metrics["quantization"] = {
        "compared_on": f"{len(holdout)} {holdout_from} images",
        **agree.to_dict(),
    }
    base["metrics"] = metrics
    _write_json(out / MANIFEST, _ordered(base))
    labels_note = "" if labels_text is not None else " (no labels file)"
    log.info("wrote %s%s", out, labels_note)
    return Report(
        source=str(source.path),
        kind=source.kind,
        out_dir=str(out),
        task=task,
        io=io,
        preprocess=pre,
        preprocess_origin=choice.origin,
        in_model_normalization=choice.in_model.describe() if choice.in_model else None,
        float_output_spread=spread.spread,
        calibration_images=len(samples),
        calibration_skipped=req.calibration_skipped,
        holdout_images=len(holdout),
        holdout_skipped=req.holdout_skipped,
        holdout_from=holdout_from,
        source_bytes=source.size_bytes,
        float_bytes=len(float_model),
        int8_bytes=len(int8_model),
        agreement=agree,
        float_latency=float_latency,
        int8_latency=int8_latency,
        edgetpu=edgetpu,
        max_drop=req.max_drop,
        passed=passed,
        seconds=time.perf_counter() - t_start,
        warnings=tuple(warnings),
        alerts=tuple(alerts),
    )


def _baseline(
    manifest: dict[str, Any],
    out: Path,
    options: RuntimeOptions,
    task: Task,
    images: Sequence[np.ndarray],
    which: str,
    warnings: list[str],
) -> None:
    """The int8 model's drift baseline on ``images``, at its manifest's settings, into
    ``manifest`` (a warning instead for a model without classes)."""
    served = Engine.load(out, options, Overrides(task=task))
    try:
        manifest["baseline"] = {
            "made": f"edge quantize on {which} images",
            **baseline.measure(served, images).to_dict(),
        }
    except ModelError as exc:
        warnings.append(str(exc))
    finally:
        served.close()


def _alert(alerts: list[str], *messages: str) -> None:
    """Keep ``messages`` for the report and say them now, on stderr, as they are found."""
    for message in messages:
        log.warning("%s", message)
        alerts.append(message)


def update_manifest(model_dir: Path, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into ``model_dir``'s manifest (``metrics`` is merged key by key)."""
    path = model_dir / MANIFEST
    data = json.loads(path.read_text(encoding="utf-8"))
    for k, v in changes.items():
        if k == "metrics" and isinstance(v, dict):
            data["metrics"] = {**(data.get("metrics") or {}), **v}
        else:
            data[k] = v
    _write_json(path, data)


def _check_out(out: Path, source: SourceModel) -> Path:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a folder; give a folder to write into")
    target = out / MODEL_FILE
    if target.exists() and target.resolve() == source.path.resolve():
        raise ConfigError(
            f"--out: writing {target} would overwrite the model being quantized; choose "
            "another output folder"
        )
    return out


def _float_input(model: bytes, path: Path) -> TensorSpec:
    """The float model's single input, checked to be a fixed-size float32 image."""
    raw = load_backend().module.Interpreter(model_content=model)
    details = raw.get_input_details()
    if len(details) != 1:
        raise ModelError(
            f"{path.name} has {len(details)} inputs; edge feeds one image input. Quantize a "
            "model with a single [height, width, channels] input."
        )
    d = details[0]
    signature = [int(s) for s in d.get("shape_signature", d["shape"])]
    spec = TensorSpec.from_details(d)
    if len(signature) == 4 and any(s < 0 for s in signature[1:]):
        raise ModelError(
            f"{path.name} has an input of size {signature} (-1 = not fixed); edge needs a fixed "
            "image size. Build the model with one, e.g. keras.Input((224, 224, 3)), and export "
            "it again."
        )
    if spec.dtype != np.float32:
        raise ModelError(
            f"{path.name} already has a {spec.dtype} input, so it is quantized: edge runs it "
            "as it is. The quantize tool needs the float model."
        )
    return spec


def _labels(
    given: Path | None, manifest: dict[str, Any], manifest_dir: Path | None, source: SourceModel
) -> str | None:
    """Text of the labels file: ``given``, the manifest's, or labels.txt next to the model."""
    if given is not None:
        candidates = [given]
    else:
        candidates = []
        if manifest_dir is not None and manifest.get("labels"):
            candidates.append(manifest_dir / str(manifest["labels"]))
        beside = source.path if source.kind == "saved_model" else source.path.parent
        candidates.append(beside / LABELS_FILE)
    for c in candidates:
        if c.is_file():
            try:
                return c.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--labels: cannot read {c}: {exc}") from exc
    if given is not None:
        raise ConfigError(f"--labels: {given} does not exist; give a text file, one label a line")
    return None


def _manifest(
    req: Request,
    source_manifest: dict[str, Any],
    pre: PreprocessConfig,
    io: str,
    default_name: str,
) -> dict[str, Any]:
    extra = req.manifest
    keep = ("name", "version", "description", "made_by", "postprocess", "metrics")
    merged = {k: source_manifest[k] for k in keep if k in source_manifest}
    merged.update(extra)
    manifest: dict[str, Any] = {
        "name": merged.get("name", default_name),
        "version": merged.get("version", "1.0.0"),
        "model": MODEL_FILE,
    }
    if req.task or source_manifest.get("task"):
        manifest["task"] = req.task or source_manifest["task"]
    if "description" in merged:
        manifest["description"] = merged["description"]
    manifest["made_by"] = merged.get("made_by", f"edge quantize --io {io}")
    manifest["preprocess"] = preprocess_dict(pre)
    if "postprocess" in merged:
        manifest["postprocess"] = merged["postprocess"]
    manifest["metrics"] = dict(merged.get("metrics") or {})
    return manifest


def _write_dir(d: Path, model: bytes, labels: str | None, manifest: dict[str, Any]) -> None:
    """Write a model directory edge reads; files are replaced atomically."""
    _write_bytes(d / MODEL_FILE, model)
    if labels is not None:
        _write_bytes(d / LABELS_FILE, labels.encode("utf-8"))
    _write_json(d / MANIFEST, _ordered(manifest))


def _ordered(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its keys in the documented order and None values dropped."""
    order = ["name", "version", "model", "labels", "task", "description", "made_by"]
    keys = [k for k in order if k in manifest] + [k for k in manifest if k not in order]
    return {k: manifest[k] for k in keys if manifest[k] is not None}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _compare_overrides(engine: Engine) -> Overrides:
    """Settings under which both models report everything comparable: every class of a
    classifier with threshold 0; detectors keep their own thresholds."""
    if engine.task == "classification":
        classes = int(np.prod(engine.interpreter.outputs[0].shape))
        return Overrides(task="classification", top_k=max(1, classes), threshold=0.0)
    return Overrides(task=engine.task)


def _label_problems(engine: Engine, labels: str | None) -> list[str]:
    """A warning when a classifier's labels do not name its classes one to one."""
    if engine.task != "classification":
        return []
    classes = int(np.prod(engine.interpreter.outputs[0].shape))
    if labels is None:
        return [f"no labels file: results will name the {classes} classes by number (--labels)"]
    named = len(parse_labels(labels))
    if named != classes:
        return [f"the labels file names {named} labels but the model has {classes} classes"]
    return []


def _latency(path: Path, options: RuntimeOptions, runs: int) -> Latency | None:
    if runs <= 0:
        return None
    r = bench(path, options, runs=runs, warmup=max(1, runs // 10))
    return Latency(r.p50_ms, r.mean_ms, r.threads, r.runs)
