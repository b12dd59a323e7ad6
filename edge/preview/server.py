"""The preview's HTTP server (standard library ``ThreadingHTTPServer``, one thread per request):
``/`` the page, ``/stream.mjpg`` the annotated MJPEG stream, ``/snapshot.jpg`` the newest
annotated frame, ``/stats.json`` the live figures.

There is no authentication: it binds to 127.0.0.1 unless told otherwise. Each stream part
carries ``X-Frame-Index`` (the frame's index in its source) and ``X-Result-Version`` headers so a
client can tell which frame it is looking at. A client that stops reading for ``timeout``
seconds is disconnected.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edge.errors import ConfigError
from edge.preview.frames import LatestResults, Streams, render
from edge.preview.page import page

log = logging.getLogger(__name__)

BOUNDARY = "edgeframe"


class PreviewServer(ThreadingHTTPServer):
    """Serves one preview; ``start`` runs it on the ``preview-http`` thread.

    stats: returns the ``/stats.json`` object (called on handler threads).
    Raises ConfigError when the address cannot be bound (port in use, unknown host).
    """

    daemon_threads = True  # a stuck client must not keep the process alive at exit

    def __init__(
        self,
        host: str,
        port: int,
        cameras: list[str],
        latest: LatestResults,
        streams: Streams,
        stats: Callable[[], dict[str, Any]],
        quality: int = 80,
    ) -> None:
        self.cameras = cameras
        self.latest = latest
        self.streams = streams
        self.stats = stats
        self.quality = quality
        self.page = page(cameras)
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                "--port (0 picks a free one) or --host"
            ) from exc
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}/"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.25}, name="preview-http"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wake streaming clients, close the socket."""
        self.streams.close()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(2.0)
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    timeout = 10.0  # seconds a client may stall a write before it is dropped
    server_version = "edge-preview"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        camera = query.get("camera", [self.server.cameras[0]])[0]
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page)
        elif url.path == "/stats.json":
            body = json.dumps(self.server.stats(), separators=(",", ":")).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif url.path not in ("/stream.mjpg", "/snapshot.jpg"):
            self._error(HTTPStatus.NOT_FOUND, "not found: try / , /stream.mjpg, /stats.json")
        elif camera not in self.server.cameras:
            known = ", ".join(self.server.cameras)
            self._error(HTTPStatus.NOT_FOUND, f"no camera {camera!r}; cameras: {known}")
        elif url.path == "/snapshot.jpg":
            self._snapshot(camera)
        else:
            self._stream(camera)

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, "text/plain; charset=utf-8", (message + "\n").encode())

    def _snapshot(self, camera: str) -> None:
        item = self.server.latest.get(camera)
        if item is None:
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(HTTPStatus.OK, "image/jpeg", render(item, self.server.quality))

    def _stream(self, camera: str) -> None:
        streams = self.server.streams
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        streams.attach(camera)
        seq = 0
        try:
            while not streams.closed:
                jpeg = streams.wait(camera, seq, timeout=1.0)
                if jpeg is None:
                    continue
                seq = jpeg.seq
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg.data)}\r\n"
                    f"X-Frame-Index: {jpeg.frame_index}\r\n"
                    f"X-Result-Version: {jpeg.version}\r\n\r\n"
                )
                self.wfile.write(head.encode() + jpeg.data + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.debug("stream client %s left", self.address_string())
        finally:
            streams.detach(camera)
            self.close_connection = True
