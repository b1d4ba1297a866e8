"""Ledger: the entries a cache holds and the bytes they take, counted in one place.

Every way an entry joins (admitted after computing it, adopted from a persistent
store, found orphaned after a worker died) goes through :meth:`Ledger.keep`, and every
way one leaves through :meth:`Ledger.evict`; both keep the policy's membership, the
byte count and the per-tier statistics in step, so they cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from adaptive_cache.faults import StoreFaults
from adaptive_cache.keys import EntryKey
from adaptive_cache.policies.base import EntryInfo, Policy
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores.base import Store, StoreError

log = logging.getLogger(__name__)


class Ledger:
    """Held entries, their bytes, and the policy that orders them.

    Args:
        policy: told of every entry that joins or leaves (it only orders them).
        store: where the entries' bytes live (an evicted entry is deleted there).
        stats: the cache's statistics (per-tier bytes, items, insertions, evictions;
            store errors).
        name: the cache's name, for logs.

    Attributes:
        faults: the store's outages (one warning each; see :mod:`adaptive_cache.faults`).
        demote: levels: called with each entry evicted from memory (and deleted there)
            before it is deleted, so a lower level may keep it.
    """

    def __init__(self, policy: Policy, store: Store, stats: CacheStats, name: str) -> None:
        self.policy = policy
        self.store = store
        self.stats = stats
        self.name = name
        self._held: dict[EntryKey, EntryInfo] = {}
        self._bytes = 0
        self.faults = StoreFaults(name, store.name)
        self.demote: Callable[[EntryInfo, str], None] | None = None  # levels

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[EntryKey]:
        return iter(list(self._held))

    def get(self, key: EntryKey) -> EntryInfo | None:
        """What is held under ``key``, if anything."""
        return self._held.get(key)

    @property
    def bytes(self) -> int:
        """Bytes of every held entry."""
        return self._bytes

    def keep(self, info: EntryInfo, *, inserted: bool = True) -> None:
        """Account for ``info`` as held (its bytes are already in the store).

        Args:
            info: the entry.
            inserted: count it as an insertion (``False`` for an entry adopted from a
                persistent store at start).
        """
        assert info.key not in self._held, f"{info.key} is already held"
        self._held[info.key] = info
        self._bytes += info.nbytes
        self.policy.insert(info)
        ts = self.stats.tier(info.tier)
        ts.insertions += int(inserted)
        ts.bytes += info.nbytes
        ts.items += 1

    def evict(self, key: EntryKey, reason: str, *, delete: bool = True) -> None:
        """Drop a held entry from the accounting and the store (unheld keys: no-op).

        ``delete=False`` leaves the store alone (the entry is gone from it already, or
        was written again and is admitted anew).
        """
        info = self._held.pop(key, None)
        if info is None:
            return
        self._bytes -= info.nbytes
        self.policy.remove(key)
        ts = self.stats.tier(info.tier)
        ts.evictions[reason] += 1
        ts.bytes -= info.nbytes
        ts.items -= 1
        if not delete:
            return
        if self.demote is not None:  # levels: a lower level may keep it (read from memory first)
            self.demote(info, reason)
        self.delete(key)

    def discard(self, key: EntryKey, reason: str, *, delete: bool = True) -> None:
        """Evict ``key`` if held, else delete it from the store and count it anyway
        (a corrupt entry another process wrote). ``delete=False``: it was written
        again (the store holds good bytes now)."""
        if key in self._held:
            self.evict(key, reason, delete=delete)
        else:
            if delete:
                self.delete(key)
            self.stats.tier(key.tier).evictions[reason] += 1

    def delete(self, name: EntryKey | str) -> None:
        """Delete an entry from the store only (a store failure is counted, not raised)."""
        try:
            self.store.delete(str(name))
        except StoreError as exc:
            self.store_failed("write", exc)

    def put(self, key: EntryKey, data: bytes | memoryview) -> bool:
        """Write an entry's bytes to the store; ``False`` (counted, logged once per
        outage) if the store failed."""
        try:
            self.store.put(str(key), data)
        except StoreError as exc:
            self.store_failed("write", exc)
            return False
        self.faults.succeeded("write")
        return True

    def store_failed(self, op: str, exc: StoreError) -> None:
        """Count a failed store call; the first of an outage is logged (see faults.py)."""
        self.stats.store_errors += 1
        self.faults.failed(op, str(exc))

    def touch(self, key: EntryKey) -> EntryInfo | None:
        """A held entry was read: tell the policy; returns it (``None`` if not held)."""
        info = self._held.get(key)
        if info is not None:
            self.policy.access(key)
        return info

    def shrink(self, nbytes: int, reason: str) -> None:
        """Evict the policy's victims until ``nbytes`` are freed (or nothing is left)."""
        freed = 0
        while freed < nbytes and self._held:
            key = self.policy.victim()
            if key is None or key not in self._held:
                break
            freed += self._held[key].nbytes
            self.evict(key, reason)

    def lowest_worth(self, nbytes: int, spare: Callable[[EntryInfo], bool]) -> list[EntryKey]:
        """Held keys, lowest worth first, freeing at least ``nbytes`` (fewer if not
        enough can go); entries for which ``spare(info)`` is true are skipped."""
        out, freed = [], 0
        for info in sorted(self._held.values(), key=lambda i: i.worth):
            if freed >= nbytes:
                break
            if not spare(info):
                out.append(info.key)
                freed += info.nbytes
        return out
