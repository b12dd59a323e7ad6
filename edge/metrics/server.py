"""The ``/metrics`` HTTP endpoint: one ``metrics`` thread serving one request at a time.

One thread, not one per request as ``prometheus_client``'s own server does: a Pi has one
scraper, and a slow or stuck client must not grow threads; a socket timeout ends a client that
stops talking. Only ``GET /metrics`` (and ``HEAD``) answer; anything else is a 404. The socket
is bound in :meth:`MetricsServer.start`, on the daemon's start, so a port already in use is a
ConfigError (exit 78) before any camera opens.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from edge.errors import ConfigError

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 5.0


class _Source(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT_S

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        try:
            data = generate_latest(self.server.registry)
        except Exception:  # a bug in a figure must not end the thread
            log.exception("building the metrics failed")
            self.send_error(500, "building the metrics failed; see the daemon's log")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: " + format, *args)


class _Server(HTTPServer):
    registry: CollectorRegistry


class MetricsServer:
    """Serves what ``collect`` returns at each scrape (called on the ``metrics`` thread)."""

    def __init__(self, address: tuple[str, int], collect: Callable[[], Iterable[Metric]]) -> None:
        self.address = address
        self._collect = collect
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start serving; raises ConfigError when the address cannot be bound."""
        host, port = self.address
        cls = type("_Bound", (_Server,), {"address_family": _family(host)})
        try:
            server = cls((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"metrics.listen: cannot listen on {_shown(self.address)}: {exc.strerror or exc}. "
                "Another program (or another edge) uses that port: pick a free one, or stop it"
            ) from exc
        server.registry = CollectorRegistry(auto_describe=False)
        server.registry.register(_Source(self._collect))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s/metrics", _shown(self.address))

    def close(self) -> None:
        """Stop serving and release the port (waits for a scrape being answered)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(CLIENT_TIMEOUT_S)
        self._server = self._thread = None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _shown(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
