"""Argument types shared by every ``edge`` subcommand, so that a bad value gets the same
one-line message wherever it is typed (argparse prints it with the option's name)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(low: int, high: int | None = None, unit: str = "") -> Callable[[str], int]:
    """An integer within low..high (inclusive; no upper bound when ``high`` is None)."""
    span = f"{low}..{high}" if high is not None else f"at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}{unit}, got {value}")
        return value

    return parse


def number(
    low: float, high: float | None = None, *, above: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """A finite number ≥ low (> low with ``above``) and ≤ high when given."""
    span = (f"above {low:g}" if above else f"at least {low:g}") + (
        f" and at most {high:g}" if high is not None else ""
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        bad = value <= low if above else value < low
        if bad or not math.isfinite(value) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}{unit}, got {text}")
        return value

    return parse


def broker_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` (port 1883) or ``[IPv6]:PORT``."""
    host, port_text = text, "1883"
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        if after.startswith(":"):
            port_text = after[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not host or not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. localhost:1883)")
    return host, port


def int_list(text: str) -> list[int]:
    """Comma-separated whole numbers ≥ 1, e.g. thread counts ``1,2,4``."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("every value must be at least 1")
    return values


def channel_values(text: str) -> tuple[float, ...]:
    """One number, or one per colour channel: ``127.5`` or ``123.7,116.3,103.5``."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 127.5 or 0,0,0: {text!r}"
        ) from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError("give one value or one per channel (3)")
    return values
