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
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptive_cache.budget import BudgetController, BudgetDecision, MemoryAlert
from adaptive_cache.config import CacheConfig, TierMode
from adaptive_cache.engine.costs import CostModel
from adaptive_cache.engine.ledger import Ledger
from adaptive_cache.keys import EntryKey
from adaptive_cache.pipeline import Pipeline
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.stats import CacheStats

if TYPE_CHECKING:
    from adaptive_cache.levels import LevelLedger

log = logging.getLogger(__name__)


def wire(info: EntryInfo) -> EntryInfo:
    """``info`` keyed by its store name (the levels below memory speak store names)."""
    return replace(info, key=str(info.key))


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
        self._space_cap: int | None = None  # node bytes the store's file system allows
        #: levels: the accounting of the levels below memory (set by the engine).
        self.levels: LevelLedger | None = None

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
        probed = force or self.budget.probe_due()
        decision = self.budget.update(self.ledger.bytes * self.share, force=force)
        decision = self._cap_to_store_space(decision, probed)
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

    def _cap_to_store_space(self, decision: BudgetDecision, probed: bool) -> BudgetDecision:
        """The budget never exceeds what is held plus what the store's file system can
        still take (``Store.space_bytes``): a disk cache stops growing before the disk is
        full. Read with each memory probe; in between, the cap stays where it was."""
        if probed:
            space = self.ledger.store.space_bytes()
            self._space_cap = None if space is None else self.ledger.bytes * self.share + space
        if self._space_cap is not None and self._space_cap < decision.budget_bytes:
            return replace(decision, budget_bytes=self._space_cap)
        return decision

    def choose_write(self, keys: dict[str, EntryKey], order: list[str]) -> tuple[EntryKey, ...]:
        """The tier (at most one new one) to write when this sample is computed.

        ``keys`` maps each kept tier to the sample's key; ``order`` is the order in
        which tiers are offered. Tiers no deeper than one already held are skipped.
        The deepest held tier is listed too: the executor writes it again if it does
        not find it intact (corrupt, or gone from the store), so that the next epoch
        hits; if found, nothing is written.
        """
        end = self.pipeline.tier_end
        held = [k for k in keys.values() if k in self.ledger]
        deepest_held = max((end(k.tier) for k in held), default=0)
        rewrite = tuple(k for k in held if end(k.tier) == deepest_held)
        levels = self.levels
        names = {t: str(k) for t, k in keys.items()} if levels is not None else {}
        # levels: a tier shallower than one a lower level holds is of no use to this sample
        deepest_low = levels.deepest(names) if levels is not None else 0
        budget = self.budget_bytes()
        for tier in order:
            if end(tier) <= deepest_held or end(tier) < deepest_low:
                continue
            cand = self.costs.candidate(keys[tier])
            if cand is None:
                # Never measured: offer it once, so the policy ranks this sample by its
                # own size and cost rather than by the tier's average.
                return (*rewrite, keys[tier])
            free = budget - self.ledger.bytes
            if self.forced(tier) or self.ledger.policy.admit(cand, free, budget) is not None:
                return (*rewrite, keys[tier])
            if levels is not None and levels.wants(wire(cand), names):  # levels
                return (*rewrite, keys[tier])
        return rewrite

    def admit(
        self,
        cand: EntryInfo,
        data: bytes | memoryview | None,
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
            # Written again (it was missing or corrupt): same key, same accounting.
            return data is None or ledger.put(cand.key, data)
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
        if data is not None and not ledger.put(cand.key, data):
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
