"""WorthSketch: learns, from the candidates seen, which worth just fills a budget.

The fractional-knapsack optimum keeps every entry whose worth (seconds saved per byte)
is at least ``w*``, where entries of worth >= ``w*`` together just fill the budget.
The sketch estimates ``w*`` from a bounded, uniform sample of distinct candidates
(a bottom-k sketch: the ``capacity`` keys with the smallest hashes), scaled up to the
population: the dataset size when the engine gives it, else the number of distinct keys
the sketch estimates it has seen. A key seen again updates its measurement in place,
so repeated epochs neither bias nor grow the sample.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Hashable

import xxhash


class WorthSketch:
    """Bounded sample of (worth, nbytes) of distinct candidates, and the threshold ``w*``.

    Args:
        capacity: most keys kept (memory is O(capacity); a threshold refresh sorts them).
        min_samples: below this many sampled keys (or the whole population, if smaller)
            the sketch answers only when everything seen would fit.
    """

    def __init__(self, capacity: int = 4096, min_samples: int = 32) -> None:
        if capacity < 2:
            raise ValueError(f"WorthSketch capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self.min_samples = min_samples
        self._members: dict[Hashable, tuple[float, int]] = {}
        self._hashes: dict[Hashable, float] = {}
        self._max_heap: list[tuple[float, Hashable]] = []  # (-hash, key) of members
        self._population = 0
        self._changes = 0
        self._worths: list[float] = []  # descending
        self._cum: list[float] = []  # cumulative bytes along _worths, unscaled
        self._scale_n = 0
        #: Counts re-rankings of the sample: results derived from it are valid until it changes.
        self.version = 0

    def __len__(self) -> int:
        return len(self._members)

    def set_population(self, n: int) -> None:
        """Expected distinct candidates per epoch (for example the dataset size)."""
        if n < 0:
            raise ValueError(f"population must be >= 0, got {n}")
        self._population = n

    @property
    def population(self) -> int:
        """Distinct candidates the sample stands for (given, or estimated, at least seen)."""
        m = len(self._members)
        if m < self.capacity:
            seen = m
        else:
            # Bottom-k distinct-count estimate: (k - 1) / (k-th smallest hash).
            seen = int((self.capacity - 1) / max(-self._max_heap[0][0], 1e-18))
        return max(self._population, seen)

    def get(self, key: Hashable) -> tuple[float, int] | None:
        """The last ``(worth, nbytes)`` recorded for ``key`` if it is in the sample."""
        return self._members.get(key)

    def add(self, key: Hashable, worth: float, nbytes: int) -> None:
        """Record a measurement of ``key`` (a repeat replaces the earlier one)."""
        if key in self._members:
            if self._members[key] != (worth, nbytes):
                self._members[key] = (worth, nbytes)
                self._changes += 1
            return
        # A stable hash: Python's str hash changes per process (PYTHONHASHSEED), which
        # made the sample, and so the threshold estimate, differ from run to run.
        h = xxhash.xxh3_64_intdigest(str(key).encode()) / 2**64
        if len(self._members) >= self.capacity:
            top = -self._max_heap[0][0]
            if h >= top:
                return
            _, dropped = heapq.heapreplace(self._max_heap, (-h, key))
            del self._members[dropped], self._hashes[dropped]
        else:
            heapq.heappush(self._max_heap, (-h, key))
        self._members[key] = (worth, nbytes)
        self._hashes[key] = h
        self._changes += 1

    def refresh(self) -> None:
        """Re-rank the sample if enough has changed (queries do this themselves)."""
        self._refresh()

    def _refresh(self) -> None:
        m = len(self._members)
        # While too few are ranked to answer, every change counts (else a threshold can
        # stay unknown until 8 more changes arrive, which may be never).
        stale = self._changes > 0 and (
            self._changes >= max(8, m // 32) or len(self._worths) < self.min_samples
        )
        if not stale and self._scale_n == self.population:
            return
        ordered = sorted(self._members.items(), key=lambda kv: kv[1][0], reverse=True)
        self._worths = [w for _, (w, _) in ordered]
        cum, total = [], 0.0
        for _, (_, nbytes) in ordered:
            total += nbytes
            cum.append(total)
        self._cum = cum
        self._scale_n = self.population
        self._changes = 0
        self.version += 1

    def threshold(self, budget_bytes: int) -> float | None:
        """Worth ``w*`` at which the population's entries of worth >= ``w*`` fill the budget.

        Returns:
            ``0.0`` when everything fits, ``None`` when too little has been seen to tell.
        """
        self._refresh()
        m = len(self._worths)
        if m == 0:
            return None
        scale = self._scale_n / m if self._scale_n > m else 1.0
        if self._cum[-1] * scale <= budget_bytes:
            return 0.0
        if m < min(self.min_samples, self._scale_n):
            return None
        idx = bisect_left(self._cum, budget_bytes / scale)
        return self._worths[min(idx, m - 1)]

    def knapsack_value(self, budget_bytes: int) -> float:
        """Estimated seconds per epoch the fractional-knapsack optimum saves (for logs)."""
        self._refresh()
        m = len(self._worths)
        if m == 0:
            return 0.0
        scale = self._scale_n / m if self._scale_n > m else 1.0
        left, value, prev = budget_bytes / scale, 0.0, 0.0
        for w, cum in zip(self._worths, self._cum, strict=True):
            take = min(cum - prev, left)
            value += w * take
            left -= take
            prev = cum
            if left <= 0:
                break
        return value * scale
