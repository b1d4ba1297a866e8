"""FakeClock: time that moves only when a test says so."""

from __future__ import annotations

import time

import pytest

from adaptive_cache.clock import Clock, FakeClock


def test_fake_clock_advances_only_when_told():
    clock: Clock = FakeClock(10.0)
    assert clock() == 10.0
    clock.advance(0.25)
    assert clock() == 10.25
    with pytest.raises(ValueError, match="must be >= 0"):
        clock.advance(-1)


def test_monotonic_is_a_clock():
    clock: Clock = time.monotonic
    assert clock() <= clock()
