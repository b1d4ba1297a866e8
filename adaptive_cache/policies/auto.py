"""AutoPolicy: keep what saves the most rebuild time per byte held."""

from __future__ import annotations

import heapq
import itertools
import math

from adaptive_cache.policies.base import EntryInfo, Key, Policy
from adaptive_cache.worth import WorthSketch

_NOISE_MIN = 8  # repeated measurements before the noise estimate is used
_NOISE_EMA = 0.05  # weight of one new relative change in the noise estimate


class AutoPolicy(Policy):
    """Keep what is worth most per byte, learned from measurements; never churn.

    A :class:`~adaptive_cache.worth.WorthSketch` of every observed candidate estimates
    the fractional-knapsack threshold ``w*`` for the current budget. A candidate enters
    free space when its worth is at least ``w*``; when the cache is full it replaces
    held entries only if it is worth more than ``replace_margin`` times each of them.
    Candidates of equal worth therefore never displace each other, which is what keeps
    shuffled epochs from churning (hit rate = budget fraction, where LRU gets
    ``f + (1-f) ln(1-f)``). ``victim()`` is the lowest-worth entry.

    Free space goes to candidates of worth at least ``w* / tolerance``, where the
    tolerance is the noise of the measurements themselves: the policy watches how much
    successive measurements of the same key differ (timings vary by 5-20% from run to
    run) and treats worths closer than that as equal (``tolerance`` = 1 + 2 x the RMS
    relative change, capped at ``replace_margin``). With exact measurements it is 1:
    free space is then not given away below ``w*``, because entries just under the
    threshold that arrived early would fill it in arrival order and the margin would
    keep them (in simulation that cost up to 6% of the knapsack bound). With noisy
    ones, a strict ``w*`` would turn away, by chance, half of the candidates that
    belong in the cache, and free space would fill over several epochs instead of one.
    Call :meth:`set_population` with the number of candidates per epoch: without it
    the first epoch underestimates the population and admits too freely.

    Held entries sit in a min-heap by worth with lazy deletion, so ``admit`` and
    ``victim`` cost O(log n) per key they return.

    Args:
        replace_margin: how much more a candidate must be worth to replace held entries.
        sketch_capacity: distinct candidates the threshold is estimated from.
    """

    name = "auto"

    def __init__(self, replace_margin: float = 1.25, sketch_capacity: int = 4096) -> None:
        if replace_margin < 1.0:
            raise ValueError(f"replace_margin must be >= 1.0, got {replace_margin}")
        super().__init__()
        self.replace_margin = replace_margin
        self.sketch = WorthSketch(sketch_capacity)
        self._stamp: dict[Key, int] = {}  # key -> seq of its live heap item
        self._heap: list[tuple[float, int, Key]] = []  # (worth, seq, key); stale if seq differs
        self._seq = itertools.count()
        self._fill_cache: tuple[tuple[int, int, int, int], float | None] | None = None
        self._noise_sq = 0.0  # EMA of the squared relative change between measurements
        self._noise_n = 0

    def _valid(self, item: tuple[float, int, Key]) -> bool:
        return self._stamp.get(item[2]) == item[1]

    def _lowest(self, need: int, exclude: Key) -> tuple[list[Key], float] | None:
        """Lowest-worth held keys whose bytes sum to >= ``need``, and the highest worth
        among them; the heap is left as it was (minus stale items)."""
        popped: list[tuple[float, int, Key]] = []
        keys: list[Key] = []
        freed, top = 0, 0.0
        try:
            while freed < need:
                if not self._heap:
                    return None
                item = heapq.heappop(self._heap)
                if not self._valid(item):
                    continue
                popped.append(item)
                if item[2] == exclude:
                    continue
                keys.append(item[2])
                freed += self._entries[item[2]].nbytes
                top = item[0]
            return keys, top
        finally:
            for item in popped:
                heapq.heappush(self._heap, item)

    @property
    def tolerance(self) -> float:
        """Factor within which two worths count as equal: the measurement noise."""
        if self._noise_n < _NOISE_MIN:
            return 1.0
        return min(self.replace_margin, 1.0 + 2.0 * math.sqrt(self._noise_sq))

    def _measure(self, cand: EntryInfo) -> float:
        worth = cand.worth
        prev = self.sketch.get(cand.key)
        if prev is not None and prev[0] != worth and prev[0] > 0 and worth > 0:
            rel = abs(worth - prev[0]) / max(worth, prev[0])
            self._noise_n += 1
            weight = max(_NOISE_EMA, 1.0 / self._noise_n)
            self._noise_sq += weight * (rel * rel - self._noise_sq)
        self.sketch.add(cand.key, worth, cand.nbytes)
        return worth

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[Key] | None:
        worth = self._measure(cand)
        if cand.nbytes > budget_bytes:
            return None
        if cand.nbytes <= free_bytes:
            w_star = self.sketch.threshold(budget_bytes)
            if w_star is None:
                return None
            tolerance = self.tolerance
            if worth * tolerance >= w_star:
                return []
            # Below w*: still kept if it is among the best of what fits the space left.
            w_fill = self._fill_threshold(free_bytes, budget_bytes)
            if w_fill is not None and worth * tolerance >= w_fill:
                return []
            return None
        found = self._lowest(cand.nbytes - max(free_bytes, 0), cand.key)
        if found is None:
            return None
        keys, top = found
        return keys if worth > self.replace_margin * top else None

    def _fill_threshold(self, free_bytes: int, budget_bytes: int) -> float | None:
        # An O(sample) scan: reuse it while the free space and the sample are unchanged.
        self.sketch.refresh()
        state = (free_bytes, budget_bytes, len(self._entries), self.sketch.version)
        if self._fill_cache is None or self._fill_cache[0] != state:
            value = self.sketch.fill_threshold(free_bytes, budget_bytes, self._entries)
            self._fill_cache = (state, value)
        return self._fill_cache[1]

    def on_insert(self, info: EntryInfo) -> None:
        seq = next(self._seq)
        worth = info.worth
        self._stamp[info.key] = seq
        heapq.heappush(self._heap, (worth, seq, info.key))
        self.sketch.add(info.key, worth, info.nbytes)
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [item for item in self._heap if self._valid(item)]
            heapq.heapify(self._heap)

    def on_remove(self, info: EntryInfo) -> None:
        self._stamp.pop(info.key, None)

    def victim(self) -> Key | None:
        while self._heap and not self._valid(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    def observe(self, cand: EntryInfo) -> None:
        self._measure(cand)

    def set_population(self, n_candidates: int) -> None:
        self.sketch.set_population(n_candidates)
