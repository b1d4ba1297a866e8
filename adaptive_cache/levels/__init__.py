"""Levels below memory: a persistent local disk, then a Redis shared by nodes.

- :mod:`~adaptive_cache.levels.store`: :class:`LeveledStore`, the composite store
  every process uses (reads fall through memory -> disk -> Redis; writes go through
  to the levels the owner's placement names; promotions; claims).
- :mod:`~adaptive_cache.levels.ledger`: :class:`LevelLedger`, the owner's accounting
  of each lower level (budget, ``auto`` policy, demotion, adoption at restart).
- :mod:`~adaptive_cache.levels.cost`: read and (de)compression costs per level, and
  the compression choice.
- :mod:`~adaptive_cache.levels.frame`: how an entry is stored below memory.
- :mod:`~adaptive_cache.levels.redis_level`: the Redis level's build claims.
"""

from __future__ import annotations

import logging

from adaptive_cache.config import CacheConfig
from adaptive_cache.levels.ledger import LevelLedger
from adaptive_cache.levels.store import Level, LeveledStore, LevelTrace, Placement
from adaptive_cache.redact import masked_url as safe_url
from adaptive_cache.stores.base import Store, StoreError
from adaptive_cache.stores.disk import DiskStore
from adaptive_cache.stores.shm import MAX_MAPPED

__all__ = [
    "Level",
    "LevelLedger",
    "LevelTrace",
    "LeveledStore",
    "Placement",
    "open_levels",
]

log = logging.getLogger(__name__)


def open_levels(config: CacheConfig, memory: Store, namespace: str) -> LeveledStore:
    """``memory`` with the levels ``config.levels`` names below it.

    The disk level lives in ``{disk_dir}/adaptive-cache-{namespace}`` and is mapped by
    this process (the owner serves raw hits from it in place). A Redis level that
    cannot be reached is left out with a warning: the run goes on without it.

    Raises:
        StoreError: the disk level's directory cannot be created.
    """
    levels = []
    if "disk" in config.levels:
        assert config.disk_dir is not None
        disk = DiskStore.for_namespace(config.disk_dir, namespace, max_mapped=MAX_MAPPED)
        levels.append(Level("disk", disk, in_place=True))
    if "redis" in config.levels:
        assert config.redis_url is not None
        # Imported here: `import adaptive_cache` does not load the redis client.
        from adaptive_cache.levels.redis_level import RedisLevelStore

        try:
            redis = RedisLevelStore(
                config.redis_url,
                namespace,
                timeout_s=config.redis_timeout_s,
                claim_s=config.redis_claim_s,
            )
        except StoreError as exc:
            log.warning(
                "cache: Redis level %s unavailable, continuing without it: %s",
                safe_url(config.redis_url),
                exc,
            )
        else:
            levels.append(Level("redis", redis))
    return LeveledStore(memory, levels)
