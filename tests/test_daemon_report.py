"""The daemon's report pieces, on plain values: degraded sentences, status details, the systemd
status line and closing the engines a reload dropped."""

from __future__ import annotations

import json
import logging
from typing import Any

from edge import daemon_report as report


def test_reload_degraded_only_while_the_last_reload_was_refused() -> None:
    assert report.reload_degraded(None) == []
    assert report.reload_degraded({"ok": True, "error": None}) == []
    refused = {"ok": False, "error": "line 3: unknown key 'fps2'"}
    assert report.reload_degraded(refused) == ["last reload refused: line 3: unknown key 'fps2'"]


def test_memory_budget_is_a_degraded_state() -> None:
    assert report.pipeline_degraded([], False, 120.0) == []
    assert report.pipeline_degraded([], True, 120.0) == ["RSS over the memory budget of 120 MiB"]


def test_details_without_chains_have_no_failover_key() -> None:
    payload = json.loads(report.details_payload("b1", ["x"], None, []))
    assert payload == {"boot_id": "b1", "degraded": ["x"], "last_reload": None}


def test_status_line_sums_cameras_and_names_degraded_states() -> None:
    stats: dict[str, Any] = {
        "cameras": {"a": {"fps_out": 2.5, "inferred": 10}, "b": {"fps_out": 1.0, "inferred": 4}},
        "mqtt": {"pending_disk": 7},
        "rss_mb": 71.2,
        "memory_over_budget": True,
        "degraded": ["broker refused topic x", "disk full"],
    }
    line = report.status_line(stats)
    assert line == (
        "3.5 results/s, 14 inferred, 7 spooled, RSS 71.2 MiB OVER BUDGET, "
        "DEGRADED: broker refused topic x; disk full"
    )
    assert (
        report.status_line({"degraded": []}) == "0.0 results/s, 0 inferred, 0 spooled, RSS None MiB"
    )


class _Closing:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail, self.closed = name, fail, False

    def close(self) -> None:
        self.closed = True
        if self.fail:
            raise RuntimeError("boom")


def test_close_unused_closes_only_what_is_not_kept_and_survives_a_failing_close(
    caplog: Any,
) -> None:
    kept, dropped, failing = _Closing("kept"), _Closing("dropped"), _Closing("failing", True)
    engines: list[Any] = [kept, dropped, failing]
    with caplog.at_level(logging.ERROR):
        report.close_unused(engines, engines[:1], logging.getLogger("t"))
    assert (kept.closed, dropped.closed, failing.closed) == (False, True, True)
    assert "closing the model failing failed" in caplog.text
