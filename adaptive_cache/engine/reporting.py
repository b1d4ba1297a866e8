"""Reporting: a cache's statistics, its summary line and its listeners.

The engine counts into one :class:`~adaptive_cache.stats.CacheStats`; this module
hands out copies of it, sums the node's processes through a
:class:`~adaptive_cache.stats.StatsBoard`, logs the summary line (this epoch's hit
rate first) and passes events (memory alerts) to listeners. A memory alert is
logged once, by the admission that raised it; listeners count or export it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from adaptive_cache.stats import CacheStats, StatsBoard, merge

log = logging.getLogger(__name__)

Listener = Callable[[Any], None]


class Reporter:
    """Statistics, summary line and listeners of one cache.

    Args:
        stats: the cache's live statistics (counted into elsewhere, under ``lock``).
        lock: the cache's lock.
        name: the cache's name (the split), first on every log line.
        log_every_n: log the summary every this many requests (0: never).
        stats_dir: if set, snapshots are published there and :meth:`stats` sums those
            of every live process of the node.
    """

    def __init__(
        self,
        stats: CacheStats,
        lock: Any,
        *,
        name: str,
        log_every_n: int = 0,
        stats_dir: str | None = None,
    ) -> None:
        self._stats = stats
        self._lock = lock
        self.name = name
        self.log_every_n = log_every_n
        self._board = StatsBoard(stats_dir) if stats_dir else None
        self._listeners: list[Listener] = []
        self._epoch_start = CacheStats()

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def emit(self, event: Any) -> None:
        for fn in list(self._listeners):
            fn(event)

    def begin_epoch(self) -> None:
        """Remember the counts at the start of an epoch (the summary shows its share)."""
        self._epoch_start = self.local_stats()

    def local_stats(self) -> CacheStats:
        """This process's statistics (a copy)."""
        with self._lock:
            return CacheStats.from_dict(self._stats.to_dict())

    def epoch_stats(self) -> CacheStats:
        """This process's counts since the current epoch started."""
        return self.local_stats().since(self._epoch_start)

    def stats(self) -> CacheStats:
        """Statistics summed over every process of the node that shares the cache."""
        local = self.local_stats()
        if self._board is None:
            return local
        self._board.publish(local)
        return merge(self._board.read_all())

    def publish(self) -> None:
        if self._board is not None:
            self._board.publish(self.local_stats())

    def request_done(self) -> None:
        """Log the summary line every ``log_every_n`` requests (call under the lock)."""
        n = self.log_every_n
        if n and self._stats.requests % n == 0:
            log.info("%s %s", self.name, self._stats.summary(self._epoch_start))
