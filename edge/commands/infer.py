"""``edge infer``: run a model on image files and print one JSON result per image.

A one-shot look at a model shows a classifier's top classes whatever their scores: the
manifest's threshold, meant for the daemon's stream of results, would print ``"classes": []``
for an image the model is unsure about. ``--threshold`` filters again when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from edge.commands.options import add_model, add_results, add_runtime, runtime_options
from edge.errors import EX_NOINPUT, InputError

if TYPE_CHECKING:
    import numpy as np

    from edge.engine import Engine, Overrides
    from edge.models import ModelSpec
    from edge.runtime import RuntimeOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, WebP)")
    add_runtime(p, device_alias=True)
    add_results(p)


def run(args: argparse.Namespace) -> int:
    """0 when every image was read, 66 when some could not be (each named on stderr)."""
    from edge.decode import read_image
    from edge.engine import Overrides

    overrides = Overrides(
        task=args.task,
        threshold=args.threshold,
        top_k=args.top_k,
        max_detections=args.max_detections,
        resize=args.resize,
        allow=frozenset(s.strip() for s in args.labels.split(",")) if args.labels else None,
        labels_offset=args.labels_offset,
        segmentation_threshold=args.segmentation_threshold,
    )
    engine = one_shot_engine(args.model, runtime_options(args, args.threads), overrides)
    failed = 0
    out = sys.stdout
    for i, path in enumerate(args.images):
        try:
            image = read_image(path)
        except InputError as exc:
            print(f"edge: {exc}", file=sys.stderr)
            failed += 1
            continue
        index = i if len(args.images) > 1 else None
        out.write(result_json(engine, image, path, index).decode() + "\n")
        out.flush()
    return EX_NOINPUT if failed else 0


def one_shot_engine(ref: str | ModelSpec, options: RuntimeOptions, overrides: Overrides) -> Engine:
    """The engine ``edge infer`` runs: ``ref`` loaded with ``options`` and ``overrides``, a
    classifier without a ``threshold`` override showing its top classes whatever their scores
    (see the module docstring). The daemon's online requests use the same (``edge.online``).
    Raises ModelError."""
    from edge.engine import Engine

    engine = Engine.load(ref, options, overrides)
    if engine.task == "classification" and overrides.threshold is None:
        # The task is known only once the model is loaded; rebuilding the Engine around the
        # same interpreter redoes just the cheap pre- and postprocessing set-up.
        engine = Engine(engine.spec, engine.interpreter, replace(overrides, threshold=0.0))
    return engine


def result_json(engine: Engine, image: np.ndarray, source: str, index: int | None = None) -> bytes:
    """The JSON ``edge infer`` prints for ``image`` (BGR or greyscale uint8), without the
    newline: the one serialization of a one-shot result, also the body of an online answer."""
    result = engine.infer(image, source=source, index=index)
    return json.dumps(result.to_dict(), separators=(",", ":")).encode()
