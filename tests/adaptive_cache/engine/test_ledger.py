"""Ledger: entries, bytes, policy membership and statistics kept in step."""

from __future__ import annotations

from adaptive_cache.engine.ledger import Ledger
from adaptive_cache.keys import EntryKey
from adaptive_cache.policies import EntryInfo, StaticPolicy
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores import LocalStore


def _ledger() -> tuple[Ledger, LocalStore, CacheStats]:
    store, stats = LocalStore(), CacheStats()
    return Ledger(StaticPolicy(), store, stats, "t"), store, stats


def _keep(ledger: Ledger, store: LocalStore, key: EntryKey, nbytes: int, **kw) -> None:
    store.put(str(key), b"x" * nbytes)
    ledger.keep(EntryInfo(key, key.tier, nbytes, 1.0), **kw)


def test_keep_and_evict_move_bytes_membership_and_statistics_together():
    ledger, store, stats = _ledger()
    a, b = EntryKey("image", "aa"), EntryKey("tensor", "bb")
    _keep(ledger, store, a, 10)
    _keep(ledger, store, b, 5, inserted=False)  # adopted: not an insertion
    assert ledger.bytes == 15 == ledger.policy.held_bytes == stats.bytes
    assert stats.tiers["image"].insertions == 1 and stats.tiers["tensor"].insertions == 0
    ledger.evict(a, "replaced")
    ledger.evict(a, "replaced")  # not held any more: nothing happens
    assert ledger.bytes == 5 == ledger.policy.held_bytes == stats.bytes
    assert a not in ledger and a not in ledger.policy and not store.contains(str(a))
    assert stats.tiers["image"].evictions["replaced"] == 1 and stats.tiers["image"].items == 0


def test_discard_counts_an_unheld_corrupt_entry_and_shrink_follows_the_policy():
    ledger, store, stats = _ledger()
    stray = EntryKey("tensor", "cc")
    store.put(str(stray), b"garbage")
    ledger.discard(stray, "invalid")
    assert not store.contains(str(stray)) and stats.tiers["tensor"].evictions["invalid"] == 1
    for i in range(3):
        _keep(ledger, store, EntryKey("tensor", f"{i}0"), 10)
    ledger.shrink(15, "pressure")  # static drops the newest first
    assert list(ledger) == [EntryKey("tensor", "00")] and ledger.bytes == 10
    assert stats.tiers["tensor"].evictions["pressure"] == 2
