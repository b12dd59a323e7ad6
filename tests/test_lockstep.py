"""The libedgetpu / TFLite runtime lock-step check, against native stand-ins for libedgetpu built
with gcc at test time (tests/native/edgetpu_version.c): reading the library's version and its
TensorFlow build, the verdicts, and the check at start in a real ``edge infer``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from native.build import compile_edgetpu_stub

from edge.runtime import libedgetpu, lockstep

REPO = Path(__file__).resolve().parent.parent
CORAL_LABEL = "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)"
TF_2_5 = "a4dfb8d1a71385bd6d122e4f27f86dcebb96712d"
TF_2_16 = "5bc9d26649cca274750ad3625bd93422617eed4b"
IMAGE = REPO / "tests" / "data" / "shapes" / "scene_0.jpg"


def dpkg_admin(root: Path, package: str, version: str, owns: Path) -> Path:
    """A dpkg admin directory in which ``package`` ``version`` is installed and lists ``owns``."""
    admin = root / "dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "status").write_text(
        "Package: libusb-1.0-0\nStatus: install ok installed\nVersion: 2:1.0.26-1\n\n"
        f"Package: {package}\nStatus: install ok installed\nArchitecture: arm64\n"
        f"Version: {version}\nDescription: Support library for Edge TPU\n"
    )
    (admin / "info" / f"{package}:arm64.list").write_text(f"/.\n/usr\n{owns}\n")
    return admin


def test_the_version_and_an_embedded_tensorflow_commit_are_read(tmp_path: Path) -> None:
    """edgetpu_version()'s string, its RuntimeVersion, the resolved file and the TensorFlow
    release of the embedded TENSORFLOW_COMMIT label come back."""
    stub = compile_edgetpu_stub(tmp_path / "coral", CORAL_LABEL, TF_2_5)
    lib = libedgetpu.read(str(stub), tmp_path / "no-dpkg")
    assert lib.found and lib.version == CORAL_LABEL and lib.runtime_version == 14
    assert Path(lib.path).resolve() == stub.resolve()
    assert (lib.tensorflow, lib.commit) == ("2.5.0", TF_2_5)
    assert "TENSORFLOW_COMMIT a4dfb8d" in lib.tensorflow_from and not lib.problem


def test_the_tensorflow_version_comes_from_the_owning_package(tmp_path: Path) -> None:
    """Without an embedded label, a feranick package version (16.0tf2.17.1-1) names the
    TensorFlow build, and Coral's 16.0 package means TensorFlow 2.5; a package that does not
    list the file says nothing."""
    stub = compile_edgetpu_stub(tmp_path / "lib", "BuildLabel(N/A), RuntimeVersion(14)")
    feranick = dpkg_admin(tmp_path / "a", "libedgetpu1-std", "16.0tf2.17.1-1", stub)
    lib = libedgetpu.read(str(stub), feranick)
    assert (lib.package, lib.tensorflow) == ("libedgetpu1-std 16.0tf2.17.1-1", "2.17.1")
    coral = dpkg_admin(tmp_path / "b", "libedgetpu1-max", "16.0", stub)
    assert libedgetpu.read(str(stub), coral).tensorflow == "2.5.0"
    other = dpkg_admin(tmp_path / "c", "libedgetpu1-std", "16.0", tmp_path / "elsewhere.so")
    unknown = libedgetpu.read(str(stub), other)
    assert (unknown.package, unknown.tensorflow) == ("", "")
    assert "cannot tell which TensorFlow" in unknown.problem


def test_an_unknown_embedded_commit_is_named_in_the_problem(tmp_path: Path) -> None:
    """A TENSORFLOW_COMMIT that is no known release leaves the TensorFlow version unknown and
    the problem names the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    stub = compile_edgetpu_stub(tmp_path / "lib", "BuildLabel(N/A), RuntimeVersion(14)", commit)
    lib = libedgetpu.read(str(stub), tmp_path / "no-dpkg")
    assert (lib.commit, lib.tensorflow) == (commit, "")
    assert f"TENSORFLOW_COMMIT {commit} is not a release edge knows" in lib.problem


def test_missing_and_foreign_libraries_are_reported_not_raised(tmp_path: Path) -> None:
    """A library that does not load is not found; one without edgetpu_version() is found with a
    problem saying it is not an Edge TPU runtime."""
    missing = libedgetpu.read(str(tmp_path / "libedgetpu.so.1"))
    assert not missing.found and "does not load" in missing.problem
    foreign = libedgetpu.read("libm.so.6")
    assert foreign.found and not foreign.version and "not an Edge TPU runtime" in foreign.problem


@pytest.mark.parametrize(
    ("tensorflow", "runtime", "version", "level"),
    [
        ("2.5.0", "ai-edge-litert", "2.3.0", "refuse"),
        ("2.5.0", "tflite-runtime", "2.14.0", "refuse"),
        ("2.5.0", "tensorflow", "2.12.0", "refuse"),
        ("2.5.0", "tflite-runtime", "2.11.1", "warn"),
        ("2.5.0", "tflite-runtime", "2.5.0.post1", "ok"),
        ("2.16.1", "tflite-runtime", "2.16.1", "ok"),
        ("2.16.1", "tflite-runtime", "2.14.0", "warn"),
        ("2.17.1", "ai-edge-litert", "2.3.0", "warn"),
        ("", "tflite-runtime", "2.14.0", "unknown"),
    ],
)
def test_verdicts(tensorflow: str, runtime: str, version: str, level: str) -> None:
    """Coral's TensorFlow 2.5 libedgetpu is refused with TFLite after 2.11 (#812); other
    mismatches warn, matched minor versions pass, an unknown build is unknown."""
    lib = libedgetpu.EdgeTpuLibrary(True, "/lib/libedgetpu.so.1", CORAL_LABEL, 14, "", tensorflow)
    verdict = lockstep.check(lib, runtime, version)
    assert verdict.level == level
    if level in ("refuse", "warn"):
        assert f"TensorFlow {tensorflow}" in verdict.message
        assert f"{runtime} {version}" in verdict.message


def test_a_refusal_names_both_versions_and_what_to_install() -> None:
    """The refusal says which TensorFlow libedgetpu was built for, the runtime in use, and the
    two ways out: a matched feranick pair, or tflite-runtime 2.5.0.post1."""
    lib = libedgetpu.EdgeTpuLibrary(True, "/x/libedgetpu.so.1", CORAL_LABEL, 14, "", "2.5.0", "p")
    message = lockstep.check(lib, "ai-edge-litert", "2.3.0").message
    assert "built against TensorFlow 2.5.0" in message and "ai-edge-litert 2.3.0" in message
    assert "feranick/libedgetpu" in message and "tflite_runtime" in message
    assert 'runtime = "tflite-runtime"' in message and "tflite-runtime 2.5.0.post1" in message


def infer(libdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge infer`` with the dynamic linker finding libedgetpu.so.1 in ``libdir`` first."""
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(libdir),
        "EDGE_RUNTIME": "ai-edge-litert",
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-m", "edge", "infer", "shapes-classifier", str(IMAGE), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_crashing_pair_is_refused_at_start_with_exit_78(tmp_path: Path) -> None:
    """With Coral's TensorFlow 2.5 libedgetpu on the linker path, --delegate edgetpu on
    ai-edge-litert exits 78 naming both versions before the delegate is loaded; with
    --fallback cpu, or a chain edgetpu,xnnpack, the model runs on the CPU and the log says why."""
    libdir = compile_edgetpu_stub(tmp_path / "lib", CORAL_LABEL, TF_2_5).parent
    refused = infer(libdir, "--delegate", "edgetpu")
    assert refused.returncode == 78, refused.stderr
    assert "built against TensorFlow 2.5.0" in refused.stderr
    assert "ai-edge-litert 2.3.0" in refused.stderr and "feranick" in refused.stderr
    assert refused.stdout == ""
    fallback = infer(libdir, "--delegate", "edgetpu", "--fallback", "cpu")
    assert fallback.returncode == 0, fallback.stderr
    assert '"classes"' in fallback.stdout
    assert "Edge TPU unavailable" in fallback.stderr and "TensorFlow 2.5.0" in fallback.stderr
    chain = infer(libdir, "--delegate", "edgetpu,xnnpack")
    assert chain.returncode == 0, chain.stderr
    assert '"classes"' in chain.stdout and "TensorFlow 2.5.0" in chain.stderr


def test_a_mismatch_not_known_to_crash_is_a_warning(tmp_path: Path) -> None:
    """A libedgetpu built against TensorFlow 2.16.1 with ai-edge-litert is a warning naming the
    matched runtime, and loading goes on (and fails here: the stand-in is no delegate)."""
    stub = compile_edgetpu_stub(tmp_path / "lib", "BuildLabel(N/A), RuntimeVersion(14)", TF_2_16)
    proc = infer(stub.parent, "--delegate", "edgetpu")
    assert proc.returncode == 78
    assert "WARNING" in proc.stderr and "TensorFlow 2.16.1" in proc.stderr
    assert "tflite_runtime 2.16.1" in proc.stderr
    assert "no Edge TPU could be used" in proc.stderr and "Exception ignored" not in proc.stderr


@pytest.mark.parametrize("command", [["check-config"], ["run", "--config"]])
def test_check_config_refuses_the_pair_as_edge_run_does(tmp_path: Path, command: list[str]) -> None:
    """A configuration with delegate = "edgetpu" and Coral's TensorFlow 2.5 libedgetpu is exit
    78 with the lock-step message from `edge check-config` as from `edge run`."""
    libdir = compile_edgetpu_stub(tmp_path / "lib", CORAL_LABEL, TF_2_5).parent
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'device = "pi"\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[model]\npath = "shapes-classifier"\ndelegate = "edgetpu"\n\n'
        '[mqtt]\nhost = "localhost"\n\n[[cameras]]\nsource = "synthetic"\nname = "cam"\n'
    )
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(libdir),
        "EDGE_RUNTIME": "ai-edge-litert",
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-m", "edge", *command, str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 78, proc.stderr
    assert "built against TensorFlow 2.5.0" in proc.stderr and "ai-edge-litert" in proc.stderr
