"""``edge info``: the runtimes, accelerators (found or not, versions, devices, what would be used
and what is wrong), Edge TPUs and bundled models this machine has."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import platform

    import cv2
    import numpy as np

    from edge import __version__
    from edge.errors import EdgeError
    from edge.models import bundled_models, load_spec
    from edge.runtime import default_threads
    from edge.runtime.accelerators import probes
    from edge.runtime.backends import BACKENDS

    accelerators = probes()
    by_name = {a.name: a for a in accelerators}
    runtimes = [
        a for a in accelerators if a.found and (a.name in BACKENDS or a.name == "onnxruntime")
    ]
    tflite = next((a.name for a in accelerators if a.would_use and a.name in BACKENDS), None)
    tpu = by_name["edgetpu"]
    models: dict[str, dict[str, Any]] = {}
    for name, path in bundled_models().items():
        try:
            spec = load_spec(path)
            models[name] = {
                "path": str(spec.path),
                "task": spec.task or "auto",
                "version": spec.version,
                "labels": len(spec.labels),
                "description": spec.description,
            }
        except EdgeError as exc:
            models[name] = {"path": str(path), "error": str(exc)}
    info: dict[str, Any] = {
        "edge": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "runtimes": {a.name: a.version for a in runtimes},
        "runtime": tflite,
        "default_threads": default_threads(),
        "delegates": ["cpu", "xnnpack"] + (["edgetpu"] if tpu.found else []),
        "edgetpu_devices": list(tpu.devices),
        "accelerators": [asdict(a) for a in accelerators],
        "models": models,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"edge {info['edge']}  python {info['python']} ({info['machine']})  "
        f"numpy {info['numpy']}  opencv {info['opencv']}  default threads {default_threads()}"
    )
    if tflite is None:
        print("no TFLite runtime installed: pip install ai-edge-litert")
    print("accelerators (used = what a model of its format would run on):")
    for a in accelerators:
        state = "used" if a.would_use else "found" if a.found else "missing"
        devices = f" [{', '.join(a.devices)}]" if a.devices else ""
        print(f"  {a.name:<15} {state:<8} {a.version or '-':<18} {a.detail}{devices}")
        if a.problem:
            print(f"  {'':<15} problem: {a.problem}")
    print("bundled models:")
    for name, m in models.items():
        if "error" in m:
            print(f"  {name:<22} ERROR {m['error']}")
        else:
            print(f"  {name:<22} {m['task']:<15} {m['version']:<8} {m['description'][:60]}")
    return 0
