"""The Outbox on its own: FIFO order, RAM-first, spooling, paging a backlog, bounds, the file."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from edge.errors import SinkError
from edge.outbox import PAGE_ROWS, Outbox
from edge.outbox_backlog import DELETE_DELAY_S


def rows(path: Path) -> list[tuple[int, str, bytes]]:
    """Every row of a closed outbox file, in seq order."""
    db = sqlite3.connect(path)
    try:
        return [
            (int(s), str(t), bytes(p))
            for s, t, p in db.execute("SELECT seq, topic, payload FROM outbox ORDER BY seq")
        ]
    finally:
        db.close()


def drain(ob: Outbox) -> list[bytes]:
    """Take and ack everything, returning the payloads in the order they were handed out."""
    out = []
    while (entry := ob.take()) is not None:
        out.append(entry.payload)
        assert ob.ack(entry.seq)
    return out


def fill(ob: Outbox, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ob.put("t", b"%d" % i)


def test_fifo_in_ram() -> None:
    """Without a path, entries come out in put order and are gone once acked."""
    ob = Outbox(None, 100)
    fill(ob, 5)
    assert ob.pending_ram == 5
    assert drain(ob) == [b"0", b"1", b"2", b"3", b"4"]
    assert ob.pending == 0
    assert ob.spool() == 0


def test_prompt_acks_never_touch_the_disk(tmp_path: Path) -> None:
    """Entries taken and acked while in RAM cause no insert and leave the file empty."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 100)
    for i in range(50):
        ob.put("t", b"%d" % i)
        entry = ob.take()
        assert entry is not None
        ob.ack(entry.seq)
    ob.flush(force=True)
    assert ob.inserts == 0
    assert ob.deletes == 0
    ob.close()
    assert rows(path) == []


def test_spool_writes_in_flight_and_queued_entries_and_they_survive_a_restart(
    tmp_path: Path,
) -> None:
    """spool() writes every RAM-only entry, in flight or not; a new Outbox sends them first."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 100)
    fill(ob, 6)
    first = ob.take()
    second = ob.take()
    assert first is not None and second is not None
    assert ob.spool() == 6
    assert (ob.pending_ram, ob.pending_disk, ob.inserts) == (0, 6, 6)
    ob.ack(first.seq)  # delivered; its row must go
    ob.close()
    assert [r[2] for r in rows(path)] == [b"1", b"2", b"3", b"4", b"5"]

    again = Outbox(path, 100)
    assert again.pending_disk == 5
    again.put("t", b"new")
    assert drain(again) == [b"1", b"2", b"3", b"4", b"5", b"new"]
    again.close()
    assert rows(path) == []


def test_backlog_larger_than_a_page_is_paged_back_in_order(tmp_path: Path) -> None:
    """A backlog of several pages comes back in order, before results put after the restart."""
    path = tmp_path / "outbox.db"
    n = PAGE_ROWS * 3 + 5
    ob = Outbox(path, 10_000)
    fill(ob, n)
    ob.spool()
    ob.close()

    again = Outbox(path, 10_000)
    fill(again, 3, start=n)
    assert drain(again) == [b"%d" % i for i in range(n + 3)]
    again.close()
    assert rows(path) == []


def test_spool_while_a_backlog_is_unloaded_keeps_the_order(tmp_path: Path) -> None:
    """Entries spooled behind rows that are still only on disk come out after them."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 10_000)
    fill(ob, PAGE_ROWS * 2)
    ob.spool()  # one page stays resident, one is only on disk
    fill(ob, 10, start=PAGE_ROWS * 2)
    ob.spool()
    fill(ob, 10, start=PAGE_ROWS * 2 + 10)  # RAM only, behind the disk rows
    assert ob.pending_ram == 10
    assert drain(ob) == [b"%d" % i for i in range(PAGE_ROWS * 2 + 20)]
    ob.close()


def test_requeue_puts_in_flight_entries_back_in_order() -> None:
    """After requeue() the entries that were in flight are handed out again, first and in order."""
    ob = Outbox(None, 100)
    fill(ob, 5)
    taken = [ob.take() for _ in range(3)]
    assert all(t is not None for t in taken)
    assert ob.requeue() == 3
    assert ob.inflight == 0
    assert drain(ob) == [b"0", b"1", b"2", b"3", b"4"]


def test_full_outbox_drops_the_oldest_and_counts_them() -> None:
    """Putting past max_rows drops the oldest entries not in flight, and counts them."""
    ob = Outbox(None, 10)
    fill(ob, 2)
    in_flight = ob.take()
    assert in_flight is not None
    fill(ob, 13, start=2)
    assert ob.dropped == 5
    assert ob.pending == 10
    # The in-flight entry (0) is kept; 1..5 were the oldest others.
    ob.ack(in_flight.seq)
    assert drain(ob) == [b"%d" % i for i in range(6, 15)]


def test_full_outbox_drops_rows_that_are_only_on_disk(tmp_path: Path) -> None:
    """Dropping the oldest works on rows not resident in RAM, and the file agrees afterwards."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 100)
    fill(ob, 100)
    ob.spool()
    resident = [ob.take() for _ in range(PAGE_ROWS)]  # in flight: never dropped
    assert all(r is not None for r in resident)
    fill(ob, 10, start=100)
    assert ob.dropped == 10
    ob.close()
    kept = [int(r[2]) for r in rows(path)]
    assert kept == list(range(PAGE_ROWS)) + list(range(PAGE_ROWS + 10, 110))


def test_reopening_with_a_smaller_bound_drops_the_oldest_rows(tmp_path: Path) -> None:
    """A file holding more rows than max_rows keeps only the newest ones."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 1000)
    fill(ob, 30)
    ob.spool()
    ob.close()
    small = Outbox(path, 10)
    assert small.dropped == 20
    assert drain(small) == [b"%d" % i for i in range(20, 30)]
    small.close()
    assert rows(path) == []


def test_deletes_are_batched(tmp_path: Path) -> None:
    """Acked rows are deleted in one transaction once the batch delay has passed, not one by one."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 100)
    fill(ob, 10)
    ob.spool()
    t0 = 1000.0
    for _ in range(10):
        entry = ob.take()
        assert entry is not None
        ob.ack(entry.seq, now=t0)
    assert ob.flush(now=t0 + DELETE_DELAY_S / 2) == 0
    assert ob.flush(now=t0 + DELETE_DELAY_S) == 10
    assert ob.deletes == 10
    ob.close()
    assert rows(path) == []


def test_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    """The outbox file uses WAL journaling and synchronous=FULL (2)."""
    ob = Outbox(tmp_path / "outbox.db", 10)
    db = ob._db
    assert db is not None
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    ob.close()


def test_second_outbox_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """A second Outbox (e.g. a second daemon) on a file in use fails with a clear SinkError."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 10)
    try:
        with pytest.raises(SinkError, match="in use by another process"):
            Outbox(path, 10)
    finally:
        ob.close()


def test_damaged_file_is_moved_aside(tmp_path: Path) -> None:
    """A file that is not SQLite is renamed *.corrupt-* and a fresh outbox works."""
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database, just sixteen+ bytes of junk" * 100)
    ob = Outbox(path, 10)
    fill(ob, 2)
    ob.spool()
    ob.close()
    assert len(rows(path)) == 2
    assert len(list(tmp_path.glob("outbox.db.corrupt-*"))) == 1


def test_unopenable_path_raises_sink_error(tmp_path: Path) -> None:
    """A path whose directory does not exist gives a SinkError that names the state directory."""
    with pytest.raises(SinkError, match="state directory"):
        Outbox(tmp_path / "missing" / "outbox.db", 10)


def test_dropping_for_space_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    """When the outbox starts dropping the oldest it says so once (WARNING), not per result,
    and says when it stops."""
    ob = Outbox(None, 10)
    with caplog.at_level(logging.INFO, logger="edge.outbox"):
        fill(ob, 30)
        assert ob.dropped == 20
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "outbox full" in warnings[0].getMessage()
        drain(ob)
        fill(ob, 1, start=100)
    assert any("no longer dropping" in r.getMessage() for r in caplog.records)


def test_ram_only_entries_are_bounded_when_the_file_cannot_take_them(tmp_path: Path) -> None:
    """Entries that cannot be spooled stay in RAM up to ram_max_rows; beyond, the oldest go,
    counted as dropped_ram."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 10_000, ram_max_rows=100)
    assert ob._db is not None  # file permissions do not stop root: make SQLite refuse writes
    ob._db.execute("PRAGMA query_only = ON")
    fill(ob, 150)
    with pytest.raises(SinkError, match="stay in RAM"):
        ob.spool()
    assert (ob.pending_ram, ob.dropped_ram) == (100, 50)
    assert drain(ob)[0] == b"50"
    ob._db.execute("PRAGMA query_only = OFF")
    ob.close()


def test_boot_counts_survive_in_the_file(tmp_path: Path) -> None:
    """Each spool records how many results the boot produced; the next Outbox reads it."""
    path = tmp_path / "outbox.db"
    ob = Outbox(path, 100, boot_id="boot1")
    fill(ob, 5)
    ob.produced = 7
    ob.spool()
    assert ob._db is not None
    ob._db.close()  # like a SIGKILL: no close(), so nothing more is written
    again = Outbox(path, 100, boot_id="boot2")
    assert [(b.boot_id, b.produced) for b in again.previous_boots] == [("boot1", 7)]
    assert again.pending_disk == 5
    again.close()
