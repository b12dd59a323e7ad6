"""edge: camera frames → on-device preprocessing → quantized TFLite → results on MQTT.

Importing this package does nothing but define names: no camera, runtime or broker is touched,
so ``import edge`` works on any machine.
"""

from __future__ import annotations

__version__ = "0.1.0"
