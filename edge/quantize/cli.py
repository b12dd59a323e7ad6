"""``edge quantize`` (and ``scripts/quantize_model.py``): arguments, running, printing.

Exit codes: 0 done, and within ``--max-drop`` (5 % unless given; ``--max-drop none`` turns the
gate off); 65 (``EX_QUALITY``, a :class:`~edge.errors.QualityError`) the int8 model was written
but quantization cost more than ``--max-drop`` allows; 78 a bad model, setting or image folder,
or TensorFlow / ai-edge-quantizer not installed (the message says what to install); 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from edge.argtypes import channel_values, number, whole
from edge.choices import LOG_LEVELS, RESIZE_MODES, TASKS
from edge.errors import EX_QUALITY, ConfigError, QualityError

log = logging.getLogger(__name__)

EX_GATE = EX_QUALITY  # quantization cost more than --max-drop allows
# The gate by default: an int8 model that changes more than this many per cent of the float
# model's answers (see edge.quantize.compare for what is counted) fails. Defined here, not in
# the tool, so building the parser imports nothing heavy.
DEFAULT_MAX_DROP = 5.0
GATE_OFF = ("none", "off")


def max_drop(text: str) -> float | None:
    """``--max-drop``: a percentage 0..100, or ``none``/``off`` for no gate."""
    if text.strip().lower() in GATE_OFF:
        return None
    try:
        value: float = number(0.0, 100.0)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; or 'none' to turn the gate off") from None
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the quantize options to ``p`` (the ``edge quantize`` subparser or the script's)."""
    p.add_argument(
        "model", help="float model: a Keras file (.keras, .h5), a SavedModel folder or a .tflite"
    )
    p.add_argument(
        "--calibration",
        required=True,
        metavar="DIR",
        help="folder of representative images (like the frames the model will see)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    p.add_argument(
        "--holdout",
        metavar="DIR",
        help="folder of other images to compare float and int8 on (default: the calibration "
        "images, which flatters the int8 model)",
    )
    p.add_argument(
        "--io",
        choices=("uint8", "int8"),
        help="integer type of the model's input and output (default: uint8; a .tflite source "
        "gives int8 only)",
    )
    p.add_argument(
        "--max-drop",
        type=max_drop,
        default=DEFAULT_MAX_DROP,
        metavar="PERCENT",
        help=f"exit {EX_QUALITY} when quantization costs more than this (default "
        f"{DEFAULT_MAX_DROP:g}; 'none' turns the gate off): classifiers 100 - top-1 "
        "agreement %%, detectors 100 - box recall %%, other models 100 x mean abs error / "
        "output range",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--count", type=whole(1), default=200, help="calibration images to use (default 200)"
    )
    p.add_argument(
        "--holdout-count",
        type=whole(1),
        default=200,
        help="held-out images to compare on (default 200)",
    )
    p.add_argument("--shuffle", action="store_true", help="pick images at random, not by name")
    p.add_argument("--seed", type=int, default=0, help="seed for --shuffle (default 0)")
    p.add_argument(
        "--labels", metavar="FILE", help="labels file to ship (default: the one beside the model)"
    )
    p.add_argument(
        "--task",
        choices=TASKS,
        help="what the model does (default: the manifest's, else inferred from its outputs)",
    )
    p.add_argument("--name", help="model name for the manifest (default: the --out folder name)")
    pre = p.add_argument_group(
        "preprocessing (default: the manifest.json beside the model, else stretch/rgb and "
        "raw 0..255 pixels for a model that normalizes its input itself (a Rescaling layer), "
        "else 0..1); each flag replaces one field"
    )
    pre.add_argument("--resize", choices=RESIZE_MODES)
    pre.add_argument("--color", choices=("rgb", "bgr", "gray"))
    pre.add_argument(
        "--mean", type=channel_values, help="pixel-unit mean, one value or three (e.g. 127.5)"
    )
    pre.add_argument(
        "--std", type=channel_values, help="pixel-unit std, one value or three (e.g. 127.5)"
    )
    pre.add_argument("--pad", type=int, help="letterbox padding value 0..255")
    pre.add_argument("--interpolation", choices=("linear", "nearest", "area"))
    p.add_argument(
        "--bench-runs",
        type=whole(0),
        default=50,
        help="timed runs per model with edge.bench (default 50; 0 skips timing)",
    )
    p.add_argument("--threads", type=whole(1), help="interpreter threads (default: edge's default)")
    p.add_argument(
        "--no-edgetpu",
        action="store_true",
        help="do not compile for the Edge TPU even when edgetpu_compiler is installed",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``edge quantize`` with parsed ``args``; returns 0, after printing the report.
    EdgeErrors propagate for the caller to print, among them the QualityError of a failed
    ``--max-drop`` gate (raised after the report is printed)."""
    from dataclasses import replace

    from edge.quantize.convert import identify
    from edge.quantize.images import MIN_CALIBRATION, load_folder
    from edge.quantize.preprocessing import DEFAULT_PREPROCESS
    from edge.quantize.report import format_report
    from edge.quantize.tool import Request, quantize
    from edge.quantize.variation import SPREAD_MIN

    # Cheap checks first, so a bad path fails before TensorFlow is imported.
    source = identify(args.model)
    flags = {
        k: getattr(args, k)
        for k in ("resize", "color", "mean", "std", "pad", "interpolation")
        if getattr(args, k) is not None
    }
    problems = replace(DEFAULT_PREPROCESS, **flags).problems()
    if problems:
        raise ConfigError(problems)
    calibration = load_folder(
        args.calibration,
        option="--calibration",
        count=args.count,
        minimum=MIN_CALIBRATION,
        shuffle=args.shuffle,
        seed=args.seed,
    )
    holdout = None
    if args.holdout:
        holdout = load_folder(
            args.holdout,
            option="--holdout",
            count=args.holdout_count,
            minimum=1,
            shuffle=args.shuffle,
            seed=args.seed,
        )
    extra: dict[str, object] = {}
    if args.name:
        extra["name"] = args.name
    request = Request(
        model=source.path,
        out=Path(args.out),
        calibration=calibration.images,
        holdout=holdout.images if holdout else (),
        io=args.io,
        preprocess_overrides=flags,
        labels=Path(args.labels) if args.labels else None,
        task=args.task,
        manifest=extra,
        max_drop=args.max_drop,
        bench_runs=args.bench_runs,
        threads=args.threads,
        edgetpu=not args.no_edgetpu,
        calibration_skipped=len(calibration.skipped),
        holdout_skipped=len(holdout.skipped) if holdout else 0,
    )
    report = quantize(request)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    if not report.passed:
        limit = f"--max-drop {args.max_drop:g} %"
        if args.max_drop == DEFAULT_MAX_DROP:
            limit += " (the default)"
        spread = ""
        if report.float_output_spread is not None and report.float_output_spread < SPREAD_MIN:
            spread = (
                " The float model's outputs barely vary across the calibration images (see "
                "the warning): a wrong --mean/--std, or images that are all alike."
            )
        raise QualityError(
            f"quantization cost {report.agreement.drop:.2f} % "
            f"({report.agreement.drop_meaning}), more than {limit}. The int8 model was "
            f"written to {report.out_dir} for inspection, but do not deploy it.{spread} Check "
            "that the preprocessing matches how the model was trained (--mean/--std/--color, "
            "or the manifest.json beside the model; the report's preprocess line shows what "
            "was used) and that the --calibration images are varied frames like the ones the "
            "model will see (100 or more). To accept this model anyway: --max-drop none."
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``scripts/quantize_model.py``), with the CLI's error mapping."""
    parser = argparse.ArgumentParser(
        prog="quantize_model.py",
        description="Quantize a float model to a full-integer TFLite model directory for edge.",
    )
    add_arguments(parser)
    parser.add_argument("--log-level", default="warning", choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)-7s %(name)s: %(message)s"
    )
    if args.log_level != "debug":
        # TensorFlow's C++ side logs converter internals to stderr at INFO.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge.commands import execute

    return execute(run, args, prog="edge quantize")
