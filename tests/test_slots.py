"""The slot hand-offs between threads: FrameSlots (capture to inference: drop-oldest or wait,
oldest camera first, idle accounting) and Newest (newest wins per key, versions, waits)."""

from __future__ import annotations

import threading

import numpy as np

from edge.frame import Frame
from edge.preprocess import Transform
from edge.slots import FrameSlots, Job, Newest


def job(camera: str, ts_mono: float, seq: int = 0) -> Job:
    """A job whose frame was captured at ``ts_mono`` (the only field FrameSlots looks at)."""
    frame = Frame(np.zeros((4, 4, 3), np.uint8), seq, ts_mono, 0.0, camera, seq)
    return Job(frame, np.zeros((1, 4, 4, 3), np.uint8), Transform(), 0.0)


# -- FrameSlots ----------------------------------------------------------------------------


def test_put_replaces_an_untaken_job_and_returns_it_as_dropped() -> None:
    """Drop-oldest: a second put for a camera returns the first job, never taken, and take then
    gets only the newer one; a put after a take replaces nothing (a taken job is no drop)."""
    slots = FrameSlots()
    first, second, third = job("a", 1.0), job("a", 2.0), job("a", 3.0)
    assert slots.put("a", first) is None
    assert slots.put("a", second) is first
    assert slots.take(1.0) is second
    assert slots.take(0.01) is None
    assert slots.put("a", third) is None
    assert slots.take(1.0) is third


def test_lossless_put_waits_until_the_previous_job_was_taken() -> None:
    """With wait=True a put for an occupied slot blocks until the consumer takes the old job,
    then stores the new one: nothing is dropped."""
    slots = FrameSlots()
    first, second = job("a", 1.0), job("a", 2.0)
    slots.put("a", first, wait=True)
    returned: list[Job | None] = []
    stored = threading.Event()

    def producer() -> None:
        returned.append(slots.put("a", second, wait=True))
        stored.set()

    t = threading.Thread(target=producer)
    t.start()
    # Blocked: proving that something does not happen needs a bounded wait.
    assert not stored.wait(0.2)
    assert slots.take(1.0) is first
    assert stored.wait(5)
    t.join(5)
    assert returned == [None]
    assert slots.take(1.0) is second


def test_close_releases_a_waiting_lossless_put_without_storing() -> None:
    """Closing the slots wakes a producer blocked in a lossless put; its job is not stored and
    take returns None at once."""
    slots = FrameSlots()
    slots.put("a", job("a", 1.0))
    returned: list[Job | None] = []
    t = threading.Thread(target=lambda: returned.append(slots.put("a", job("a", 2.0), wait=True)))
    t.start()
    slots.close()
    t.join(5)
    assert not t.is_alive() and returned == [None]
    taken = slots.take(1.0)
    assert taken is not None and taken.frame.ts_mono == 1.0  # what was stored before the close
    assert slots.take(5.0) is None  # closed: no waiting


def test_take_serves_the_frame_captured_longest_ago_across_cameras() -> None:
    """take returns the oldest waiting frame of all cameras, so a camera whose newer frames keep
    replacing each other cannot starve another camera's older one."""
    slots = FrameSlots()
    slots.put("a", job("a", 2.0))
    slots.put("b", job("b", 1.0))
    slots.put("a", job("a", 3.0))  # a keeps delivering
    slots.put("c", job("c", 2.5))
    order = []
    for _ in range(3):
        taken = slots.take(1.0)
        assert taken is not None
        order.append((taken.frame.source, taken.frame.ts_mono))
    assert order == [("b", 1.0), ("c", 2.5), ("a", 3.0)]


def test_take_times_out_when_nothing_waits() -> None:
    """take returns None after its timeout when no camera has a frame waiting."""
    assert FrameSlots().take(0.05) is None


def test_idle_only_when_nothing_waits_and_the_taken_job_is_done() -> None:
    """idle() is false while a job waits and while a taken job is not yet done."""
    slots = FrameSlots()
    assert slots.idle()
    slots.put("a", job("a", 1.0))
    assert not slots.idle()
    assert slots.take(1.0) is not None
    assert not slots.idle()  # taken but being inferred
    slots.done()
    assert slots.idle()


def test_take_waits_for_a_put_from_another_thread() -> None:
    """take blocks until a producer thread puts a job, then returns that job."""
    slots = FrameSlots()
    got: list[Job | None] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        got.append(slots.take(timeout=5))

    t = threading.Thread(target=consumer)
    t.start()
    assert waiting.wait(5)
    put = job("a", 7.0, seq=7)
    slots.put("a", put)
    t.join(5)
    assert got == [put]


def test_close_wakes_a_blocked_take_and_later_puts_store_nothing() -> None:
    """close wakes a take waiting on empty slots (None at once, not after its timeout); a put
    after close, live or lossless, stores nothing and take keeps returning None."""
    slots = FrameSlots()
    got: list[Job | None] = []
    t = threading.Thread(target=lambda: got.append(slots.take(timeout=30)))
    t.start()
    slots.close()
    t.join(5)
    assert not t.is_alive() and got == [None]
    assert slots.put("a", job("a", 1.0)) is None
    assert slots.put("b", job("b", 1.0), wait=True) is None
    assert slots.take(0) is None and slots.idle()


# -- Newest --------------------------------------------------------------------------------


def test_newest_put_replaces_and_numbers_versions_per_key() -> None:
    """Each put replaces its key's value and gets the next version of that key, from 1; get
    and entries see only the newest, keys in the order they first appeared."""
    slot: Newest[str, str] = Newest()
    assert slot.get("a") is None
    assert [slot.put("a", "a1"), slot.put("b", "b1"), slot.put("a", "a2")] == [1, 1, 2]
    entry = slot.get("a")
    assert entry is not None and (entry.version, entry.value) == (2, "a2")
    assert {k: (e.version, e.value) for k, e in slot.entries().items()} == {
        "a": (2, "a2"),
        "b": (1, "b1"),
    }
    assert list(slot.entries()) == ["a", "b"]


def test_newest_wait_returns_only_what_is_newer_than_seen() -> None:
    """wait returns at once every entry above the consumer's seen versions (absent = none
    seen), restricted to ``keys`` when given, and nothing once all were seen (after the
    timeout)."""
    slot: Newest[str, int] = Newest()
    slot.put("a", 1)
    slot.put("b", 1)
    slot.put("b", 2)
    assert set(slot.wait({}, 0)) == {"a", "b"}
    assert set(slot.wait({"a": 1}, 0)) == {"b"}
    assert set(slot.wait({}, 0, keys=("a",))) == {"a"}
    assert slot.wait({"a": 1, "b": 2}, 0.05) == {}
    assert slot.wait({"a": 1}, 0.05, keys=("a",)) == {}


def test_newest_a_slow_consumer_skips_to_the_newest_value() -> None:
    """Values put while the consumer was busy are never seen: its next wait gets only the
    newest, whose version tells how many it skipped."""
    slot: Newest[str, int] = Newest()
    slot.put("cam", 1)
    first = slot.wait({}, 0)["cam"]
    for value in (2, 3, 4):
        slot.put("cam", value)
    latest = slot.wait({"cam": first.version}, 0)["cam"]
    assert (latest.value, latest.version - first.version) == (4, 3)


def test_newest_wait_blocks_until_a_put_from_another_thread() -> None:
    """A waiting consumer wakes for a put of a key it waits for, not for other keys."""
    slot: Newest[str, str] = Newest()
    got: list[dict[str, str]] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        found = slot.wait({}, 10, keys=("a",))
        got.append({k: e.value for k, e in found.items()})

    t = threading.Thread(target=consumer)
    t.start()
    assert waiting.wait(5)
    slot.put("b", "other camera")
    slot.put("a", "mine")
    t.join(5)
    assert not t.is_alive() and got == [{"a": "mine"}]


def test_newest_close_wakes_waiters_and_ignores_later_puts() -> None:
    """close wakes a consumer waiting without a time limit (it gets nothing); later puts are
    ignored (version 0) and every wait returns empty, though the last value stays readable."""
    slot: Newest[str, int] = Newest()
    slot.put("a", 1)
    got: list[dict[str, object]] = []
    t = threading.Thread(target=lambda: got.append(dict(slot.wait({"a": 1}, None))))
    t.start()
    slot.close()
    t.join(5)
    assert not t.is_alive() and got == [{}]
    assert slot.closed and slot.put("a", 2) == 0
    assert slot.wait({}, None) == {}
    entry = slot.get("a")
    assert entry is not None and entry.value == 1
