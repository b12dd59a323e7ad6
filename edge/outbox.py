"""The bounded, durable FIFO between result producers and the MQTT broker.

Results wait here, in enqueue order, until the broker acknowledges them. To spare the SD card they
live in RAM while the broker acknowledges promptly; the owner calls ``spool()`` to move everything
still in RAM into SQLite (one transaction) when a result has waited too long, was produced while
the broker was unreachable, or the daemon stops. Rows are deleted only after their acknowledgement,
in batches. A backlog on disk (from an outage or a previous run) is paged back in small pages and
always goes out before anything newer, so the order is one global FIFO. When more than ``max_rows``
results are pending, the oldest not yet handed to the broker are dropped and counted.

Not thread-safe: one thread owns an Outbox (the MQTT sink's outbox thread). Its integer counters
may be read from other threads for statistics.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edge.errors import SinkError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PAGE_ROWS = 64  # rows read back per query while draining a backlog; bounds the RAM it costs
DELETE_BATCH = 256  # acknowledged rows deleted per transaction ...
DELETE_DELAY_S = 1.0  # ... or after this long, whichever comes first


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
    opened or is used by another process. A file that is not a readable SQLite database is moved
    aside (``<name>.corrupt-<unix time>``) with an error in the log, and a new one is started.

    Where an entry is, in seq order: *in flight* (handed to the broker, awaiting its
    acknowledgement), then *head* (read back from disk, ready), then *unloaded* rows (on disk
    only), then *tail* (RAM only, ready). Everything on disk is older than everything RAM-only,
    because ``spool()`` always writes every RAM-only entry.
    """

    def __init__(self, path: Path | None, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.path = path
        self.max_rows = max_rows
        self._head: deque[Entry] = deque()
        self._tail: deque[Entry] = deque()
        self._inflight: dict[int, Entry] = {}
        self._unloaded = 0  # rows on disk not in RAM; all have seq > _loaded_upto
        self._loaded_upto = 0  # highest seq of a disk row that is (or was) resident in RAM
        self._drop_unloaded = 0  # oldest unloaded rows dropped for space, not yet deleted
        self._deletes: list[int] = []
        self._deletes_since: float | None = None
        self._next_seq = 1
        # Counters, readable from any thread.
        self.pending_ram = 0
        self.pending_disk = 0
        self.inserts = 0
        self.deletes = 0
        self.dropped = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = _open(path)
            count, low, high = self._db.execute(
                "SELECT count(*), min(seq), max(seq) FROM outbox"
            ).fetchone()
            if count:
                self._unloaded = self.pending_disk = int(count)
                self._loaded_upto = int(low) - 1
                self._next_seq = int(high) + 1
                log.info("outbox %s holds %d results from a previous run", path, count)
                self._enforce_bound()

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
        if self._deletes_since is None and not self._drop_unloaded:
            return None
        if len(self._deletes) >= DELETE_BATCH or self._deletes_since is None:
            return 0.0
        return self._deletes_since + DELETE_DELAY_S

    # -- mutations ---------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, now: float | None = None) -> int:
        """Append a message in RAM and return its seq; drops the oldest entries if over max_rows."""
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
        if not self._head and self._unloaded:
            self._load_page()
        if self._head:
            entry = self._head.popleft()
        elif self._tail and not self._unloaded:
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
        if entry.on_disk:
            self.pending_disk -= 1
            self._deletes.append(seq)
            if self._deletes_since is None:
                self._deletes_since = time.monotonic() if now is None else now
        else:
            self.pending_ram -= 1
        return True

    def requeue(self) -> int:
        """Put every in-flight entry back in front of the queue, in seq order; returns how many.

        For a new broker connection: what was in flight on the old one is sent again."""
        entries = sorted(self._inflight.values(), key=lambda e: e.seq, reverse=True)
        self._inflight.clear()
        for entry in entries:
            (self._head if entry.on_disk else self._tail).appendleft(entry)
        return len(entries)

    def spool(self) -> int:
        """Write every RAM-only entry to disk in one transaction; returns how many were written.

        A no-op without a path. Raises SinkError if the write fails (the entries stay in RAM)."""
        if self._db is None:
            return 0
        fresh = sorted((e for e in self._inflight.values() if not e.on_disk), key=lambda e: e.seq)
        fresh.extend(self._tail)
        if not fresh:
            return 0
        try:
            with _Transaction(self._db) as db:
                self._apply_drops(db)
                db.executemany(
                    "INSERT INTO outbox (seq, topic, payload) VALUES (?, ?, ?)",
                    ((e.seq, e.topic, e.payload) for e in fresh),
                )
        except sqlite3.Error as exc:
            raise SinkError(
                f"cannot write {len(fresh)} pending results to the outbox {self.path}: {exc}; "
                "they stay in RAM for now. Check free space and permissions of the state directory"
            ) from exc
        self.inserts += len(fresh)
        self.pending_ram -= len(fresh)
        self.pending_disk += len(fresh)
        for entry in fresh:
            entry.on_disk = True
        for entry in self._inflight.values():
            self._loaded_upto = max(self._loaded_upto, entry.seq)
        # Spooled entries stay resident while the head has room and nothing unloaded precedes
        # them; beyond that only the row remains, and the payload's RAM is released.
        while self._tail:
            entry = self._tail.popleft()
            if not self._unloaded and len(self._head) < PAGE_ROWS:
                self._head.append(entry)
                self._loaded_upto = entry.seq
            else:
                self._unloaded += 1
        return len(fresh)

    def flush(self, now: float | None = None, force: bool = False) -> int:
        """Delete acknowledged and dropped rows if a batch is due (or ``force``); returns rows.

        Raises SinkError if the delete fails (it is retried on the next call)."""
        due = self.flush_due_at()
        if self._db is None or due is None:
            self._deletes.clear()
            self._deletes_since = None
            return 0
        if not force and (time.monotonic() if now is None else now) < due:
            return 0
        rows = len(self._deletes) + self._drop_unloaded
        try:
            with _Transaction(self._db) as db:
                self._apply_drops(db)
                db.executemany("DELETE FROM outbox WHERE seq = ?", ((s,) for s in self._deletes))
        except sqlite3.Error as exc:
            raise SinkError(
                f"cannot delete delivered results from the outbox {self.path}: {exc}; they may be "
                "sent again after a restart. Check the state directory's disk"
            ) from exc
        self.deletes += rows
        self._deletes.clear()
        self._deletes_since = None
        return rows

    def close(self) -> None:
        """Spool everything still in RAM, write pending deletes, close the file.

        Without a path, what is pending is lost, and the log says how much."""
        if self._db is None:
            if self.pending:
                log.warning(
                    "%d undelivered results are lost: the outbox has no state directory",
                    self.pending,
                )
            return
        try:
            self.spool()
            self.flush(force=True)
        finally:
            self._db.close()
            self._db = None

    # -- internals ---------------------------------------------------------------------------

    def _load_page(self) -> None:
        assert self._db is not None
        try:
            with _Transaction(self._db) as db:
                self._apply_drops(db)
                rows = db.execute(
                    "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (self._loaded_upto, PAGE_ROWS),
                ).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(
                f"cannot read the backlog from the outbox {self.path}: {exc}. "
                "Check the state directory's disk; if the file is damaged, move it aside"
            ) from exc
        now = time.monotonic()
        for seq, topic, payload in rows:
            self._head.append(Entry(int(seq), str(topic), bytes(payload), now, True))
        if rows:
            self._loaded_upto = int(rows[-1][0])
            self._unloaded = max(0, self._unloaded - len(rows))
        if len(rows) < PAGE_ROWS and self._unloaded:
            # Fewer rows than counted: someone edited the file. Trust the file.
            log.warning("outbox %s had %d fewer rows than expected", self.path, self._unloaded)
            self.pending_disk -= self._unloaded
            self._unloaded = 0

    def _apply_drops(self, db: sqlite3.Connection) -> None:
        """Delete the rows ``_enforce_bound`` dropped from the unloaded region (inside a
        transaction), before anything moves ``_loaded_upto`` past them."""
        if self._drop_unloaded:
            db.execute(
                "DELETE FROM outbox WHERE seq IN "
                "(SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?)",
                (self._loaded_upto, self._drop_unloaded),
            )
            self._drop_unloaded = 0

    def _enforce_bound(self) -> None:
        excess = self.pending - self.max_rows
        dropped = 0
        while excess > 0:
            if self._head:
                entry = self._head.popleft()
                self.pending_disk -= 1
                self._deletes.append(entry.seq)
                if self._deletes_since is None:
                    self._deletes_since = time.monotonic()
            elif self._unloaded:
                take = min(excess, self._unloaded)
                self._unloaded -= take
                self._drop_unloaded += take
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
        if dropped:
            self.dropped += dropped
            log.debug("outbox full (%d rows): dropped the %d oldest", self.max_rows, dropped)


class _Transaction:
    """``with _Transaction(db) as db:`` = BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the outbox file; move a damaged one aside and start afresh."""
    try:
        return _connect(path)
    except sqlite3.OperationalError as exc:
        raise _open_error(path, exc) from exc
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error(
            "outbox %s is not a usable SQLite database (%s); moved it to %s and started an empty "
            "one. Results in it were not delivered: inspect or delete that file",
            path,
            exc,
            aside,
        )
        try:
            path.rename(aside)
            for suffix in ("-wal", "-shm", "-journal"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    side.rename(aside.with_name(aside.name + suffix))
            return _connect(path)
        except (OSError, sqlite3.Error) as exc2:
            raise _open_error(path, exc2) from exc2


def _open_error(path: Path, exc: Exception) -> SinkError:
    if "locked" in str(exc):
        return SinkError(
            f"outbox {path} is in use by another process; is a second daemon running with the "
            "same state directory? Stop it or give each instance its own state directory"
        )
    return SinkError(
        f"cannot open the outbox {path}: {exc}. Check that the state directory exists and is "
        "writable by the daemon's user"
    )


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: the Outbox is built by the caller and then used by one other
    # thread (the sink's outbox thread); it is never used by two threads at once.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        # EXCLUSIVE before WAL: the file stays locked by this process (a second daemon on the same
        # state directory fails at open instead of interleaving rows), and SQLite then needs no
        # -shm file. The kernel drops the lock when the process dies, even by SIGKILL.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        # synchronous=FULL: every commit fsyncs the WAL, so a spooled result survives a power
        # cut, which is the point of spooling it. NORMAL would only survive a process crash and
        # lose up to the kernel's writeback delay (~30 s) of spooled results on power loss. The
        # SD-card cost stays small because commits are batched: a spool writes every pending
        # result in one transaction, deletes go in batches of DELETE_BATCH or DELETE_DELAY_S,
        # and while the broker acknowledges promptly nothing is written at all.
        db.execute("PRAGMA synchronous=FULL")
        with _Transaction(db):
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SinkError(
                    f"outbox {path} has format {version}, newer than this edge understands "
                    f"({SCHEMA_VERSION}); upgrade edge or move the file aside"
                )
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                "seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)"
            )
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db
