"""``edge request``: send images to a daemon's online inference (``[online]``) and print one
JSON result per image, as ``edge infer`` would (the client is :mod:`edge.online.client`).

Parsing imports no MQTT library: paho loads when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from edge.argtypes import broker_address, number
from edge.commands.listen import _device, _prefix
from edge.errors import EX_NOINPUT, EX_SOFTWARE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="JPEG or PNG files")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--model-on", type=_device, metavar="DEVICE", help="ask this device (<prefix>/DEVICE/infer)"
    )
    where.add_argument(
        "--group",
        type=_device,
        metavar="G",
        help="ask any daemon of the [online] group G (<prefix>/fleet/G/infer)",
    )
    p.add_argument(
        "--broker",
        type=broker_address,
        default=None,
        metavar="HOST:PORT",
        help="MQTT broker (default localhost:1883, or the --config file's)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="take the broker, prefix, login and TLS settings from a daemon's configuration file",
    )
    p.add_argument("--prefix", type=_prefix, default=None, help="topic prefix (default edge)")
    p.add_argument(
        "--protocol",
        choices=("5", "3.1.1"),
        default="5",
        help="MQTT 5 (properties) or 3.1.1 (the JSON envelope); default 5",
    )
    p.add_argument(
        "--timeout",
        type=number(0.0, above=True),
        default=10.0,
        metavar="S",
        help="wait this long for the answers after the last request (default 10)",
    )
    p.add_argument(
        "--ttl",
        type=number(0.0, above=True),
        default=None,
        metavar="S",
        help="requests not started within S seconds are dropped (MQTT 5: whole seconds)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="the model expected: a device running another answers unknown_model",
    )


def run(args: argparse.Namespace) -> int:
    """0 when every image got a result; 66 when some got an error or no answer in time."""
    from edge.online.client import print_answers, request
    from edge.sinks.mqtt_settings import MqttSettings
    from edge.topics import DeviceTopics, fleet_infer

    if args.config:
        from edge.config import load

        settings = MqttSettings.from_config(load(args.config))
    else:
        settings = MqttSettings(device="edge-request")
    if args.broker is not None:
        settings = replace(settings, host=args.broker[0], port=args.broker[1])
    if args.prefix is not None:
        settings = replace(settings, prefix=args.prefix)
    topic = (
        DeviceTopics(f"{settings.prefix}/{args.model_on}").infer
        if args.model_on
        else fleet_infer(settings.prefix, args.group)
    )
    answers = request(
        settings,
        topic,
        args.images,
        v5=args.protocol == "5",
        timeout=args.timeout,
        ttl=args.ttl,
        model=args.model,
    )
    failed = print_answers(args.images, answers, topic, sys.stdout, sys.stderr)
    return EX_NOINPUT if failed else (0 if answers else EX_SOFTWARE)
