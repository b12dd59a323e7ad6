"""The part of an outbox that lives only in its file: rows written to disk whose payloads are not
held in RAM (a backlog left by an outage or a previous run, and what was spooled behind it), read
back in pages in seq order, and the rows waiting to be deleted, written in batches so that a
steady stream of acknowledgements costs one transaction per batch, not one per result. Pages
are read inside a transaction that first deletes the rows dropped for space from the front
of the backlog, so that no dropped row is read back. Damage found while paging (a malformed
page) replaces the file as at open (see :mod:`edge.outbox_file`) and the backlog is counted
again from the new file.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from edge.errors import SinkError
from edge.outbox_file import (
    Salvage,
    Transaction,
    count_after,
    is_damage,
    read_rows,
    replace_damaged,
)

log = logging.getLogger(__name__)

DELETE_BATCH = 256  # acknowledged rows deleted per transaction ...
DELETE_DELAY_S = 1.0  # ... or after this long, whichever comes first


class Backlog:
    """The rows only in the outbox file ``db`` (None: an outbox in RAM only, with no backlog):
    ``count`` of them, every one with seq > ``after``, the highest seq of a disk row that is or
    was resident in RAM; and the ``deletions`` waiting for their batch.

    One owner thread, the Outbox's. ``db`` and ``salvage`` change when a damaged file is
    replaced while paging."""

    def __init__(
        self,
        db: sqlite3.Connection | None,
        path: Path | None,
        count: int = 0,
        low: int | None = None,
    ) -> None:
        self.db = db
        self.path = path
        self.count = count
        self.after = low - 1 if count and low is not None else 0
        self.deletions = Deletions()
        self.salvage: Salvage | None = None  # set when paging found the file damaged

    def drop_oldest(self, n: int) -> None:
        """Drop the ``n`` oldest rows (for space) without reading them."""
        self.count -= n
        self.deletions.oldest += n

    def page(self, limit: int) -> tuple[list[tuple[int, str, bytes]], int]:
        """The next (up to) ``limit`` rows, oldest first, and how many counted rows turned out
        to be missing (a damaged file replaced, an edited file); ``count`` goes down by both.
        Raises SinkError when the file cannot be read for another reason."""
        assert self.db is not None
        try:
            with Transaction(self.db) as db:
                self.deletions.apply_oldest(db, self.after)
                rows = read_rows(db, self.after, limit)
        except sqlite3.Error as exc:
            if is_damage(exc) and self.path is not None:
                return [], self._recover(exc)
            raise SinkError(
                f"cannot read the backlog from the outbox {self.path}: {exc}. "
                "Check the state directory's disk"
            ) from exc
        if rows:
            self.after = rows[-1][0]
            self.count = max(0, self.count - len(rows))
        missing = 0
        if len(rows) < limit and self.count:
            # Fewer rows than counted: someone edited the file. Trust the file.
            log.warning("outbox %s had %d fewer rows than expected", self.path, self.count)
            missing, self.count = self.count, 0
        return rows, missing

    def _recover(self, exc: Exception) -> int:
        """Replace the damaged file, keeping its readable rows, and count the backlog again;
        returns how many fewer rows it has now."""
        assert self.db is not None and self.path is not None
        self.db, self.salvage = replace_damaged(self.path, self.db, exc)
        before, self.count = self.count, count_after(self.db, self.after)
        self.deletions.oldest = min(self.deletions.oldest, self.count)
        return before - self.count


class Deletions:
    """Rows to delete from the file, written in batches: ``DELETE_BATCH`` acknowledged rows, or
    ``DELETE_DELAY_S`` after the first, whichever comes first. ``oldest`` counts rows dropped
    for space that were never read back (the oldest after a given seq); they are deleted
    first, and before anything reads past them."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.since: float | None = None  # monotonic time of the first of ``seqs``
        self.oldest = 0

    def __len__(self) -> int:
        return len(self.seqs) + self.oldest

    def add(self, seq: int, now: float | None = None) -> None:
        """Delete row ``seq`` with the next batch."""
        self.seqs.append(seq)
        if self.since is None:
            self.since = time.monotonic() if now is None else now

    def due_at(self) -> float | None:
        """Monotonic time at which a batch is due (0.0: now), or None when nothing waits."""
        if self.since is None and not self.oldest:
            return None
        if len(self.seqs) >= DELETE_BATCH or self.since is None:
            return 0.0
        return self.since + DELETE_DELAY_S

    def apply_oldest(self, db: sqlite3.Connection, after: int) -> None:
        """Inside a transaction: delete the ``oldest`` rows with seq > ``after``."""
        if self.oldest:
            db.execute(
                "DELETE FROM outbox WHERE seq IN "
                "(SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?)",
                (after, self.oldest),
            )
            self.oldest = 0

    def apply(self, db: sqlite3.Connection, after: int) -> None:
        """Inside a transaction: delete everything waiting (``after`` as for apply_oldest)."""
        self.apply_oldest(db, after)
        db.executemany("DELETE FROM outbox WHERE seq = ?", ((s,) for s in self.seqs))

    def clear(self) -> None:
        """Forget the acknowledged rows (written, or there is no file)."""
        self.seqs.clear()
        self.since = None
