"""BudgetController: turns measured memory headroom into a byte budget for the cache.

The budget is automatic (a share of the memory that is free or already held by the
cache, minus a reserve) unless ``max_bytes`` is set; either way memory pressure wins.
The reserve scales with the memory limit (``reserve_bytes``, at most
``reserve_fraction`` of the limit), so a small container still gets a useful budget.
A ``max_bytes`` above what the limit could ever allow (``headroom_share`` of the
limit minus the reserve) is clamped to that, with one warning. With a
:class:`~adaptive_cache.node.NodeSlot`, the automatic budget is this cache's fair
share of one budget for every cache of the node (see :mod:`adaptive_cache.node`).
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
from adaptive_cache.node import MEMORY_STORES, Claim, NodeSlot, fair_shares

log = logging.getLogger(__name__)

# Under pressure, free enough to climb past the low watermark by half the band between
# the watermarks (at least 1% of the limit), so that one round of eviction is enough.
_MIN_STEP = 0.01
# Republish the node claim between probes once the bytes held moved by this share of
# the limit, so other caches' view of them is never staler than that.
_REPUBLISH = 0.01
# Headroom on a measured demand (sizes are averages; the last samples must fit too).
_DEMAND_MARGIN = 1.1
# (max_bytes, limit) pairs already warned about: the train and val caches of a run
# share their config, and the user needs to read it once.
_clamp_warned: set[tuple[int, int]] = set()


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
        probed: whether this decision took a new reading.
        node_budget_bytes: with a node registry, the budget of every automatic cache
            of the node together (this one's share is ``budget_bytes``).
    """

    budget_bytes: int
    headroom_bytes: int
    free_target_bytes: int
    alert: MemoryAlert | None
    reading: MemoryReading
    probed: bool = False
    node_budget_bytes: int | None = None


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
        node: this cache's place in the node's registry; its automatic budget is then
            its group's share of the node's (``cache_bytes`` passed to :meth:`update`
            are the group's, as are the budgets returned). ``None``: the cache sizes
            itself alone.

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
        node: NodeSlot | None = None,
    ) -> None:
        self.config = config
        self.probe = probe
        self.clock = clock
        self.counts_memory = (
            config.store in MEMORY_STORES if counts_memory is None else counts_memory
        )
        self.node = node
        self._others: list[Claim] = []
        self._demand: int | None = None
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

    def set_demand(self, nbytes: int | None) -> None:
        """The most this cache could hold (every sample at its largest tier), once known.

        A cache asking for less than an equal share of the node's budget gets what it
        asks for (plus a margin); the others share the rest.
        """
        self._demand = None if nbytes is None else int(nbytes * _DEMAND_MARGIN)

    def close(self) -> None:
        """Withdraw this cache's claim from the node registry."""
        if self.node is not None:
            self.node.close()

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
            if self.node is not None:
                self._others = self.node.others()
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
        if self.node is not None:
            moved = abs(cache_bytes - (self.node.published_held or 0))
            if probe_now or moved > _REPUBLISH * reading.limit_bytes:
                self.node.publish(
                    held_bytes=cache_bytes,
                    demand_bytes=self._demand,
                    budget_bytes=decision.budget_bytes,
                )
        return decision

    def _decide(
        self, reading: MemoryReading, available: int, cache_bytes: int, *, probed: bool
    ) -> BudgetDecision:
        cfg = self.config
        limit = reading.limit_bytes
        low, high = cfg.watermarks.low * limit, cfg.watermarks.high * limit
        reserve = cfg.reserve_for(limit)
        node_budget = None
        if cfg.max_bytes is not None:
            budget = self._clamped_max(limit, reserve)
        elif self.node is not None:
            budget, node_budget = self._node_share(available, cache_bytes, reserve)
        else:
            held = cache_bytes if self.counts_memory else 0
            budget = max(0, int(cfg.headroom_share * (available + held)) - reserve)
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
        return BudgetDecision(budget, available, free_target, alert, reading, probed, node_budget)

    def _clamped_max(self, limit: int, reserve: int) -> int:
        """``max_bytes``, at most what the automatic rule allows of the whole limit."""
        max_bytes = self.config.max_bytes
        assert max_bytes is not None
        if not self.counts_memory:
            return max_bytes  # disk or Redis: not held in this node's memory
        ceiling = max(0, int(self.config.headroom_share * limit) - reserve)
        if max_bytes <= ceiling:
            return max_bytes
        if (max_bytes, limit) not in _clamp_warned:
            _clamp_warned.add((max_bytes, limit))
            log.warning(
                "cache.max_bytes=%s is more than the memory limit allows: limit %s, of "
                "which headroom_share %.2f minus a reserve of %s is %s; using %s "
                "(raise cache.headroom_share to allow more)",
                format_size(max_bytes),
                format_size(limit),
                self.config.headroom_share,
                format_size(reserve),
                format_size(ceiling),
                format_size(ceiling),
            )
        return ceiling

    def _node_share(self, available: int, cache_bytes: int, reserve: int) -> tuple[int, int]:
        """(this group's budget, the node's budget for every automatic group)."""
        assert self.node is not None
        own = self.node.group
        held: dict[str, list[int]] = {own: [cache_bytes]}
        demands: dict[str, int | None] = {own: self._demand}
        fixed: set[str] = set()
        for c in self._others:
            # Each DDP rank reports its cache's bytes as its own times the ranks of
            # the node, so the mean over a group's ranks is the group's sum.
            held.setdefault(c.group, []).append(c.held_bytes)
            if c.group != own:
                if c.fixed:
                    fixed.add(c.group)
                prev = demands.get(c.group)
                if c.group not in demands or (prev is not None and c.demand_bytes is None):
                    demands[c.group] = c.demand_bytes
                elif prev is not None and c.demand_bytes is not None:
                    demands[c.group] = max(prev, c.demand_bytes)
        group_held = {g: sum(v) // len(v) for g, v in held.items()}
        all_held = sum(group_held.values())
        fixed_held = sum(group_held[g] for g in fixed)
        share = self.config.headroom_share
        node = max(0, int(share * (available + all_held)) - reserve - fixed_held)
        auto = {g: d for g, d in demands.items() if g not in fixed}
        return fair_shares(node, auto)[own], node

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
