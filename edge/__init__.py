"""edge: camera frames → on-device preprocessing → quantized TFLite → results on MQTT.

Importing this package does nothing but define names: no camera, runtime or broker is touched,
so ``import edge`` works on any machine. The one thing it sets up is where the methods of edge's
dataclasses come from: compiled once and kept (:mod:`edge.dataclass_cache`), not at every start.
"""

from __future__ import annotations

from edge import dataclass_cache

__version__ = "0.1.0"

dataclass_cache.install()
