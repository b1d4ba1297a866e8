"""CacheCollector: reads each cache's statistics when Prometheus scrapes.

Nothing here runs on the training path. The engine already counts everything in
:class:`~adaptive_cache.stats.CacheStats` (summed over the node's DataLoader workers
and DDP ranks); this collector turns one ``stats()`` call per cache into metric
families at scrape time [prometheus custom collectors]. There is therefore no
prometheus multiprocess mode and no file per process to clean up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from adaptive_cache.stats import EVICTION_REASONS, LATENCY_BUCKETS, CacheStats
from monitoring import metrics as m

logger = logging.getLogger(__name__)

_SPECS = (
    m.REQUESTS,
    m.TIER_REQUESTS,
    m.INSERTIONS,
    m.EVICTIONS,
    m.HELD_BYTES,
    m.HELD_ENTRIES,
    m.BUDGET_BYTES,
    m.HEADROOM_BYTES,
    m.SAVED_SECONDS,
    m.LOOKUP_SECONDS,
    m.STORE_ERRORS,
    m.PROCESSES,
)
_BOUNDS = [floatToGoString(b) for b in (*LATENCY_BUCKETS, float("inf"))]


class _Named(Protocol):
    name: str


@runtime_checkable
class StatsSource(Protocol):
    """What the collector reads: the engine's ``AdaptiveCache`` satisfies it.

    ``name`` becomes the ``split`` label and ``store.name`` the ``store`` label.
    """

    name: str
    store: _Named

    def stats(self) -> CacheStats: ...


class CacheCollector(Collector):
    """Exports the statistics of any number of caches, read at scrape time.

    Args:
        caches: caches to export from the start (more with :meth:`add`).
        registry: registry to register with; ``None`` leaves registration to the caller.

    Example:
        >>> registry = CollectorRegistry()
        >>> CacheCollector([train_cache, val_cache], registry=registry)
    """

    def __init__(
        self, caches: Iterable[StatsSource] = (), registry: CollectorRegistry | None = None
    ) -> None:
        self._lock = threading.Lock()
        # Replaced, never mutated, so collect() can iterate without the lock.
        self._caches: tuple[StatsSource, ...] = ()
        for cache in caches:
            self.add(cache)
        if registry is not None:
            registry.register(self)

    def add(self, cache: StatsSource) -> None:
        """Export ``cache`` too.

        Raises:
            TypeError: ``cache`` lacks ``name``, ``store.name`` or ``stats()``.
            ValueError: a cache with the same name and store is already exported (its
                series would collide).
        """
        name = getattr(cache, "name", None)
        store = getattr(getattr(cache, "store", None), "name", None)
        if not isinstance(name, str) or not name or not isinstance(store, str):
            raise TypeError(
                f"a cache to export needs a non-empty str .name and a .store.name, got "
                f"{type(cache).__name__} with name={name!r}, store.name={store!r}"
            )
        if not callable(getattr(cache, "stats", None)):
            raise TypeError(f"a cache to export needs a stats() method; {name!r} has none")
        with self._lock:
            for other in self._caches:
                if (other.name, other.store.name) == (name, store):
                    raise ValueError(
                        f"a cache named {name!r} with store {store!r} is already exported; "
                        "give each cache a distinct name (the split label)"
                    )
            self._caches = (*self._caches, cache)

    def remove(self, cache: StatsSource) -> None:
        """Stop exporting ``cache`` (no error if it was not exported)."""
        with self._lock:
            self._caches = tuple(c for c in self._caches if c is not cache)

    def describe(self) -> Iterator[Metric]:
        # Lets the registry reject a second collector exporting the same names.
        for spec in _SPECS:
            yield spec.new_family()

    def collect(self) -> Iterator[Metric]:
        families = {spec.name: spec.new_family() for spec in _SPECS}
        for cache in self._caches:
            try:
                stats = cache.stats()
                store = cache.store.name
            except Exception:
                # One broken cache must not take the others (and memory) off the scrape.
                logger.exception("reading statistics of cache %r failed", cache.name)
                continue
            _add_stats(families, cache.name, store, stats)
        yield from families.values()


def _add_stats(fam: dict[str, Metric], split: str, store: str, s: CacheStats) -> None:
    cache = [split, store]
    fam[m.REQUESTS.name].add_metric([*cache, "hit"], s.hits)
    fam[m.REQUESTS.name].add_metric([*cache, "miss"], s.misses)
    for tier_name, t in sorted(s.tiers.items()):
        tier = [*cache, tier_name]
        fam[m.TIER_REQUESTS.name].add_metric([*tier, "hit"], t.hits)
        fam[m.TIER_REQUESTS.name].add_metric([*tier, "miss"], t.misses)
        fam[m.INSERTIONS.name].add_metric(tier, t.insertions)
        # Every known reason, zero or not, so rate() has a series from the start.
        for reason in sorted({*EVICTION_REASONS, *t.evictions}):
            fam[m.EVICTIONS.name].add_metric([*tier, reason], t.evictions.get(reason, 0))
        fam[m.HELD_BYTES.name].add_metric(tier, t.bytes)
        fam[m.HELD_ENTRIES.name].add_metric(tier, t.items)
        fam[m.SAVED_SECONDS.name].add_metric(tier, t.saved_seconds)
    fam[m.BUDGET_BYTES.name].add_metric(cache, s.budget_bytes)
    fam[m.HEADROOM_BYTES.name].add_metric(cache, s.headroom_bytes)
    fam[m.STORE_ERRORS.name].add_metric(cache, s.store_errors)
    fam[m.PROCESSES.name].add_metric(cache, s.processes)
    if len(s.lookup_buckets) == len(_BOUNDS):
        cumulative, buckets = 0, []
        for bound, n in zip(_BOUNDS, s.lookup_buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        fam[m.LOOKUP_SECONDS.name].add_metric(cache, buckets, s.lookup_sum_seconds)
    else:
        logger.warning(
            "cache %r reports %d latency buckets, expected %d; lookup histogram skipped",
            split,
            len(s.lookup_buckets),
            len(_BOUNDS),
        )
