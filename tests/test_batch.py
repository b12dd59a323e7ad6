"""`edge batch`: right labels on generated images with known contents, errors for unreadable
files, video frames, resuming after a killed run and after a torn line, CSV, and its refusals."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from edge.batch import BatchSettings, Progress, read_done, run_batch
from edge.errors import ConfigError
from edge.postprocess import iou_matrix
from edge.scene import COLOURS, SHAPES, Shape, background, render

REPO = Path(__file__).resolve().parent.parent
SHAPES_DIR = REPO / "tests" / "data" / "shapes"
CLIP = REPO / "samples" / "shapes.mp4"
CLIP_TRUTH = {
    f["index"]: f["objects"]
    for f in json.loads((REPO / "samples" / "shapes.json").read_text())["frames"]
}
SCHEMA = json.loads((REPO / "edge" / "schema" / "result.schema.json").read_text())


def make_images(folder: Path, seed: int = 0) -> dict[str, str]:
    """One PNG per colour × shape (12 files), each one centred shape; returns path → label."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for kind in SHAPES:
        for colour in COLOURS:
            canvas = background(rng, 200, 160)
            shape = Shape(kind, colour, cx=100 + rng.uniform(-20, 20), cy=80, size=90)
            path = folder / f"{colour}_{kind}.png"
            assert cv2.imwrite(str(path), render([shape], canvas))
            truth[str(path)] = f"{colour} {kind}"
    return truth


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def keys(records: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    return [(r["path"], r["frame_index"]) for r in records]


def settings(inputs: Sequence[Path | str], out: Path, **kw: Any) -> BatchSettings:
    kw.setdefault("model", "shapes-classifier")
    return BatchSettings(inputs=tuple(str(i) for i in inputs), output=out, **kw)


def test_generated_images_get_their_labels_on_two_workers(tmp_path: Path) -> None:
    """Twelve generated one-shape images each get their true colour and shape as the top class,
    with 2 workers; every line is a schema-valid result with path and frame_index 0."""
    truth = make_images(tmp_path / "imgs")
    out = tmp_path / "out.jsonl"
    summary = run_batch(settings([tmp_path / "imgs"], out, workers=2))
    recs = lines(out)
    assert summary.items == 12 and summary.errors == 0 and summary.done_before == 0
    assert sorted(r["path"] for r in recs) == sorted(truth)
    schema = SCHEMA
    for r in recs:
        jsonschema.validate(r, schema)
        assert r["frame_index"] == 0 and r["source"] == r["path"]
        assert r["classes"][0]["label"] == truth[r["path"]], r
    assert summary.labels == Counter(truth.values())


def test_corrupt_and_missing_files_are_error_lines_not_fatal(tmp_path: Path) -> None:
    """The corrupt JPEG of the test data and a missing input become error lines, counted in the
    summary, while every readable image still gets its result."""
    out = tmp_path / "out.jsonl"
    missing = tmp_path / "nope.png"
    summary = run_batch(settings([SHAPES_DIR, missing], out))
    recs = {r["path"]: r for r in lines(out)}
    readable = [p for p in os.listdir(SHAPES_DIR) if p.endswith((".png", ".jpg"))]
    assert len(recs) == len(readable) + 1
    corrupt = recs[str(SHAPES_DIR / "corrupt.jpg")]
    assert set(corrupt) == {"path", "frame_index", "error"} and "decode" in corrupt["error"]
    assert "does not exist" in recs[str(missing)]["error"]
    assert recs[str(missing)]["frame_index"] is None
    assert summary.errors == 2 and summary.items == len(recs)
    truth = json.loads((SHAPES_DIR / "truth.json").read_text())
    for name, t in truth.items():
        if "label" in t:
            assert recs[str(SHAPES_DIR / name)]["classes"][0]["label"] == t["label"]


def test_video_every_nth_frame_with_the_detector_matches_the_clip_truth(tmp_path: Path) -> None:
    """The sample clip with --every 20 gives frames 0, 20, …, 100, each keyed by its frame
    index, and the detector finds the clip's true objects in each (IoU ≥ 0.5, same label)."""
    out = tmp_path / "out.jsonl"
    summary = run_batch(settings([CLIP], out, model="shapes-detector", every=20, workers=2))
    recs = sorted(lines(out), key=lambda r: r["frame_index"])
    assert [r["frame_index"] for r in recs] == [0, 20, 40, 60, 80, 100]
    assert summary.items == 6 and summary.errors == 0
    found = total = 0
    for r in recs:
        assert r["frame"]["index"] == r["frame_index"] and r["path"] == str(CLIP)
        truth = CLIP_TRUTH[r["frame_index"]]
        got = np.array([d["box"] for d in r["detections"]]).reshape(-1, 4)
        ious = iou_matrix(np.array([t["box"] for t in truth]), got)
        for i, t in enumerate(truth):
            total += 1
            j = int(ious[i].argmax()) if got.size else -1
            found += j >= 0 and ious[i, j] >= 0.5 and r["detections"][j]["label"] == t["label"]
    assert found >= 0.9 * total, f"{found} of {total} objects found"


def test_resume_after_a_killed_run_redoes_nothing(tmp_path: Path) -> None:
    """A batch killed with SIGKILL mid-way leaves only complete lines (a torn one is dropped);
    rerunning the same command processes exactly the rest: every key once, nothing twice."""
    folder = tmp_path / "big"
    folder.mkdir()
    # Large JPEGs make each item take ~10 ms to decode, so the run is still going when killed.
    image = cv2.resize(
        render(
            [Shape("circle", "red", 960, 540, 500)],
            background(np.random.default_rng(3), 1920, 1080),
        ),
        (1920, 1080),
    )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    n = 150
    for i in range(n):
        (folder / f"img_{i:04d}.jpg").write_bytes(buf.tobytes())
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "edge", "batch", str(folder), "--model", "shapes-classifier"]
    cmd += ["-o", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.stderr is not None
    proc.stderr.close()
    kept, _ = read_done(out)
    assert 5 <= len(kept) < n, f"the run was not interrupted mid-way ({len(kept)} of {n})"
    summary = run_batch(settings([folder], out))
    assert summary.done_before == len(kept)
    assert summary.items == n - len(kept) and summary.errors == 0
    final = keys(lines(out))
    assert len(final) == len(set(final)) == n
    assert set(final) == {(str(folder / f"img_{i:04d}.jpg"), 0) for i in range(n)}


def test_a_torn_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    """An output whose last line was cut short by a crash is truncated to its last complete
    line on rerun and only the torn item is redone; a complete run reruns as a no-op."""
    make_images(tmp_path / "imgs")
    out = tmp_path / "out.jsonl"
    run_batch(settings([tmp_path / "imgs"], out))
    whole = out.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]
    out.write_bytes(whole[: len(whole) - len(last) // 2 - 1])
    summary = run_batch(settings([tmp_path / "imgs"], out))
    assert summary.items == 1 and summary.done_before == 11
    assert json.loads(out.read_bytes().splitlines()[-1])["path"] == json.loads(last)["path"]
    again = run_batch(settings([tmp_path / "imgs"], out))
    assert again.items == 0 and again.done_before == 12
    assert len(lines(out)) == 12


def test_csv_has_one_row_per_detection_and_per_error(tmp_path: Path) -> None:
    """--csv writes OUT.csv next to the JSON Lines: one row per detection with its box, one
    per error, matching the JSON lines exactly."""
    out = tmp_path / "out.jsonl"
    inputs = [SHAPES_DIR / "scene_0.jpg", SHAPES_DIR / "scene_1.jpg", SHAPES_DIR / "corrupt.jpg"]
    run_batch(settings(inputs, out, model="shapes-detector", csv=True))
    with (tmp_path / "out.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = []
    for r in lines(out):
        if "error" in r:
            expected.append((r["path"], "", r["error"]))
        expected += [(r["path"], d["label"], "") for d in r.get("detections", ())]
    assert sorted((row["path"], row["label"], row["error"]) for row in rows) == sorted(expected)
    det = next(row for row in rows if row["label"])
    assert all(0.0 <= float(det[k]) <= 1.0 for k in ("score", "x0", "y0", "x1", "y1"))
    assert len([r for r in rows if r["label"]]) >= 4  # the two scenes hold several shapes


def test_an_output_that_is_not_ours_or_from_another_model_is_refused(tmp_path: Path) -> None:
    """Appending to a file that is not batch output, or to one holding another model's
    results, is refused with a message saying what to do; the file is left untouched."""
    make_images(tmp_path / "imgs")
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text("hello\n")
    with pytest.raises(ConfigError, match="not an edge batch record"):
        run_batch(settings([tmp_path / "imgs"], foreign))
    assert foreign.read_text() == "hello\n"
    out = tmp_path / "out.jsonl"
    run_batch(settings([tmp_path / "imgs" / "red_circle.png"], out))
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="another output file"):
        run_batch(settings([tmp_path / "imgs"], out, model="shapes-detector"))
    assert out.read_bytes() == before
    with pytest.raises(ConfigError, match="batch reads files"):
        run_batch(settings(["synthetic"], tmp_path / "x.jsonl"))


def test_progress_bar_shows_rate_and_eta() -> None:
    """The progress line has the count, percentage, rate and ETA, and redraws in place."""
    stream = io.StringIO()
    bar = Progress(stream, total=40)
    bar.start -= 2.0  # as if started two seconds ago
    bar.update(10, 1, force=True)
    bar.finish(40, 1)
    text = stream.getvalue()
    assert text.startswith("\r[") and "10/40" in text and "25%" in text
    assert "items/s" in text and "ETA 0:0" in text and "1 error" in text
    assert text.endswith("\n") and text.count("\r") == 2


def test_cli_is_quiet_without_a_terminal_and_exits_66_on_errors(tmp_path: Path) -> None:
    """`edge batch` with stderr not a terminal prints no progress bar, only the summary (items,
    errors, labels, rate), and exits 66 because one file could not be read."""
    folder = tmp_path / "imgs"
    make_images(folder)
    shutil.copy(SHAPES_DIR / "corrupt.jpg", folder / "corrupt.jpg")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "batch",
            str(folder),
            "--model",
            "shapes-classifier",
            "-o",
            str(out),
            "--workers",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 66, proc.stderr
    assert "\r" not in proc.stderr and proc.stdout == ""
    assert "12 results and 1 error" in proc.stderr and "items/s" in proc.stderr
    assert "labels: " in proc.stderr and "red circle 1" in proc.stderr
