"""The README's command outputs are what the commands print (scripts/check_readme.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_readme.py"


def check(readme: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(SCRIPT)] + (["--readme", str(readme)] if readme else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)


def test_readme_outputs_are_current() -> None:
    """Every marked README block matches a fresh run of its commands, timings aside."""
    proc = check()
    assert proc.returncode == 0, proc.stderr


def test_a_stale_output_fails_with_a_diff_and_timings_do_not(tmp_path: Path) -> None:
    """A README whose score differs from the command's fails with a diff of that line; one whose
    timings and rate differ passes."""
    marker = "<!-- readme-check -->\n```\n$ edge infer shapes-classifier "
    command = "tests/data/shapes/scene_0.jpg --threshold 0.4\n"
    line = (
        '{"schema":1,"model":{"name":"shapes-classifier","version":"1.0.0"},'
        '"task":"classification","source":"tests/data/shapes/scene_0.jpg",'
        '"frame":{"width":640,"height":480},'
        '"timings_ms":{"preprocess":9.9,"invoke":9.9,"postprocess":9.9},'
        '"classes":[{"label":"yellow triangle","class_id":11,"score":SCORE}]}\n'
    )
    good = tmp_path / "good.md"
    good.write_text(marker + command + line.replace("SCORE", "0.8398") + "```\n")
    assert check(good).returncode == 0, check(good).stderr
    stale = tmp_path / "stale.md"
    stale.write_text(marker + command + line.replace("SCORE", "0.9") + "```\n")
    proc = check(stale)
    assert proc.returncode == 1
    assert '-{"schema"' in proc.stderr and '"score":0.9}' in proc.stderr
    assert '+{"schema"' in proc.stderr and '"score":0.8398}' in proc.stderr


def test_a_marker_without_a_block_is_an_error(tmp_path: Path) -> None:
    """A marker that is not followed by a fenced block is reported (exit 2), not ignored."""
    readme = tmp_path / "bad.md"
    readme.write_text("<!-- readme-check -->\nsome prose\n")
    proc = check(readme)
    assert proc.returncode == 2 and "must precede a fenced block" in proc.stderr
