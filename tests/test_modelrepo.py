"""Model repositories without a daemon: what counts as one, the checks that need no runtime
(truncation, sha256), the highest valid version for one-shot commands, the watcher's waiting
for a version's files to stop changing, the child-process verification, and `edge models`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edge.cli import main
from edge.engine import Overrides
from edge.errors import EX_CONFIG, ModelError
from edge.modelrepo import probe
from edge.modelrepo.scan import is_repository, newest_spec, problem, version_dirs
from edge.modelrepo.watch import RepositoryWatcher, choose, open_model
from edge.models import load_spec
from edge.runtime import RuntimeOptions

MODELS = Path(__file__).resolve().parent.parent / "models"
DETECTOR = MODELS / "shapes-detector"


def add(repo: Path, number: int, source: Path = DETECTOR, sha256: str | None = None) -> Path:
    d = repo / str(number)
    shutil.copytree(source, d)
    if sha256 is not None:
        manifest = json.loads((d / "manifest.json").read_text())
        manifest["sha256"] = sha256
        (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def truncate(d: Path, size: int = 30_000) -> None:
    model = d / "model.tflite"
    model.write_bytes(model.read_bytes()[:size])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_repository_is_a_folder_of_numbered_model_directories(tmp_path: Path) -> None:
    """Only digit-named sub-directories are versions; a model directory is not a repository."""
    repo = tmp_path / "det"
    add(repo, 1)
    add(repo, 10)
    (repo / "notes").mkdir()
    (repo / "2.tmp").mkdir()
    assert sorted(version_dirs(repo)) == [1, 10]
    assert is_repository(repo)
    assert not is_repository(DETECTOR)
    assert not is_repository(tmp_path / "missing")


def test_checks_without_a_runtime_catch_truncation_and_a_wrong_checksum(tmp_path: Path) -> None:
    """A cut-short model file, a sha256 that does not match and a malformed sha256 are each
    named; a matching sha256 passes."""
    repo = tmp_path / "det"
    good = add(repo, 1, sha256=digest(DETECTOR / "model.tflite"))
    assert problem(good) is None
    cut = add(repo, 2)
    truncate(cut)
    assert "truncated or corrupt" in (problem(cut) or "")
    wrong = add(repo, 3, sha256="0" * 64)
    assert "does not match the sha256" in (problem(wrong) or "")
    bad = add(repo, 4, sha256="abc")
    assert "sha256 must be 64 hex digits" in (problem(bad) or "")


def test_one_shot_commands_get_the_highest_valid_version_named_after_the_folder(
    tmp_path: Path,
) -> None:
    """load_spec on a repository skips a truncated version 3 and gives version 2, named after
    the repository; with nothing valid it lists each version's reason."""
    repo = tmp_path / "detector"
    add(repo, 1)
    add(repo, 2)
    truncate(add(repo, 3))
    spec = load_spec(repo)
    assert (spec.name, spec.version, spec.path) == ("detector", "2", repo / "2" / "model.tflite")
    assert newest_spec(repo, pinned=1).version == "1"
    truncate(repo / "2")
    truncate(repo / "1")
    with pytest.raises(ModelError, match=r"version 3: .*truncated.*version 2: .*version 1: "):
        newest_spec(repo)


def test_verification_child_reports_a_model_error_and_passes_a_good_version(
    tmp_path: Path,
) -> None:
    """The child loads and runs a good version (None) and sends back a model error's message
    for a version whose task does not fit its outputs."""
    repo = tmp_path / "det"
    good = add(repo, 1)
    assert probe.verify(good, RuntimeOptions(threads=1), Overrides()) is None
    why = probe.verify(good, RuntimeOptions(threads=1), Overrides(task="segmentation"))
    assert why is not None and "does not fit the model's outputs" in why, why


def test_watcher_waits_until_a_version_stops_changing(tmp_path: Path) -> None:
    """A version whose model file still grows between two polls stays waiting; once unchanged
    across two polls it is verified, loaded and made ready."""
    repo = tmp_path / "det"
    add(repo, 1)
    options, overrides = RuntimeOptions(threads=1), Overrides()
    engine, followed = open_model(str(repo), options, overrides)
    assert followed is not None and followed.serving == 1
    watcher = RepositoryWatcher(0.5)
    watcher.configure({str(repo): followed}, options, overrides, 0.5)
    full = (DETECTOR / "model.tflite").read_bytes()
    d = repo / "2"
    d.mkdir()
    shutil.copy(DETECTOR / "manifest.json", d)
    shutil.copy(DETECTOR / "labels.txt", d)
    (d / "model.tflite").write_bytes(full[:20_000])
    watcher.poll(followed)
    (d / "model.tflite").write_bytes(full[:60_000])  # the copy goes on
    watcher.poll(followed)
    assert [(s.number, s.state) for s in followed.status()] == [(1, "serving"), (2, "waiting")]
    (d / "model.tflite").write_bytes(full)
    watcher.poll(followed)
    assert followed.status()[1].state == "waiting"
    watcher.poll(followed)  # unchanged since the last poll: checked and loaded
    (ready,) = watcher.take_ready()
    assert (ready.number, ready.engine.spec.version, ready.engine.name) == (2, "2", "det")
    assert followed.status()[1].state == "loading"
    ready.engine.close()
    engine.close()


def test_a_version_with_another_input_fails_instead_of_swapping(tmp_path: Path) -> None:
    """A classifier with another input size copied over a detector is failed with the reason:
    the running cameras preprocess for the serving version's input."""
    repo = tmp_path / "det"
    add(repo, 1)
    options, overrides = RuntimeOptions(threads=1), Overrides()
    engine, followed = open_model(str(repo), options, overrides)
    assert followed is not None
    watcher = RepositoryWatcher(0.5)
    watcher.configure({str(repo): followed}, options, overrides, 0.5)
    add(repo, 2, MODELS / "shapes-classifier")
    watcher.poll(followed)
    watcher.poll(followed)
    assert watcher.take_ready() == []
    status = followed.status()[1]
    assert status.state == "failed" and "differs from version 1's" in status.reason, status
    assert any("version 2 failed, version 1 keeps serving" in x for x in followed.degraded())
    engine.close()


def test_edge_models_lists_each_version_and_its_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge models` shows which version would serve and why another failed, in text and
    JSON, and is exit 78 when nothing would serve."""
    repo = tmp_path / "det"
    add(repo, 1)
    truncate(add(repo, 2))
    assert main(["models", str(repo), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"det ({repo}): serving 1", out
    assert "   1  serving" in out and "   2  failed     " in out and "truncated" in out, out
    assert main(["models", str(repo), "--json", "--threads", "1"]) == 0
    entry = json.loads(capsys.readouterr().out)["det"]
    assert entry["serving"] == "1" and entry["versions"][1]["state"] == "failed", entry
    assert main(["models", str(repo), "--version", "2"]) == EX_CONFIG
    captured = capsys.readouterr()
    assert "pinned to version 2): serving nothing" in captured.out
    assert "no version that can be served (version 2: " in captured.err
    engine, _, failed = choose(str(repo), RuntimeOptions(threads=1), Overrides(), 2)
    assert engine is None and [f.number for f in failed] == [2]


def test_models_topic_lists_a_repository_and_a_plain_model(tmp_path: Path) -> None:
    """The models payload of a pipeline with a repository and a bundled model: the
    repository's serving version and states, the bundled model's path and manifest version."""
    from edge.config.loading import validate
    from edge.modelrepo.serving import Serving
    from edge.modelrepo.watch import Repository
    from edge.pipeline import Pipeline

    repo = tmp_path / "det"
    add(repo, 1)
    truncate(add(repo, 2))
    cameras = [
        {"name": "a", "source": "synthetic"},
        {"name": "b", "source": "synthetic", "model": "shapes-classifier"},
    ]
    config = validate(
        {"device": "d", "model": {"path": str(repo), "threads": 1}, "cameras": cameras}
    )
    options, post = RuntimeOptions(threads=1), Overrides()
    serving = Serving(1.0)
    repos: dict[str, Repository] = {}
    pipeline = Pipeline(
        config, [], engine_loader=lambda ref: serving.load(ref, options, post, None, None, repos)
    )
    serving.follow(repos, options, post, 1.0)
    try:
        models = serving.payload(pipeline, "boot")["models"]
    finally:
        serving.close()
        for e in pipeline.engines.values():
            e.close()
    assert models["det"]["repository"] == str(repo) and models["det"]["serving"] == "1"
    assert [v["state"] for v in models["det"]["versions"]] == ["serving", "failed"]
    assert models["shapes-classifier"] == {
        "repository": None,
        "path": "shapes-classifier",
        "serving": "1.0.0",
        "versions": [],
    }


def test_edge_infer_on_a_repository_names_the_version_it_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge infer REPOSITORY IMAGE` runs the highest valid version and says which."""
    repo = tmp_path / "det"
    add(repo, 1)
    add(repo, 2)
    image = Path(__file__).parent / "data" / "shapes" / "scene_0.jpg"
    assert main(["infer", str(repo), str(image), "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == {"name": "det", "version": "2"}
    assert result["detections"], result


def test_pinning_a_version_that_is_not_there_or_a_plain_model_is_refused(
    tmp_path: Path,
) -> None:
    """A pinned version missing from the repository, and a pin on a model that is not a
    repository, are ModelErrors saying what to change."""
    repo = tmp_path / "det"
    add(repo, 1)
    options = RuntimeOptions(threads=1)
    with pytest.raises(ModelError, match=r"pinned version 4 is not there \(versions present: 1\)"):
        open_model(str(repo), options, Overrides(), pinned=4)
    with pytest.raises(ModelError, match="is not a repository of numbered versions"):
        open_model(str(DETECTOR), options, Overrides(), pinned=1)


def test_swap_mid_run_loses_no_frame_and_switches_the_version_at_one_frame(
    tmp_path: Path,
) -> None:
    """Pipeline.swap on a lossless file camera while it runs: every frame gets exactly one
    result, seq 1..n, the results before the swap name the old version and every one after it
    the new one, and the replaced engine is handed back."""
    from dataclasses import replace

    import cv2
    from broker import wait_for
    from fakes.engine import controlled
    from fakes.sink import Recorder

    from edge.config import CameraSettings, Config
    from edge.engine import Engine
    from edge.pipeline import Pipeline
    from edge.scene import MovingScene

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [MovingScene(320, 240, count=3, seed=s).frame(0.0)[0] for s in range(12)]
    for i, image in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    cam = CameraSettings(source=f"{folder}/", name="a", realtime=False)
    old = controlled(delay_s=0.05)  # a slow model, so that the swap lands mid-run
    new = Engine.load(replace(load_spec(DETECTOR), version="2"), RuntimeOptions(threads=1))
    rec = Recorder()
    p = Pipeline(Config(device="d", cameras=(cam,)), [rec], engine_loader=lambda ref: old)
    try:
        p.start()
        assert wait_for(lambda: len(rec.of("a")) >= 3, 10)
        assert p.swap("shapes-detector", new) is old
        assert wait_for(p.finished, 15), p.stats()
    finally:
        p.stop()
        old.close()
        new.close()
    got = rec.of("a")
    assert [e.seq for e in got] == list(range(1, 13))
    assert [e.frame.index for e in got] == list(range(12))
    versions = [e.result.model_version for e in got]
    k = versions.index("2")
    assert 3 <= k < 12 and versions == ["1.1.0"] * k + ["2"] * (12 - k), versions
    assert p.cameras["a"].counters["dropped"] == 0
    assert p.stats()["models"]["shapes-detector"]["version"] == "2"
