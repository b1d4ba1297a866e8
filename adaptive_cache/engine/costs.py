"""CostModel: what keeping an entry would save, measured per sample and per tier.

For every sample and tier written once, the model knows the entry's size and the
seconds it takes to rebuild it from the source (or from the cached tier it was
computed from). A timing is the work plus whatever delayed it (another process on
the core, a late wake-up, garbage collection): such delays only ever add time, and
on a busy machine they can triple a timing. So a sample's rebuild time is the
fastest of its measurements, and a sample computed again but not kept is re-timed
(its size does not change); measured here under load, ranking by the fastest
timing kept 2-4 points more of the knapsack bound than ranking by the average.
Per tier, exponential moving averages give the typical size and cost, which size
the first plan and stand in for entries found in a store without a measurement
(adopted or orphaned ones).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container

from adaptive_cache.config import format_size
from adaptive_cache.keys import EntryKey
from adaptive_cache.pipeline import Pipeline
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.work import WorkReport

log = logging.getLogger(__name__)

_EMA = 0.2  # weight of a new measurement in the per-tier size and cost averages
PLAN_AFTER = 8  # samples measured before the sizing plan is made and logged
_UNMEASURED_SECONDS = 1e-3  # rebuild time assumed for a tier nothing has measured yet


class TierEstimate:
    """Smoothed bytes and rebuild seconds (from the source) of one tier."""

    __slots__ = ("nbytes", "samples", "seconds")

    def __init__(self) -> None:
        self.nbytes = 0.0
        self.seconds = 0.0
        self.samples = 0

    def add(self, nbytes: int, seconds: float) -> None:
        if self.samples == 0:
            self.nbytes, self.seconds = float(nbytes), seconds
        else:
            self.nbytes += _EMA * (nbytes - self.nbytes)
            self.seconds += _EMA * (seconds - self.seconds)
        self.samples += 1


class CostModel:
    """Per-sample sizes and rebuild times, and per-tier averages.

    Args:
        pipeline: the pipeline whose tiers are measured.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.tiers: dict[str, TierEstimate] = {t: TierEstimate() for t in pipeline.tiers}
        # key -> (bytes, rebuild seconds) last measured for that sample and tier.
        self._seen: dict[EntryKey, tuple[int, float]] = {}

    def candidate(self, key: EntryKey) -> EntryInfo | None:
        """The entry as last measured, or ``None`` if it was never written."""
        seen = self._seen.get(key)
        if seen is None:
            return None
        return EntryInfo(key, key.tier, max(1, seen[0]), seen[1])

    def tier_seconds(self, tier: str) -> float:
        """Typical rebuild seconds of ``tier`` (0 until measured)."""
        return self.tiers[tier].seconds

    def assumed_seconds(self, tier: str) -> float:
        """Rebuild seconds to credit an entry nobody measured (adopted, orphaned)."""
        return self.tiers[tier].seconds or _UNMEASURED_SECONDS

    def rebuild_seconds(self, report: WorkReport, tier: str, cost_base: float) -> float:
        """Seconds the order of ``report`` spent up to ``tier``, plus ``cost_base`` (the
        saved cost of the tier it started from)."""
        # timings[0] is the source read, timings[i + 1] stage i.
        first = 0 if report.start == 0 else report.start + 1
        return cost_base + sum(report.timings[first : self.pipeline.tier_end(tier) + 1])

    def measure(self, key: EntryKey, nbytes: int, seconds: float) -> EntryInfo:
        """Record a written entry's size and rebuild time; returns it as a candidate."""
        prev = self._seen.get(key)
        if prev is not None:
            seconds = min(seconds, prev[1])  # delays only add time: keep the fastest
        self._seen[key] = (nbytes, seconds)
        self.tiers[key.tier].add(nbytes, seconds)
        return EntryInfo(key, key.tier, nbytes, seconds)

    def remeasure(
        self,
        report: WorkReport,
        cost_base: float,
        written: Container[EntryKey],
        held: Container[EntryKey],
    ) -> None:
        """Update the rebuild time of tiers computed but not written (misses kept out).

        Their sizes do not change between epochs; their timings do, and a sample whose
        one measurement happened to be slow or fast would otherwise keep it for good:
        the pre-check before computing would never let it be written (and so measured)
        again.
        """
        for key in report.keys:
            end = self.pipeline.tier_end(key.tier)
            if key in written or end <= report.start or key in held:
                continue
            prev = self._seen.get(key)
            if prev is None:
                continue  # never written: its size is unknown (it is offered when next missed)
            seconds = self.rebuild_seconds(report, key.tier, cost_base)
            self._seen[key] = (prev[0], min(seconds, prev[1]))

    def plan(
        self, tiers: list[str], budget: int, forced: Callable[[str], bool]
    ) -> tuple[list[str], str] | None:
        """The order in which to offer tiers, and a sentence for the log.

        ``None`` until some tier has :data:`PLAN_AFTER` measurements. The deepest tier
        comes first when it fits for every sample; otherwise the tier that saves the
        most seconds per byte. Forced tiers always come first.
        """
        measured = [t for t in tiers if self.tiers[t].samples >= PLAN_AFTER]
        if not tiers or not measured:
            return None
        n = len(self.pipeline)
        est = self.tiers
        deepest = tiers[0]
        if deepest in measured and est[deepest].nbytes * n <= budget:
            order = list(tiers)
            text = (
                f"{deepest} tier for all {n} samples, "
                f"{format_size(est[deepest].nbytes * n)} of a {format_size(budget)} budget"
            )
        else:
            order = sorted(tiers, key=lambda t: -(est[t].seconds / max(est[t].nbytes, 1.0)))
            best = order[0]
            fit = int(budget // max(est[best].nbytes, 1.0))
            text = (
                f"{best} tier (best seconds saved per byte) for about {min(fit, n)} of {n} "
                f"samples within a {format_size(budget)} budget"
            )
        first = [t for t in order if forced(t)]
        return first + [t for t in order if t not in first], text
