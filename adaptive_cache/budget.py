"""BudgetController: turns measured memory headroom into a byte budget for the cache.

The budget is automatic (a share of the memory that is free or already held by the
cache, minus a reserve) unless ``max_bytes`` is set; either way memory pressure wins.
Watermarks are fractions of the memory this process may use (``limit_bytes``):

- below ``low``: pressure. The cache must free ``free_target_bytes`` now, lowest worth
  first (enough to climb past ``low`` by half the band between the watermarks, at
  least 1% of the limit); its budget shrinks to what remains, and one
  :class:`MemoryAlert` is returned per pressure episode (a second one only if it
  escalates to critical, below ``low/2``);
- below ``high``: the budget does not grow beyond what the cache already holds;
- at or above ``high``: the episode is over and the budget grows again.

Probing is rate-limited to ``probe_interval_s``; in between, the last reading is
adjusted by what the cache itself added or freed, so eviction under pressure sees its
own effect at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from adaptive_cache.config import CacheConfig, format_size
from adaptive_cache.memory import MemoryReading, Probe

log = logging.getLogger(__name__)

_MEMORY_STORES = ("shm", "local")
# Under pressure, free enough to climb past the low watermark by half the band between
# the watermarks (at least 1% of the limit), so that one round of eviction is enough.
_MIN_STEP = 0.01


@dataclass(frozen=True)
class MemoryAlert:
    """A memory pressure event; the engine forwards it to its listeners."""

    level: str  # "warning" | "critical"
    message: str
    available_bytes: int
    limit_bytes: int


@dataclass(frozen=True)
class BudgetDecision:
    """What the cache may hold now, and what it must free.

    Attributes:
        budget_bytes: bytes the cache may hold now.
        headroom_bytes: available memory (the reading's, or between probes the reading
            adjusted by the cache's own growth or eviction since).
        free_target_bytes: when > 0, evict this many bytes now, lowest worth first.
        alert: set on the decision that starts (or escalates) a pressure episode.
        reading: the last probe reading.
    """

    budget_bytes: int
    headroom_bytes: int
    free_target_bytes: int
    alert: MemoryAlert | None
    reading: MemoryReading


class BudgetController:
    """Decides the cache's byte budget from memory readings.

    Args:
        config: ``max_bytes``, ``reserve_bytes``, ``headroom_share``, ``watermarks``,
            ``probe_interval_s`` and ``store`` are used.
        probe: where readings come from (:class:`~adaptive_cache.memory.MemoryProbe`).
        clock: monotonic seconds, for rate-limiting probes.
        counts_memory: whether the cache's bytes live in this node's RAM (so they are
            counted in used memory and evicting them relieves pressure). Default: true
            for the ``shm`` and ``local`` stores, false for ``disk`` and ``redis``.

    Example:
        >>> from adaptive_cache.memory import FakeProbe
        >>> probe = FakeProbe(total_bytes=16 * 2**30, available_bytes=12 * 2**30)
        >>> ctl = BudgetController(CacheConfig(reserve_bytes="1GiB"), probe)
        >>> ctl.update(0).budget_bytes == 5 * 2**30
        True
    """

    def __init__(
        self,
        config: CacheConfig,
        probe: Probe,
        *,
        clock: Callable[[], float] = time.monotonic,
        counts_memory: bool | None = None,
    ) -> None:
        self.config = config
        self.probe = probe
        self.clock = clock
        self.counts_memory = (
            config.store in _MEMORY_STORES if counts_memory is None else counts_memory
        )
        self._last: BudgetDecision | None = None
        self._probed_at = -math.inf
        self._cache_at_probe = 0
        self._episode_level: str | None = None  # worst alert raised in this episode
        self._shedding = False  # below low, and not yet back past low + step

    @property
    def last(self) -> BudgetDecision | None:
        """The most recent decision, if any."""
        return self._last

    @property
    def in_pressure_episode(self) -> bool:
        """True from a probe below the low watermark until one at or above the high one."""
        return self._episode_level is not None

    def probe_due(self) -> bool:
        """Whether :meth:`update` would probe memory now (else it only redoes arithmetic)."""
        return self._last is None or self.clock() - self._probed_at >= self.config.probe_interval_s

    def update(self, cache_bytes: int, *, force: bool = False) -> BudgetDecision:
        """Decide the budget for a cache now holding ``cache_bytes``.

        Args:
            cache_bytes: bytes the cache holds now.
            force: probe even if the last probe is younger than ``probe_interval_s``.
        """
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        now = self.clock()
        probe_now = (
            force or self._last is None or now - self._probed_at >= self.config.probe_interval_s
        )
        if probe_now:
            reading = self.probe.read()
            available = reading.available_bytes
            self._probed_at = now
            self._cache_at_probe = cache_bytes
        else:
            assert self._last is not None
            reading = self._last.reading
            available = reading.available_bytes
            if self.counts_memory:
                # What the cache added since the probe was taken from available memory.
                available += self._cache_at_probe - cache_bytes
            available = max(0, min(available, reading.limit_bytes))
        decision = self._decide(reading, available, cache_bytes, probed=probe_now)
        self._last = decision
        return decision

    def _decide(
        self, reading: MemoryReading, available: int, cache_bytes: int, *, probed: bool
    ) -> BudgetDecision:
        cfg = self.config
        limit = reading.limit_bytes
        low, high = cfg.watermarks.low * limit, cfg.watermarks.high * limit
        if cfg.max_bytes is not None:
            budget = cfg.max_bytes
        else:
            held = cache_bytes if self.counts_memory else 0
            budget = max(0, int(cfg.headroom_share * (available + held)) - cfg.reserve_bytes)
        step = max((cfg.watermarks.high - cfg.watermarks.low) / 2, _MIN_STEP) * limit
        target = low + step
        free_target = 0
        alert = None
        if available < high:
            budget = min(budget, cache_bytes)
        if available < low:
            self._shedding = True
        elif available >= target:
            self._shedding = False
        if self._shedding and self.counts_memory:
            # Keep shedding until past the target, also when eviction happens in steps.
            free_target = min(cache_bytes, math.ceil(target - available))
            budget = min(budget, cache_bytes - free_target)
        if available < low and probed:
            alert = self._alert(available, limit, cache_bytes, free_target)
        elif available >= high and probed:
            self._episode_level = None
        return BudgetDecision(budget, available, free_target, alert, reading)

    def _alert(
        self, available: int, limit: int, cache_bytes: int, free_target: int
    ) -> MemoryAlert | None:
        level = "critical" if available < self.config.watermarks.low / 2 * limit else "warning"
        if self._episode_level == "critical" or self._episode_level == level:
            return None
        self._episode_level = level
        message = (
            f"memory pressure: {format_size(available)} available of {format_size(limit)} "
            f"(low watermark {self.config.watermarks.low:.0%}); cache holds "
            f"{format_size(cache_bytes)}, evicting {format_size(free_target)}"
        )
        # The engine logs the alert and forwards it to its listeners.
        log.debug("%s alert: %s", level, message)
        return MemoryAlert(level, message, available, limit)
