"""``edge info``: the runtimes, delegates, Edge TPUs and bundled models this machine has."""

from __future__ import annotations

import argparse
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
    from edge.runtime import default_threads, edgetpu
    from edge.runtime.backends import available_backends

    backends = available_backends()
    models: dict[str, dict[str, Any]] = {}
    delegates = ["cpu", "xnnpack"] + (["edgetpu"] if _edgetpu_library() else [])
    devices = edgetpu.present_devices()
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
        "runtimes": {b.name: b.version for b in backends},
        "runtime": backends[0].name if backends else None,
        "default_threads": default_threads(),
        "delegates": delegates,
        "edgetpu_devices": devices,
        "models": models,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"edge {info['edge']}  python {info['python']} ({info['machine']})  "
        f"numpy {info['numpy']}  opencv {info['opencv']}"
    )
    if backends:
        rt = ", ".join(f"{b.name} {b.version}" for b in backends)
        print(f"runtimes: {rt}  (using {backends[0].name})")
    else:
        print("runtimes: none installed: pip install ai-edge-litert")
    print(f"delegates: {', '.join(delegates)}  (default threads {default_threads()})")
    print(f"edge tpu devices: {', '.join(devices) if devices else 'none found'}")
    print("bundled models:")
    for name, m in models.items():
        if "error" in m:
            print(f"  {name:<22} ERROR {m['error']}")
        else:
            print(f"  {name:<22} {m['task']:<15} {m['version']:<8} {m['description'][:60]}")
    return 0


def _edgetpu_library() -> bool:
    import ctypes.util

    return ctypes.util.find_library("edgetpu") is not None
