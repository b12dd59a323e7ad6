"""``edge run``: the daemon (:mod:`edge.daemon`) on a configuration file, flags overriding it.

``--device`` here is the device id, the second MQTT topic level; the Edge TPU is ``--tpu``.
The log level is the configuration's ``log_level`` (info by default) unless ``--log-level`` or
``$EDGE_LOG_LEVEL`` chose one.
"""

from __future__ import annotations

import argparse
import logging

from edge.argtypes import broker_address, number
from edge.choices import MQTT_PROTOCOLS
from edge.commands.options import add_pipeline, pipeline_overrides, require_source


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_pipeline(p, "run")
    g = p.add_argument_group("MQTT (override the configuration's [mqtt] and device)")
    g.add_argument("--broker", type=broker_address, metavar="HOST:PORT", help="MQTT broker")
    g.add_argument("--device", help="device id (second topic level; default: the host name)")
    g.add_argument("--prefix", help="topic prefix (default edge)")
    g.add_argument("--protocol", choices=MQTT_PROTOCOLS, help="MQTT protocol version")
    p.add_argument("--state-dir", help="where the durable outbox lives")
    p.add_argument("--duration", type=number(0.0, above=True), help="stop after this many seconds")


def run(args: argparse.Namespace) -> int:
    """The daemon's exit code: 0 after a clean stop, 78 for a configuration or model error."""
    from edge import deferred_modules

    # Before the daemon's imports: OpenSSL and the rest only when used (edge.deferred_modules).
    deferred_modules.defer()
    from edge import config as cfg
    from edge.daemon import Daemon
    from edge.system import one_malloc_arena

    one_malloc_arena()  # before the daemon starts any thread

    require_source(args)
    overrides = pipeline_overrides(args)
    config = cfg.load(args.config, overrides)
    if args.log_level is None:
        logging.getLogger().setLevel(config.log_level.upper())
    reload = (lambda: cfg.load(args.config, overrides)) if args.config else None
    return Daemon(config, reload=reload, duration=args.duration).run()
