"""When the MQTT sink's outbox thread touches the disk, and what it does when the disk fails.

Results go to the outbox file when one has waited ``spool_after_s`` for its acknowledgement
while connected, at once while disconnected (``OFFLINE_SPOOL_DELAY_S``), and at shutdown;
acknowledged rows are deleted in the Outbox's batches. When the file cannot be written or read
(disk full, I/O error), delivery goes on from RAM while connected; the first failure is logged at
ERROR with SQLite's own message and the recovery at INFO (once per change, not per try), and the
disk is tried again every ``DISK_RETRY_S``. At shutdown, the results that could be neither
delivered nor written are counted (``lost_at_shutdown``) and logged at ERROR.
"""

from __future__ import annotations

import logging

from edge.errors import SinkError
from edge.outbox import Outbox

log = logging.getLogger(__name__)

DISK_RETRY_S = 2.0  # a failed outbox write or read is retried this often
# While disconnected, new results go to disk as soon as the outbox thread sees them (results
# that queued up meanwhile share one commit), so a crash loses at most the result being handed
# over. The cost is one commit per result during an outage (about 10-20/s): SD-card wear is
# bounded by outage time, not by uptime, because a healthy link never touches the disk.
OFFLINE_SPOOL_DELAY_S = 0.0


class Spooler:
    """The outbox thread's writes to ``outbox``'s file, and the state of that disk.

    Outbox thread only; ``problem`` (SQLite's message while the disk fails, else None),
    ``errors`` (failed reads and writes so far) and ``lost_at_shutdown`` may be read from any
    thread."""

    def __init__(self, outbox: Outbox, spool_after_s: float) -> None:
        self.problem: str | None = None
        self.errors = 0
        self.lost_at_shutdown = 0
        self._outbox = outbox
        self._spool_after_s = spool_after_s
        self._write_retry_at = 0.0  # writes (spool, deletes) failed: retry then
        self._read_retry_at = 0.0  # reading the backlog failed: retry then

    def spool(self, now: float, connected: bool, force: bool = False) -> None:
        """Write the results waiting in RAM to the file when one has waited long enough (or
        ``force``, at shutdown), unless a failed write is waiting for its retry."""
        ob = self._outbox
        if ob.path is None or (now < self._write_retry_at and not force):
            return
        since = ob.ram_since()
        if since is None or (not force and now - since < self._delay(connected)):
            return
        try:
            n = ob.spool()
        except SinkError as exc:
            self._write_retry_at = now + DISK_RETRY_S
            self._failed(exc)
            return
        self._ok()
        log.debug("spooled %d results to %s", n, ob.path)

    def flush(self, now: float) -> None:
        """Delete acknowledged rows when a batch is due."""
        if now < self._write_retry_at:
            return
        try:
            if self._outbox.flush(now):
                self._ok()
        except SinkError as exc:
            self._write_retry_at = now + DISK_RETRY_S
            self._failed(exc)

    def can_read(self, now: float) -> bool:
        """False while a failed read of the backlog waits for its retry."""
        return now >= self._read_retry_at

    def read_failed(self, exc: SinkError, now: float) -> None:
        """Reading the backlog (``Outbox.take``) failed: log it, try again later."""
        self._read_retry_at = now + DISK_RETRY_S
        self._failed(exc)

    def wake_times(self, now: float, connected: bool) -> list[float]:
        """When the outbox thread has disk work next: a spool, a delete batch, a retry."""
        ob = self._outbox
        times = []
        since = ob.ram_since() if ob.path is not None else None
        if since is not None:
            times.append(max(since + self._delay(connected), self._write_retry_at))
        flush_at = ob.flush_due_at()
        if flush_at is not None:
            times.append(max(flush_at, self._write_retry_at))
        if self._read_retry_at > now:
            times.append(self._read_retry_at)
        return times

    def count_unkept(self, waiting: int) -> None:
        """At shutdown, after the final spool: the results neither delivered nor on disk, with
        ``waiting`` results not yet handed to the outbox."""
        ob = self._outbox
        if ob.path is None:
            return
        unkept = ob.pending_ram + waiting
        if unkept:
            self.lost_at_shutdown = unkept
            log.error(
                "%d undelivered results could not be written to the outbox %s (%s) and are "
                "lost at this shutdown",
                unkept,
                ob.path,
                self.problem or "not written in time",
            )

    def close(self) -> None:
        """Close the outbox (its last spool and deletes); count what it could not keep."""
        unkept = self._outbox.close()
        if unkept and self.lost_at_shutdown < unkept and self._outbox.path is not None:
            self.lost_at_shutdown = unkept
            log.error(
                "%d undelivered results could not be written to the outbox %s and are lost",
                unkept,
                self._outbox.path,
            )

    def _delay(self, connected: bool) -> float:
        return self._spool_after_s if connected else OFFLINE_SPOOL_DELAY_S

    def _failed(self, exc: SinkError) -> None:
        """An outbox read or write failed: ERROR once per change of the problem, not per try."""
        self.errors += 1
        cause = str(exc.__cause__ or exc)
        if self.problem != cause:
            self.problem = cause
            log.error(
                "%s. Delivery goes on from RAM while the broker is connected; retrying the "
                "disk every %g s",
                exc,
                DISK_RETRY_S,
            )

    def _ok(self) -> None:
        if self.problem is not None:
            log.info(
                "the outbox %s is writable again (%d results pending on disk)",
                self._outbox.path,
                self._outbox.pending_disk,
            )
            self.problem = None
