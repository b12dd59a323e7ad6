"""Damaged state and bad input: an outbox with unreadable pages is moved aside and its readable
rows delivered; check-config refuses what run refuses; bounds on sizes and durations."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from broker import Broker, wait_for
from faultkit import (
    REPO,
    DaemonProc,
    Tally,
    config_text,
    last_json,
    report,
    subscribe,
    tally,
)

from edge.errors import EX_CONFIG, EX_NOINPUT, EX_USAGE
from edge.outbox import Outbox


def damaged_outbox(path: Path, rows: int = 6000) -> None:
    """An outbox file of ``rows`` results from an earlier boot, with 16 pages in the middle
    overwritten with random bytes (as a failing SD card leaves them)."""
    ob = Outbox(path, 100_000, boot_id="oldboot00000")
    for i in range(1, rows + 1):
        payload = json.dumps({"boot_id": "oldboot00000", "camera": "a", "seq": i, "pad": "x" * 150})
        ob.put("edge/faultdev/a/result", payload.encode())
    ob.produced = rows
    ob.spool()
    ob.close()
    size = path.stat().st_size
    assert size > 240 * 4096, size
    with path.open("r+b") as f:
        f.seek(200 * 4096)
        f.write(os.urandom(16 * 4096))


def test_outbox_with_damaged_pages_is_salvaged_and_the_daemon_starts(tmp_path: Path) -> None:
    """A damaged page in the middle of the outbox: the daemon moves the file aside, keeps every
    row SQLite can still read, delivers them, and runs on (no restart loop)."""
    state = tmp_path / "state"
    state.mkdir()
    damaged_outbox(state / "outbox.sqlite3")
    broker = Broker(tmp_path / "mosquitto")
    broker.start()
    try:
        sub = subscribe(broker)
        d = DaemonProc(tmp_path, config_text(broker, state))
        try:
            assert d.wait_log("is damaged", timeout=30), d.log()
            assert d.wait_log("copied the ", timeout=30), d.log()
            salvaged = int(d.log().split("copied the ")[1].split(" results")[0])
            # Every salvaged row is delivered before the stop (on a loaded machine that takes a
            # while; a stop earlier would only leave the rest in the outbox for the next start).
            assert wait_for(
                lambda: tally(sub).get(("oldboot00000", "a"), Tally()).received >= salvaged,
                90,
                interval=0.5,
            ), d.log()
            assert d.stop() == 0
        finally:
            if d.proc.poll() is None:
                d.kill()
    finally:
        broker.kill()
    log = d.log()
    assert "Traceback" not in log
    report(f"damaged outbox ({salvaged} of 6000 rows salvaged)", tally(sub), d.proc.returncode)
    old = tally(sub)[("oldboot00000", "a")]
    assert old.received == salvaged and 5000 <= salvaged < 6000, (salvaged, str(old))
    assert old.out_of_order == 0
    assert list(state.glob("outbox.sqlite3.corrupt-*")), "the damaged file was not kept"
    stats = last_json(sub, "/stats")
    assert stats is not None and stats["mqtt"]["previous_boot"]["boot_id"] == "oldboot00000"
    sub.close()


def test_outbox_salvage_keeps_rows_on_both_sides_of_the_damage(tmp_path: Path) -> None:
    """Rows before and after the damaged pages are both copied, in order; the lost range is
    named."""
    path = tmp_path / "outbox.sqlite3"
    damaged_outbox(path)
    ob = Outbox(path, 100_000)
    assert ob.salvage is not None and ob.salvage.lost_ranges
    seqs = []
    while (e := ob.take()) is not None:
        seqs.append(json.loads(e.payload)["seq"])
        ob.ack(e.seq)
    ob.close()
    assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[-1] == 6000, (seqs[:3], seqs[-3:])
    lo, hi = ob.salvage.lost_ranges[0]
    assert all(not lo <= s <= hi for s in seqs)
    with sqlite3.connect(ob.salvage.aside) as old:  # the original is kept as it was
        assert old.execute("PRAGMA page_count").fetchone()[0] > 200


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def _config(tmp_path: Path, model: str = "shapes-detector", mqtt: str = "", cam: str = "") -> Path:
    p = tmp_path / "c.toml"
    p.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[model]\npath = "{model}"\n[mqtt]\nport = 1\n{mqtt}'
        f'[[cameras]]\nsource = "synthetic"\n{cam}'
    )
    return p


def _labels_not_utf8(tmp_path: Path) -> str:
    m = tmp_path / "m"
    m.mkdir()
    (m / "model.tflite").write_bytes((REPO / "models/shapes-detector/model.tflite").read_bytes())
    (m / "labels.txt").write_bytes(b"circle\nsquare\ntri\xe0ngle\n")
    return str(m)


CASES = {
    "missing model": ({"model": "/nonexistent/model.tflite"}, "/nonexistent/model.tflite"),
    "missing password file": (
        {"mqtt": 'username = "u"\npassword_file = "/nonexistent/pw"\n'},
        "/nonexistent/pw",
    ),
    "missing CA": ({"mqtt": 'tls_ca = "/nonexistent/ca.pem"\n'}, "/nonexistent/ca.pem"),
    "labels not UTF-8": ({"model": "LABELS"}, "not UTF-8"),
    "huge frame": ({"cam": "width = 100000\nheight = 100000\n"}, "width: must be at most 8192"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_config_refuses_what_run_refuses(tmp_path: Path, case: str) -> None:
    """check-config and run both refuse the file with exit 78 and the same one-line reason
    (no traceback): missing model, password file or CA, labels that are not UTF-8, a frame
    size no Pi can hold."""
    kwargs, expected = CASES[case]
    if kwargs.get("model") == "LABELS":
        kwargs = {"model": _labels_not_utf8(tmp_path)}
    path = _config(tmp_path, **kwargs)
    checked = edge("check-config", str(path))
    ran = edge("run", "--config", str(path), "--duration", "2")
    for p in (checked, ran):
        assert p.returncode == EX_CONFIG, (case, p.returncode, p.stderr)
        assert expected in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_check_config_refuses_a_missing_video_like_run(tmp_path: Path) -> None:
    """A file source that does not exist: both exit 66."""
    p = _config(tmp_path)
    p.write_text(p.read_text().replace('"synthetic"', f'"{tmp_path / "missing.mp4"}"'))
    checked = edge("check-config", str(p))
    ran = edge("run", "--config", str(p), "--duration", "5")
    assert checked.returncode == ran.returncode == EX_NOINPUT, (checked.stderr, ran.stderr)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_duration_must_be_a_positive_finite_number(value: str) -> None:
    """`edge run --duration nan` is a usage error, not a run that never stops."""
    p = edge("run", "--source", "synthetic", "--duration", value)
    assert p.returncode == EX_USAGE and "--duration" in p.stderr, p.stderr
