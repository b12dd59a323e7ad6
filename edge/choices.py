"""The closed sets of names that the configuration, the command line and the stages share.

Each set is defined once, as a ``Literal`` type, with its values as a tuple in the same order
(for argparse ``choices``, messages and the generated reference). The configuration schema reads
its allowed values from these types, so a key, a flag and the stage that acts on the name cannot
disagree. Nothing is imported here: the argument parser uses these without loading numpy or a
TFLite runtime.
"""

from __future__ import annotations

from typing import Literal, get_args

# What a model's outputs mean (edge.tasks decodes each).
Task = Literal["classification", "detection", "segmentation", "raw"]
TASKS: tuple[Task, ...] = get_args(Task)

# How the interpreter runs: XNNPACK on the CPU, the builtin kernels only, a Coral Edge TPU, or
# an external delegate library (a vendor's NPU delegate; XNNPACK runs what it leaves).
Delegate = Literal["xnnpack", "cpu", "edgetpu", "external"]
DELEGATES: tuple[Delegate, ...] = get_args(Delegate)

# What happens when the Edge TPU cannot be used: run on the CPU, or refuse to start.
Fallback = Literal["cpu", "fail"]
FALLBACKS: tuple[Fallback, ...] = get_args(Fallback)

# The TFLite runtime packages, in the order they are tried (edge.runtime.backends).
RuntimeName = Literal["ai-edge-litert", "tflite-runtime", "tensorflow"]
RUNTIMES: tuple[RuntimeName, ...] = get_args(RuntimeName)

# How a frame is fitted to the model input (edge.preprocess).
ResizeMode = Literal["stretch", "letterbox", "crop"]
RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)

LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)

# When results are published: every inference, on a change of the label set, or at most every
# publish_interval seconds.
PublishPolicy = Literal["every", "change", "interval"]
PUBLISH_POLICIES: tuple[PublishPolicy, ...] = get_args(PublishPolicy)

# The frame source backends (edge.sources.REGISTRY has one class for each).
SourceKind = Literal["opencv", "images", "synthetic", "picamera2", "imx500"]
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)

# Mirroring after capture: left-right, upside-down, or both.
Flip = Literal["h", "v", "hv"]
FLIPS: tuple[Flip, ...] = get_args(Flip)

# Clockwise rotation after capture, in degrees.
Rotation = Literal[0, 90, 180, 270]
ROTATIONS: tuple[Rotation, ...] = get_args(Rotation)

# RTP over TCP or UDP for RTSP streams.
RtspTransport = Literal["tcp", "udp"]
RTSP_TRANSPORTS: tuple[RtspTransport, ...] = get_args(RtspTransport)

MqttProtocol = Literal["5", "3.1.1"]
MQTT_PROTOCOLS: tuple[MqttProtocol, ...] = get_args(MqttProtocol)
