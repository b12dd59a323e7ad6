"""The systemd notification protocol (``sd_notify``) without a dependency: readiness, status
text, watchdog pings, reload and stop announcements sent as datagrams to ``$NOTIFY_SOCKET``.
Outside systemd (a foreground run, a test) the variable is unset and every call is a no-op, so
the daemon runs the same code either way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# systemd reads one datagram per message into a buffer of about PIPE_BUF; STATUS= is free text
# from our code, so it is the part that gets cut.
_STATUS_MAX = 1024


class Notifier:
    """Talks to systemd over ``$NOTIFY_SOCKET`` (a datagram socket; abstract namespace when the
    name starts with ``@``). A no-op when the variable is unset (foreground runs).

    Every method is thread-safe and never raises: a send that fails (systemd gone, socket
    removed, its queue full) is logged once at WARNING per run of failures and dropped. Sends
    never block, so a stalled service manager cannot stall the caller.

    ``WATCHDOG=1`` must only be sent from a heartbeat that proves progress (frames flowing,
    inference finishing, the MQTT thread alive), never from a timer that runs regardless: an
    unconditional ping only detects a process that is hung as a whole. Send it at least every
    ``watchdog_interval / 2`` seconds. With ``NotifyAccess=main`` systemd ignores messages from
    any process but the main one, so child processes cannot ping on the daemon's behalf.
    """

    enabled: bool
    """True when messages are sent; False outside systemd, for an address this class cannot
    use, and after :meth:`close`."""

    watchdog_interval: float | None
    """``WatchdogSec=`` in seconds (from ``$WATCHDOG_USEC``), or None when the watchdog is off
    or meant for another process (``$WATCHDOG_PID`` set to a different pid)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``env``
        (default: ``os.environ``). Opens one non-blocking socket; does not touch the network."""
        environ: Mapping[str, str] = os.environ if env is None else env
        self._lock = threading.Lock()
        self._failing = False
        self._sock: socket.socket | None = None
        self._address = _address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(environ)
        if self._address is not None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
            except OSError as exc:
                log.warning("cannot create the systemd notification socket: %s", exc)
            else:
                self._sock = sock
        self.enabled = self._sock is not None

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up (or a reload) is complete: ``READY=1``, with ``STATUS=`` when
        given. For ``Type=notify`` units, ``systemctl start`` returns only after this."""
        self._send("READY=1" + (f"\n{_status_line(status)}" if status else ""))

    def watchdog(self) -> None:
        """Ping the watchdog (``WATCHDOG=1``). Call only from a heartbeat that proves progress;
        see the class docstring."""
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """Set the one-line text ``systemctl status`` shows (``STATUS=``); newlines become
        spaces and text past 1024 characters is cut."""
        self._send(_status_line(text))

    def stopping(self) -> None:
        """Announce a clean shutdown has begun (``STOPPING=1``)."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """Announce a configuration reload (``RELOADING=1`` with ``MONOTONIC_USEC=``, which
        systemd 253 and later want; older versions ignore it). Send :meth:`ready` when the
        reload is done, whether it succeeded or not, or the unit stays in "reloading"."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def close(self) -> None:
        """Close the socket; later calls are no-ops. Safe to call twice."""
        with self._lock:
            sock, self._sock = self._sock, None
            self.enabled = False
        if sock is not None:
            sock.close()

    def _send(self, message: str) -> None:
        with self._lock:
            if self._sock is None or self._address is None:
                return
            try:
                self._sock.sendto(message.encode("utf-8", "replace"), self._address)
            except OSError as exc:
                if not self._failing:
                    log.warning(
                        "systemd notification %r not delivered (%s); further failures are "
                        "logged at DEBUG until one succeeds. If this is not a systemd service, "
                        "unset NOTIFY_SOCKET",
                        message.partition("\n")[0],
                        exc,
                    )
                else:
                    log.debug("systemd notification %r not delivered: %s", message, exc)
                self._failing = True
            else:
                self._failing = False


def _address(value: str) -> bytes | None:
    """The socket address for ``$NOTIFY_SOCKET``, or None when unset or unusable."""
    if not value:
        return None
    if value.startswith("@"):
        # Linux abstract namespace: a leading NUL instead of the '@', no filesystem entry.
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    # systemd 254+ can hand a VM "vsock:CID:PORT"; services on a host never get one.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd notifications are off", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds from ``$WATCHDOG_USEC`` when the watchdog applies to this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    try:
        interval = int(usec)
    except ValueError:
        return None
    if interval <= 0:
        return None
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return interval / 1_000_000


def _status_line(text: str) -> str:
    """``STATUS=`` with text on one line; systemd splits messages on newlines."""
    flat = " ".join(text.splitlines())
    return "STATUS=" + flat[:_STATUS_MAX]
