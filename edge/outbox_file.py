"""The outbox's SQLite file: opening it, the schema, transactions, the statements the outbox runs
on it, and what to do when the file is damaged (move it aside, keep every row SQLite can still
read).

A file that SQLite cannot use at all (not a database, a malformed page on the path of the first
query) must not put the daemon into a restart loop under systemd, and must not silently throw
away the results in it either. So the damaged file is renamed ``<name>.corrupt-<unix time>``
(with its ``-wal``), a fresh file is created, and the rows of the old one are copied over in seq
order, skipping the ranges that sit in unreadable pages.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import SinkError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the boots table (results produced per boot, #16)
BOOTS_KEPT = 20  # boot records kept in the file
_SALVAGE_PROBES = 64  # binary-search steps allowed per damaged region


class Transaction:
    """``with Transaction(db) as db:`` = BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception.

    SQLite rolls a transaction back by itself on some errors (SQLITE_FULL, SQLITE_IOERR); the
    ROLLBACK is then skipped, so the caller sees the real error ("database or disk is full"),
    not "cannot rollback - no transaction is active"."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as rollback_exc:  # the original error is the one to report
                log.debug("rollback after %s failed: %s", exc, rollback_exc)


@dataclass(frozen=True, slots=True)
class BootRecord:
    """What one daemon boot had handed to the outbox at its last commit.

    produced: results accepted for delivery by that boot (all cameras), as of ``at``.
    at: wall-clock time of that commit (Unix seconds).
    """

    boot_id: str
    produced: int
    at: float


@dataclass(frozen=True, slots=True)
class Salvage:
    """The outcome of copying a damaged file's rows: ``copied`` rows, and the seq ranges
    (inclusive) that could not be read and whose rows, if any, are lost."""

    aside: Path
    copied: int
    lost_ranges: tuple[tuple[int, int], ...]


def open_file(path: Path) -> tuple[sqlite3.Connection, Salvage | None]:
    """Open (creating if needed) the outbox file and check it can be read; a damaged one is
    moved aside and its readable rows copied into a fresh file (returned as ``Salvage``).

    Raises SinkError when the file cannot be opened at all (permissions, in use)."""
    try:
        db = _connect(path)
        try:
            probe(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db, None
    except sqlite3.OperationalError as exc:
        if not _is_damage(exc):
            raise _open_error(path, exc) from exc
        return _replace_damaged(path, exc)
    except sqlite3.DatabaseError as exc:
        return _replace_damaged(path, exc)


def probe(db: sqlite3.Connection) -> tuple[int, int | None, int | None]:
    """(count, min seq, max seq) of the outbox table: the first read, which walks every leaf
    page of the table and so finds most damage before the daemon relies on the file."""
    count, low, high = db.execute("SELECT count(*), min(seq), max(seq) FROM outbox").fetchone()
    return int(count), low, high


def read_boots(db: sqlite3.Connection) -> list[BootRecord]:
    """Boot records, oldest first."""
    return [
        BootRecord(str(b), int(p), float(a))
        for b, p, a in db.execute("SELECT boot_id, produced, at FROM boots ORDER BY at, rowid")
    ]


def record_boot(db: sqlite3.Connection, boot_id: str, produced: int) -> None:
    """Inside a transaction: this boot has produced ``produced`` results so far."""
    db.execute(
        "INSERT INTO boots (boot_id, produced, at) VALUES (?, ?, ?) "
        "ON CONFLICT(boot_id) DO UPDATE SET produced = excluded.produced, at = excluded.at",
        (boot_id, produced, time.time()),
    )


def trim_boots(db: sqlite3.Connection) -> None:
    """Inside a transaction: keep the newest BOOTS_KEPT boot records."""
    db.execute(
        "DELETE FROM boots WHERE rowid NOT IN "
        "(SELECT rowid FROM boots ORDER BY at DESC, rowid DESC LIMIT ?)",
        (BOOTS_KEPT,),
    )


def write(db: sqlite3.Connection, body: Callable[[sqlite3.Connection], None]) -> None:
    """Run ``body`` in a transaction. When the disk is full, give the WAL's space back (a
    TRUNCATE checkpoint: the WAL otherwise keeps what it once grew to) and try once more;
    raises sqlite3.Error when that fails too."""
    try:
        with Transaction(db) as tx:
            body(tx)
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc):
            raise
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with Transaction(db) as tx:
            body(tx)


def insert_rows(db: sqlite3.Connection, rows: Iterable[tuple[int, str, bytes]]) -> None:
    """Inside a transaction: add (seq, topic, payload) rows."""
    db.executemany("INSERT INTO outbox (seq, topic, payload) VALUES (?, ?, ?)", rows)


def read_rows(db: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    """Up to ``limit`` rows with seq > ``after``, in seq order, fully read (payloads too)."""
    return [
        (int(s), str(t), bytes(p))
        for s, t, p in db.execute(
            "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
    ]


def count_after(db: sqlite3.Connection, after: int) -> int:
    """How many rows have seq > ``after``."""
    (count,) = db.execute("SELECT count(*) FROM outbox WHERE seq > ?", (after,)).fetchone()
    return int(count)


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means the file's content is damaged (as opposed to a full disk, an I/O
    error, a lock or a permission problem, which moving the file aside would not fix)."""
    return isinstance(exc, sqlite3.DatabaseError) and (
        not isinstance(exc, sqlite3.OperationalError) or _is_damage(exc)
    )


def replace_damaged(
    path: Path, db: sqlite3.Connection, exc: Exception
) -> tuple[sqlite3.Connection, Salvage]:
    """For damage found while running: close ``db`` and do what ``open_file`` does."""
    db.close()
    return _replace_damaged(path, exc)


# -- internals ---------------------------------------------------------------------------------


def _is_damage(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _replace_damaged(path: Path, exc: Exception) -> tuple[sqlite3.Connection, Salvage]:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    try:
        path.rename(aside)
        for suffix in ("-wal", "-shm", "-journal"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        db = _connect(path)
    except (OSError, sqlite3.Error) as exc2:
        raise _open_error(path, exc2) from exc2
    try:
        copied, lost = _copy_rows(aside, db)
    except (OSError, sqlite3.Error) as exc3:
        copied, lost = 0, ((0, -1),)
        log.debug("salvaging %s failed: %s", aside, exc3)
    salvage = Salvage(aside, copied, lost)
    lost_text = (
        "no rows were lost"
        if not lost
        else "rows in unreadable pages are lost ("
        + ", ".join("all" if hi < lo else f"seq {lo}..{hi}" for lo, hi in lost)
        + ")"
    )
    log.error(
        "outbox %s is damaged (%s); moved it to %s, started a new one and copied the %d "
        "results that could still be read; %s. Check the storage (SD card) for errors; the "
        "old file can be deleted once inspected",
        path,
        exc,
        aside,
        copied,
        lost_text,
    )
    return db, salvage


def _copy_rows(src: Path, dst: sqlite3.Connection) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Copy every readable (seq, topic, payload) row of ``src`` into ``dst``, in seq order.

    A query positioned inside a damaged page fails; the next readable start is found by a
    binary search on seq (bounded by _SALVAGE_PROBES steps), and the skipped seq range is
    reported as lost."""
    old = sqlite3.connect(src, isolation_level=None, timeout=0)
    old.execute("PRAGMA locking_mode=EXCLUSIVE")  # no -shm needed for the WAL
    copied = 0
    lost: list[tuple[int, int]] = []
    try:
        try:
            high = old.execute("SELECT max(seq) FROM outbox").fetchone()[0]
        except sqlite3.DatabaseError:
            high = None
        last = 0  # every row with seq <= last is handled
        while True:
            try:
                batch = read_rows(old, last, 256)
            except sqlite3.DatabaseError:
                nxt = _next_readable(old, last, high)
                if nxt is None:
                    lost.append((last + 1, high if high is not None else -1))
                    break
                lost.append((last + 1, nxt))
                last = nxt
                continue
            if not batch:
                break
            with Transaction(dst) as db:
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (seq, topic, payload) VALUES (?, ?, ?)", batch
                )
            copied += len(batch)
            last = int(batch[-1][0])
        try:
            boots = old.execute("SELECT boot_id, produced, at FROM boots").fetchall()
        except sqlite3.Error:
            boots = []
        if boots:
            with Transaction(dst) as db:
                db.executemany(
                    "INSERT OR IGNORE INTO boots (boot_id, produced, at) VALUES (?, ?, ?)", boots
                )
    finally:
        old.close()
    return copied, tuple(lost)


def _next_readable(db: sqlite3.Connection, last: int, high: int | None) -> int | None:
    """The smallest ``x > last`` such that reading from ``seq > x`` works, or None."""

    def works(x: int) -> bool:
        try:
            read_rows(db, x, 256)[:1]
            return True
        except sqlite3.DatabaseError:
            return False

    step, probes = 1, 0
    hi = last + step
    # Gallop forwards until a start works (or past the highest seq we could learn).
    while not works(hi):
        probes += 1
        if probes > _SALVAGE_PROBES or (high is not None and hi > high):
            return None
        step *= 2
        hi = last + step
    lo = hi - step // 2 if step > 1 else last
    while hi - lo > 1 and probes < 2 * _SALVAGE_PROBES:  # invariant: lo fails, hi works
        probes += 1
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


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
        # result in one transaction, deletes go in batches, and while the broker acknowledges
        # promptly nothing is written at all.
        db.execute("PRAGMA synchronous=FULL")
        # Keep the WAL small: checkpoint every 64 pages (256 KiB) and cut the file back to that
        # size afterwards. A WAL left to grow to SQLite's default 4 MiB would, on a nearly full
        # state filesystem, hold the very space the checkpoint needs to move its pages into
        # the database file, and writing could not resume when a little space is freed.
        db.execute("PRAGMA wal_autocheckpoint=64")
        db.execute("PRAGMA journal_size_limit=262144")
        with Transaction(db):
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
            db.execute(
                "CREATE TABLE IF NOT EXISTS boots ("
                "boot_id TEXT PRIMARY KEY, produced INTEGER NOT NULL, at REAL NOT NULL)"
            )
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db
