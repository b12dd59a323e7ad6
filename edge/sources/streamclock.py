"""Capture times for live frames from the stream's own timestamps, on the monotonic clock.

A frame handed over by OpenCV may be older than the moment it is read: RTSP opens buffer a
couple of seconds of frames while probing the stream, and a stream that stalled and recovers
delivers what piled up in one burst. Stamping such frames "now" gives results fresh capture
times for frames that are seconds old. Streams that carry presentation timestamps (RTSP/RTP,
V4L2 buffers, MPEG-TS) say when each frame was taken, relative to an origin of their own; this
module maps those onto ``time.monotonic()``.

The mapping rests on one fact: a frame cannot arrive before it was captured. So for stream time
``s`` and arrival ``a``, the offset ``a - s`` of the frame that arrived soonest after its
stream time is the best estimate of the clock offset (it had the least delay), and every frame
is stamped ``s + offset``: never later than its arrival, older by exactly what the stream says
when frames come in a burst.

Some streams number their frames instead of timing them: FFmpeg gives MJPEG over HTTP (which
carries no timestamps) 40 ms per frame whatever the real rate. So the stream's clock is only
used once it has been checked against ours: over at least ``check_s`` seconds it must advance
at the same rate (within ``tolerance``). Until then, and for good on a connection whose clock
fails the check, frames are stamped at arrival.
"""

from __future__ import annotations

import logging
import math
from collections import deque

log = logging.getLogger(__name__)

CHECK_S = 1.0  # seconds of stream before its clock can be trusted
GIVE_UP_S = 3.0  # seconds after which a clock that still runs at the wrong rate is rejected
REF_STEP_S = 0.05  # a frame this much less delayed than the reference restarts the check
TOLERANCE = 0.1  # accepted rate difference between the stream's clock and ours (10 %)


class StreamClock:
    """Maps one connection's stream timestamps (milliseconds) onto ``time.monotonic()`` seconds.

    ``stamp(stream_ms, arrival)`` for every frame, in order; ``reset()`` when the connection is
    reopened (stream time starts again). Not thread-safe: owned by the source's reading thread.
    ``trusted`` is None while the clock is being checked, then True or False for the connection.
    """

    def __init__(self, name: str, check_s: float = CHECK_S, give_up_s: float = GIVE_UP_S) -> None:
        self.name = name
        self.check_s = check_s
        self.give_up_s = give_up_s
        self.trusted: bool | None = None
        self._offset = math.inf  # least (arrival - stream time) seen, seconds
        self._last_s = -math.inf
        self._ref: tuple[float, float] | None = None  # (stream s, arrival) of the offset frame

    def reset(self) -> None:
        self.trusted = None
        self._offset = math.inf
        self._last_s = -math.inf
        self._ref = None

    def stamp(self, stream_ms: float, arrival: float) -> float:
        """The capture time of a frame with stream time ``stream_ms`` that arrived at ``arrival``
        (monotonic seconds); ``arrival`` itself when the stream's clock is not (yet) usable."""
        s = stream_ms / 1000.0
        if not math.isfinite(s) or s == self._last_s:
            return arrival  # no timestamp, or the backend repeats one: nothing to learn
        if s < self._last_s:
            log.debug("source %r: stream time went back %.3f s; re-anchoring", self.name, s)
            self.reset()
        self._last_s = s
        offset = arrival - s
        self._offset = min(self._offset, offset)
        # The rate check starts at the first frame and starts again after a frame that came
        # clearly sooner than the reference did: the end of a burst of buffered frames.
        if self._ref is None or offset < self._ref[1] - self._ref[0] - REF_STEP_S:
            self._ref = (s, arrival)
        if self.trusted is None:
            self._check(s, arrival)
        if not self.trusted:
            return arrival
        return s + self._offset

    def _check(self, s: float, arrival: float) -> None:
        """Compare the rates of both clocks since the reference frame."""
        assert self._ref is not None
        ref_s, ref_arrival = self._ref
        span = arrival - ref_arrival
        if span < self.check_s:
            return
        rate = (s - ref_s) / span
        if abs(rate - 1.0) <= TOLERANCE:
            self.trusted = True
            log.debug("source %r: stream timestamps follow real time; frames use them", self.name)
        elif span >= self.give_up_s:
            self.trusted = False
            log.info(
                "source %r: the stream's timestamps advance %.2fx real time (it numbers frames "
                "rather than timing them, as MJPEG over HTTP does); frames are stamped on arrival",
                self.name,
                rate,
            )


GAP_S = 1.0  # a pause at least this long (and 5 frame periods) may leave a backlog behind it


class Backlog:
    """Recognises the backlog a live stream without usable timestamps hands over after a pause.

    A stream server that hung and recovers (or ffmpeg ``-re`` catching up after SIGSTOP) sends
    what piled up in one burst; without timestamps those frames would all look new. After a
    pause of ``GAP_S`` and five frame periods, frames are skipped while they come in faster than
    half the stream's usual frame period (the median of recent gaps), for at most as long as
    the pause lasted; the first one at the usual pace is new again. Streams whose timestamps
    are trusted are not filtered here (their age is known exactly). Not thread-safe: owned by
    the reading thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.skipped = 0  # frames skipped since this object was made
        self._gaps: deque[float] = deque(maxlen=9)
        self._last: float | None = None
        self._burst = -1  # frames skipped in the burst under way; -1 when none
        self._pause = 0.0
        self._burst_start = 0.0

    @property
    def period(self) -> float:
        """The stream's usual gap between frames, seconds (0 until known)."""
        import statistics  # here: it brings fractions and decimal, ~0.4 MiB, to every daemon

        return statistics.median(self._gaps) if self._gaps else 0.0

    def reset(self) -> None:
        """A new connection: no previous frame, no burst (the period is kept)."""
        self._last = None
        self._burst = -1

    def skip(self, arrival: float, timed: bool) -> bool:
        """Whether the frame that arrived at ``arrival`` (monotonic s) is backlog to skip;
        ``timed``: the stream's timestamps are trusted (then nothing is skipped)."""
        last, self._last = self._last, arrival
        if last is None:
            return False
        gap = arrival - last
        if self._burst >= 0:
            if gap < self.period / 2 and arrival - self._burst_start < self._pause:
                self._burst += 1
                self.skipped += 1
                return True
            log.warning(
                "source %r: skipped %d frames that came in a burst after %.1f s without any "
                "(the backlog of a stall)",
                self.name,
                self._burst,
                self._pause,
            )
            self._burst = -1
            return False
        if gap >= max(GAP_S, 5 * self.period) and not timed:
            self._burst, self._pause, self._burst_start = 1, gap, arrival
            self.skipped += 1
            return True
        self._gaps.append(gap)
        return False
