"""The output file of ``edge batch``: records (a result with its key, or an error), reading
the keys already done from an earlier run (truncating a line torn by a crash), and the CSV
derived from it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import ConfigError, InputError

if TYPE_CHECKING:
    from edge.result import Result

log = logging.getLogger(__name__)

Key = tuple[str, int | None]
CSV_COLUMNS = ("path", "frame_index", "label", "score", "x0", "y0", "x1", "y1", "error")


def read_done(path: Path) -> tuple[set[Key], str | None]:
    """Keys already in ``path`` and the model that produced them; truncates a torn last line.

    Raises ConfigError if a complete line is not an ``edge batch`` record (the file is someone
    else's: appending to it would corrupt it).
    """
    done: set[Key] = set()
    model: str | None = None
    if not path.exists():
        return done, None
    good = 0  # bytes up to the end of the last complete line
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    break  # a line cut short by a crash: it is redone
                good += len(line)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key: Key = (rec["path"], rec["frame_index"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"{path} line {number} is not an edge batch record; choose another "
                        "output file (-o) or delete this one"
                    ) from exc
                done.add(key)
                if model is None and isinstance(rec.get("model"), dict):
                    model = rec["model"].get("name")
            size = f.seek(0, os.SEEK_END)
    except OSError as exc:
        raise InputError(f"cannot read the existing output {path}: {exc.strerror}") from exc
    if size > good:
        log.warning("%s: dropping a torn last line (%d bytes) to redo it", path, size - good)
        with path.open("r+b") as f:
            f.truncate(good)
    return done, model


def record_key(rec: dict[str, Any]) -> Key:
    return rec["path"], rec["frame_index"]


def result_record(path: str, frame_index: int, result: Result) -> dict[str, Any]:
    """The output line of one result: ``path`` and ``frame_index`` first, then the result."""
    return {"path": path, "frame_index": frame_index, **result.to_dict()}


def error_record(path: str, frame_index: int | None, message: str) -> dict[str, Any]:
    return {"path": path, "frame_index": frame_index, "error": message}


def counted_labels(result: Result) -> tuple[str, ...]:
    """Labels a result adds to the summary: each detection and segment; a classifier's top
    class only (the rest of its top-k are runners-up, not findings)."""
    if result.task == "detection":
        return tuple(d.label for d in result.detections)
    if result.task == "classification":
        return (result.classes[0].label,) if result.classes else ()
    if result.task == "segmentation":
        return tuple(s.label for s in result.segments)
    return ()


def csv_path(output: Path) -> Path:
    return output.with_suffix(".csv")


def write_csv(jsonl: Path, out: Path) -> int:
    """Rewrite ``out`` from every line of ``jsonl``; returns the rows written.

    One row per detection, class or segment (segments put their pixel fraction in ``score`` and
    leave the box empty; classes leave it empty too), one row per error; results with nothing
    found have no row. Written to a temporary file and renamed, so a crash never leaves half.
    """
    tmp = out.with_name(out.name + ".tmp")
    rows = 0
    with jsonl.open("rb") as src, tmp.open("w", newline="", encoding="utf-8") as dst:
        writer = csv.writer(dst)
        writer.writerow(CSV_COLUMNS)
        for line in src:
            if not line.endswith(b"\n") or not line.strip():
                continue
            rec = json.loads(line)
            head = [rec["path"], "" if rec["frame_index"] is None else rec["frame_index"]]
            if "error" in rec:
                writer.writerow([*head, "", "", "", "", "", "", rec["error"]])
                rows += 1
                continue
            for d in rec.get("detections", ()):
                writer.writerow([*head, d["label"], d["score"], *d["box"], ""])
                rows += 1
            for c in rec.get("classes", ()):
                writer.writerow([*head, c["label"], c["score"], "", "", "", "", ""])
                rows += 1
            for s in rec.get("segments", ()):
                writer.writerow([*head, s["label"], s["fraction"], "", "", "", "", ""])
                rows += 1
    tmp.replace(out)
    return rows
