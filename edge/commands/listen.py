"""``edge listen``: print what devices publish (the subscribing and formatting is
:mod:`edge.listen`). ``--device`` filters by device id, as ``edge run --device`` sets it.

Parsing imports no MQTT library: paho and ssl load when the command runs (the option types that
check topic levels import them on use).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edge.argtypes import broker_address, number, whole
from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.sinks.mqtt_settings import MqttSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``edge listen``'s options to its sub-parser."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="take the broker, prefix, device, login and TLS settings from a daemon's "
        "configuration file; the options below override it",
    )
    parser.add_argument(
        "--broker",
        type=broker_address,
        default=None,
        metavar="HOST:PORT",
        help="MQTT broker to listen on (default localhost:1883; port defaults to 1883)",
    )
    parser.add_argument(
        "--prefix", type=_prefix, default=None, help="topic prefix devices use (default edge)"
    )
    parser.add_argument(
        "--device",
        type=_device,
        default=None,
        help="only this device id (default: all devices, or the --config file's device)",
    )
    parser.add_argument("--username", default=None, help="MQTT login")
    parser.add_argument(
        "--password-file",
        default=None,
        metavar="FILE",
        help="file holding the password for --username (never given on the command line)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="use TLS, trusting the system's certificate authorities"
    )
    parser.add_argument("--tls-ca", default=None, metavar="FILE", help="CA certificate (PEM)")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate (PEM)")
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="client key (PEM)")
    parser.add_argument(
        "--raw", action="store_true", help="print one JSON object per message, for machines"
    )
    parser.add_argument(
        "--count", type=whole(1), default=None, metavar="N", help="stop after N messages"
    )
    parser.add_argument(
        "--timeout",
        type=number(0.0, above=True),
        default=None,
        metavar="S",
        help="stop after S seconds",
    )


def run(args: argparse.Namespace) -> int:
    """0 after ``--count`` messages, ``--timeout`` or Ctrl-C; broker and login problems raise
    SinkError, a bad ``--config`` file or unusable TLS files ConfigError."""
    from edge.listen import listen

    s = _settings(args)
    return listen(
        s.host,
        s.port,
        s.prefix,
        args.device or (s.device if args.config else None),
        args.raw,
        args.count,
        args.timeout,
        sys.stdout,
        security=s,
    )


def _settings(args: argparse.Namespace) -> MqttSettings:
    """Broker, prefix, login and TLS: the --config file's [mqtt] section, then the options."""
    from edge.sinks.mqtt_settings import MqttSettings

    if args.config:
        from edge.config import load

        base = MqttSettings.from_config(load(args.config))
    else:
        base = MqttSettings(device="edge-listen")
    changes: dict[str, Any] = {}
    if args.broker is not None:
        changes["host"], changes["port"] = args.broker
    if args.prefix is not None:
        changes["prefix"] = args.prefix
    if args.username is not None:
        changes["username"] = args.username
    for key in ("password_file", "tls_ca", "tls_cert", "tls_key"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.tls:
        changes["tls"] = True
    return replace(base, **changes)


def _device(text: str) -> str:
    from edge.sinks.mqtt_settings import validate_topic_part

    try:
        validate_topic_part(text, "--device")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0]) from exc
    return text


def _prefix(text: str) -> str:
    from edge.sinks.mqtt_settings import validate_topic_part

    for level in text.split("/"):
        try:
            validate_topic_part(level, "--prefix level")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problems[0]) from exc
    return text
