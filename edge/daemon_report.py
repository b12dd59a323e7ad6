"""What the daemon says about itself, assembled from the parts that hold the figures: the
degraded sentences of the pipeline and of the last reload, the retained ``status/details``
payload and systemd's one-line status. Each part keeps its own counters and states; these
functions only put them together, so they take plain values and are tested as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from edge.engine import Engine
from edge.runtime import chain_details


def pipeline_degraded(
    engines: Iterable[Engine], memory_over_budget: bool, memory_mb: float
) -> list[str]:
    """The memory budget and every model not running on its preferred delegate."""
    out = [f"RSS over the memory budget of {memory_mb:g} MiB"] if memory_over_budget else []
    out.extend(
        f"model {e.name}: {e.interpreter.info.degraded}"
        for e in engines
        if e.interpreter.info.degraded
    )
    return out


def reload_degraded(last: dict[str, Any] | None) -> list[str]:
    """A refused last reload (it stays degraded until one is accepted)."""
    return [f"last reload refused: {last['error']}"] if last is not None and not last["ok"] else []


def details_payload(
    boot_id: str, degraded: list[str], last_reload: dict[str, Any] | None, engines: Iterable[Engine]
) -> bytes:
    """The retained ``status/details`` JSON: boot, degraded states, the last reload, and each
    failover chain's state (only models that run a chain)."""
    details: dict[str, Any] = {
        "boot_id": boot_id,
        "degraded": degraded,
        "last_reload": last_reload,
    }
    chains = {e.name: entry for e in engines if (entry := chain_details(e.interpreter)) is not None}
    if chains:
        details["failover"] = chains
    return json.dumps(details, separators=(",", ":")).encode()


def status_line(stats: dict[str, Any]) -> str:
    """systemd's ``STATUS=`` for a stats payload: results/s, inferred, spooled, RSS, and what
    is over budget or degraded."""
    cams = stats.get("cameras", {})
    fps = sum(c["fps_out"] for c in cams.values())
    return (
        f"{fps:.1f} results/s, {sum(c['inferred'] for c in cams.values())} inferred, "
        f"{stats.get('mqtt', {}).get('pending_disk', 0)} spooled, RSS {stats.get('rss_mb')} MiB"
        + (" OVER BUDGET" if stats.get("memory_over_budget") else "")
        + (f", DEGRADED: {'; '.join(stats['degraded'])}" if stats.get("degraded") else "")
    )


def close_unused(engines: Iterable[Engine], kept: Iterable[Engine], log: Any) -> None:
    """Close the engines of ``engines`` that ``kept`` does not hold (a reload dropped their
    model): a failover chain's invoke and re-probe threads end with them."""
    keep = {id(e) for e in kept}
    for engine in engines:
        if id(engine) not in keep:
            try:
                engine.close()
            except Exception:
                log.exception("closing the model %s failed", engine.name)
