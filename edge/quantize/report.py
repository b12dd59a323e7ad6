"""The quantize tool's report: what was done and what quantization cost, as a table for people
and as JSON for scripts (``edge quantize --json``)."""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, fields
from typing import Any

from edge.preprocess import PreprocessConfig
from edge.quantize.compare import Agreement
from edge.quantize.compiler import EdgeTpuReport


@dataclass(frozen=True, slots=True)
class Latency:
    """``edge.bench`` steady-state invoke time in milliseconds."""

    p50_ms: float
    mean_ms: float
    threads: int
    runs: int


@dataclass(frozen=True, slots=True)
class Report:
    """What the tool did and what quantization cost. Sizes in bytes; holdout_from is
    ``holdout`` or ``calibration`` (the calibration images were reused). preprocess_origin:
    where mean/std came from (see :data:`edge.quantize.preprocessing.ORIGINS`);
    in_model_normalization: what the model does to its input itself, if anything;
    float_output_spread: see :class:`edge.quantize.variation.OutputSpread`. warnings are
    notes; alerts are what probably makes the int8 model unusable."""

    source: str
    kind: str
    out_dir: str
    task: str
    io: str
    preprocess: PreprocessConfig
    preprocess_origin: str
    in_model_normalization: str | None
    float_output_spread: float | None
    calibration_images: int
    calibration_skipped: int
    holdout_images: int
    holdout_skipped: int
    holdout_from: str
    source_bytes: int
    float_bytes: int
    int8_bytes: int
    agreement: Agreement
    float_latency: Latency | None
    int8_latency: Latency | None
    edgetpu: EdgeTpuReport | None
    max_drop: float | None
    passed: bool
    seconds: float
    warnings: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Agreement | EdgeTpuReport):
                v = v.to_dict()
            elif isinstance(v, PreprocessConfig):
                v = preprocess_dict(v)
            elif isinstance(v, Latency):
                v = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in asdict(v).items()}
            elif isinstance(v, float):
                v = round(v, 4)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


def preprocess_dict(config: PreprocessConfig) -> dict[str, Any]:
    """A PreprocessConfig as the manifest's ``preprocess`` object."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def format_report(r: Report) -> str:
    """The human-readable report ``edge quantize`` prints."""
    a = r.agreement
    lines = [
        f"quantized {r.source} ({r.kind}) -> {r.out_dir}",
        f"  task {r.task}   io {r.io}   calibration {r.calibration_images} images"
        + (f" ({r.calibration_skipped} undecodable skipped)" if r.calibration_skipped else ""),
        f"  preprocess resize {r.preprocess.resize}, {r.preprocess.color}, mean "
        f"{_nums(r.preprocess.mean)}, std {_nums(r.preprocess.std)}   (mean/std from: "
        f"{r.preprocess_origin})",
    ]
    if r.in_model_normalization:
        fed = ", so edge feeds it raw 0..255 pixels" if r.preprocess_origin == "model" else ""
        lines.append(
            _wrap(f"the model normalizes its input itself ({r.in_model_normalization}){fed}")
        )
    if r.float_output_spread is not None:
        lines.append(f"  float output spread over calibration images {r.float_output_spread:.4f}")
    lines += [
        "",
        f"  {'':<26}{'float':>12}{'int8':>12}",
        f"  {'size':<26}{_size(r.float_bytes):>12}{_size(r.int8_bytes):>12}"
        f"   ({r.float_bytes / max(1, r.int8_bytes):.1f}x smaller; source file "
        f"{_size(r.source_bytes)})",
    ]
    if r.float_latency and r.int8_latency:
        fl, il = r.float_latency, r.int8_latency
        lines.append(
            f"  {'latency p50 (ms)':<26}{fl.p50_ms:>12.3f}{il.p50_ms:>12.3f}"
            f"   ({fl.threads} thread(s), {il.runs} runs, edge.bench)"
        )
        lines.append(f"  {'latency mean (ms)':<26}{fl.mean_ms:>12.3f}{il.mean_ms:>12.3f}")
    lines.append("")
    lines.append(f"  agreement on {r.holdout_images} {r.holdout_from} images:")
    if a.top1_agreement is not None:
        lines.append(f"    top-1 agreement          {a.top1_agreement:.2f} %")
        lines.append(f"    mean score error         {a.mean_score_error:.4f}")
    if a.box_recall is not None:
        lines.append(
            f"    box recall               {a.box_recall:.2f} %   ({a.float_boxes} float boxes, "
            f"{a.int8_boxes} int8 boxes)"
        )
        iou = "n/a" if a.mean_iou is None or math.isnan(a.mean_iou) else f"{a.mean_iou:.4f}"
        lines.append(f"    mean IoU of matches      {iou}")
    if a.mean_abs_error is not None:
        lines.append(
            f"    mean absolute error      {a.mean_abs_error:.6g}   (float output range "
            f"{a.output_range:.6g})"
        )
    gate = ""
    if r.max_drop is not None:
        gate = f"   max allowed {r.max_drop:g} %: {'PASS' if r.passed else 'FAIL'}"
    lines.append(f"    drop                     {a.drop:.2f} %   ({a.drop_meaning}){gate}")
    for alert in r.alerts:
        lines.append("")
        lines.append(_wrap(f"WARNING: {alert}"))
    if r.edgetpu is not None:
        lines.append("")
        tpu = r.edgetpu
        if tpu.compiled:
            lines.append(f"  edge tpu: {tpu.model_file}: {tpu.message}")
            for row in tpu.rows:
                if not row.mapped:
                    lines.append(f"    on the CPU: {row.op} x{row.count}: {row.status}")
        else:
            lines.append(_wrap(f"edge tpu: {tpu.message}"))
    for w in r.warnings:
        lines.append(_wrap(f"note: {w}"))
    lines.append(f"  done in {r.seconds:.1f} s")
    return "\n".join(lines)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=96, initial_indent="  ", subsequent_indent="    ")


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / 1024:.1f} KiB"


def _nums(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
