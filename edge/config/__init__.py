"""The daemon's configuration: one TOML file, validated against a declared schema.

The schema (``sections``) is the single description of every key: validation
(``loading``), ``edge check-config``, the generated reference (``reference``:
``edge check-config --reference`` → docs/config.md) and the defaults all come from it. How a
key is declared and a value checked is ``fields``. Everything public is importable from here.
"""

from __future__ import annotations

from edge.config.fields import Points, Setting, computed, key, settings
from edge.config.homeassistant import HomeAssistantSettings
from edge.config.loading import load, merge, read_toml, validate
from edge.config.metrics import DriftSettings, MetricsSettings
from edge.config.mqtt import MqttConfig
from edge.config.names import topic_name_problem
from edge.config.online import OnlineSettings
from edge.config.reference import reference
from edge.config.sections import (
    MAX_FRAME_SIDE,
    SECTIONS,
    BudgetSettings,
    CameraSettings,
    Config,
    ModelSettings,
    default_device,
)
from edge.config.tracking import TrackingSettings, ZoneSettings, points_problems

__all__ = [
    "MAX_FRAME_SIDE",
    "SECTIONS",
    "BudgetSettings",
    "CameraSettings",
    "Config",
    "DriftSettings",
    "HomeAssistantSettings",
    "MetricsSettings",
    "ModelSettings",
    "MqttConfig",
    "OnlineSettings",
    "Points",
    "Setting",
    "TrackingSettings",
    "ZoneSettings",
    "computed",
    "default_device",
    "key",
    "load",
    "merge",
    "points_problems",
    "read_toml",
    "reference",
    "settings",
    "topic_name_problem",
    "validate",
]
