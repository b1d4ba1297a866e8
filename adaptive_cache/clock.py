"""Clocks: what the budget controller and the engine read time from.

Production code passes :func:`time.monotonic` (any zero-argument callable returning
seconds works); tests pass a :class:`FakeClock` and move time by hand, so nothing
waits on a real clock.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """A monotonic source of seconds, such as :func:`time.monotonic`."""

    def __call__(self) -> float: ...


class FakeClock:
    """A clock that only moves when told to.

    Example:
        >>> clock = FakeClock()
        >>> clock.advance(0.5)
        >>> clock()
        0.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must be >= 0: the clock is monotonic)."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds}")
        self.now += seconds
