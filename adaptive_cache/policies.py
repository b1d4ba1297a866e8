"""Admission and eviction policies: a policy decides order, the engine owns the bytes.

As in cachetools, the engine does all size bookkeeping (what is held, how many bytes,
the budget) and tells the policy what happened through a few hooks; the policy only
answers "admit this candidate, and evict which keys first?" and "which key goes next
when the budget shrinks?".

The engine's calling protocol, for every computed value it could keep:

1. ``observe(cand)``; 2. ``keys = admit(cand, free_bytes, budget_bytes)``;
3. if ``keys`` is not ``None``: remove each key (then ``on_remove(key)``), store the
   candidate (then ``on_insert(cand)``). A hit calls ``on_access(key)``; any other
   removal (budget shrink via ``victim()``, pressure, invalid entry) calls ``on_remove``.

``admit`` does not change which entries the policy holds, so a store failure between
``admit`` and ``on_insert`` needs no undo, and ``admit`` may be asked as a pre-check
("would you keep this tier?") before the value is computed. ``auto`` learns from every
candidate it is asked about, so ``observe`` is needed only for candidates that bypass
``admit`` (a tier forced on, say).

Policies: ``auto`` (worth against a learned knapsack threshold; the default),
``static`` (fill in arrival order, never evict to admit), ``lru``, ``off``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

from adaptive_cache.worth import WorthSketch

_NOISE_MIN = 8  # repeated measurements before the noise estimate is used
_NOISE_EMA = 0.05  # weight of one new relative change in the noise estimate


@dataclass
class EntryInfo:
    """What a policy knows about an entry or a candidate.

    Attributes:
        key: the cache key.
        tier: the tier it belongs to (``image``, ``maps``, ``tensor``, ...).
        nbytes: bytes it takes in the store.
        seconds: measured seconds of rebuilding it that one access saves.
    """

    key: str
    tier: str
    nbytes: int
    seconds: float

    @property
    def worth(self) -> float:
        """Seconds saved per byte held."""
        return self.seconds / max(self.nbytes, 1)


class Policy(ABC):
    """Orders entries for admission and eviction; see the module docstring for the protocol."""

    name: str

    @abstractmethod
    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[str] | None:
        """Decide on a candidate.

        Args:
            cand: the candidate (not held).
            free_bytes: ``budget_bytes`` minus bytes held (negative after a shrink).
            budget_bytes: what the cache may hold now.

        Returns:
            ``None`` to reject; else the held keys to evict first (possibly ``[]``) so
            that the candidate fits.
        """

    @abstractmethod
    def on_insert(self, info: EntryInfo) -> None:
        """``info`` is now held."""

    @abstractmethod
    def on_remove(self, key: str) -> None:
        """``key`` is no longer held (whatever the reason)."""

    # Optional hooks: no-ops unless a policy needs them.
    def on_access(self, key: str) -> None:  # noqa: B027
        """A held entry was read (a hit)."""

    @abstractmethod
    def victim(self) -> str | None:
        """The next key to evict when the budget shrinks or under pressure (None: empty)."""

    def observe(self, cand: EntryInfo) -> None:  # noqa: B027
        """Every candidate seen, admitted or not (lets ``auto`` learn)."""

    def set_population(self, n_candidates: int) -> None:  # noqa: B027
        """Expected distinct candidates per epoch (the dataset size times tiers)."""


class StaticPolicy(Policy):
    """Fill in arrival order, never evict to admit; under pressure drop the newest first.

    With shuffled epochs this keeps a fixed subset: hit rate = budget fraction.
    """

    name = "static"

    def __init__(self) -> None:
        self._held: dict[str, None] = {}  # insertion-ordered

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[str] | None:
        return [] if cand.nbytes <= free_bytes else None

    def on_insert(self, info: EntryInfo) -> None:
        self._held.pop(info.key, None)
        self._held[info.key] = None

    def on_remove(self, key: str) -> None:
        self._held.pop(key, None)

    def victim(self) -> str | None:
        return next(reversed(self._held), None)


class LruPolicy(Policy):
    """Least recently used: always admit what fits the budget, evicting the oldest."""

    name = "lru"

    def __init__(self) -> None:
        self._held: OrderedDict[str, int] = OrderedDict()  # least recent first

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[str] | None:
        if cand.nbytes > budget_bytes:
            return None
        keys, freed = [], 0
        it = iter(self._held.items())
        while free_bytes + freed < cand.nbytes:
            key, nbytes = next(it, (None, 0))
            if key is None:
                return None
            if key != cand.key:
                keys.append(key)
                freed += nbytes
        return keys

    def on_insert(self, info: EntryInfo) -> None:
        self._held[info.key] = info.nbytes
        self._held.move_to_end(info.key)

    def on_access(self, key: str) -> None:
        if key in self._held:
            self._held.move_to_end(key)

    def on_remove(self, key: str) -> None:
        self._held.pop(key, None)

    def victim(self) -> str | None:
        return next(iter(self._held), None)


class OffPolicy(Policy):
    """Caching off: rejects everything (evicts anything the engine adopted, oldest first)."""

    name = "off"

    def __init__(self) -> None:
        self._held: dict[str, None] = {}

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[str] | None:
        return None

    def on_insert(self, info: EntryInfo) -> None:
        self._held[info.key] = None

    def on_remove(self, key: str) -> None:
        self._held.pop(key, None)

    def victim(self) -> str | None:
        return next(iter(self._held), None)


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
        self.replace_margin = replace_margin
        self.sketch = WorthSketch(sketch_capacity)
        self._held: dict[str, tuple[float, int, int]] = {}  # key -> (worth, nbytes, seq)
        self._heap: list[tuple[float, int, str]] = []  # (worth, seq, key); stale if seq differs
        self._seq = itertools.count()
        self._fill_cache: tuple[tuple[int, int, int, int], float | None] | None = None
        self._noise_sq = 0.0  # EMA of the squared relative change between measurements
        self._noise_n = 0

    def _valid(self, item: tuple[float, int, str]) -> bool:
        held = self._held.get(item[2])
        return held is not None and held[2] == item[1]

    def _lowest(self, need: int, exclude: str) -> tuple[list[str], float] | None:
        """Lowest-worth held keys whose bytes sum to >= ``need``, and the highest worth
        among them; the heap is left as it was (minus stale items)."""
        popped: list[tuple[float, int, str]] = []
        keys, freed, top = [], 0, 0.0
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
                freed += self._held[item[2]][1]
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

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[str] | None:
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
        state = (free_bytes, budget_bytes, len(self._held), self.sketch.version)
        if self._fill_cache is None or self._fill_cache[0] != state:
            value = self.sketch.fill_threshold(free_bytes, budget_bytes, self._held)
            self._fill_cache = (state, value)
        return self._fill_cache[1]

    def on_insert(self, info: EntryInfo) -> None:
        seq = next(self._seq)
        worth = info.worth
        self._held[info.key] = (worth, info.nbytes, seq)
        heapq.heappush(self._heap, (worth, seq, info.key))
        self.sketch.add(info.key, worth, info.nbytes)
        if len(self._heap) > 2 * len(self._held) + 64:
            self._heap = [item for item in self._heap if self._valid(item)]
            heapq.heapify(self._heap)

    def on_remove(self, key: str) -> None:
        self._held.pop(key, None)

    def victim(self) -> str | None:
        while self._heap and not self._valid(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    def observe(self, cand: EntryInfo) -> None:
        self._measure(cand)

    def set_population(self, n_candidates: int) -> None:
        self.sketch.set_population(n_candidates)


_POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (AutoPolicy, LruPolicy, OffPolicy, StaticPolicy)
}


def make_policy(name: str, *, replace_margin: float = 1.25) -> Policy:
    """The policy called ``name`` (``auto``, ``lru``, ``off``, ``static``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in _POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; known: {', '.join(sorted(_POLICIES))}")
    if name == "auto":
        return AutoPolicy(replace_margin=replace_margin)
    return _POLICIES[name]()
