"""Recovery: making the ledger match what a store really holds.

Two moments need it. At start, a persistent store (``disk``, ``redis``) still holds
the entries of an earlier run: those whose key a sample of this pipeline still has are
adopted, the rest (a changed file or stage) deleted. After an epoch with DataLoader
workers, one that died after writing an entry never reported it (an orphan), and one
that died mid-write left a temporary file; entries may also have vanished from the
store. :func:`list_entries` is the one place that reads a store's listing back into
keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from adaptive_cache.config import format_size
from adaptive_cache.engine.ledger import Ledger
from adaptive_cache.keys import EntryKey
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.stores.base import StoreError

log = logging.getLogger(__name__)

Listing = list[tuple[str, EntryKey | None, int]]


def list_entries(ledger: Ledger) -> Listing:
    """``(name, key, nbytes)`` of every entry in the ledger's store; ``key`` is ``None``
    for a name that is no entry key (nothing of ours: it is deleted)."""
    out: Listing = []
    for name, nbytes in ledger.store.entries():
        try:
            key: EntryKey | None = EntryKey.parse(name)
        except ValueError:
            key = None
        out.append((name, key, nbytes))
    return out


def adopt(ledger: Ledger, valid: Collection[EntryKey], seconds: Callable[[str], float]) -> int:
    """Hold the entries of a persistent store whose keys are ``valid``; delete the others.

    Args:
        ledger: the cache's ledger (its store is read).
        valid: every key a sample of the pipeline has now.
        seconds: rebuild seconds to credit an adopted entry of a tier.

    Returns:
        The number of entries adopted.
    """
    adopted = 0
    for name, key, nbytes in list_entries(ledger):
        if key is None or key not in valid:
            ledger.delete(name)
            if key is not None and key.tier in ledger.stats.tiers:
                ledger.stats.tier(key.tier).evictions["invalid"] += 1
            continue
        ledger.keep(EntryInfo(key, key.tier, nbytes, seconds(key.tier)), inserted=False)
        adopted += 1
    if adopted:
        log.info(
            "%s: adopted %d entries (%s) from %s",
            ledger.name,
            adopted,
            format_size(ledger.bytes),
            ledger.store.name,
        )
    return adopted


def reconcile(
    ledger: Ledger,
    tiers: Collection[str],
    seconds: Callable[[str], float],
    takes: Callable[[EntryInfo], bool],
) -> None:
    """Make the ledger match its store after workers that may have died.

    Temporary files of dead writers are swept; held entries that vanished are dropped
    from the accounting; orphans (in the store, not held) are kept when ``takes``
    accepts them, otherwise deleted, as are entries of tiers not in ``tiers``.
    """
    try:
        ledger.store.sweep()
        listing = list_entries(ledger)
    except StoreError as exc:
        # Unreachable is not "every entry vanished": keep the accounting as it is.
        ledger.store_failed("list", exc)
        return
    ledger.faults.succeeded("list")
    present = {key for _, key, _ in listing if key is not None}
    for key in [k for k in ledger if k not in present]:
        ledger.evict(key, "invalid")
    for name, key, nbytes in listing:
        if key is not None and key in ledger:
            continue
        if key is None or key.tier not in tiers:
            ledger.delete(name)
            continue
        info = EntryInfo(key, key.tier, nbytes, seconds(key.tier))
        if takes(info):
            ledger.keep(info)
        else:
            ledger.delete(name)
