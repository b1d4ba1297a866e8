"""Admission: which tier to write for a sample, and whether to keep what was written.

It joins the three inputs of every decision: the byte budget (from the
:class:`~adaptive_cache.budget.BudgetController`, shared across the ranks of a node),
the policy's answer, and the tier modes of the config (a tier forced ``on`` is kept
whenever it fits the budget, evicting the lowest-worth entries that are not forced).
A memory alert raised by the budget is logged here, once, and handed to listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adaptive_cache.budget import BudgetController, BudgetDecision, MemoryAlert
from adaptive_cache.config import CacheConfig, TierMode
from adaptive_cache.engine.costs import CostModel
from adaptive_cache.engine.ledger import Ledger
from adaptive_cache.keys import EntryKey
from adaptive_cache.pipeline import Pipeline
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores.base import StoreError

log = logging.getLogger(__name__)


class Admission:
    """Budget-aware admission over a :class:`Ledger`.

    Args:
        config: tier modes.
        pipeline: tier depths.
        ledger: what is held.
        costs: sizes and rebuild times measured so far.
        budget: the node's budget controller.
        stats: the cache's statistics (budget, headroom, alerts, store errors).
        share: processes of the node sharing the budget (each admits ``1/share``).
        emit: called with every memory alert.
        name: the cache's name, for logs.
    """

    def __init__(
        self,
        config: CacheConfig,
        pipeline: Pipeline,
        ledger: Ledger,
        costs: CostModel,
        budget: BudgetController,
        stats: CacheStats,
        *,
        share: int,
        emit: Callable[[MemoryAlert], None],
        name: str,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.ledger = ledger
        self.costs = costs
        self.budget = budget
        self.stats = stats
        self.share = share
        self.emit = emit
        self.name = name
        self.decision: BudgetDecision | None = None

    def forced(self, tier: str) -> bool:
        """Whether the config forces ``tier`` on."""
        return self.config.tier_mode(tier) is TierMode.on

    def budget_bytes(self) -> int:
        """What this process may hold now (its share of the node's budget)."""
        decision = self.decision
        return decision.budget_bytes // self.share if decision else 0

    def free_bytes(self) -> int:
        return self.budget_bytes() - self.ledger.bytes

    def refresh(self, *, force: bool = False) -> BudgetDecision:
        """Ask the budget controller again (rate-limited unless ``force``); shrink to it."""
        decision = self.budget.update(self.ledger.bytes * self.share, force=force)
        self.decision = decision
        self.stats.budget_bytes = decision.budget_bytes
        self.stats.headroom_bytes = decision.headroom_bytes
        if decision.alert is not None:
            level = decision.alert.level
            self.stats.alerts[level] = self.stats.alerts.get(level, 0) + 1
            log.warning("%s cache: %s", self.name, decision.alert.message)
            self.emit(decision.alert)
        if decision.free_target_bytes > 0:
            self.ledger.shrink(decision.free_target_bytes // self.share, "pressure")
        over = self.ledger.bytes - self.budget_bytes()
        if over > 0:
            self.ledger.shrink(over, "budget")
        return decision

    def choose_write(self, keys: dict[str, EntryKey], order: list[str]) -> tuple[EntryKey, ...]:
        """The tier (at most one) to write when this sample is computed.

        ``keys`` maps each kept tier to the sample's key; ``order`` is the order in
        which tiers are offered. Tiers no deeper than one already held are skipped.
        """
        held_ends = [self.pipeline.tier_end(t) for t, k in keys.items() if k in self.ledger]
        deepest_held = max(held_ends, default=0)
        budget = self.budget_bytes()
        for tier in order:
            if self.pipeline.tier_end(tier) <= deepest_held:
                continue
            cand = self.costs.candidate(keys[tier])
            if cand is None:
                # Never measured: offer it once, so the policy ranks this sample by its
                # own size and cost rather than by the tier's average.
                return (keys[tier],)
            free = budget - self.ledger.bytes
            if self.forced(tier) or self.ledger.policy.admit(cand, free, budget) is not None:
                return (keys[tier],)
        return ()

    def admit(
        self,
        cand: EntryInfo,
        data: bytes | None,
        *,
        written: bool,
        siblings: tuple[EntryKey, ...] = (),
    ) -> bool:
        """Keep ``cand`` if the policy (or a forced tier) takes it.

        Args:
            cand: the measured candidate.
            data: its bytes, to store here (``None``: a worker already stored them).
            written: the entry is in the store already (deleted again if rejected).
            siblings: every key of the same sample; a shallower tier held for it is
                dropped once a deeper one is kept (lookups find the deeper one first).

        Returns:
            Whether ``cand`` is now held.
        """
        ledger, policy = self.ledger, self.ledger.policy
        policy.observe(cand)
        self.refresh()
        budget = self.budget_bytes()
        if cand.key in ledger:
            return True
        free = budget - ledger.bytes
        victims = policy.admit(cand, free, budget)
        if victims is None and self.forced(cand.tier) and cand.nbytes <= budget:
            victims = ledger.lowest_worth(cand.nbytes - free, lambda i: self.forced(i.tier))
        if victims is None or cand.nbytes > budget:
            if written:
                ledger.delete(cand.key)
            return False
        for key in victims:
            ledger.evict(key, "replaced")
        if data is not None:
            try:
                ledger.store.put(str(cand.key), data)
            except StoreError as exc:
                self.stats.store_errors += 1
                log.warning(
                    "%s: cache store %s failed to write; continuing uncached: %s",
                    self.name,
                    ledger.store.name,
                    exc,
                )
                return False
        ledger.keep(cand)
        end = self.pipeline.tier_end(cand.tier)
        for other in siblings:
            if other in ledger and self.pipeline.tier_end(other.tier) < end:
                ledger.evict(other, "replaced")
        return True

    def takes_into_free_space(self, info: EntryInfo) -> bool:
        """Whether the policy would keep ``info`` without evicting anything."""
        budget = self.budget_bytes()
        return self.ledger.policy.admit(info, budget - self.ledger.bytes, budget) == []
