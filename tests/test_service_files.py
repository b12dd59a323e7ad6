"""Tests for the systemd unit, scripts/check_unit.sh and scripts/install.sh (staged with DESTDIR).

They need ``systemd-analyze`` (Debian package ``systemd``; no running systemd). The install tests
build a real venv from a copy of this checkout, so pip needs to reach an index for the build
backend (setuptools). To stay fast they install with ``--no-deps`` and lend the venv the test
environment's own site-packages (numpy, paho, ...) through PYTHONPATH, which installed
dependencies would otherwise provide.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge.service"
CHECK = REPO / "scripts" / "check_unit.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="needs systemd-analyze (apt-get install systemd)",
)


def unit_settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; repeated keys stay separate."""
    out = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(path: Path, key: str) -> list[str]:
    return [v for _, k, v in unit_settings(path) if k == key]


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def exposure(output: str) -> float:
    m = re.search(r"Overall exposure level for edge\.service: (\d+\.\d+)", output)
    assert m, output
    return float(m.group(1))


def verify_lines(output: str) -> list[str]:
    """Lines check_unit.sh printed after its verify header."""
    return output.split("== systemd-analyze verify", 1)[1].splitlines()[1:]


def can_unshare_mounts() -> bool:
    args = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        args.append("--map-root-user")
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*args, "true"], capture_output=True, check=False).returncode == 0


def test_unit_passes_the_gate_with_exposure_at_most_2() -> None:
    """check_unit.sh passes for the shipped unit: exposure <= 2.0 and nothing but the expected
    missing-venv line from verify."""
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    score = exposure(result.stdout)
    assert score <= 2.0
    lines = verify_lines(result.stdout)
    assert lines[-1] == "verify: clean apart from tolerated lines"
    for line in lines[:-1]:
        assert line.startswith("tolerated (not installed on this machine): edge.service: Command ")
        assert "/opt/edge/venv/bin/edge" in line


def stage_unit(root: Path, text: str) -> None:
    path = root / "etc" / "systemd" / "system" / "edge.service"
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_gate_fails_on_a_verify_warning(tmp_path: Path) -> None:
    """A misspelt key fails the gate although systemd-analyze verify itself exits 0."""
    stage_unit(tmp_path, UNIT.read_text().replace("TasksMax=64", "TasksMax=64\nTaskMax=64"))
    result = run_check("--root", tmp_path)
    assert result.returncode != 0
    assert "Unknown key 'TaskMax'" in result.stdout
    assert "verify reported problems" in result.stderr


def test_gate_fails_above_exposure_2(tmp_path: Path) -> None:
    """Dropping the system call filter and the file system protection pushes the score over 2.0
    and fails the gate."""
    weakened = [
        ln
        for ln in UNIT.read_text().splitlines()
        if not ln.startswith(("SystemCallFilter=", "ProtectSystem=", "ProtectHome="))
    ]
    stage_unit(tmp_path, "\n".join(weakened) + "\n")
    result = run_check("--root", tmp_path)
    assert result.returncode != 0
    assert exposure(result.stdout) > 2.0
    assert "exposure above 2.0" in result.stderr


def test_unit_keeps_the_settings_camera_coral_and_restarts_depend_on() -> None:
    """The unit allows the camera and Coral device classes, keeps netlink, and never uses the
    settings known to break them; exit 78 does not restart."""
    settings = {k: v for _, k, v in unit_settings(UNIT)}
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["ExecStart"] == "/opt/edge/venv/bin/edge run --config /etc/edge/config.toml"
    assert settings["RestartPreventExitStatus"] == "78"
    assert settings["Restart"] == "on-failure"
    assert settings["DevicePolicy"] == "closed"
    assert sorted(values(UNIT, "DeviceAllow")) == sorted(
        f"char-{c} rw" for c in ("video4linux", "media", "dma_heap", "usb_device")
    )
    assert settings["SupplementaryGroups"].split() == ["video", "plugdev"]
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"].split()
    assert settings["StateDirectory"] == "edge"
    assert "PYTHONUNBUFFERED=1" in values(UNIT, "Environment")
    assert "EDGE_MODEL_PATH=/opt/edge/models" in values(UNIT, "Environment")
    for forbidden in ("PrivateDevices", "PrivateNetwork", "ProcSubset", "PrivateUsers"):
        assert forbidden not in settings, forbidden
    # No hard-coded broker address: the broker may be remote.
    assert "IPAddressAllow" not in settings
    assert "IPAddressDeny" not in settings
    # A single missing credential file would fail the start on systemd 252.
    assert values(UNIT, "LoadCredential") == ["secrets:/etc/edge/secrets"]
    # The watchdog must outlast a camera's stall timeout plus its first in-process reopens.
    assert settings["WatchdogSec"] == "30s"


MDWE_CHILD = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("unsupported")
    sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a writable+executable mapping was allowed: MDWE is not in force")
except OSError:
    pass
import ssl, sqlite3
import numpy as np, cv2
import paho.mqtt.client
from ai_edge_litert.interpreter import Interpreter
ssl.create_default_context()
cv2.resize(np.zeros((480, 640, 3), np.uint8), (300, 300), interpolation=cv2.INTER_LINEAR)
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert callback(1) == 2
for path in sys.argv[1:]:
    it = Interpreter(model_path=path, num_threads=2)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
print("ok", len(sys.argv) - 1)
"""


def test_python_stack_runs_without_writable_executable_memory() -> None:
    """What MemoryDenyWriteExecute=yes forbids (the kernel's PR_SET_MDWE enforces the same rule)
    breaks none of ssl, numpy, OpenCV, paho, ctypes callbacks or LiteRT with XNNPACK running
    the bundled models."""
    models = sorted(str(p) for p in (REPO / "models").glob("*/*.tflite"))[:3]
    out = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD, *models],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if out.stdout.strip() == "unsupported":
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ok {len(models)}"


# --- install.sh ---------------------------------------------------------------------------


@dataclass
class Staged:
    checkout: Path
    stage: Path
    first: subprocess.CompletedProcess[str]


def make_checkout(dest: Path) -> None:
    """A copy of this checkout with a small model and sample of its own."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    for name in ("edge", "scripts", "systemd"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    model = dest / "models" / "shapes-detector"
    model.mkdir(parents=True)
    (model / "model.tflite").write_bytes(bytes(range(256)) * 4)
    (model / "labels.txt").write_text("circle\nsquare\n")
    (dest / "models" / "old-model").mkdir()
    (dest / "models" / "old-model" / "model.tflite").write_bytes(b"old")
    (dest / "samples").mkdir()
    (dest / "samples" / "note.txt").write_text("sample\n")


def project_version(checkout: Path) -> str:
    with (checkout / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


# The dependencies --no-deps leaves out, from the environment running the tests.
DEPS_ENV = {"PYTHONPATH": sysconfig.get_path("purelib")}


def install(checkout: Path, stage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **DEPS_ENV, "DESTDIR": str(stage), "PYTHON": sys.executable}
    env.pop("EDGE_PIP_ARGS", None)
    return subprocess.run(
        [str(checkout / "scripts" / "install.sh"), "--no-enable", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    base = tmp_path_factory.mktemp("install")
    checkout = base / "checkout"
    checkout.mkdir()
    make_checkout(checkout)
    stage = base / "stage"
    first = install(checkout, stage, "--pip-args", "--no-deps --quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    yield Staged(checkout, stage, first)


@pytest.mark.slow
def test_install_stages_the_unit_config_and_secrets(staged: Staged) -> None:
    """The staged tree holds the unit as shipped, the example config (0640) and a 0700 secrets
    directory."""
    s = staged.stage
    assert (s / "etc/systemd/system/edge.service").read_text() == UNIT.read_text()
    config = s / "etc/edge/config.toml"
    assert config.read_text() == (REPO / "systemd/config.example.toml").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE((s / "etc/edge/secrets").stat().st_mode) == 0o700
    assert os.readlink(s / "usr/local/bin/edge") == "/opt/edge/venv/bin/edge"


@pytest.mark.slow
def test_install_copies_models_and_samples(staged: Staged) -> None:
    """Models and samples from the checkout land under the prefix byte for byte."""
    for rel in (
        "models/shapes-detector/model.tflite",
        "models/shapes-detector/labels.txt",
        "samples/note.txt",
    ):
        src, dst = staged.checkout / rel, staged.stage / "opt/edge" / rel
        assert dst.read_bytes() == src.read_bytes(), rel


@pytest.mark.slow
def test_staged_venv_runs_and_points_at_the_final_prefix(staged: Staged) -> None:
    """The venv runs edge in place, and its scripts refer to /opt/edge, not the staging dir."""
    venv = staged.stage / "opt/edge/venv"
    # -P: "-m edge" from the checkout's root would import the checkout instead.
    out = subprocess.run(
        [str(venv / "bin/python"), "-P", "-m", "edge", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=staged.checkout,
        env={**os.environ, **DEPS_ENV},
    )
    assert out.stdout == f"edge {project_version(staged.checkout)}\n"
    where = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", "import edge; print(edge.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=staged.checkout,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv / "lib")
    assert (venv / "bin/edge").read_text().splitlines()[0] == "#!/opt/edge/venv/bin/python"
    for path in (venv / "bin").iterdir():
        if path.is_file() and not path.is_symlink():
            assert str(staged.stage).encode() not in path.read_bytes(), path
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()


@pytest.mark.slow
def test_install_changes_nothing_outside_destdir(staged: Staged) -> None:
    """With DESTDIR the user, ownership and systemctl steps are only printed, never run."""
    out = staged.first.stdout
    assert "would run: systemctl daemon-reload" in out
    assert "would run (if user edge is missing): useradd --system --gid edge" in out
    assert "would run: chown root:edge /etc/edge/config.toml" in out
    assert "would run: systemctl enable" not in out  # --no-enable
    assert not re.search(r"^    \+ ", out, re.MULTILINE), "a system command was executed"


@pytest.mark.slow
def test_staged_tree_passes_the_gate_with_verify_silent(staged: Staged) -> None:
    """check_unit.sh --root on the staged tree: exposure <= 2.0, and verify finds the real
    entry point (silent) when a mount namespace is available."""
    result = run_check("--root", staged.stage)
    assert result.returncode == 0, result.stdout + result.stderr
    assert exposure(result.stdout) <= 2.0
    if can_unshare_mounts():
        assert verify_lines(result.stdout) == ["verify: clean (staged tree mounted at /opt)"]


@pytest.mark.slow
def test_gate_falls_back_when_mount_namespaces_are_refused(staged: Staged, tmp_path: Path) -> None:
    """Where unshare is not permitted (unprivileged CI), --root still checks the unit and says it
    tolerated the missing entry point instead of failing."""
    fake = tmp_path / "bin" / "unshare"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(CHECK), "--root", str(staged.stage)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = verify_lines(result.stdout)
    assert lines[0].startswith("(no mount namespace here")
    assert lines[-1] == "verify: clean apart from tolerated lines"


@pytest.mark.slow
def test_staged_venv_runs_from_its_final_path(staged: Staged) -> None:
    """Mounted at /opt, the staged entry point script runs as the unit's ExecStart would."""
    if not can_unshare_mounts():
        pytest.skip("no mount namespace available to place the staged tree at /opt")
    args = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        args.append("--map-root-user")
    script = 'mount --bind "$1/opt" /opt && exec /opt/edge/venv/bin/edge --version'
    out = subprocess.run(
        [*args, "sh", "-c", script, "sh", str(staged.stage)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **DEPS_ENV},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("edge ")
    assert out.stdout == f"edge {project_version(staged.checkout)}\n"


@pytest.mark.slow
def test_second_run_keeps_config_and_restores_permissions(staged: Staged) -> None:
    """Re-running keeps an edited config, puts the secrets directory back to 0700, and replaces
    the models so ones removed from the checkout disappear."""
    config = staged.stage / "etc/edge/config.toml"
    config.write_text(config.read_text() + "# edited on site\n")
    edited = config.read_text()
    (staged.stage / "etc/edge/secrets").chmod(0o755)
    shutil.rmtree(staged.checkout / "models" / "old-model")
    assert (staged.stage / "opt/edge/models/old-model").exists()

    second = install(staged.checkout, staged.stage, "--pip-args", "--no-deps --quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "exists: kept as it is" in second.stdout
    assert config.read_text() == edited
    assert stat.S_IMODE((staged.stage / "etc/edge/secrets").stat().st_mode) == 0o700
    assert not (staged.stage / "opt/edge/models/old-model").exists()
    assert (staged.stage / "opt/edge/models/shapes-detector/model.tflite").exists()
    venv = staged.stage / "opt/edge/venv"
    assert (venv / "bin/edge").read_text().splitlines()[0] == "#!/opt/edge/venv/bin/python"


@pytest.mark.slow
def test_prefix_moves_venv_models_and_unit_paths(tmp_path: Path, staged: Staged) -> None:
    """--prefix puts the venv and models there and rewrites ExecStart and EDGE_MODEL_PATH."""
    stage = tmp_path / "stage"
    result = install(
        staged.checkout, stage, "--prefix", "/opt/edge-alt", "--pip-args", "--no-deps -q"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    unit = stage / "etc/systemd/system/edge.service"
    settings = {k: v for _, k, v in unit_settings(unit)}
    assert settings["ExecStart"] == "/opt/edge-alt/venv/bin/edge run --config /etc/edge/config.toml"
    assert "EDGE_MODEL_PATH=/opt/edge-alt/models" in values(unit, "Environment")
    assert (stage / "opt/edge-alt/models/shapes-detector/model.tflite").is_file()
    assert not (stage / "opt/edge").exists()
    assert os.readlink(stage / "usr/local/bin/edge") == "/opt/edge-alt/venv/bin/edge"
    check = run_check("--root", stage)
    assert check.returncode == 0, check.stdout + check.stderr
    if can_unshare_mounts():
        assert verify_lines(check.stdout) == ["verify: clean (staged tree mounted at /opt)"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--prefix", "opt/edge"], {}, "--prefix must be an absolute path"),
        (["--prefix", "/opt/my edge"], {}, "--prefix must be an absolute path"),
        (["--frobnicate"], {}, "unknown argument: --frobnicate"),
        ([], {"DESTDIR": "/"}, "DESTDIR=/ would install into this system"),
    ],
)
def test_install_rejects_bad_arguments_before_changing_anything(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """Bad options fail fast with a message saying what to fix, and create nothing."""
    env = {"DESTDIR": str(tmp_path / "stage"), "PATH": os.environ["PATH"], **env}
    result = subprocess.run(
        [str(REPO / "scripts/install.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "stage").exists()


def test_install_without_destdir_needs_root(tmp_path: Path) -> None:
    """As a normal user without DESTDIR the installer refuses with a clear message."""
    checkout = Path(tempfile.mkdtemp(prefix="edge-install-"))
    try:
        for name in ("pyproject.toml", "scripts", "systemd"):
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, checkout / name)
        for path in [checkout, *checkout.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else 0o644)
        (checkout / "scripts/install.sh").chmod(0o755)
        cmd = [str(checkout / "scripts/install.sh"), "--no-enable"]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root and setpriv is not available to drop privileges")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
            timeout=30,
            check=False,
        )
    finally:
        shutil.rmtree(checkout)
    assert result.returncode == 1, result.stderr
    assert "installing into the system needs root" in result.stderr
    assert "DESTDIR" in result.stderr
