"""``[metrics]`` and ``[drift]``: the opt-in Prometheus endpoint (served by ``edge.metrics``) and
how the daemon compares each model's recent results with the baseline in its manifest
(``edge.drift``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from edge.config.fields import key


def split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); raises ValueError saying what is wrong.

    The host must be an IP address (``127.0.0.1``, ``0.0.0.0``, ``::1``): a name would need a
    DNS lookup, which validation does not do, and would leave open which address is bound."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text:
        raise ValueError('must be "HOST:PORT", such as "127.0.0.1:9108" or "[::1]:9108"')
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"the host {host!r} must be an IP address (127.0.0.1 for this machine only, "
            "0.0.0.0 for every interface)"
        ) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port {port_text!r} must be a number from 1 to 65535")
    return host, int(port_text)


def _listen_problem(value: Any) -> str | None:
    try:
        split_listen(str(value))
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """[metrics]: a Prometheus scrape endpoint, off unless ``listen`` is set."""

    listen: str | None = key(
        None,
        'Serve GET /metrics (Prometheus text format) on this "IP:PORT", such as '
        '"127.0.0.1:9108" (this machine only); unset = no endpoint. Needs edge[metrics].',
        check=_listen_problem,
    )

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when off."""
        return split_listen(self.listen) if self.listen is not None else None


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """[drift]: each model whose manifest holds a ``baseline`` (``edge baseline``) is compared,
    over its last ``window`` results, with that baseline."""

    window: int = key(
        500,
        "Results per model in the rolling window; the measures are published once it is full.",
        min=10,
        max=100_000,
    )
    class_threshold: float = key(
        0.1,
        "Jensen–Shannon divergence (base 2, 0..1) of the window's class distribution from the "
        "baseline's above which the model is degraded; 1 = never.",
        min=0.0,
        max=1.0,
    )
    score_threshold: float = key(
        0.1,
        "L∞ distance of the window's score deciles from the baseline's above which the model "
        "is degraded; 1 = never.",
        min=0.0,
        max=1.0,
    )
