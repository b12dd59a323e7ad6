"""The opt-in Prometheus endpoint (``[metrics] listen``): :mod:`edge.metrics.families` turns
the stats payload into metric families, :mod:`edge.metrics.server` serves them on its own
thread. ``prometheus_client`` (the ``edge[metrics]`` extra) is imported only when an endpoint is
configured: measured with ``scripts/bench_metrics.py``, it costs about 10 ms and 0.5 MiB on top
of ``http.server``, which a hand-written exposition would need as well.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge.config import MetricsSettings
from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.metrics.families import Totals
    from edge.metrics.server import MetricsServer

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "metrics.listen: the Prometheus endpoint needs the prometheus-client package: "
    "pip install 'edge[metrics]' (or prometheus-client), or leave [metrics] listen out"
)


def problem(settings: MetricsSettings) -> str | None:
    """Why ``settings`` cannot be served here (the library is missing), or None."""
    if settings.address is None or importlib.util.find_spec("prometheus_client") is not None:
        return None
    return INSTALL_HINT


class Endpoint:
    """The daemon's metrics server across reloads. Thread affinity: the daemon's main thread;
    ``stats`` and ``totals`` are called on the ``metrics`` thread at each scrape."""

    def __init__(
        self, stats: Callable[[], Mapping[str, Any]], totals: Callable[[], Totals]
    ) -> None:
        self._stats = stats
        self._totals = totals
        self._server: MetricsServer | None = None
        self._address: tuple[str, int] | None = None

    def follow(self, settings: MetricsSettings) -> None:
        """Serve on ``settings``' address (nothing when unset), keeping a server whose address
        did not change. Raises ConfigError when the new address cannot be bound; the old
        server then keeps serving."""
        address = settings.address
        if address == self._address:
            return
        old, old_address = self._server, self._address
        if old is not None:
            old.close()  # first: the new address may be the same port on another host
        self._server, self._address = None, None
        try:
            self._server = self._serve(address)
        except ConfigError:
            if old_address is not None:
                self._server = self._serve(old_address)
                self._address = old_address
            raise
        self._address = address

    def _serve(self, address: tuple[str, int] | None) -> MetricsServer | None:
        if address is None:
            return None
        if importlib.util.find_spec("prometheus_client") is None:
            raise ConfigError(INSTALL_HINT)
        from edge.metrics.families import families
        from edge.metrics.server import MetricsServer

        server = MetricsServer(address, lambda: families(self._stats(), self._totals()))
        server.start()
        return server

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._server, self._address = None, None
