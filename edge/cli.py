"""The ``edge`` command line: one subcommand per job, every EdgeError mapped to its exit code
and a one-line message (never a traceback).

Subcommand modules are imported when their subcommand runs, so ``edge listen`` does not pay for
the inference runtime and ``edge --help`` starts instantly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from edge import __version__
from edge.argtypes import broker_address, int_list, number, whole
from edge.errors import EX_SOFTWARE, EX_USAGE, EdgeError

if TYPE_CHECKING:
    from edge.runtime import RuntimeOptions

log = logging.getLogger("edge")

POSITIVE = whole(1)
UNIT = number(0.0, 1.0)

DELEGATE_CHOICES = ("cpu", "xnnpack", "edgetpu")
TASK_CHOICES = ("classification", "detection", "segmentation", "raw")


class _JournalFormatter(logging.Formatter):
    """Under systemd, prefix ``<N>`` syslog priorities (journald parses them) and drop the
    timestamp journald adds itself."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {super().format(record)}"


def setup_logging(level: str) -> None:
    """Log to stderr: journald-friendly under systemd, timestamped otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--delegate",
        choices=DELEGATE_CHOICES,
        default="xnnpack",
        help="xnnpack: CPU with XNNPACK (default); cpu: builtin kernels only; "
        "edgetpu: Coral Edge TPU",
    )
    p.add_argument("--device", help="Edge TPU device: usb, usb:N, pci, pci:N (default: first)")
    p.add_argument(
        "--fallback",
        choices=("cpu", "fail"),
        default="fail",
        help="when the Edge TPU cannot be used: run on the CPU, or fail (default)",
    )
    p.add_argument(
        "--runtime",
        choices=("ai-edge-litert", "tflite-runtime", "tensorflow"),
        help="force a TFLite runtime package (default: the first installed)",
    )


# -- infer ---------------------------------------------------------------------------------
def _infer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .tflite file, a model directory, or a bundled model name")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, TIFF, WebP)")
    p.add_argument(
        "--threads", type=POSITIVE, help="interpreter threads (default: all cores, at most 4)"
    )
    _add_runtime_args(p)
    p.add_argument("--task", choices=TASK_CHOICES, help="override the task edge infers")
    p.add_argument("--threshold", type=UNIT, help="minimum score, 0..1")
    p.add_argument("--top-k", type=POSITIVE, help="classes to report (classification)")
    p.add_argument("--max-detections", type=POSITIVE)
    p.add_argument(
        "--resize",
        choices=("stretch", "letterbox", "crop"),
        help="override how frames are fitted to the model input",
    )
    p.add_argument("--labels", help="only report these labels (comma-separated)")


def _runtime_options(args: argparse.Namespace, threads: int | None) -> RuntimeOptions:
    from edge.runtime import RuntimeOptions

    return RuntimeOptions(
        threads=threads,
        delegate=args.delegate,
        device=args.device,
        fallback=args.fallback,
        backend=args.runtime,
    )


def _infer(args: argparse.Namespace) -> int:
    from edge.decode import read_image
    from edge.engine import Engine, Overrides
    from edge.errors import InputError

    overrides = Overrides(
        task=args.task,
        threshold=args.threshold,
        top_k=args.top_k,
        max_detections=args.max_detections,
        resize=args.resize,
        allow=frozenset(s.strip() for s in args.labels.split(",")) if args.labels else None,
    )
    engine = Engine.load(
        args.model,
        _runtime_options(args, args.threads),
        overrides,
    )
    failed = 0
    out = sys.stdout
    for i, path in enumerate(args.images):
        try:
            image = read_image(path)
        except InputError as exc:
            print(f"edge: {exc}", file=sys.stderr)
            failed += 1
            continue
        result = engine.infer(image, source=path, index=i if len(args.images) > 1 else None)
        out.write(json.dumps(result.to_dict(), separators=(",", ":")) + "\n")
        out.flush()
    if failed:
        from edge.errors import EX_NOINPUT

        return EX_NOINPUT
    return 0


# -- bench ---------------------------------------------------------------------------------
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .tflite file, a model directory, or a bundled model name")
    p.add_argument(
        "--threads",
        type=int_list,
        default=None,
        help="comma-separated thread counts to compare, e.g. 1,2,4",
    )
    _add_runtime_args(p)
    p.add_argument("--runs", type=POSITIVE, default=100, help="steady-state runs")
    p.add_argument("--warmup", type=int, default=10, help="warm-up runs (not counted)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=0.0,
        help="keep running until at least this long has passed",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _bench(args: argparse.Namespace) -> int:
    from edge.bench import bench, format_table
    from edge.runtime import default_threads

    reports = [
        bench(
            args.model,
            _runtime_options(args, t),
            runs=args.runs,
            warmup=args.warmup,
            min_seconds=args.min_seconds,
        )
        for t in (args.threads or [default_threads()])
    ]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print(format_table(reports))
    return 0


# -- info ----------------------------------------------------------------------------------
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _info(args: argparse.Namespace) -> int:
    import platform

    import cv2
    import numpy as np

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


# -- run / check-config ---------------------------------------------------------------------


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="TOML configuration file (see `edge check-config "
        "--reference`); flags below override it",
    )
    p.add_argument(
        "--source",
        help="camera 0's source: picamera2, synthetic, /dev/videoN, a "
        "camera index, rtsp:// or http:// URL, a video file, an image folder or glob",
    )
    p.add_argument("--camera", help="camera 0's name (default: camera)")
    p.add_argument("--fps", type=number(0.0), help="camera 0's target frame rate")
    p.add_argument("--loop", action="store_true", help="restart file sources at their end")
    p.add_argument("--model", help="model: .tflite, model directory or bundled name")
    p.add_argument("--threads", type=int, help="interpreter threads")
    p.add_argument("--delegate", choices=DELEGATE_CHOICES)
    p.add_argument("--broker", type=broker_address, help="MQTT broker HOST:PORT")
    p.add_argument("--device", help="device id (second topic level)")
    p.add_argument("--prefix", help="topic prefix (default edge)")
    p.add_argument("--protocol", choices=("5", "3.1.1"), help="MQTT protocol version")
    p.add_argument("--state-dir", help="where the durable outbox lives")
    p.add_argument(
        "--duration", type=number(0.0, above=True), help="stop after this many seconds"
    )


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys set by ``edge run`` flags."""
    o: dict[str, Any] = {}
    flags = {
        "source": "cameras.0.source",
        "camera": "cameras.0.name",
        "fps": "cameras.0.fps",
        "model": "model.path",
        "threads": "model.threads",
        "delegate": "model.delegate",
        "device": "device",
        "prefix": "mqtt.prefix",
        "protocol": "mqtt.protocol",
        "state_dir": "state_dir",
    }
    for flag, dotted in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            o[dotted] = value
    if getattr(args, "loop", False):
        o["cameras.0.loop"] = True
    if getattr(args, "broker", None):
        o["mqtt.host"], o["mqtt.port"] = args.broker
    return o


def _run(args: argparse.Namespace) -> int:
    from edge import config as cfg
    from edge.daemon import Daemon

    overrides = run_overrides(args)
    if args.config is None and "cameras.0.source" not in overrides:
        raise _usage(
            "give --config FILE, or at least --source (e.g. `edge run --source synthetic`)"
        )
    config = cfg.load(args.config, overrides)
    if not _log_level_given(args):
        logging.getLogger().setLevel(config.log_level.upper())
    reload = (lambda: cfg.load(args.config, overrides)) if args.config else None
    return Daemon(config, reload=reload, duration=args.duration).run()


def _log_level_given(args: argparse.Namespace) -> bool:
    """Whether --log-level or EDGE_LOG_LEVEL chose the level (else the config file does)."""
    return "EDGE_LOG_LEVEL" in os.environ or any(
        a == "--log-level" or a.startswith("--log-level=") for a in sys.argv[1:]
    )


def _check_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="the TOML file to check")
    p.add_argument(
        "--reference",
        action="store_true",
        help="print the configuration reference (Markdown) instead",
    )


def _check_config(args: argparse.Namespace) -> int:
    from edge import config as cfg

    if args.reference:
        print(cfg.reference())
        return 0
    if not args.file:
        raise _usage("give a configuration file to check, or --reference")
    config = cfg.load(args.file)
    from edge import preflight  # loads the models: only once the file itself is valid

    checked = preflight.check(config)
    cams = ", ".join(f"{c.name} ({c.source})" for c in config.cameras)
    models = ", ".join(f"{e.name} ({e.task})" for e in checked.engines.values())
    print(
        f"{args.file}: OK: device {config.device}, cameras {cams}, models {models}, broker "
        f"{config.mqtt.host}:{config.mqtt.port}"
    )
    return 0


class _UsageError(EdgeError):
    exit_code = EX_USAGE


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


# -- listen / quantize (their modules own their arguments) -----------------------------------
def _listen_args(p: argparse.ArgumentParser) -> None:
    from edge import listen

    listen.add_arguments(p)


def _listen(args: argparse.Namespace) -> int:
    from edge import listen

    return listen.run(args)


def _preview_args(p: argparse.ArgumentParser) -> None:
    from edge import preview

    preview.add_arguments(p)


def _preview(args: argparse.Namespace) -> int:
    from edge import preview

    return preview.run(args)


def _batch_args(p: argparse.ArgumentParser) -> None:
    from edge import batch

    batch.add_arguments(p)


def _batch(args: argparse.Namespace) -> int:
    from edge import batch

    return batch.run(args)


def _quantize_args(p: argparse.ArgumentParser) -> None:
    from edge import quantize

    quantize.add_arguments(p)


def _quantize(args: argparse.Namespace) -> int:
    from edge import quantize

    return quantize.run(args)


def _demo_args(p: argparse.ArgumentParser) -> None:
    from edge import demo

    demo.add_arguments(p)


def _demo(args: argparse.Namespace) -> int:
    from edge import demo

    return demo.run(args)


# -- dispatch ------------------------------------------------------------------------------
Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]

COMMANDS: list[Command] = [
    (
        "infer",
        "run a model on image files and print one JSON result per image",
        _infer_args,
        _infer,
    ),
    ("bench", "measure a model's speed and memory here", _bench_args, _bench),
    ("info", "show runtimes, delegates, Edge TPUs and bundled models", _info_args, _info),
    ("run", "run the daemon: cameras → model → MQTT", _run_args, _run),
    (
        "check-config",
        "validate a configuration file (exit 0 or 78)",
        _check_config_args,
        _check_config,
    ),
    ("listen", "print results and status arriving on the broker", _listen_args, _listen),
    (
        "preview",
        "watch annotated frames in a browser or the terminal (the daemon's pipeline)",
        _preview_args,
        _preview,
    ),
    (
        "batch",
        "run a model over files, folders, globs and videos into JSON Lines",
        _batch_args,
        _batch,
    ),
    (
        "quantize",
        "float model → full-integer TFLite, with an accuracy report and gate (edge[quantize])",
        _quantize_args,
        _quantize,
    ),
    (
        "demo",
        "run the daemon on the sample clip and show its results (no setup needed)",
        _demo_args,
        _demo,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", description="Camera frames → quantized TFLite → results on MQTT."
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("EDGE_LOG_LEVEL", "warning"),
        choices=("debug", "info", "warning", "error"),
        help="stderr log level (default: warning; EDGE_LOG_LEVEL)",
    )
    # Also accepted after the subcommand, where people type it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=("debug", "info", "warning", "error"),
        help=argparse.SUPPRESS,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_args, func in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    setup_logging(args.log_level)
    try:
        code: int = args.func(args)
        return code
    except EdgeError as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `edge infer ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # a bug: keep the traceback, it is what a report needs
        log.exception("unexpected error (please report it with the traceback above)")
        return EX_SOFTWARE
