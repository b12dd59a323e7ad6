"""The daemon's configuration: one TOML file, validated against a declared schema.

The schema (``sections``) is the single description of every key: validation
(``loading``), ``edge check-config``, the generated reference (``reference``:
``edge check-config --reference`` → docs/config.md) and the defaults all come from it. How a
key is declared and a value checked is ``fields``. Everything public is importable from here.
"""

from __future__ import annotations

from edge.config.fields import Setting, computed, key, settings
from edge.config.loading import load, merge, read_toml, validate
from edge.config.reference import reference
from edge.config.sections import (
    MAX_FRAME_SIDE,
    SECTIONS,
    BudgetSettings,
    CameraSettings,
    Config,
    ModelSettings,
    MqttConfig,
    default_device,
    topic_name_problem,
)

__all__ = [
    "MAX_FRAME_SIDE",
    "SECTIONS",
    "BudgetSettings",
    "CameraSettings",
    "Config",
    "ModelSettings",
    "MqttConfig",
    "Setting",
    "computed",
    "default_device",
    "key",
    "load",
    "merge",
    "read_toml",
    "reference",
    "settings",
    "topic_name_problem",
    "validate",
]
