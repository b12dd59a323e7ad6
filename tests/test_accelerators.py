"""The accelerator listing behind ``edge info``: what each probe reports on this machine, the Edge
TPU entry against a gcc-built libedgetpu stand-in and a Coral's sysfs entry, plug-in modules
(present, absent, failing), and ``edge info``'s human and JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from native.build import compile_edgetpu_stub

from edge.runtime import RuntimeOptions, edgetpu
from edge.runtime.accelerators import Accelerator, from_probe, probes

REPO = Path(__file__).resolve().parent.parent
CORE = ["ai-edge-litert", "tflite-runtime", "tensorflow", "xnnpack", "edgetpu", "onnxruntime"]
TF_2_5 = "a4dfb8d1a71385bd6d122e4f27f86dcebb96712d"
TF_2_16 = "5bc9d26649cca274750ad3625bd93422617eed4b"


def by_name(found: list[Accelerator]) -> dict[str, Accelerator]:
    return {a.name: a for a in found}


def coral_root(tmp_path: Path, vid: str = "18d1", pid: str = "9302") -> Path:
    """A root whose sys/bus/usb/devices holds one USB device with ``vid``:``pid``."""
    dev = tmp_path / "root" / "sys" / "bus" / "usb" / "devices" / "2-1"
    dev.mkdir(parents=True)
    (dev / "idVendor").write_text(vid + "\n")
    (dev / "idProduct").write_text(pid + "\n")
    return tmp_path / "root"


def test_every_probe_reports_what_this_machine_has(tmp_path: Path) -> None:
    """The runtimes, XNNPACK, the Edge TPU and ONNX Runtime are listed in that order with their
    installed versions; by default ai-edge-litert with XNNPACK would run a .tflite model, and
    the absent tflite-runtime and libedgetpu say so."""
    found = probes(root=tmp_path, plugins=())
    assert [a.name for a in found] == CORE
    a = by_name(found)
    import ai_edge_litert
    import onnxruntime

    assert a["ai-edge-litert"].found and a["ai-edge-litert"].version == ai_edge_litert.__version__
    assert a["ai-edge-litert"].would_use and not a["tensorflow"].would_use
    assert not a["tflite-runtime"].found and "not installed" in a["tflite-runtime"].problem
    assert a["xnnpack"].would_use and a["xnnpack"].detail == "built into ai-edge-litert"
    assert not a["edgetpu"].found and not a["edgetpu"].would_use
    assert a["edgetpu"].problem == "libedgetpu is not installed"
    assert a["onnxruntime"].version == onnxruntime.__version__
    assert "CPUExecutionProvider" in a["onnxruntime"].devices


def test_a_chain_without_a_coral_would_use_xnnpack(tmp_path: Path) -> None:
    """With delegates edgetpu,xnnpack and no libedgetpu, XNNPACK is what would run."""
    found = by_name(probes(RuntimeOptions(delegate="edgetpu", chain=("xnnpack",)), root=tmp_path))
    assert found["xnnpack"].would_use and not found["edgetpu"].would_use


def test_a_plugged_coral_without_libedgetpu_says_what_to_install(tmp_path: Path) -> None:
    """A Coral on USB (before its firmware is loaded, 1a6e:089a) with no libedgetpu is listed
    as a device with the package to install."""
    tpu = by_name(probes(root=coral_root(tmp_path, "1a6e", "089a"), plugins=()))["edgetpu"]
    assert tpu.devices == ("usb:0",) and not tpu.found
    assert "libedgetpu1-std" in tpu.problem


def test_the_edge_tpu_entry_reads_the_library_and_the_lockstep_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a TensorFlow 2.5 libedgetpu and ai-edge-litert, the entry has the library's
    RuntimeVersion, path and TensorFlow build, and the refusal as its problem: not usable even
    with a Coral present; a TensorFlow 2.16.1 build is usable, with the mismatch warning."""
    coral = compile_edgetpu_stub(tmp_path / "coral", "BuildLabel(N/A), RuntimeVersion(14)", TF_2_5)
    monkeypatch.setattr(edgetpu, "library_name", lambda: str(coral))
    root = coral_root(tmp_path)
    options = RuntimeOptions(delegate="edgetpu", chain=("xnnpack",))
    found = by_name(probes(options, root=root, plugins=()))
    tpu = found["edgetpu"]
    assert tpu.found and tpu.version == "RuntimeVersion 14" and tpu.devices == ("usb:0",)
    assert str(coral) in tpu.detail and "built against TensorFlow 2.5.0" in tpu.detail
    assert "crash" in tpu.problem and not tpu.would_use and found["xnnpack"].would_use
    newer = compile_edgetpu_stub(tmp_path / "new", "BuildLabel(N/A), RuntimeVersion(14)", TF_2_16)
    monkeypatch.setattr(edgetpu, "library_name", lambda: str(newer))
    found = by_name(probes(options, root=root, plugins=()))
    assert found["edgetpu"].would_use and not found["xnnpack"].would_use
    assert "tflite_runtime 2.16.1" in found["edgetpu"].problem


def test_plugins_are_listed_when_their_module_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plug-in module's probe() dict becomes an entry, a missing module is not listed, and a
    probe that raises is an entry whose problem says so (probes never raise)."""
    pkg = tmp_path / "plugs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "hailo.py").write_text(
        "def probe():\n"
        "    return {'name': 'hailo', 'found': True, 'version': '4.23.0',\n"
        "            'devices': ['0000:01:00.0'], 'problem': ''}\n"
    )
    (pkg / "imx500.py").write_text("def probe():\n    raise OSError('no /dev/v4l-subdev*')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = probes(root=tmp_path, plugins=("plugs.hailo", "plugs.imx500", "plugs.absent"))
    assert [a.name for a in found] == [*CORE, "hailo", "imx500"]
    hailo, imx500 = found[-2:]
    assert hailo == Accelerator("hailo", True, "4.23.0", ("0000:01:00.0",))
    assert not imx500.found and imx500.problem == "probe failed: OSError: no /dev/v4l-subdev*"


def test_a_probe_dict_with_missing_keys_is_read_with_defaults() -> None:
    """Only ``name`` is required of a plug-in's dict; would_use and detail are read when given."""
    assert from_probe({"name": "x"}) == Accelerator("x", False)
    full = {"name": "x", "found": True, "devices": ("a",), "would_use": True, "detail": "d"}
    assert from_probe(full) == Accelerator("x", True, "", ("a",), "", True, "d")


def test_edge_info_lists_every_accelerator_in_text_and_json() -> None:
    """``edge info`` prints a line per accelerator with its state, and ``--json`` carries the
    same entries with their fields, onnxruntime among the runtimes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "edge", "info"]
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
    lines = text.stdout.splitlines()
    for name in CORE:
        assert any(line.split()[:1] == [name] for line in lines), name
    assert any(line.split()[:2] == ["ai-edge-litert", "used"] for line in lines)
    assert any(line.split()[:2] == ["edgetpu", "missing"] for line in lines)
    proc = subprocess.run(
        [*cmd, "--json"], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    info = json.loads(proc.stdout)
    assert [a["name"] for a in info["accelerators"]][: len(CORE)] == CORE
    assert set(info["accelerators"][0]) == {
        "name",
        "found",
        "version",
        "devices",
        "problem",
        "would_use",
        "detail",
    }
    assert "onnxruntime" in info["runtimes"] and info["runtime"] == "ai-edge-litert"


def test_a_failing_core_probe_is_an_entry_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When reading the devices raises, the Edge TPU entry says so and the others still come."""

    def unreadable(root: Path) -> list[str]:
        raise PermissionError(13, "Permission denied", str(root / "sys"))

    monkeypatch.setattr(edgetpu, "present_devices", unreadable)
    found = by_name(probes(root=tmp_path, plugins=()))
    assert not found["edgetpu"].found
    assert found["edgetpu"].problem.startswith("probe failed: PermissionError")
    assert found["xnnpack"].would_use and found["onnxruntime"].found
