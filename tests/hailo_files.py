"""Model directories for the Hailo backend's tests: a stand-in HEF (see
fakes/hailo_platform/pyhailort/_device.py) wrapping the bundled shapes detector, with the
bundled labels and a manifest that preprocesses as the TFLite model's does (the
normalization is the HEF's, so none is given)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from fakes.hailo_platform.pyhailort._device import write

REPO = Path(__file__).resolve().parent.parent
DETECTOR = REPO / "models" / "shapes-detector"
FAKES = REPO / "tests" / "fakes"
KNOBS = ("HAILO_FAKE_ARCH", "HAILO_FAKE_DRIVER", "HAILO_FAKE_FIRMWARE", "HAILO_FAKE_DEVICES")


def fake_env(**knobs: str) -> dict[str, str]:
    """The environment for an edge subprocess that imports the fake hailo_platform with
    these knobs (the others at their defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    env["PYTHONPATH"] = os.pathsep.join([str(FAKES), str(REPO)])
    return {**env, **knobs}


def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the edge CLI (by default with the fake hailo_platform importable)."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env or fake_env(),
    )


def hailo_detector(
    directory: Path,
    target: str = "HAILO8L",
    input_type: str = "UINT8",
    order: str = "HAILO_NMS_BY_CLASS",
) -> Path:
    """A model directory holding model.hef compiled (in stand-in) for ``target``: input
    192×192×3 ``input_type``, one ``order`` output, NMS score 0.2 / IoU 0.45 (the TFLite
    model's manifest) and 20 boxes per class."""
    directory.mkdir(parents=True, exist_ok=True)
    tflite = json.loads((DETECTOR / "manifest.json").read_text())
    network: dict[str, Any] = {
        "group": "shapes_detector",
        "input": {
            "name": "shapes_detector/input_layer1",
            "shape": [192, 192, 3],
            "type": input_type,
        },
        "output": {
            "name": "shapes_detector/yolov8_nms_postprocess",
            "order": order,
            "classes": 3,
            "max_bboxes_per_class": 20,
            "nms_score_th": 0.2,
            "nms_iou_th": tflite["postprocess"]["iou_threshold"],
        },
        "network": {"tflite": str(DETECTOR / "model.tflite"), "mean": [0.0], "std": [255.0]},
    }
    write(directory / "model.hef", target, network)
    shutil.copy(DETECTOR / "labels.txt", directory / "labels.txt")
    pre = {k: v for k, v in tflite["preprocess"].items() if k not in ("mean", "std")}
    manifest = {
        "name": "shapes-detector-hailo",
        "model": "model.hef",
        "labels": "labels.txt",
        "task": "detection",
        "preprocess": pre,
        "postprocess": tflite["postprocess"],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory
