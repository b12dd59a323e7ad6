"""``[online]``: whether the daemon answers inference requests over MQTT (``edge.online``), on
which topics, with which model, and how many it holds at once."""

from __future__ import annotations

from dataclasses import dataclass

from edge.config.fields import key
from edge.config.names import topic_name_problem


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    """[online]: inference requests over MQTT (off unless ``enabled``)."""

    enabled: bool = key(
        False,
        "Answer inference requests on <prefix>/<device>/infer (and the fleet topic when group "
        "is set).",
    )
    group: str | None = key(
        None,
        "Also take requests from the shared subscription "
        "$share/<group>/<prefix>/fleet/<group>/infer, shared by every daemon of the group; "
        "unset = the device topic only.",
        check=topic_name_problem,
    )
    model: str | None = key(
        None,
        "The model that answers (a .tflite file, model directory or bundled name), run on an "
        "interpreter of its own with one thread; unset = the first camera's model.",
    )
    queue_size: int = key(
        4,
        "Requests waiting at most; one more is answered busy at once.",
        min=1,
        max=256,
    )
    max_image_bytes: int = key(
        2_000_000,
        "Larger images are answered too_large without being decoded.",
        min=1024,
        max=64_000_000,
    )
