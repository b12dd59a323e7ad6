"""Option groups shared by several ``edge`` commands, so that a flag has one name, one type and
one meaning everywhere: the model and runtime options of ``infer``/``bench``/``batch``, the
result options of ``infer``/``batch``, and the pipeline options ``run`` and ``preview`` turn into
configuration overrides.

``--device`` is the MQTT device id (``run``, ``listen``); the Edge TPU is ``--tpu``. ``infer``
and ``bench`` still accept their old ``--device`` for the Edge TPU, with a warning.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from edge.argtypes import int_list, number, whole
from edge.choices import DELEGATES, FALLBACKS, RESIZE_MODES, RUNTIMES, TASKS, Delegate
from edge.commands import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge.runtime import RuntimeOptions

log = logging.getLogger(__name__)

POSITIVE = whole(1)
UNIT = number(0.0, 1.0)

# Where the warnings of deprecated spellings wait until logging is set up.
_DEPRECATED = "deprecated_options"


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and leaves a
    warning for :func:`warn_deprecated` (logging is not set up while arguments are parsed)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, *, replacement: str, **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        notes: list[str] = list(getattr(namespace, _DEPRECATED, ()))
        notes.append(
            f"{parser.prog} {option_string} is deprecated and will be removed: write "
            f"{self.replacement} {values} (--device is the MQTT device id on edge run)"
        )
        setattr(namespace, _DEPRECATED, notes)


def warn_deprecated(args: argparse.Namespace) -> None:
    """Log the warnings :class:`DeprecatedAlias` options left on ``args``."""
    for note in getattr(args, _DEPRECATED, ()):
        log.warning("%s", note)


def delegate_chain(allowed: Sequence[Delegate]) -> Callable[[str], tuple[Delegate, ...]]:
    """The argparse type of ``--delegate``: one name, or a failover chain of comma-separated
    names in order of preference (``edgetpu,xnnpack``), each one of ``allowed``, none twice."""

    def parse(text: str) -> tuple[Delegate, ...]:
        names = [n.strip() for n in text.split(",")]
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(
                    f"unknown delegate {name!r}: use one of {', '.join(allowed)}, or several "
                    "separated by commas (a failover chain, e.g. edgetpu,xnnpack)"
                )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(
                f"{', '.join(repeated)} appears more than once in the chain {text!r}"
            )
        return tuple(cast(Delegate, n) for n in names)

    return parse


def add_model(p: argparse.ArgumentParser) -> None:
    """The positional MODEL of ``infer`` and ``bench``."""
    p.add_argument(
        "model", help="a .tflite or .onnx file, a model directory, or a bundled model name"
    )


def add_runtime(
    p: argparse.ArgumentParser,
    *,
    thread_list: bool = False,
    defaults: bool = True,
    device_alias: bool = False,
) -> None:
    """``--threads``, ``--delegate``, ``--tpu``, ``--fallback``, ``--runtime``.

    thread_list: ``--threads 1,2,4`` (``bench``) instead of one count. defaults: fill in the
    delegate and fallback defaults (one-shot commands); without, an unset option leaves the
    configuration's value (``run``, ``preview``). device_alias: also accept the deprecated
    ``--device`` for ``--tpu``.
    """
    g = p.add_argument_group("runtime")
    if thread_list:
        g.add_argument(
            "--threads",
            type=int_list,
            metavar="N,N,...",
            help="comma-separated thread counts to compare, e.g. 1,2,4 (default: all cores, "
            "at most 4)",
        )
    else:
        g.add_argument(
            "--threads",
            type=POSITIVE,
            metavar="N",
            help="interpreter threads (default: all cores, at most 4)",
        )
    # external needs [model] delegate_library, which only a configuration file sets.
    allowed = DELEGATES if not defaults else tuple(d for d in DELEGATES if d != "external")
    g.add_argument(
        "--delegate",
        type=delegate_chain(allowed),
        metavar="NAME[,NAME...]",
        default=("xnnpack",) if defaults else None,
        help="xnnpack: CPU with XNNPACK (default); cpu: builtin kernels only; "
        "edgetpu: Coral Edge TPU"
        + ("; external: [model] delegate_library" if not defaults else "")
        + ". Several, comma-separated (edgetpu,xnnpack), are a failover chain: the first "
        "that loads runs the model, a failing or hung one hands over to the next",
    )
    g.add_argument(
        "--tpu",
        metavar="DEVICE",
        help="which Edge TPU --delegate edgetpu uses: usb, usb:N, pci, pci:N (default: the "
        "first found)",
    )
    if device_alias:
        g.add_argument(
            "--device",
            dest="tpu",
            action=DeprecatedAlias,
            replacement="--tpu",
            metavar="DEVICE",
            help="deprecated spelling of --tpu",
        )
    g.add_argument(
        "--fallback",
        choices=FALLBACKS,
        default="fail" if defaults else None,
        help="when the Edge TPU cannot be used: run on the CPU, or fail (default)",
    )
    g.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="TFLite runtime package to use (default: $EDGE_RUNTIME, else the first installed)",
    )


def runtime_options(args: argparse.Namespace, threads: int | None) -> RuntimeOptions:
    """The RuntimeOptions of :func:`add_runtime`'s flags (with ``defaults``)."""
    from edge.runtime import RuntimeOptions

    return RuntimeOptions(
        threads=threads,
        delegate=args.delegate[0],
        chain=args.delegate[1:],
        device=args.tpu,
        fallback=args.fallback,
        backend=args.runtime,
    )


def add_results(p: argparse.ArgumentParser, *, all_options: bool = True) -> None:
    """``--task`` and ``--threshold``; with ``all_options`` also ``--top-k``,
    ``--max-detections``, ``--resize`` and ``--labels`` (``infer``)."""
    g = p.add_argument_group("results")
    g.add_argument("--task", choices=TASKS, help="override the task edge infers from the model")
    g.add_argument("--threshold", type=UNIT, help="minimum score, 0..1")
    if not all_options:
        return
    g.add_argument("--top-k", type=POSITIVE, help="classes to report (classification)")
    g.add_argument("--max-detections", type=POSITIVE, help="most detections per image")
    g.add_argument(
        "--resize", choices=RESIZE_MODES, help="override how frames are fitted to the model input"
    )
    g.add_argument("--labels", help="only report these labels (comma-separated)")
    g.add_argument(
        "--labels-offset",
        type=int,
        help="class id = line number + this (e.g. -1 when the labels file leaves out class 0, "
        "the background); default: worked out from the labels and the model",
    )
    g.add_argument(
        "--segmentation-threshold",
        type=UNIT,
        help="single-channel (sigmoid) segmenters: probability above which a pixel is "
        "foreground (default 0.5)",
    )


def add_pipeline(p: argparse.ArgumentParser, command: str) -> None:
    """What ``run`` and ``preview`` read from a configuration file, and the flags that
    override it (turned into overrides by :func:`pipeline_overrides`)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (see `edge check-config --reference`); the options "
        "below override it",
    )
    g = p.add_argument_group("camera and model (override the configuration's camera 0)")
    g.add_argument(
        "--source",
        help="camera 0's source: picamera2, synthetic, /dev/videoN, a camera index, an "
        "rtsp:// or http:// URL, a video file, an image folder or glob",
    )
    g.add_argument("--camera", help="camera 0's name (default: camera)")
    g.add_argument(
        "--fps", type=number(0.0), help="camera 0's target frame rate (0: as fast as it delivers)"
    )
    g.add_argument("--loop", action="store_true", help="restart file sources at their end")
    g.add_argument("--model", help="model: .tflite or .onnx file, model directory or bundled name")
    add_runtime(p, defaults=False)
    p.set_defaults(pipeline_command=command)


# Pipeline flag (argparse dest) → the dotted configuration key it overrides.
PIPELINE_KEYS = {
    "source": "cameras.0.source",
    "camera": "cameras.0.name",
    "fps": "cameras.0.fps",
    "model": "model.path",
    "threads": "model.threads",
    "delegate": "model.delegate",
    "tpu": "model.edgetpu_device",
    "fallback": "model.edgetpu_fallback",
    "runtime": "model.runtime",
    "device": "device",
    "prefix": "mqtt.prefix",
    "protocol": "mqtt.protocol",
    "state_dir": "state_dir",
}


def pipeline_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted configuration keys the given flags set (``edge.config.load``'s overrides;
    None unsets a key); flags a command does not have are simply absent."""
    o: dict[str, Any] = {}
    for flag, dotted in PIPELINE_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            o[dotted] = value
    if o.get("cameras.0.fps") == 0:
        o["cameras.0.fps"] = None  # --fps 0: back to unset, as fast as the source delivers
    if getattr(args, "loop", False):
        o["cameras.0.loop"] = True
    if getattr(args, "broker", None):
        o["mqtt.host"], o["mqtt.port"] = args.broker
    return o


def require_source(args: argparse.Namespace) -> None:
    """Raise UsageError unless ``--config`` or ``--source`` says what to run on."""
    if args.config is None and args.source is None:
        command = getattr(args, "pipeline_command", "run")
        raise UsageError(
            f"give --config FILE, or at least --source (e.g. `edge {command} --source synthetic`)"
        )
