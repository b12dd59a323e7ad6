"""Real stream servers on loopback for the stream tests: ffmpeg serving the sample clip as MJPEG
over HTTP, and GStreamer's RTSP server (tests/servers/rtsp_server.py, run by the system python3)
serving a live test pattern. Both can be frozen with SIGSTOP and thawed with SIGCONT, which is
what a camera that hangs looks like from the network.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "samples" / "shapes.mp4"
RTSP_SERVER = Path(__file__).resolve().parent / "servers" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # where python3-gi and gst-rtsp-server are installed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` of 127.0.0.1, without connecting to it (a
    connection would be taken as the single client of ``ffmpeg -listen 1``)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":  # 0A = LISTEN
            return True
    return False


class Server:
    """A server process; ``freeze()``/``thaw()`` stop and continue it, ``kill()`` ends it."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
        )

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """End the server (idempotent)."""
        if self.proc.poll() is None:
            self.thaw()
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def mjpeg_server(tmp: Path) -> Server:
    """ffmpeg serving the sample clip at its own 10 fps, looped, as multipart JPEG over HTTP to
    one client (``-listen 1``: it exits when that client leaves). ``url`` attribute: its URL."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed (scripts/test installs it)"
    port = free_port()
    server = Server(
        [
            ffmpeg,
            *("-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1"),
            *("-i", str(CLIP), "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/"),
        ],
        port,
        tmp / "ffmpeg.log",
    )
    deadline = time.monotonic() + 10
    while not listening(port):  # no event to wait for: ffmpeg says nothing when it listens
        assert server.proc.poll() is None, server.log()
        assert time.monotonic() < deadline, "ffmpeg did not start listening"
        time.sleep(0.02)
    return server


def rtsp_server(tmp: Path, transport: str = "any") -> tuple[Server, str]:
    """GStreamer's RTSP server with a live 10 fps test pattern (RTP/JPEG, real timestamps);
    ``transport``: ``udp``, ``tcp`` or ``any``. Returns the server and the stream's URL."""
    assert Path(SYSTEM_PYTHON).exists()
    port = free_port()
    server = Server([SYSTEM_PYTHON, str(RTSP_SERVER), str(port), transport], port, tmp / "rtsp.log")
    assert server.proc.stdout is not None
    line = server.proc.stdout.readline().decode()  # printed once it listens
    assert line.startswith("ready "), line + server.log()
    return server, line.split()[1]
