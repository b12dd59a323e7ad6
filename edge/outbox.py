"""The bounded, durable FIFO between result producers and the MQTT broker.

Results wait here, in enqueue order, until the broker acknowledges them. To spare the SD card they
live in RAM while the broker acknowledges promptly; the owner calls ``spool()`` to move everything
still in RAM into SQLite (one transaction) when a result has waited too long, was produced while
the broker was unreachable, or the daemon stops. Rows are deleted only after their acknowledgement,
in batches. A backlog on disk (from an outage or a previous run) is paged back in small pages and
always goes out before anything newer, so the order is one global FIFO. When more than ``max_rows``
results are pending, the oldest not yet handed to the broker are dropped and counted, with a
WARNING when dropping starts.

When the file cannot be written (a full or failing disk), entries stay in RAM and can still be
delivered; RAM-only entries beyond ``ram_max_rows`` are then dropped oldest first and counted
(``dropped_ram``). ``spool()`` writes in chunks, so a little free space is used as soon as it
appears. Each spool transaction also records how many results this boot has produced so far
(``produced``, in the ``boots`` table), so after a SIGKILL the next boot can say what the killed
one had produced and a subscriber can tell a lost tail from a quiet camera.

Not thread-safe: one thread owns an Outbox (the MQTT sink's outbox thread). Its integer counters
may be read from other threads for statistics.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from edge.errors import SinkError
from edge.outbox_backlog import Backlog
from edge.outbox_file import (
    BootRecord,
    Salvage,
    insert_rows,
    open_file,
    probe,
    read_boots,
    record_boot,
    trim_boots,
    write,
)

log = logging.getLogger(__name__)

SPOOL_CHUNK = 256  # rows per spool transaction: a nearly full disk still takes some
RAM_MAX_ROWS = 20_000  # RAM-only entries kept while the file cannot be written
PAGE_ROWS = 64  # rows read back per query while draining a backlog; bounds the RAM it costs


@dataclass(slots=True, eq=False)
class Entry:
    """One pending message. Owned by its Outbox: callers only read ``seq``, ``topic``, ``payload``.

    seq: enqueue order, strictly increasing across runs sharing one outbox file.
    created: ``time.monotonic()`` when it was put (for rows read back from disk: when read).
    on_disk: whether a row for it exists in SQLite.
    """

    seq: int
    topic: str
    payload: bytes
    created: float
    on_disk: bool


class Outbox:
    """A bounded FIFO of (topic, payload) with RAM-first, SQLite-backed durability.

    ``path`` is the SQLite file (its directory must exist and be writable); ``None`` keeps
    everything in RAM, so a restart loses what is pending. Raises SinkError when the file cannot be
    opened or is used by another process. A damaged file is moved aside
    (``<name>.corrupt-<unix time>``), its readable rows are copied into a new one (``salvage``
    says how many), and the log says so.

    ``boot_id`` names this boot in the ``boots`` table; ``produced`` is set by the owner before
    each ``spool()`` (results this boot has handed over so far) and recorded with it.

    Where an entry is, in seq order: *in flight* (handed to the broker, awaiting its
    acknowledgement), then *head* (read back from disk, ready), then *unloaded* rows (on disk
    only), then *tail* (RAM only, ready). Everything on disk is older than everything RAM-only,
    because ``spool()`` writes RAM-only entries in seq order and stops at the first failure.
    """

    def __init__(
        self,
        path: Path | None,
        max_rows: int,
        ram_max_rows: int = RAM_MAX_ROWS,
        boot_id: str = "",
    ) -> None:
        if max_rows < 1 or ram_max_rows < 1:
            raise ValueError("max_rows and ram_max_rows must be at least 1")
        self.path = path
        self.max_rows = max_rows
        self.ram_max_rows = ram_max_rows
        self.boot_id = boot_id
        self.produced = 0
        self._head: deque[Entry] = deque()
        self._tail: deque[Entry] = deque()
        self._inflight: dict[int, Entry] = {}
        self._next_seq = 1
        self._dropping = False  # an over-bound episode is under way (logged once)
        # Counters, readable from any thread.
        self.pending_ram = 0
        self.pending_disk = 0
        self.inserts = 0
        self.deletes = 0
        self.dropped = 0  # oldest dropped because more than max_rows were pending
        self.dropped_ram = 0  # RAM-only dropped because the file could not take them
        self.commits = 0
        self.last_commit_ms: float | None = None
        self.max_commit_ms = 0.0
        self.salvage: Salvage | None = None
        self.previous_boots: list[BootRecord] = []
        self._backlog = Backlog(None, None)  # rows only on disk; deletes waiting for a batch
        if path is not None:
            db, self.salvage = open_file(path)
            count, low, high = probe(db)
            self.previous_boots = read_boots(db)
            self._backlog = Backlog(db, path, count, low)
            if count:
                self.pending_disk = count
                self._next_seq = int(high) + 1 if high is not None else 1
                log.info("outbox %s holds %d results from a previous run", path, count)
                self._enforce_bound()

    @property
    def _db(self) -> sqlite3.Connection | None:
        """The open file (it changes when a damaged one is replaced), None in RAM only."""
        return self._backlog.db

    # -- queries -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Entries not yet acknowledged, in flight or not."""
        return self.pending_ram + self.pending_disk

    @property
    def inflight(self) -> int:
        """Entries handed out by ``take()`` and not yet acked or requeued."""
        return len(self._inflight)

    def ram_since(self) -> float | None:
        """``created`` of the oldest entry that is only in RAM, or None when there is none."""
        oldest: float | None = None
        for e in self._inflight.values():
            if not e.on_disk and (oldest is None or e.created < oldest):
                oldest = e.created
        if oldest is None and self._tail:
            oldest = self._tail[0].created
        return oldest

    def flush_due_at(self) -> float | None:
        """Monotonic time at which ``flush()`` has batched deletes to write, or None."""
        return self._backlog.deletions.due_at()

    # -- mutations ---------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, now: float | None = None) -> int:
        """Append a message in RAM and return its seq; drops the oldest entries if over a bound."""
        entry = Entry(
            self._next_seq, topic, payload, time.monotonic() if now is None else now, False
        )
        self._next_seq += 1
        self._tail.append(entry)
        self.pending_ram += 1
        self._enforce_bound()
        return entry.seq

    def take(self) -> Entry | None:
        """The oldest entry not in flight, now marked in flight; None when there is none.

        May read a page of rows from disk (SinkError if that fails)."""
        if not self._head and self._backlog.count:
            self._load_page()
        if self._head:
            entry = self._head.popleft()
        elif self._tail and not self._backlog.count:
            entry = self._tail.popleft()
        else:
            return None
        self._inflight[entry.seq] = entry
        return entry

    def untake(self, seq: int) -> None:
        """Put an in-flight entry back at the front, as if ``take()`` had not returned it.

        Only valid for the most recently taken entry."""
        entry = self._inflight.pop(seq)
        (self._head if entry.on_disk else self._tail).appendleft(entry)

    def ack(self, seq: int, now: float | None = None) -> bool:
        """Forget an in-flight entry (delivered, or rejected for good); False if it is unknown.

        Its row, if any, is deleted by a later ``flush()``."""
        entry = self._inflight.pop(seq, None)
        if entry is None:
            return False
        self._forget(entry, now)
        return True

    def discard(self, topic: str) -> int:
        """Forget every pending entry for ``topic`` that is not in flight (a topic the broker
        refuses); returns how many. Rows only on disk are left to be discarded when paged in."""
        n = 0
        for queue in (self._head, self._tail):
            keep = deque(e for e in queue if e.topic != topic)
            for e in queue:
                if e.topic == topic:
                    self._forget(e, None)
                    n += 1
            queue.clear()
            queue.extend(keep)
        return n

    def requeue(self) -> int:
        """Put every in-flight entry back in front of the queue, in seq order; returns how many.

        For a new broker connection: what was in flight on the old one is sent again."""
        entries = sorted(self._inflight.values(), key=lambda e: e.seq, reverse=True)
        self._inflight.clear()
        for entry in entries:
            (self._head if entry.on_disk else self._tail).appendleft(entry)
        return len(entries)

    def spool(self) -> int:
        """Write every RAM-only entry to disk, in chunks of SPOOL_CHUNK rows, oldest first, and
        record ``produced`` for this boot; returns how many entries were written.

        A no-op without a path. Raises SinkError if a write fails: the entries written before it
        stay written, the rest stay in RAM."""
        if self._db is None:
            return 0
        fresh = sorted((e for e in self._inflight.values() if not e.on_disk), key=lambda e: e.seq)
        fresh.extend(self._tail)
        if not fresh:
            return 0
        written = 0
        try:
            for i in range(0, len(fresh), SPOOL_CHUNK):
                chunk = fresh[i : i + SPOOL_CHUNK]
                t0 = time.perf_counter()
                self._write(partial(self._insert, chunk))
                self._committed(t0)
                for entry in chunk:
                    entry.on_disk = True
                written += len(chunk)
        except sqlite3.Error as exc:
            raise SinkError(
                f"cannot write {len(fresh) - written} pending results to the outbox "
                f"{self.path}: {exc}; they stay in RAM for now (at most {self.ram_max_rows}). "
                "Check free space and permissions of the state directory"
            ) from exc
        finally:
            if written:
                self._spooled(written)
        return written

    def _insert(self, chunk: list[Entry], db: sqlite3.Connection) -> None:
        self._backlog.deletions.apply_oldest(db, self._backlog.after)
        insert_rows(db, ((e.seq, e.topic, e.payload) for e in chunk))
        if self.boot_id:
            record_boot(db, self.boot_id, self.produced)
            if self.commits == 0:
                trim_boots(db)

    def _write(self, body: Callable[[sqlite3.Connection], None]) -> None:
        """Every transaction that changes the file: ``outbox_file.write`` (one retry on a
        full disk); raises sqlite3.Error."""
        assert self._db is not None
        write(self._db, body)

    def record(self) -> None:
        """Record ``produced`` for this boot in its own transaction (at shutdown, and while
        nothing needs spooling). Raises SinkError if the write fails."""
        if self._db is None or not self.boot_id:
            return
        t0 = time.perf_counter()
        try:
            self._write(lambda db: record_boot(db, self.boot_id, self.produced))
        except sqlite3.Error as exc:
            raise SinkError(f"cannot record this boot's count in {self.path}: {exc}") from exc
        self._committed(t0)

    def flush(self, now: float | None = None, force: bool = False) -> int:
        """Delete acknowledged and dropped rows if a batch is due (or ``force``); returns rows.

        Raises SinkError if the delete fails (it is retried on the next call)."""
        deletions = self._backlog.deletions
        due = deletions.due_at()
        if self._db is None or due is None:
            deletions.clear()
            return 0
        if not force and (time.monotonic() if now is None else now) < due:
            return 0
        rows = len(deletions)
        try:
            self._write(partial(deletions.apply, after=self._backlog.after))
        except sqlite3.Error as exc:
            raise SinkError(
                f"cannot delete delivered results from the outbox {self.path}: {exc}; they may be "
                "sent again after a restart. Check the state directory's disk"
            ) from exc
        self.deletes += rows
        deletions.clear()
        return rows

    def close(self) -> int:
        """Spool everything still in RAM, write pending deletes, close the file; returns how many
        pending results could not be kept (lost: no file, or the file refused them).

        Never raises for a write failure: the count is the answer (the caller logs it)."""
        if self._db is None:
            if self.pending and self.path is None:
                log.warning(
                    "%d undelivered results are lost: the outbox has no state directory",
                    self.pending,
                )
            return self.pending_ram
        try:
            try:
                self.spool()
                self.record()
            except SinkError as exc:
                log.debug("final spool failed: %s", exc)
            try:
                self.flush(force=True)
            except SinkError as exc:
                log.debug("final flush failed: %s", exc)
        finally:
            self._db.close()
            self._backlog.db = None
        return self.pending_ram

    # -- internals ---------------------------------------------------------------------------

    def _forget(self, entry: Entry, now: float | None) -> None:
        if entry.on_disk:
            self.pending_disk -= 1
            self._backlog.deletions.add(entry.seq, now)
        else:
            self.pending_ram -= 1

    def _committed(self, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000
        self.commits += 1
        self.last_commit_ms = round(ms, 3)
        self.max_commit_ms = max(self.max_commit_ms, ms)

    def _spooled(self, written: int) -> None:
        """Bookkeeping after ``written`` of the oldest RAM-only entries reached the file."""
        self.inserts += written
        self.pending_ram -= written
        self.pending_disk += written
        backlog = self._backlog
        for entry in self._inflight.values():
            if entry.on_disk:
                backlog.after = max(backlog.after, entry.seq)
        # Spooled entries stay resident while the head has room and nothing unloaded precedes
        # them; beyond that only the row remains, and the payload's RAM is released.
        while self._tail and self._tail[0].on_disk:
            entry = self._tail.popleft()
            if not backlog.count and len(self._head) < PAGE_ROWS:
                self._head.append(entry)
                backlog.after = entry.seq
            else:
                backlog.count += 1

    def _load_page(self) -> None:
        rows, missing = self._backlog.page(PAGE_ROWS)
        self.pending_disk -= missing
        if self._backlog.salvage is not None:
            self.salvage = self._backlog.salvage
        now = time.monotonic()
        for seq, topic, payload in rows:
            self._head.append(Entry(seq, topic, payload, now, True))

    def _enforce_bound(self) -> None:
        excess = self.pending - self.max_rows
        dropped = 0
        while excess > 0:
            if self._head:
                entry = self._head.popleft()
                self.pending_disk -= 1
                self._backlog.deletions.add(entry.seq)
            elif self._backlog.count:
                take = min(excess, self._backlog.count)
                self._backlog.drop_oldest(take)
                self.pending_disk -= take
                excess -= take
                dropped += take
                continue
            elif self._tail:
                self._tail.popleft()
                self.pending_ram -= 1
            else:
                break  # only in-flight entries left; they are never dropped
            excess -= 1
            dropped += 1
        ram_dropped = 0
        while self.pending_ram > self.ram_max_rows and self._tail and not self._tail[0].on_disk:
            self._tail.popleft()
            self.pending_ram -= 1
            ram_dropped += 1
        if dropped:
            self.dropped += dropped
        if ram_dropped:
            self.dropped_ram += ram_dropped
        if (dropped or ram_dropped) and not self._dropping:
            self._dropping = True
            if dropped:
                log.warning(
                    "outbox full: more than %d results pending (mqtt.outbox_max_rows); dropping "
                    "the oldest (counted in stats as dropped_full) until the broker takes them",
                    self.max_rows,
                )
            else:
                log.warning(
                    "the outbox file cannot take results and %d wait in RAM; dropping the oldest "
                    "(counted in stats as dropped_ram) until the disk takes them again",
                    self.ram_max_rows,
                )
        elif not (dropped or ram_dropped) and self._dropping and self.pending < self.max_rows:
            self._dropping = False
            log.info("outbox no longer dropping results (%d pending)", self.pending)
