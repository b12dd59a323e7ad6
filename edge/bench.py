"""``edge bench``: how fast a model runs here, measured the way TFLite's ``benchmark_model``
does (init, first inference, warm-up, steady state), plus memory.

Steady-state runs time ``invoke()`` alone on a preprocessed input, so the figure is comparable
to a bare interpreter loop; ``edge infer`` timings add pre- and postprocessing on top.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.models import load_spec
from edge.runtime import ModelInterpreter, RuntimeOptions, load, load_model
from edge.stats import percentile
from edge.system import peak_rss_mb, rss_mb


@dataclass(frozen=True, slots=True)
class BenchReport:
    """One model at one thread count. Times in milliseconds, memory in MiB."""

    model: str
    backend: str
    backend_version: str
    delegate: str
    threads: int
    init_ms: float
    first_ms: float
    warmup_mean_ms: float
    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rss_before_mb: float
    rss_after_mb: float
    peak_rss_mb: float
    op_counts: dict[str, int] = field(default_factory=dict)
    delegate_partitions: int = 0
    degraded: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def bench(
    model: str | Path,
    options: RuntimeOptions,
    runs: int = 100,
    warmup: int = 10,
    min_seconds: float = 0.0,
) -> BenchReport:
    """Load ``model`` with ``options`` and time it.

    runs: steady-state invocations (at least; more while ``min_seconds`` has not passed).
    The input is random data of the right dtype: invoke time does not depend on pixel values
    for the models edge runs (no data-dependent control flow).
    """
    spec = load_spec(model)
    before = rss_mb()
    # A chain verifies each entry it tries, so its first invoke is not the model's first.
    interp: ModelInterpreter = (
        load_model(spec.path, options) if options.chain else load(spec.path, options, verify=False)
    )
    inp = interp.inputs[0]
    rng = np.random.default_rng(0)
    if inp.dtype == np.float32:
        data = rng.random(inp.shape, dtype=np.float32)
    else:
        info = np.iinfo(inp.dtype)
        data = rng.integers(info.min, info.max, size=inp.shape, endpoint=True, dtype=inp.dtype)
    interp.set_input(data)
    clock = time.perf_counter
    t = clock()
    interp.invoke()
    first = (clock() - t) * 1000
    warm: list[float] = []
    for _ in range(warmup):
        t = clock()
        interp.invoke()
        warm.append((clock() - t) * 1000)
    times: list[float] = []
    start = clock()
    while len(times) < runs or clock() - start < min_seconds:
        t = clock()
        interp.invoke()
        times.append((clock() - t) * 1000)
    after = rss_mb()
    times.sort()
    info_ = interp.info
    interp.close()
    return BenchReport(
        model=spec.name,
        backend=info_.backend,
        backend_version=info_.backend_version,
        delegate=info_.delegate,
        threads=info_.threads,
        init_ms=info_.init_ms,
        first_ms=first,
        warmup_mean_ms=statistics.fmean(warm) if warm else float("nan"),
        runs=len(times),
        mean_ms=statistics.fmean(times),
        std_ms=statistics.pstdev(times),
        min_ms=times[0],
        p50_ms=percentile(times, 50),
        p90_ms=percentile(times, 90),
        p99_ms=percentile(times, 99),
        max_ms=times[-1],
        rss_before_mb=before,
        rss_after_mb=after,
        peak_rss_mb=peak_rss_mb(),
        op_counts=info_.op_counts,
        delegate_partitions=info_.delegate_partitions,
        degraded=info_.degraded,
    )


def format_table(reports: list[BenchReport]) -> str:
    """A human-readable table, one row per thread count, then the op summary."""
    if not reports:
        return ""
    r0 = reports[0]
    lines = [
        f"model {r0.model}   runtime {r0.backend} {r0.backend_version}   delegate {r0.delegate}",
    ]
    if r0.degraded:
        lines.append(f"DEGRADED: {r0.degraded}")
    head = ("threads", "init", "first", "warmup", "mean", "p50", "p90", "p99", "runs", "rss+load")
    lines.append("{:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}".format(*head))
    for r in reports:
        lines.append(
            f"{r.threads:>7} {r.init_ms:>8.2f} {r.first_ms:>8.2f} {r.warmup_mean_ms:>8.2f} "
            f"{r.mean_ms:>8.3f} {r.p50_ms:>8.3f} {r.p90_ms:>8.3f} {r.p99_ms:>8.3f} "
            f"{r.runs:>6} {r.rss_after_mb - r.rss_before_mb:>7.1f}MB"
        )
    lines.append("(times in ms; rss+load = resident memory added by loading the model)")
    if r0.op_counts:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r0.op_counts.items(), key=lambda x: -x[1]))
        total = sum(r0.op_counts.values())
        where = (
            f"{r0.delegate_partitions} delegate partition(s) took them over"
            if r0.delegate_partitions
            else "no delegate partitions (builtin kernels)"
        )
        lines.append(f"ops: {total} ({ops}); {where}")
    return "\n".join(lines)
