"""A versioned model repository in the real daemon process against a real mosquitto: a new
version copied in is swapped in without a lost result, a truncated version and a version that
crashes the runtime (the native test delegate aborting) are reported failed while the serving
one carries on, a pinned version is kept, and a repository with nothing valid is exit 78."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from broker import Broker, Subscriber
from faultkit import REPO, DaemonProc, config_text, last_json, results, subscribe, tally

from edge.errors import EX_CONFIG

BUNDLED = REPO / "models" / "shapes-detector"


def add_version(repo: Path, number: int, *, sha256: bool = True) -> Path:
    """Copy the bundled detector in as version ``number`` (file by file, in place, as `cp -r`
    does), then give its manifest the model file's sha256."""
    d = repo / str(number)
    shutil.copytree(BUNDLED, d)
    if sha256:
        manifest = json.loads((d / "manifest.json").read_text())
        manifest["sha256"] = hashlib.sha256((d / "model.tflite").read_bytes()).hexdigest()
        (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def add_truncated(repo: Path, number: int) -> Path:
    """A version whose model file is cut short, as a copy interrupted half-way leaves it."""
    d = repo / str(number)
    d.mkdir()
    shutil.copy(BUNDLED / "labels.txt", d)
    shutil.copy(BUNDLED / "manifest.json", d)
    (d / "model.tflite").write_bytes((BUNDLED / "model.tflite").read_bytes()[:40_000])
    return d


def models_entry(sub: Subscriber, name: str) -> dict[str, Any]:
    """The model's entry in the newest retained models topic message (empty before any)."""
    last = last_json(sub, "/models")
    entry: dict[str, Any] = last["models"].get(name, {}) if last else {}
    return entry


def states(sub: Subscriber, name: str) -> dict[int, str]:
    return {v["version"]: v["state"] for v in models_entry(sub, name).get("versions", [])}


def versions_seen(sub: Subscriber) -> list[str]:
    """The model version of every result, in seq order."""
    return [r["model"]["version"] for r in sorted(results(sub), key=lambda r: r["seq"])]


def model_settings(repo: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(repo), "threads": 1, "repository_poll_s": 0.5, **extra}


def test_new_version_swaps_in_without_a_gap_and_bad_versions_fail_while_it_serves(
    broker: Broker, tmp_path: Path, library: Path, control: Path, daemons: list[DaemonProc]
) -> None:
    """Version 2 copied into a running daemon's repository serves within 10 s with no seq gap
    and one boot_id; a truncated version 3, then a complete version 3 whose load aborts the
    runtime in the verification child, are both reported failed while version 2 serves on."""
    repo = tmp_path / "detector"
    repo.mkdir()
    add_version(repo, 1)
    native = {
        "delegate": "external",
        "delegate_library": str(library),
        "delegate_library_options": [f"control={control}"],
    }
    text = config_text(
        broker,
        tmp_path / "state",
        cameras={"a": {"fps": 20}},
        model=model_settings(repo, **native),
    )
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, text)
    daemons.append(d)
    assert sub.wait_until(lambda ms: len(results(sub)) >= 10, 60), d.log()
    assert sub.wait_until(lambda ms: models_entry(sub, "detector").get("serving") == "1", 5)
    assert set(versions_seen(sub)) == {"1"}

    add_version(repo, 2)
    copied = time.monotonic()
    assert sub.wait_until(lambda ms: versions_seen(sub)[-1:] == ["2"], 10), d.log()
    took = time.monotonic() - copied
    assert sub.wait_until(lambda ms: models_entry(sub, "detector").get("serving") == "2", 5)
    assert states(sub, "detector") == {1: "available", 2: "serving"}
    seen = versions_seen(sub)
    first = seen.index("2")
    assert seen[first:] == ["2"] * (len(seen) - first), "a version 1 result after version 2's"
    print(f"\nversion 2 served {took:.1f} s after it was copied in")

    add_truncated(repo, 3)
    assert sub.wait_until(lambda ms: states(sub, "detector").get(3) == "failed", 10), d.log()
    reason = models_entry(sub, "detector")["versions"][2]["reason"]
    assert "truncated or corrupt" in reason, reason
    details = last_json(sub, "/status/details")
    assert details is not None
    assert any("version 3 failed, version 2 keeps serving" in x for x in details["degraded"])
    before = len(results(sub))
    assert sub.wait_until(lambda ms: len(results(sub)) >= before + 10, 10)

    control.write_text("abort")  # the delegate aborts whoever prepares a graph from now on
    shutil.rmtree(repo / "3")
    add_version(repo, 3)
    assert sub.wait_until(
        lambda ms: "SIGABRT" in str(models_entry(sub, "detector").get("versions")), 20
    ), d.log()
    assert d.proc.poll() is None, d.log()
    before = len(results(sub))
    assert sub.wait_until(lambda ms: len(results(sub)) >= before + 10, 10), d.log()
    assert models_entry(sub, "detector")["serving"] == "2"
    stats = last_json(sub, "/stats")
    assert stats is not None
    assert stats["models"]["detector"]["version"] == "2"
    control.write_text("ok")

    assert d.stop() == 0, d.log()
    counts = tally(sub)
    assert len({boot for boot, _ in counts}) == 1, counts
    (t,) = counts.values()
    assert (t.gaps, t.duplicates, t.out_of_order) == (0, 0, 0), str(t)
    assert versions_seen(sub)[-1] == "2"
    log = d.log()
    assert log.count("version 3 failed") == 2, log  # once for each copy of version 3
    sub.close()


def test_pinned_version_serves_while_newer_ones_arrive(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    """With [model] version = 1 the daemon serves version 1 of 1 and 2, and a version 3
    copied in is checked and listed as available, never served."""
    repo = tmp_path / "detector"
    repo.mkdir()
    add_version(repo, 1)
    add_version(repo, 2)
    text = config_text(
        broker,
        tmp_path / "state",
        cameras={"a": {"fps": 20}},
        model=model_settings(repo, version=1),
    )
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, text)
    daemons.append(d)
    assert sub.wait_until(lambda ms: len(results(sub)) >= 5, 60), d.log()
    add_version(repo, 3)
    assert sub.wait_until(lambda ms: states(sub, "detector").get(3) == "available", 10), d.log()
    entry = models_entry(sub, "detector")
    assert (entry["serving"], entry["pinned"]) == ("1", 1), entry
    assert states(sub, "detector") == {1: "serving", 2: "available", 3: "available"}
    time.sleep(1.5)  # three more polls: nothing may move it off version 1
    assert set(versions_seen(sub)) == {"1"}
    assert d.stop() == 0, d.log()
    sub.close()


@pytest.mark.parametrize("command", ["run --config", "check-config"])
def test_repository_without_a_valid_version_is_exit_78_with_each_reason(
    tmp_path: Path, command: str
) -> None:
    """A repository whose version 1 is truncated and whose version 2 does not match its
    sha256 is refused by `edge run` and `edge check-config` alike, each version's reason
    named."""
    repo = tmp_path / "detector"
    repo.mkdir()
    add_truncated(repo, 1)
    v2 = add_version(repo, 2)
    with (v2 / "model.tflite").open("ab") as f:
        f.write(b"\0" * 16)  # still a loadable model: only the checksum can tell
    text = config_text(("127.0.0.1", 1), tmp_path / "state", model=model_settings(repo))
    (tmp_path / "c.toml").write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "edge", *command.split(), str(tmp_path / "c.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == EX_CONFIG, done.stderr
    error = done.stderr
    assert "has no version that can be served" in error, error
    assert "version 2: " in error and "does not match the sha256" in error, error
    assert "version 1: " in error and "truncated or corrupt" in error, error


def test_pinning_an_older_version_by_reload_rolls_back_with_seq_continuing(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    """A daemon serving version 2 that is reloaded (SIGHUP) with [model] version = 1 serves
    version 1, its seq running on under the same boot_id; unpinning again returns to 2."""
    repo = tmp_path / "detector"
    repo.mkdir()
    add_version(repo, 1)
    add_version(repo, 2)
    state = tmp_path / "state"
    cams = {"a": {"fps": 20}}
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, config_text(broker, state, cameras=cams, model=model_settings(repo)))
    daemons.append(d)
    assert sub.wait_until(lambda ms: len(results(sub)) >= 5, 60), d.log()
    assert set(versions_seen(sub)) == {"2"}
    d.rewrite(config_text(broker, state, cameras=cams, model=model_settings(repo, version=1)))
    assert sub.wait_until(lambda ms: versions_seen(sub)[-1:] == ["1"], 20), d.log()
    assert sub.wait_until(lambda ms: models_entry(sub, "detector").get("pinned") == 1, 5)
    assert states(sub, "detector") == {1: "serving", 2: "available"}
    d.rewrite(config_text(broker, state, cameras=cams, model=model_settings(repo)))
    assert sub.wait_until(lambda ms: versions_seen(sub)[-1:] == ["2"], 20), d.log()
    assert d.stop() == 0, d.log()
    counts = tally(sub)
    assert len(counts) == 1, counts
    (t,) = counts.values()
    assert (t.duplicates, t.out_of_order) == (0, 0), str(t)
    assert t.gaps == 0, str(t)
    sub.close()


def test_online_requests_follow_the_swapped_in_version(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    """With [online] on, a request answered by version 1 before the copy is answered by
    version 2 once version 2 serves the cameras: requests do not stay on the old model."""
    from test_online import SCENES, Requester

    repo = tmp_path / "detector"
    repo.mkdir()
    add_version(repo, 1)
    text = config_text(broker, tmp_path / "state", model=model_settings(repo))
    sub = subscribe(broker)
    d = DaemonProc(tmp_path, text + "[online]\nenabled = true\n")
    daemons.append(d)
    assert sub.wait_until(lambda ms: models_entry(sub, "detector").get("serving") == "1", 60)
    assert sub.wait_until(lambda ms: "online" in (last_json(sub, "/stats") or {}), 10)
    req = Requester(broker)
    try:
        req.send("edge/faultdev/infer", SCENES[0].read_bytes(), "before")
        assert req.wait(1, 20), d.log()
        add_version(repo, 2)
        assert sub.wait_until(lambda ms: models_entry(sub, "detector").get("serving") == "2", 10)
        req.send("edge/faultdev/infer", SCENES[0].read_bytes(), "after")
        assert req.wait(2, 20), d.log()
        answers = {cid: json.loads(p[0][1]) for cid, p in req.by_cid().items()}
    finally:
        req.close()
    assert answers[b"before"]["model"] == {"name": "detector", "version": "1"}
    assert answers[b"after"]["model"] == {"name": "detector", "version": "2"}
    assert answers[b"after"]["detections"] == answers[b"before"]["detections"]
    assert d.stop() == 0
