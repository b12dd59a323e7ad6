"""Making a model's drift baseline: run it on representative images and record the class
distribution and score deciles of its results (:mod:`edge.drift`) as the ``baseline`` of its
manifest.json. ``edge baseline`` and ``edge quantize`` both use this; the daemon reads the
baseline back with the manifest (``ModelSpec.baseline``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edge.drift import Baseline, baseline_of
from edge.engine import Engine
from edge.errors import ModelError
from edge.models import MANIFEST

log = logging.getLogger(__name__)


def measure(engine: Engine, images: Iterable[np.ndarray]) -> Baseline:
    """The baseline of ``engine``'s results on ``images`` (BGR uint8), at the engine's own
    postprocessing settings (its score threshold is recorded with it)."""
    results = (engine.infer(image) for image in images)
    return baseline_of(results, engine.postprocess_config.threshold)


def record(directory: Path, baseline: Baseline, made: str) -> Path:
    """Write ``baseline`` into ``directory``'s manifest.json (created when missing, every other
    key kept), atomically; returns the manifest's path. ``made`` says how, for the reader."""
    path = directory / MANIFEST
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {path}: {exc}. Fix the JSON first.") from exc
    data["baseline"] = {"made": made, **baseline.to_dict()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ModelError(
            f"cannot write {path}: {exc.strerror or exc}. Copy the model directory somewhere "
            "writable and run again there"
        ) from exc
    log.info("wrote the baseline of %d results into %s", baseline.results, path)
    return path
