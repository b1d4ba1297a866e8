"""LevelBook: the accounting of one level below memory.

What the engine does for memory, for one lower level: the entries it holds (stored and
raw bytes, codec, rebuild seconds), its budget, its own ``auto`` policy over worth at
this level, ``(rebuild - read - decompress) / stored bytes``, its cost model and its
statistics. :class:`~adaptive_cache.levels.ledger.LevelLedger` keeps one per level.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from adaptive_cache.config import CacheConfig
from adaptive_cache.levels import frame as fr
from adaptive_cache.levels.cost import LevelCost
from adaptive_cache.levels.store import Level
from adaptive_cache.policies import make_policy
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores.base import StoreError

log = logging.getLogger(__name__)

UNBOUNDED = 1 << 62
_BUDGET_EVERY_S = 5.0  # how often a disk budget re-reads the file system's free space
_MIN_SAVING_S = 1e-9


class LevelBook:
    """Held entries, bytes, budget, policy, costs and statistics of one level.

    Args:
        level: the level.
        config: its budget settings, ``compress`` and ``replace_margin``.
        stats: the engine's statistics (the level counts into ``stats.levels``).
        share: processes of the node sharing the level (each gets its share).
        population: candidates per epoch (the data set size).
        clock: monotonic clock (budget refresh).
    """

    def __init__(
        self,
        level: Level,
        config: CacheConfig,
        stats: CacheStats,
        *,
        share: int,
        population: int,
        clock: Callable[[], float],
    ) -> None:
        self.level = level
        self.name = level.name
        self.config = config
        self.share = share
        self.clock = clock
        self.policy = make_policy("auto", replace_margin=config.replace_margin)
        self.policy.set_population(population)
        self.population = population
        self.cost = LevelCost(config.compress)
        self.errors = stats
        self.stats = stats.level(level.name)
        self.held: dict[str, EntryInfo] = {}
        self.rebuild: dict[str, float] = {}  # rebuild seconds of held keys
        self.codecs: dict[str, int] = {}
        self.raw: dict[str, int] = {}
        self.used = 0
        self.budget = 0
        self._budget_at = -1e18
        self.slow_hits = 0
        self.refresh_budget(force=True)

    # ------------------------------------------------------------------ budget

    def refresh_budget(self, *, force: bool = False) -> None:
        """Re-read the budget (rate-limited) and evict lowest worth first if over it."""
        now = self.clock()
        if not force and now - self._budget_at < _BUDGET_EVERY_S:
            return
        self._budget_at = now
        cfg = self.config
        if self.name == "disk":
            if cfg.disk_max_bytes is not None:
                node = cfg.disk_max_bytes
            else:
                directory = getattr(self.level.store, "directory", None)
                try:
                    st = os.statvfs(directory) if directory is not None else None
                except OSError:
                    st = None
                free = st.f_bavail * st.f_frsize if st is not None else 0
                node = int(cfg.disk_free_share * (free + self.used * self.share))
        else:
            node = cfg.redis_max_bytes if cfg.redis_max_bytes is not None else UNBOUNDED
        self.budget = node // self.share
        self.stats.budget_bytes = self.budget
        if self.used > self.budget:
            self.shrink(self.used - self.budget)

    def shrink(self, nbytes: int) -> None:
        freed = 0
        while freed < nbytes and self.held:
            key = self.policy.victim()
            if key is None or key not in self.held:
                break
            freed += self.held[key].nbytes
            self.evict(key, "budget")

    # ------------------------------------------------------------------ decisions

    def saving(self, tier: str, stored: float, raw: float, rebuild: float, z: bool) -> float:
        """Seconds a hit here saves: the rebuild less the read (and decompression)."""
        read = self.cost.read_seconds(stored)
        dec = self.cost.decompress_seconds(tier, raw) if z else 0.0
        return max(rebuild - read - dec, _MIN_SAVING_S)

    def codec(self, tier: str, rebuild: float, *, issue: bool = False) -> str:
        return self.cost.codec(tier, rebuild, self.population, self.budget, issue=issue)

    def admissible(
        self, key: str, tier: str, raw: int, rebuild: float, codec: str
    ) -> list[str] | None:
        """The policy's pre-check for an entry of ``raw`` bytes stored as ``codec``."""
        self.refresh_budget()
        z = codec == "zstd"
        stored = max(1, int(raw * self.cost.ratio(tier))) if z else raw + fr.FRAME
        cand = EntryInfo(key, tier, stored, self.saving(tier, stored, raw, rebuild, z))
        return self.policy.admit(cand, self.budget - self.used, self.budget)

    def offer(self, key: str, tier: str, stored: int, raw: int, rebuild: float, codec: int) -> bool:
        """Admit an entry just written here, or delete it; returns whether it is kept."""
        self.refresh_budget()
        if key in self.held:
            self.evict(key, "replaced", delete=False)  # rewritten: count it anew
        saving = self.saving(tier, stored, raw, rebuild, codec != fr.RAW)
        victims = self.policy.admit(
            EntryInfo(key, tier, stored, saving), self.budget - self.used, self.budget
        )
        if victims is None or stored > self.budget:
            self.delete(key)
            return False
        for victim in victims:
            self.evict(victim, "replaced")
        self.insert(key, tier, stored, raw, rebuild, codec)
        self.stats.insertions += 1
        return True

    # ------------------------------------------------------------------ bookkeeping

    def insert(self, key: str, tier: str, stored: int, raw: int, rebuild: float, codec: int):
        info = EntryInfo(key, tier, stored, self.saving(tier, stored, raw, rebuild, codec != 0))
        self.held[key] = info
        self.rebuild[key] = rebuild
        self.codecs[key] = codec
        self.raw[key] = raw
        self.used += stored
        self.policy.insert(info)
        s = self.stats
        s.bytes += stored
        s.raw_bytes += raw
        s.items += 1
        s.compressed_items += codec != fr.RAW

    def evict(self, key: str, reason: str, *, delete: bool = True) -> None:
        info = self.held.pop(key, None)
        if info is None:
            return
        self.used -= info.nbytes
        self.policy.remove(key)
        self.rebuild.pop(key, None)
        codec = self.codecs.pop(key, fr.RAW)
        s = self.stats
        s.evictions[reason] += 1
        s.bytes -= info.nbytes
        s.raw_bytes -= self.raw.pop(key, 0)
        s.items -= 1
        s.compressed_items -= codec != fr.RAW
        if delete:
            self.delete(key)

    def delete(self, key: str) -> None:
        try:
            self.level.store.delete(key)
        except StoreError as exc:
            self.errors.store_errors += 1
            log.debug("level %s: delete of %s failed: %s", self.name, key, exc)

    def drop(self, key: str) -> None:
        """Remove an invalid entry (corrupt, or stale), held or not."""
        if key in self.held:
            self.evict(key, "invalid")
        else:
            self.delete(key)
            self.stats.evictions["invalid"] += 1
