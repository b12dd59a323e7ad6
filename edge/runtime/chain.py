"""What a delegate failover chain is made of and what it reports: its links (from delegate
names such as ``edgetpu,xnnpack``), each switch between them, and its status, for stats and the
status topic. :mod:`edge.runtime.failover` runs a model over a chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast

from edge.choices import DELEGATES, Delegate
from edge.errors import ModelError
from edge.runtime import RuntimeOptions


@dataclass(frozen=True, slots=True)
class Link:
    """One entry of a chain: the name logs and status use, and how to load the model for it
    (``options.fallback`` is not used: the rest of the chain is the fallback)."""

    name: str
    options: RuntimeOptions


def chain(names: Sequence[str], base: RuntimeOptions | None = None) -> tuple[Link, ...]:
    """Links for delegate names in order of preference (``["edgetpu", "xnnpack"]``), each with
    ``base``'s threads, Edge TPU device and backend (and, for ``external`` only, its delegate
    library). Raises ModelError for an empty chain or an
    unknown or repeated name."""
    opts = base or RuntimeOptions()
    if not names:
        raise ModelError("the delegate chain is empty; give at least one delegate")
    for name in names:
        if name not in DELEGATES:
            raise ModelError(f"unknown delegate {name!r}; use one of {', '.join(DELEGATES)}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ModelError(f"delegate {', '.join(repeated)} appears twice in the chain")
    return tuple(
        Link(
            n,
            replace(
                opts,
                delegate=cast(Delegate, n),
                fallback="fail",
                chain=(),
                library=opts.library if n == "external" else "",
                library_options=opts.library_options if n == "external" else (),
            ),
        )
        for n in names
    )


@dataclass(frozen=True, slots=True)
class Switch:
    """One change of the entry that runs the model.

    ts_mono: ``time.monotonic()`` seconds; ts_wall: ``time.time()`` seconds, for payloads.
    source: the entry left ("" when none was running); target: the one now running.
    detect_ms: from the start of the failed invoke until its failure was known (about
    ``invoke_timeout_ms`` for a hang; 0 for a switch back). switch_ms: from then until the target
    had answered the same input (for a switch back, prepared off the hot path, the time the
    inference thread spent taking it over).
    """

    ts_mono: float
    ts_wall: float
    source: str
    target: str
    reason: str
    detect_ms: float
    switch_ms: float


@dataclass(frozen=True, slots=True)
class FailoverStatus:
    """What runs a model and why, for stats and the status topic.

    active: the entry running the model ("" when none can); chain: every entry, preferred first;
    last_switch: the latest change (None until the first); switches: how many so far; reasons:
    for each entry that is not running and has been tried, why (its latest failure); pending: an
    entry a re-probe found healthy, which takes over at the next invoke ("" when none).
    """

    active: str
    chain: tuple[str, ...]
    last_switch: Switch | None
    switches: int
    reasons: dict[str, str] = field(default_factory=dict)
    pending: str = ""
