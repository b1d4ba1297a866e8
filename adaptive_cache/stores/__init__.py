"""Stores: where cache entries live. :func:`open_store` picks one from the config.

- ``local``: a dict in this process (fastest; not shared with workers).
- ``shm``: one file per entry on tmpfs, shared by every process of the node (default).
- ``disk``: one file per entry in a directory; survives restarts.
- ``redis``: a Redis server; shared across nodes.

With ``disk_dir`` or ``redis_url`` beside ``shm``/``local``, the store is a
:class:`~adaptive_cache.levels.LeveledStore`: memory on top, then disk, then Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adaptive_cache.config import CacheConfig
from adaptive_cache.stores.base import Store, StoreError, StoreHandle, View
from adaptive_cache.stores.disk import DiskHandle, DiskStore
from adaptive_cache.stores.keys import check_namespace
from adaptive_cache.stores.local import LocalHandle, LocalStore
from adaptive_cache.stores.shm import ShmHandle, ShmStore

__all__ = [
    "DiskHandle",
    "DiskStore",
    "LocalHandle",
    "LocalStore",
    "RedisHandle",
    "RedisStore",
    "ShmHandle",
    "ShmStore",
    "Store",
    "StoreError",
    "StoreHandle",
    "View",
    "open_store",
]


def _disk(config: CacheConfig, namespace: str) -> Store:
    if not config.disk_dir:
        raise ValueError("cache.store 'disk' needs cache.disk_dir (a directory)")
    return DiskStore.for_namespace(config.disk_dir, namespace)


def __getattr__(name: str) -> Any:
    # The Redis client is imported only by a process that uses the Redis store.
    if name in ("RedisHandle", "RedisStore"):
        from adaptive_cache.stores import redis

        return getattr(redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _redis(config: CacheConfig, namespace: str) -> Store:
    if not config.redis_url:
        raise ValueError("cache.store 'redis' needs cache.redis_url (redis://host:port/db)")
    from adaptive_cache.stores.redis import RedisStore

    return RedisStore(config.redis_url, namespace, timeout_s=config.redis_timeout_s)


_STORES: dict[str, Callable[[CacheConfig, str], Store]] = {
    "disk": _disk,
    "local": lambda config, namespace: LocalStore(),
    "redis": _redis,
    "shm": lambda config, namespace: ShmStore(config.shm_dir, namespace),
}
# The setting to change when a store cannot be opened.
_SETTING = {"disk": "disk_dir", "redis": "redis_url", "shm": "shm_dir"}


def open_store(config: CacheConfig, *, namespace: str, level_namespace: str | None = None) -> Store:
    """Open the store ``config.store`` names, for entries of ``namespace``.

    Args:
        config: ``store`` and its settings (``shm_dir``, ``disk_dir``, ``redis_url``,
            ``redis_timeout_s``); ``config.levels`` adds levels below memory.
        namespace: letters, digits, ``.``, ``_``, ``-``; processes giving the same
            namespace share entries (shared stores).
        level_namespace: namespace of the levels below memory, which outlive the run
            and are shared by nodes (default: ``namespace``); the cache's name.

    Raises:
        ValueError: unknown store name (lists the known ones) or a bad namespace.
        StoreError: the store cannot be opened (directory not creatable, Redis down);
            the message starts with the setting to change, such as ``cache.disk_dir:``.
    """
    check_namespace(namespace)
    try:
        factory = _STORES[config.store]
    except KeyError:
        raise ValueError(
            f"unknown cache store {config.store!r}; known: {', '.join(sorted(_STORES))}"
        ) from None
    try:
        top = factory(config, namespace)
    except StoreError as exc:
        setting = _SETTING.get(config.store)
        if setting is None:
            raise
        raise StoreError(f"cache.{setting}: {exc}") from exc
    if not config.levels:
        return top
    from adaptive_cache.levels import open_levels  # the levels build on these stores

    try:
        return open_levels(config, top, check_namespace(level_namespace or namespace))
    except StoreError as exc:
        top.close()
        # Only the disk level can fail to open (an unreachable Redis level is left out).
        raise StoreError(f"cache.disk_dir: {exc}") from exc
