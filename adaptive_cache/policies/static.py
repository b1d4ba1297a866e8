"""StaticPolicy: fill in arrival order, never evict to admit."""

from __future__ import annotations

from adaptive_cache.policies.base import EntryInfo, Key, Policy


class StaticPolicy(Policy):
    """Fill in arrival order, never evict to admit; under pressure drop the newest first.

    With shuffled epochs this keeps a fixed subset: hit rate = budget fraction.
    """

    name = "static"

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[Key] | None:
        return [] if cand.nbytes <= free_bytes else None

    def victim(self) -> Key | None:
        # The base keeps entries in insertion order: the newest is the last.
        return next(reversed(self._entries), None)
