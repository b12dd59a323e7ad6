"""The daemon's stats payload as Prometheus metric families (``prometheus_client`` objects, so
the library writes the text format and its escaping).

Every figure comes from the same ``Daemon.stats()`` the stats topic publishes, so a scrape and
the message sent at the same moment agree; only the summaries' ``_count`` and ``_sum`` come from
the latency windows directly (the stats topic shows percentiles only). Units are Prometheus's
base units: seconds and bytes. Names and labels:

- ``edge_info{device, boot_id}``, ``edge_model_info{model, path, version, task, runtime,
  runtime_version, delegate}``: always 1; the labels carry the facts.
- per camera (labels ``camera, model``): ``edge_fps_in``, ``edge_fps_out``,
  ``edge_frames_captured_total``, ``edge_frames_inferred_total``, ``edge_frames_dropped_total``
  and ``edge_frames_skipped_total`` (label ``reason``), ``edge_inference_errors_total``,
  ``edge_stage_latency_seconds`` (a summary, label ``stage``; quantiles 0.5, 0.95, 0.99 over the
  last 512 results).
- the MQTT outbox: ``edge_outbox_pending{where=ram|disk}``, ``edge_outbox_inflight``,
  ``edge_mqtt_produced_total``, ``edge_mqtt_delivered_total``,
  ``edge_mqtt_dropped_total{reason=full|ram|refused}``, ``edge_mqtt_connected``,
  ``edge_mqtt_reconnects_total``.
- the process: ``edge_resident_memory_bytes``, ``edge_cpu_percent``,
  ``edge_cpu_temperature_celsius`` (absent where the board has no sensor),
  ``edge_uptime_seconds``, ``edge_degraded`` (how many degraded states).
- drift, per model with a baseline: ``edge_drift_window_results``, and once the window is full
  ``edge_drift_class_divergence`` (Jensen–Shannon) and ``edge_drift_score_distance`` (L∞).

Counters restart from 0 when a reload replaces the pipeline; Prometheus's ``rate()`` treats a
drop as a counter reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample

# (stage, count, sum in ms) per camera: the summaries' totals.
Totals = Mapping[str, Mapping[str, tuple[int, float]]]

_DROPS = {"slot": "dropped", "backpressure": "dropped_backpressure"}
_SKIPS = {"latency": "skipped_latency", "motion": "skipped_motion", "paused": "skipped_paused"}
_QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}


def families(stats: Mapping[str, Any], totals: Totals) -> list[Metric]:
    """The metric families of one stats payload (``Daemon.stats()``)."""
    out: list[Metric] = []
    info = GaugeMetricFamily("edge_info", "This process.", labels=["device", "boot_id"])
    info.add_metric([str(stats.get("device", "")), str(stats.get("boot_id", ""))], 1)
    out.append(info)
    out.append(_models(stats.get("models", {})))
    out.extend(_cameras(stats.get("cameras", {}), totals))
    if "mqtt" in stats:
        out.extend(_outbox(stats["mqtt"]))
    out.extend(_process(stats))
    out.extend(_drift(stats.get("drift", {})))
    return out


def _models(models: Mapping[str, Any]) -> Metric:
    names = ["model", "path", "version", "task", "runtime", "runtime_version", "delegate"]
    fam = GaugeMetricFamily("edge_model_info", "A loaded model and where it runs.", labels=names)
    for name, m in models.items():
        values = [name, *(str(m.get(k) or "") for k in names[1:])]
        fam.add_metric(values, 1)
    return fam


def _cameras(cameras: Mapping[str, Any], totals: Totals) -> list[Metric]:
    labels = ["camera", "model"]
    fps_in = GaugeMetricFamily("edge_fps_in", "Frames per second from the camera.", labels=labels)
    fps_out = GaugeMetricFamily("edge_fps_out", "Results per second.", labels=labels)
    captured = CounterMetricFamily("edge_frames_captured", "Frames captured.", labels=labels)
    inferred = CounterMetricFamily("edge_frames_inferred", "Frames inferred.", labels=labels)
    errors = CounterMetricFamily(
        "edge_inference_errors", "Frames whose inference or decoding failed.", labels=labels
    )
    dropped = CounterMetricFamily(
        "edge_frames_dropped",
        "Frames dropped: slot = replaced by a newer one while inference was busy, "
        "backpressure = the MQTT outbox had no room.",
        labels=[*labels, "reason"],
    )
    skipped = CounterMetricFamily(
        "edge_frames_skipped",
        "Frames not inferred: latency = older than the budget, motion = no motion, "
        "paused = detection switched off.",
        labels=[*labels, "reason"],
    )
    latency = SummaryMetricFamily(
        "edge_stage_latency_seconds",
        "Stage durations (queue, preprocess, invoke, postprocess, e2e = capture to result).",
        labels=[*labels, "stage"],
    )
    for cam, c in cameras.items():
        key = [cam, str(c.get("model", ""))]
        fps_in.add_metric(key, c["fps_in"])
        fps_out.add_metric(key, c["fps_out"])
        captured.add_metric(key, c["captured"])
        inferred.add_metric(key, c["inferred"])
        errors.add_metric(key, c["errors"])
        for reason, field in _DROPS.items():
            dropped.add_metric([*key, reason], c[field])
        for reason, field in _SKIPS.items():
            skipped.add_metric([*key, reason], c[field])
        for stage, pcts in c.get("latency_ms", {}).items():
            count, total_ms = totals.get(cam, {}).get(stage, (0, 0.0))
            latency.add_metric([*key, stage], count, total_ms / 1000)
            where = {"camera": cam, "model": key[1], "stage": stage}
            for p, q in _QUANTILES.items():
                if p in pcts:
                    seconds = round(pcts[p] / 1000, 9)  # the ms figure, without float noise
                    sample = Sample(latency.name, {**where, "quantile": q}, seconds)
                    latency.samples.append(sample)
    return [fps_in, fps_out, captured, inferred, errors, dropped, skipped, latency]


def _outbox(mqtt: Mapping[str, Any]) -> list[Metric]:
    pending = GaugeMetricFamily(
        "edge_outbox_pending", "Results waiting for delivery.", labels=["where"]
    )
    pending.add_metric(["ram"], mqtt["pending_ram"])
    pending.add_metric(["disk"], mqtt["pending_disk"])
    dropped = CounterMetricFamily(
        "edge_mqtt_dropped",
        "Results dropped: full = the outbox was full (oldest dropped), ram = the RAM outbox "
        "was full while the disk could not be written, refused = the broker refused the topic.",
        labels=["reason"],
    )
    dropped.add_metric(["full"], mqtt["dropped_full"])
    dropped.add_metric(["ram"], mqtt["dropped_ram"])
    dropped.add_metric(["refused"], mqtt["dropped_refused"])
    return [
        pending,
        GaugeMetricFamily(
            "edge_outbox_inflight", "Results sent, not yet acknowledged.", value=mqtt["inflight"]
        ),
        CounterMetricFamily(
            "edge_mqtt_produced", "Results accepted for delivery.", value=mqtt["produced"]
        ),
        CounterMetricFamily(
            "edge_mqtt_delivered", "Results acknowledged by the broker.", value=mqtt["delivered"]
        ),
        dropped,
        GaugeMetricFamily(
            "edge_mqtt_connected", "1 while connected to the broker.", value=int(mqtt["connected"])
        ),
        CounterMetricFamily(
            "edge_mqtt_reconnects", "Connections re-established.", value=mqtt["reconnects"]
        ),
    ]


def _process(stats: Mapping[str, Any]) -> list[Metric]:
    out: list[Metric] = []
    if stats.get("rss_mb") is not None:
        out.append(
            GaugeMetricFamily(
                "edge_resident_memory_bytes",
                "Resident set size.",
                value=float(stats["rss_mb"]) * 2**20,
            )
        )
    if stats.get("cpu_percent") is not None:
        out.append(
            GaugeMetricFamily(
                "edge_cpu_percent",
                "CPU time used since the pipeline started, % of one core.",
                value=stats["cpu_percent"],
            )
        )
    if stats.get("cpu_temp_c") is not None:
        out.append(
            GaugeMetricFamily(
                "edge_cpu_temperature_celsius", "SoC temperature.", value=stats["cpu_temp_c"]
            )
        )
    if stats.get("uptime_s") is not None:
        out.append(
            GaugeMetricFamily(
                "edge_uptime_seconds", "Since the pipeline started.", value=stats["uptime_s"]
            )
        )
    out.append(
        GaugeMetricFamily(
            "edge_degraded",
            "Degraded states right now (their sentences are on the stats topic).",
            value=len(stats.get("degraded", [])),
        )
    )
    return out


def _drift(drift: Mapping[str, Any]) -> list[Metric]:
    results = GaugeMetricFamily(
        "edge_drift_window_results", "Results in the drift window.", labels=["model"]
    )
    js = GaugeMetricFamily(
        "edge_drift_class_divergence",
        "Jensen–Shannon divergence (base 2) of the window's class distribution from the "
        "model's baseline.",
        labels=["model"],
    )
    linf = GaugeMetricFamily(
        "edge_drift_score_distance",
        "L-infinity distance of the window's score deciles from the model's baseline.",
        labels=["model"],
    )
    for model, d in drift.items():
        results.add_metric([model], d["results"])
        if d.get("class_divergence") is not None:
            js.add_metric([model], d["class_divergence"])
        if d.get("score_distance") is not None:
            linf.add_metric([model], d["score_distance"])
    return [results, js, linf]
