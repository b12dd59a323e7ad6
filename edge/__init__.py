"""edge: camera frames → on-device preprocessing → quantized TFLite → results on MQTT.

Importing this package does nothing but define names: no camera, runtime or broker is touched,
so ``import edge`` works on any machine. It sets up two things for the start of every command:
the methods of edge's dataclasses come compiled from a cache (:mod:`edge.dataclass_cache`), and
``ssl``, ``hashlib`` and ``urllib.request``, which paho-mqtt imports, run at their first use,
not at import (:mod:`edge.deferred_modules`).
"""

from __future__ import annotations

from edge import dataclass_cache, deferred_modules

__version__ = "0.1.0"

dataclass_cache.install()
deferred_modules.defer()
