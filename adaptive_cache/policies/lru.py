"""LruPolicy: least recently used first (the page cache's policy, for comparison)."""

from __future__ import annotations

from collections import OrderedDict

from adaptive_cache.policies.base import EntryInfo, Key, Policy


class LruPolicy(Policy):
    """Least recently used: always admit what fits the budget, evicting the oldest.

    Under shuffled epochs it evicts exactly the entries that come back soonest: its
    hit rate with a fraction ``f`` held is ``f + (1 - f) ln(1 - f)``.
    """

    name = "lru"

    def __init__(self) -> None:
        super().__init__()
        self._order: OrderedDict[Key, None] = OrderedDict()  # least recent first

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[Key] | None:
        if cand.nbytes > budget_bytes:
            return None
        keys: list[Key] = []
        freed = 0
        it = iter(self._order)
        while free_bytes + freed < cand.nbytes:
            key = next(it, None)
            if key is None:
                return None
            if key != cand.key:
                keys.append(key)
                freed += self._entries[key].nbytes
        return keys

    def on_insert(self, info: EntryInfo) -> None:
        self._order[info.key] = None
        self._order.move_to_end(info.key)

    def on_access(self, info: EntryInfo) -> None:
        self._order.move_to_end(info.key)

    def on_remove(self, info: EntryInfo) -> None:
        self._order.pop(info.key, None)

    def victim(self) -> Key | None:
        return next(iter(self._order), None)
