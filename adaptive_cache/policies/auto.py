"""AutoPolicy: keep what saves the most rebuild time per byte held."""

from __future__ import annotations

import heapq
import itertools
import math

from adaptive_cache.policies.base import EntryInfo, Key, Policy
from adaptive_cache.worth import WorthSketch

_NOISE_MIN = 8  # repeated measurements before the noise estimate is used
_NOISE_EMA = 0.05  # weight of one new relative change in the noise estimate

HeapItem = tuple[float, int, Key]  # (worth, seq, key); stale once the key's seq differs


class AutoPolicy(Policy):
    """Fill free space like ``static``, then trade up by worth; never churn for nothing.

    Worth is the seconds an entry saves per byte it holds. Free space is filled with
    whatever fits, in arrival order, from the first epoch on, exactly as ``static``
    does; a full cache then replaces held entries by candidates worth more:

    * always when the candidate is worth more than ``replace_margin`` times each
      entry it displaces;
    * also, with a smaller gap, when the candidate belongs in the fractional-knapsack
      optimum (worth at least ``w*``, estimated by a
      :class:`~adaptive_cache.worth.WorthSketch` of every candidate seen) and the
      entries it displaces clearly do not (worth below ``w* / tolerance``). The
      tolerance is the noise of the measurements themselves: the policy watches how
      much successive measurements of the same key differ (timings vary by 5-20% from
      run to run) and sets it to 1 + 2 x the RMS relative change, capped at
      ``replace_margin``; with exact measurements it is 1. This rule is what brings
      the held set to the knapsack optimum; the margin alone stops short of it.

    Under shuffled epochs an entry read in this epoch comes back only in the next,
    while one not yet read comes back later in this one. So an entry can be displaced
    only once it has been read (or admitted) in the current epoch
    (:meth:`~Policy.start_epoch` marks the start): a replacement then never costs a
    hit in the epoch it happens, and every epoch hits at least as often as ``static``
    holding the same bytes. Candidates of equal worth never displace each other, so
    shuffled epochs do not churn (hit rate = budget fraction, where LRU gets
    ``f + (1-f) ln(1-f)``). ``victim()`` (a shrink) is the lowest-worth entry.

    Held entries sit in min-heaps by worth with lazy deletion (one of every entry,
    one of those read this epoch), so ``admit`` and ``victim`` cost O(log n) per key.
    Call :meth:`set_population` with the number of candidates per epoch, so that
    ``w*`` is estimated for the whole data set from the first epoch on.

    Args:
        replace_margin: how much more a candidate must be worth to displace entries
            that are not clearly outside the knapsack optimum.
        sketch_capacity: distinct candidates the threshold is estimated from.
    """

    name = "auto"

    def __init__(self, replace_margin: float = 1.25, sketch_capacity: int = 4096) -> None:
        if replace_margin < 1.0:
            raise ValueError(f"replace_margin must be >= 1.0, got {replace_margin}")
        super().__init__()
        self.replace_margin = replace_margin
        self.sketch = WorthSketch(sketch_capacity)
        self._seq_of: dict[Key, int] = {}  # key -> seq of its live heap items
        self._heap: list[HeapItem] = []  # every held entry
        self._read: list[HeapItem] = []  # entries read or admitted in this epoch
        self._read_in: dict[Key, int] = {}  # key -> the epoch it was last read in
        self._epoch = 0
        self._seq = itertools.count()
        self._noise_sq = 0.0  # EMA of the squared relative change between measurements
        self._noise_n = 0

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
            return []
        found = self._lowest(self._read, cand.nbytes - max(free_bytes, 0), cand.key)
        if found is None:
            return None
        keys, top = found
        if worth > self.replace_margin * top:
            return keys
        w_star = self.sketch.threshold(budget_bytes)
        if w_star is not None and worth >= w_star > top * self.tolerance:
            return keys
        return None

    def _valid(self, item: HeapItem, *, read: bool = False) -> bool:
        key = item[2]
        if self._seq_of.get(key) != item[1]:
            return False
        return not read or self._read_in.get(key) == self._epoch

    def _lowest(
        self, heap: list[HeapItem], need: int, exclude: Key
    ) -> tuple[list[Key], float] | None:
        """Lowest-worth keys of ``heap`` whose bytes sum to >= ``need``, and the highest
        worth among them; the heap is left as it was (minus stale items)."""
        read = heap is self._read
        popped: list[HeapItem] = []
        keys: list[Key] = []
        freed, top = 0, 0.0
        try:
            while freed < need:
                if not heap:
                    return None
                item = heapq.heappop(heap)
                if not self._valid(item, read=read):
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
                heapq.heappush(heap, item)

    def _mark_read(self, info: EntryInfo) -> None:
        if self._read_in.get(info.key) != self._epoch:
            self._read_in[info.key] = self._epoch
            heapq.heappush(self._read, (info.worth, self._seq_of[info.key], info.key))

    def on_insert(self, info: EntryInfo) -> None:
        seq = next(self._seq)
        self._seq_of[info.key] = seq
        self._read_in.pop(info.key, None)
        heapq.heappush(self._heap, (info.worth, seq, info.key))
        self._mark_read(info)
        self.sketch.add(info.key, info.worth, info.nbytes)
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [item for item in self._heap if self._valid(item)]
            heapq.heapify(self._heap)
        if len(self._read) > 2 * len(self._entries) + 64:
            self._read = [item for item in self._read if self._valid(item, read=True)]
            heapq.heapify(self._read)

    def on_access(self, info: EntryInfo) -> None:
        self._mark_read(info)

    def on_remove(self, info: EntryInfo) -> None:
        self._seq_of.pop(info.key, None)
        self._read_in.pop(info.key, None)

    def on_epoch(self) -> None:
        self._epoch += 1
        self._read = []

    def victim(self) -> Key | None:
        while self._heap and not self._valid(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    def observe(self, cand: EntryInfo) -> None:
        self._measure(cand)

    def set_population(self, n_candidates: int) -> None:
        self.sketch.set_population(n_candidates)
