"""The preview's terminal view, for SSH sessions without a browser: the same figures as the web
page plus each camera's latest labels, redrawn in place about once a second with plain ANSI
cursor movement (no curses). Lines are cut to the terminal width so the redraw never wraps.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

_UP = "\x1b[{n}A"  # cursor up n lines
_CLEAR_LINE = "\x1b[2K"
_CLEAR_BELOW = "\x1b[J"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"
MAX_LABELS = 6


def _pair(p: dict[str, float] | None) -> str:
    if not p:
        return "–"
    return f"{p['p50']:.1f} / {p['p95']:.1f}"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def result_text(result: dict[str, Any] | None) -> str:
    """The labels of a result dict (``Result.to_dict()``) in one line, best first."""
    if not result:
        return "waiting for the first result"
    if "detections" in result:
        items = [f"{d['label']} {d['score']:.2f}" for d in result["detections"]]
    elif "classes" in result:
        items = [f"{c['label']} {c['score']:.2f}" for c in result["classes"]]
    elif "segments" in result:
        items = [f"{s['label']} {s['fraction']:.0%}" for s in result["segments"]]
    else:
        items = [f"{o['name']} {o['shape']}" for o in result.get("outputs", ())]
    if not items:
        return "nothing found"
    more = len(items) - MAX_LABELS
    return ", ".join(items[:MAX_LABELS]) + (f" (+{more})" if more > 0 else "")


def format_lines(stats: dict[str, Any], url: str) -> list[str]:
    """The view as lines of text, from the ``/stats.json`` object."""
    clients = sum(stats.get("preview", {}).get("clients", {}).values())
    lines = [
        f"edge preview  {url}  (Ctrl-C stops)" if url else "edge preview  (Ctrl-C stops)",
        f"device {stats['device']} · up {_uptime(stats['uptime_s'])} · CPU "
        f"{stats['cpu_percent']}% · RSS {stats['rss_mb']} MiB · {clients} stream client"
        + ("s" if clients != 1 else ""),
        f"{'camera':<12} {'fps in':>7} {'fps out':>8} {'infer ms p50/p95':>17} "
        f"{'e2e ms p50/p95':>16} {'dropped':>8} {'skipped':>8} {'results':>8}",
    ]
    for name, c in stats["cameras"].items():
        lat = c["latency_ms"]
        lines.append(
            f"{name[:12]:<12} {c['fps_in']:>7.1f} {c['fps_out']:>8.1f} "
            f"{_pair(lat.get('invoke')):>17} {_pair(lat.get('e2e')):>16} {c['dropped']:>8} "
            f"{c['skipped_latency'] + c['skipped_motion']:>8} {c['inferred']:>8}"
        )
        latest = c.get("latest") or {}
        where = f"frame {latest['frame_index']}: " if "frame_index" in latest else ""
        lines.append(f"  {where}{result_text(latest.get('result'))}")
        state = c.get("source_state", "streaming")
        if state != "streaming":  # ended (last frame kept), stalled, reconnecting …
            error = c.get("last_error") if state in ("reconnecting", "failed") else None
            lines.append(f"  source {state}" + (f": {error}" if error else ""))
    return lines


class TerminalView:
    """Draws ``format_lines`` in place on ``stream`` (a TTY). Thread affinity: one thread."""

    def __init__(self, stream: TextIO, url: str) -> None:
        self.stream = stream
        self.url = url
        self._drawn = 0
        self.stream.write(_HIDE_CURSOR)

    def draw(self, stats: dict[str, Any]) -> None:
        width = _columns(self.stream) - 1
        lines = [line[:width] for line in format_lines(stats, self.url)]
        parts = ["\r" + _UP.format(n=self._drawn)] if self._drawn else []
        parts.extend(_CLEAR_LINE + line + "\n" for line in lines)
        parts.append(_CLEAR_BELOW)
        self.stream.write("".join(parts))
        self.stream.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        """Leave the last view on screen and give the cursor back."""
        self.stream.write(_SHOW_CURSOR)
        self.stream.flush()


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120
