"""What the Prometheus endpoint costs: the import of prometheus-client and one scrape.

Import: in fresh processes that first import what the daemon has loaded before its endpoint
starts (``edge.daemon``, numpy, paho), it times ``import http.server`` (which a hand-written
exposition would need too) and then the endpoint's modules, which import ``prometheus_client``,
and reads the resident memory (RSS, /proc/self/statm) before and after each. Scrape: on a real
pipeline (the bundled detector on the synthetic source, no MQTT) after it has run a few
seconds, it times building the metric families from ``Pipeline.stats()`` and writing the text
format, as each GET /metrics does, and prints the size of the page. Medians over the runs.

    python scripts/bench_metrics.py [--runs 7] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, time
import edge.daemon, numpy, paho.mqtt.client
from edge.system import rss_mb
r0 = rss_mb(); t0 = time.perf_counter()
import http.server
t1 = time.perf_counter(); r1 = rss_mb()
import edge.metrics.families, edge.metrics.server  # prometheus_client with them
t2 = time.perf_counter(); r2 = rss_mb()
print(json.dumps({"http_ms": (t1 - t0) * 1e3, "http_mib": r1 - r0,
                  "prom_ms": (t2 - t1) * 1e3, "prom_mib": r2 - r1, "before_mib": r0}))
"""


def imports(runs: int) -> None:
    rows = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout))

    def med(k: str) -> float:
        return statistics.median(r[k] for r in rows)

    print(f"daemon before its endpoint: RSS {med('before_mib'):.1f} MiB")
    print(f"import http.server:        {med('http_ms'):5.1f} ms  +{med('http_mib'):.2f} MiB RSS")
    print(f"then the endpoint:         {med('prom_ms'):5.1f} ms  +{med('prom_mib'):.2f} MiB RSS")
    print("  (the endpoint: edge.metrics.server and .families, which import prometheus_client)")


def scrape(n: int) -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector, CollectorRegistry

    from edge.config import validate
    from edge.metrics.families import families
    from edge.pipeline import Pipeline

    config = validate(
        {"cameras": [{"source": "synthetic", "fps": 30, "width": 192, "height": 192}]}
    )
    pipeline = Pipeline(config)
    pipeline.start()
    try:
        time.sleep(3.0)

        class Source(Collector):
            def collect(self):  # type: ignore[no-untyped-def]
                return families(pipeline.stats(), pipeline.latency_totals())

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Source())
        times = []
        for _ in range(n):
            t = time.perf_counter()
            page = generate_latest(registry)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        pipeline.stop()
    print(
        f"one scrape (1 camera): {statistics.median(times):.2f} ms median, "
        f"{max(times):.2f} ms max over {n}; page {len(page)} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    imports(args.runs)
    scrape(args.scrapes)


if __name__ == "__main__":
    main()
