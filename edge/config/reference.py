"""The configuration reference in Markdown (docs/config.md), generated from the schema."""

from __future__ import annotations

from edge.config.fields import settings
from edge.config.homeassistant import HomeAssistantSettings
from edge.config.metrics import DriftSettings, MetricsSettings
from edge.config.mqtt import MqttConfig
from edge.config.online import OnlineSettings
from edge.config.sections import BudgetSettings, CameraSettings, Config, ModelSettings
from edge.config.tracking import TrackingSettings, ZoneSettings


def reference() -> str:
    """Every key of every table with its type, default and description."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the schema (`edge/config/`) by `edge check-config --reference`; do not "
        "edit.",
        "",
        "One TOML file (`edge run --config FILE`). Unknown keys are errors. "
        "`edge check-config FILE` validates a file and exits 0 or 78 listing every "
        "problem. TOML has no null: a key that can be unset is unset by leaving it out "
        "(its default reads `unset`, and its description says what unset means). Files "
        "written for older versions, which spelled unset as an empty string, 0 or a negative "
        "threshold, still load: each such value is read as unset and logged as a warning.",
        "",
    ]
    tables: list[tuple[str, type]] = [
        ("Top level", Config),
        ("[model]", ModelSettings),
        ("[[cameras]]", CameraSettings),
        ("[[cameras.zones]]", ZoneSettings),
        ("[tracking]", TrackingSettings),
        ("[mqtt]", MqttConfig),
        ("[budget]", BudgetSettings),
        ("[homeassistant]", HomeAssistantSettings),
        ("[metrics]", MetricsSettings),
        ("[drift]", DriftSettings),
        ("[online]", OnlineSettings),
    ]
    for title, cls in tables:
        doc = (cls.__doc__ or "").split(":", 1)[-1].strip() if cls is not Config else ""
        lines.extend(
            [f"## {title}", ""]
            + ([doc, ""] if doc else [])
            + ["| key | type | default | description |", "|---|---|---|---|"]
        )
        for s in settings(cls):
            if s.required:
                default = "(required)"
            elif s.computed or s.default is None:
                default = "unset"
            elif s.many and len(s.default) == 1:
                default = f"`{s.default[0]!r}`"  # written as the single string it stands for
            elif isinstance(s.default, tuple):
                default = f"`{list(s.default)!r}`"  # as TOML writes it
            else:
                default = f"`{s.default!r}`"
            desc = s.help
            if s.choices:
                each = "Each one of" if s.base is tuple else "One of"
                desc += f" {each}: " + ", ".join(f"`{c!r}`" for c in s.choices) + "."
            lines.append(f"| `{s.name}` | {s.type_name} | {default} | {desc} |")
        lines.append("")
    return "\n".join(lines)
