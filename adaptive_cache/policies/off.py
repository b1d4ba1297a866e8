"""OffPolicy: caching off."""

from __future__ import annotations

from adaptive_cache.policies.base import EntryInfo, Key, Policy


class OffPolicy(Policy):
    """Rejects everything (and evicts anything the engine adopted, oldest first)."""

    name = "off"

    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[Key] | None:
        return None

    def victim(self) -> Key | None:
        return next(iter(self._entries), None)
