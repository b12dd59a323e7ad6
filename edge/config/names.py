"""Names that become one MQTT topic level: the device, cameras, zones."""

from __future__ import annotations

import re
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def topic_name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a device or camera name (one MQTT topic level), or None."""
    if not isinstance(value, str) or not _NAME.match(value):
        return (
            "must be 1-64 characters of letters, digits, '_', '-', '.', starting with a "
            "letter or digit (it becomes an MQTT topic level: no '/', '+', '#', '$', "
            "spaces or NUL)"
        )
    return None
