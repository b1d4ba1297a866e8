"""StoreFaults: one warning per store outage, not one per sample.

A store that fails (a full disk, a Redis server that is down or restarting) makes
every sample a miss until it works again; logging each failure would bury the log
(thousands of lines per epoch), logging none hides the cause. The engine counts every
failure (``store_errors`` in the statistics and ``summary.json``) and reports them here:
an outage starts with the first failure and is logged once, with the store's own
message (which names the store, the place and the reason, such as ``No space left on
device (ENOSPC)``); it ends once every kind of call that failed during it (``read``,
``write``, ``list``) has worked again, which is logged too.
"""

from __future__ import annotations

import logging

log = logging.getLogger("adaptive_cache.engine")

OPS = ("read", "write", "list")


class StoreFaults:
    """Tracks the outages of one cache's store.

    Args:
        cache: the cache's name (the split), for log lines.
        store: the store's name (``disk``, ``redis``, ...).
    """

    def __init__(self, cache: str, store: str) -> None:
        self.cache = cache
        self.store = store
        self.outages = 0
        self._failing: set[str] = set()
        self._calls = 0  # failed calls in the current outage

    @property
    def failing(self) -> bool:
        """Whether an outage is going on."""
        return bool(self._failing)

    def failed(self, op: str, message: str, count: int = 1) -> None:
        """``count`` calls of kind ``op`` failed with ``message``; warns at an outage's start."""
        assert op in OPS, op
        if not self._failing:
            self.outages += 1
            log.warning(
                "%s: cache store %s failed to %s; these samples are computed uncached and "
                "further failures are only counted until it works again: %s",
                self.cache,
                self.store,
                op,
                message,
            )
        self._failing.add(op)
        self._calls += count

    def succeeded(self, op: str) -> None:
        """A call of kind ``op`` worked; ends the outage once every failed kind has."""
        if op not in self._failing:
            return
        self._failing.discard(op)
        if not self._failing:
            log.info(
                "%s: cache store %s works again (%d calls failed meanwhile)",
                self.cache,
                self.store,
                self._calls,
            )
            self._calls = 0
