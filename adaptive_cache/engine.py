"""AdaptiveCache: the one object a dataset talks to.

It serves a :class:`~adaptive_cache.pipeline.Pipeline`: for each sample it finds the
deepest cached tier, runs the remaining stages and decides whether to keep what it
computed. Admission and eviction go through a policy; the byte budget comes from a
:class:`~adaptive_cache.budget.BudgetController` that watches real memory headroom.

The engine owns the bytes and the accounting; a policy only orders entries. Only the
process that owns the engine admits or evicts: DataLoader workers (see
:mod:`adaptive_cache.loader`) execute work orders and report back.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from adaptive_cache import codec
from adaptive_cache.budget import BudgetController, BudgetDecision, MemoryAlert
from adaptive_cache.config import CacheConfig, TierMode, format_size
from adaptive_cache.faults import StoreFaults
from adaptive_cache.levels import LeveledStore, LevelLedger
from adaptive_cache.memory import MemoryProbe, Probe
from adaptive_cache.node import join_node
from adaptive_cache.pipeline import Pipeline, RandomStageError, Sample
from adaptive_cache.policies import EntryInfo, Policy, make_policy
from adaptive_cache.stats import CacheStats, StatsBoard, merge
from adaptive_cache.stores import open_store
from adaptive_cache.stores.base import Store, StoreError
from adaptive_cache.work import WorkOrder, WorkReport, execute

log = logging.getLogger(__name__)

_TIER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EMA = 0.2  # weight of a new measurement in the per-tier size and cost averages
_PLAN_AFTER = 8  # samples measured before the sizing plan is made and logged

Listener = Callable[[Any], None]


class _TierEstimate:
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


class AdaptiveCache:
    """A memory-aware cache over the deterministic prefix of a pipeline.

    Args:
        pipeline: the pipeline to serve; its ``tiers`` name what may be kept.
        config: cache settings; with defaults the cache sizes itself.
        name: a short name (the split, e.g. ``"val"``): logs and metric labels.
        store: where entries live; by default ``open_store(config, ...)`` (node-shared
            memory). Pass one to share a store or inject a test store.
        probe: memory probe (inject a fake one in tests).
        clock: monotonic clock for rate limiting (inject a fake one in tests).
        namespace: store namespace; processes giving the same namespace share entries
            (DDP ranks of one node). Default: unique per cache.
        local_world_size: processes of this node sharing the store; each admits within
            ``budget / local_world_size`` so that the node's budget holds.
        stats_dir: if set, snapshots are published there and :meth:`stats` sums the
            snapshots of every live process of the node.

    Raises:
        ValueError: a tier in ``config.tiers`` that the pipeline does not have.
        RandomStageError: a tier forced on that names a random stage.

    Example:
        >>> cache = AdaptiveCache(pipeline, CacheConfig(max_bytes="2GiB"), name="val")
        >>> sample = cache.get(0)
        >>> loader = cache.loader(batch_size=16, num_workers=2)
    """

    def __init__(
        self,
        pipeline: Pipeline,
        config: CacheConfig | None = None,
        *,
        name: str = "default",
        store: Store | None = None,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
        namespace: str | None = None,
        local_world_size: int = 1,
        stats_dir: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config = config or CacheConfig()
        self.name = name
        self._check_tiers(pipeline, config)
        self.enabled = config.policy != "off"
        self.tiers: list[str] = [
            t for t in pipeline.tiers if self.enabled and config.tier_mode(t) is not TierMode.off
        ]
        self.namespace = namespace or f"{name}-{uuid.uuid4().hex[:12]}"
        self.store: Store = (
            store
            if store is not None
            # levels: below memory, entries outlive the run: named by the cache, not the run
            else open_store(config, namespace=self.namespace, level_namespace=name)
        )
        self.probe: Probe = probe if probe is not None else MemoryProbe()
        # Caches reading this node's real memory share one node budget (a fake probe
        # describes a machine of its own).
        node = join_node(config, self.namespace) if probe is None and self.enabled else None
        self.budget = BudgetController(config, self.probe, clock=clock, node=node)
        self.policy: Policy = make_policy(config.policy, replace_margin=config.replace_margin)
        # Candidates per epoch: one per sample (a miss offers one tier, see _choose_write).
        self.policy.set_population(max(1, len(pipeline)))
        self._share = max(1, int(local_world_size))
        self._lock = threading.RLock()
        self._held: dict[str, EntryInfo] = {}
        self._used = 0
        self._est = {t: _TierEstimate() for t in pipeline.tiers}
        # key -> (bytes, rebuild seconds) last measured for that sample and tier.
        self._seen: dict[str, tuple[int, float]] = {}
        self._stats = CacheStats()
        for t in self.tiers:
            self._stats.tier(t)
        self._listeners: list[Listener] = []
        self._decision: BudgetDecision | None = None
        self._order: list[str] = list(self.tiers)  # tiers in the order they are offered
        self._planned = False
        self._board = StatsBoard(stats_dir) if stats_dir else None
        self._faults = StoreFaults(name, self.store.name)
        self._space_cap: int | None = None  # node bytes the store's file system allows
        self._final = next(
            (t for t in self.tiers if pipeline.tier_end(t) == len(pipeline.stages)), None
        )
        # levels: the owner's accounting of the levels below memory (None without them)
        self.levels: LevelLedger | None = None
        if self.enabled and isinstance(self.store, LeveledStore) and self.store.levels:
            self.levels = LevelLedger(
                self.store,
                pipeline,
                config,
                tiers=self.tiers,
                stats=self._stats,
                share=self._share,
                clock=clock,
                promote=self._promote,
            )
        if self.enabled:
            self._refresh_budget(force=True)
            if self.store.persistent:
                self._adopt()
            if self.levels is not None:  # levels: adopt the disk level's valid entries
                self.levels.adopt()

    @staticmethod
    def _check_tiers(pipeline: Pipeline, config: CacheConfig) -> None:
        stage_names = [s.name for s in pipeline.stages]
        for tier, mode in config.tiers.items():
            if tier in pipeline.tiers:
                continue
            if tier in stage_names and stage_names.index(tier) >= pipeline.prefix_len:
                rnd = pipeline.stages[pipeline.prefix_len]
                raise RandomStageError(
                    f"cache.tiers.{tier}={mode.value}: {tier!r} comes after the random stage "
                    f"{rnd.name!r} ({rnd.describe_random()}); random outputs are never cached"
                )
            raise ValueError(
                f"cache.tiers.{tier}: unknown tier; this pipeline has {sorted(pipeline.tiers)}"
            )
        for tier in pipeline.tiers:
            if not _TIER_NAME.match(tier):
                raise ValueError(f"tier name {tier!r}: expected lower-case letters, digits, '_'")

    # ------------------------------------------------------------------ serving

    def get(self, index: int, epoch: int = 0) -> Sample:
        """Serve sample ``index`` in this process, admitting what it computes."""
        return self.serve(index, epoch, self.final_hit_key(index))

    def serve(self, index: int, epoch: int, key: str | None) -> Sample:
        """:meth:`get` for a caller that already looked up :meth:`final_hit_key`.

        A held final-tier entry is served in place; one that vanished, is corrupt or
        unreadable (and any sample without ``key``) takes the general path, which
        counts it and computes it.
        """
        if key is not None:
            sample = self.serve_held(key)
            if sample is not None:
                return sample
        sample, report = execute(self.pipeline, self.store, self.order(index, epoch))
        self.complete(report)
        return sample

    def serve_held(self, key: str) -> Sample | None:
        """Serve a final-tier entry (see :meth:`final_hit_key`) in place, or ``None``.

        The hot path of a cached epoch: the store's view of the entry (a mapping kept
        by this process, for ``shm``) is decoded once, and later hits return the same
        read-only array views, so a hit costs a lookup and the caller's one copy into
        its batch. ``None`` (the entry vanished, is corrupt, or the store failed) sends
        the caller to the general path, which computes the sample and counts the miss.
        """
        t0 = time.perf_counter()
        try:
            view = self.store.view(key)
        except StoreError as exc:
            with self._lock:
                self._store_failed("read", exc)
            return None
        if view is None:
            return None
        sample = view.derived
        if sample is None:
            try:
                sample = codec.decode(view.buffer)
            except codec.CodecError:
                return None
            view.derived = sample
        with self._lock:
            if self.enabled and self.budget.probe_due():
                # A hit changes no byte count: only a new memory reading can change
                # the decision, so between probes there is nothing to redo.
                self._refresh_budget()
            self._stats.requests += 1
            seconds = time.perf_counter() - t0
            self._stats.observe_lookup(seconds)
            self._count_hit(self._final or key.split("-", 1)[0], key)
            if self._faults.failing:
                self._faults.succeeded("read")
            if self.levels is not None and key not in self._held:  # levels: served from disk
                self.levels.served(key, seconds, view.buffer)
            self._log_every()
        return dict(sample)  # type: ignore[call-overload]

    def _remeasure(self, report: WorkReport, cost_base: float, written: dict) -> None:
        """Update the rebuild time of tiers computed but not written (misses kept out).

        Their sizes do not change between epochs; their timings do, and a sample whose
        one measurement happened to be slow or fast would otherwise keep it for good:
        the pre-check in :meth:`_choose_write` would never let it be written (and so
        measured) again. This is what lets ``auto`` settle within two epochs under noise.
        """
        first = 0 if report.start == 0 else report.start + 1
        for tier, key in report.keys:
            end = self.pipeline.tier_end(tier)
            if tier in written or end <= report.start or key in self._held:
                continue
            prev = self._seen.get(key)
            if prev is None:
                continue  # never written: its size is unknown (it is offered when next missed)
            seconds = cost_base + sum(report.timings[first : end + 1])
            self._seen[key] = (prev[0], 0.5 * (seconds + prev[1]))

    def _prepare_view(self, key: str) -> None:
        """Map and decode a newly kept final-tier entry now, in the epoch that computed it.

        Mapping 2 MB costs about as much as copying it; done here, the first epoch of
        hits already runs at the speed of later ones.
        """
        if not self.store.maps:
            return
        try:
            view = self.store.view(key)
            if view is not None and view.derived is None:
                view.derived = codec.decode(view.buffer)
        except (StoreError, codec.CodecError):
            pass  # served (or found corrupt) by the general path at the next access

    def _count_hit(self, tier: str, key: str) -> float:
        st = self._stats
        st.hits += 1
        info = self._held.get(key)
        # levels: a lower level knows the rebuild seconds of what it holds
        known = self.levels.seconds(key) if info is None and self.levels is not None else None
        saved = info.seconds if info else known or self._est[tier].seconds
        ts = st.tier(tier)
        ts.hits += 1
        ts.saved_seconds += saved
        if info is not None:
            self.policy.on_access(key)
        return saved

    def _log_every(self) -> None:
        n = self.config.log_every_n
        if n and self._stats.requests % n == 0:
            log.info("%s %s", self.name, self._stats.summary())

    def order(self, index: int, epoch: int, *, prefix_only: bool = False) -> WorkOrder:
        """Decide what to look up and what to write for one sample."""
        if not self.tiers:
            return WorkOrder(index, epoch, prefix_only=prefix_only)
        keys = self.pipeline.keys(index, self.tiers)
        lookup = tuple((t, keys[t]) for t in self.tiers)
        with self._lock:
            write = self._choose_write(keys)
            place = self.levels.place(write) if self.levels is not None else None  # levels
        return WorkOrder(index, epoch, lookup, write, prefix_only, place)

    def final_hit_key(self, index: int) -> str | None:
        """The key of a held entry that needs no further stage, if any (served in place)."""
        if self._final is None:
            return None
        key = self.pipeline.keys(index, (self._final,))[self._final]
        if key in self._held or (self.store.shared and self._share > 1 and self._contains(key)):
            return key
        if self.levels is not None and self.levels.in_place(key):  # levels: a mapped disk entry
            return key
        return None

    def holds(self, index: int) -> bool:
        """Whether any tier of sample ``index`` is kept (by this process or the node)."""
        if not self.tiers:
            return False
        for key in self.pipeline.keys(index, self.tiers).values():
            if key in self._held or (self.store.shared and self._share > 1 and self._contains(key)):
                return True
            if self.levels is not None and self.levels.holds(key):  # levels
                return True
        return False

    def _contains(self, key: str) -> bool:
        try:
            return self.store.contains(key)
        except StoreError as exc:
            with self._lock:
                self._store_failed("read", exc)
            return False

    def _choose_write(self, keys: dict[str, str]) -> tuple[tuple[str, str], ...]:
        held = [(self.pipeline.tier_end(t), t, k) for t, k in keys.items() if k in self._held]
        deepest_held = max((end for end, _, _ in held), default=0)
        # The held tier is written again if the executor does not find it intact (corrupt,
        # or gone from the store), so that the next epoch hits; if found, nothing is written.
        rewrite = tuple((t, k) for end, t, k in held if end == deepest_held)
        # levels: a tier shallower than one a lower level holds is of no use to this sample
        deepest_low = self.levels.deepest(keys) if self.levels is not None else 0
        budget = self._budget_bytes()
        for tier in self._order:
            if self.pipeline.tier_end(tier) <= deepest_held:
                continue
            if self.pipeline.tier_end(tier) < deepest_low:  # levels
                continue
            seen = self._seen.get(keys[tier])
            if seen is None:
                # Never measured: offer it once, so the policy ranks this sample by its
                # own size and cost rather than by the tier's average.
                return (*rewrite, (tier, keys[tier]))
            cand = EntryInfo(keys[tier], tier, max(1, seen[0]), seen[1])
            if (
                self._forced(tier)
                or self.policy.admit(cand, budget - self._used, budget) is not None
            ):
                return (*rewrite, (tier, keys[tier]))
            if self.levels is not None and self.levels.wants(cand, keys):  # levels
                return (*rewrite, (tier, keys[tier]))
        return rewrite

    def _forced(self, tier: str) -> bool:
        return self.config.tier_mode(tier) is TierMode.on

    def complete(self, report: WorkReport) -> None:
        """Account for an executed order: statistics, admissions, withdrawals."""
        with self._lock:
            if self.enabled:
                self._refresh_budget()  # rate-limited by the controller
            st = self._stats
            st.requests += 1
            st.store_errors += report.store_errors
            for i, (op, message) in enumerate(report.store_failed.items()):
                self._faults.failed(op, message, report.store_errors if i == 0 else 0)
            for op in report.store_ok:
                self._faults.succeeded(op)
            st.observe_lookup(report.lookup_seconds)
            if self.levels is not None:  # levels: hits below memory, promotions, timings
                self.levels.on_report(report)
            for tier in report.missed:
                st.tier(tier).misses += 1
            # Corrupt entries were written again by the executor (not deleted here: the
            # file now holds the good bytes) and are re-admitted below; held entries that
            # vanished and could not be rewritten leave the accounting.
            rewritten = {k for k, _ in (*report.written.values(), *report.payloads.values())}
            for tier, key in report.corrupt:
                self._evict(key, "invalid", tier=tier, delete=key not in rewritten)
            for _, key in report.absent:
                if key in self._held and key not in rewritten:
                    self._evict(key, "invalid", delete=False)
            cost_base = 0.0
            if report.hit_tier is not None:
                cost_base = self._count_hit(report.hit_tier, report.hit_key or "")
            measured = {}
            for tier, (key, nbytes) in report.written.items():
                measured[tier] = (key, nbytes, None)
            for tier, (key, data) in report.payloads.items():
                measured[tier] = (key, len(data), data)
            for tier, (key, nbytes, data) in sorted(
                measured.items(), key=lambda kv: -self.pipeline.tier_end(kv[0])
            ):
                end = self.pipeline.tier_end(tier)
                # timings[0] is the source read, timings[i + 1] stage i.
                first = 0 if report.start == 0 else report.start + 1
                seconds = cost_base + sum(report.timings[first : end + 1])
                prev = self._seen.get(key)
                if prev is not None:
                    # One timing can be off by 2x (scheduling, GC): average this sample's
                    # own measurements, so noise does not make `auto` swap equal entries
                    # while real differences between samples are kept.
                    seconds = 0.5 * (seconds + prev[1])
                self._seen[key] = (nbytes, seconds)
                self._est[tier].add(nbytes, seconds)
                info = EntryInfo(key, tier, nbytes, seconds)
                admitted = self._admit(info, data, written=data is None)
                if admitted and tier == self._final:
                    self._prepare_view(key)
                if self.levels is not None:  # levels: what the order wrote below memory
                    self.levels.admit(info, report, admitted)
            self._remeasure(report, cost_base, measured)
            self._maybe_plan()
            self._log_every()

    # ------------------------------------------------------------------ admission

    def _budget_bytes(self) -> int:
        decision = self._decision
        return decision.budget_bytes // self._share if decision else 0

    def _admit(self, cand: EntryInfo, data: bytes | None, *, written: bool) -> bool:
        self.policy.observe(cand)
        self._refresh_budget()
        budget = self._budget_bytes()
        if cand.key in self._held:
            # Written again (it was missing or corrupt): same key, same accounting.
            return data is None or self._put(cand.key, data)
        forced = self._forced(cand.tier)
        victims = self.policy.admit(cand, budget - self._used, budget)
        if victims is None and forced and cand.nbytes <= budget:
            victims = self._victims_for(cand.nbytes - (budget - self._used))
        if victims is None or cand.nbytes > budget:
            if written:
                self._delete(cand.key)
            return False
        for key in victims:
            self._evict(key, "replaced")
        if data is not None and not self._put(cand.key, data):
            return False
        self._held[cand.key] = cand
        self._used += cand.nbytes
        self.policy.on_insert(cand)
        ts = self._stats.tier(cand.tier)
        ts.insertions += 1
        ts.bytes += cand.nbytes
        ts.items += 1
        # The tiers above a newly kept one are now useless for this sample.
        prefix = cand.key.split("-", 1)[1]
        for tier in self.tiers:
            if tier != cand.tier and self.pipeline.tier_end(tier) < self.pipeline.tier_end(
                cand.tier
            ):
                other = f"{tier}-{prefix}"
                if other in self._held:
                    self._evict(other, "replaced")
        return True

    def _put(self, key: str, data: bytes) -> bool:
        try:
            self.store.put(key, data)
        except StoreError as exc:
            self._store_failed("write", exc)
            return False
        self._faults.succeeded("write")
        return True

    def _store_failed(self, op: str, exc: StoreError) -> None:
        """Count a failed store call; the first of an outage is logged (see faults.py)."""
        self._stats.store_errors += 1
        self._faults.failed(op, str(exc))

    def _promote(self, info: EntryInfo, data: bytes | memoryview | None) -> bool:
        """levels: put an entry served from a lower level into memory if the policy admits it
        (``data=None``: the policy only observes it)."""
        if data is None:
            self.policy.observe(info)
            return False
        if not self._admit(info, data, written=False):
            return False
        if info.tier == self._final:
            self._prepare_view(info.key)
        return True

    def _victims_for(self, nbytes: int) -> list[str]:
        out, freed = [], 0
        for info in sorted(self._held.values(), key=lambda i: i.worth):
            if freed >= nbytes:
                break
            if not self._forced(info.tier):
                out.append(info.key)
                freed += info.nbytes
        return out

    def _evict(
        self, key: str, reason: str, *, tier: str | None = None, delete: bool = True
    ) -> None:
        info = self._held.pop(key, None)
        if info is None:
            if tier is not None:
                if delete:
                    self._delete(key)
                self._stats.tier(tier).evictions[reason] += 1
            return
        self._used -= info.nbytes
        self.policy.on_remove(key)
        ts = self._stats.tier(info.tier)
        ts.evictions[reason] += 1
        ts.bytes -= info.nbytes
        ts.items -= 1
        if self.levels is not None and delete:  # levels: demote (read from memory first)
            self.levels.evicted(info, reason)
        if delete:
            self._delete(key)

    def _delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:
            self._store_failed("write", exc)

    def _refresh_budget(self, *, force: bool = False) -> BudgetDecision:
        probed = force or self.budget.probe_due()
        decision = self.budget.update(self._used * self._share, force=force)
        decision = self._cap_to_store_space(decision, probed)
        self._decision = decision
        self._stats.budget_bytes = decision.budget_bytes
        self._stats.headroom_bytes = decision.headroom_bytes
        if decision.alert is not None:
            self._stats.alerts[decision.alert.level] = (
                self._stats.alerts.get(decision.alert.level, 0) + 1
            )
            log.warning("%s cache: %s", self.name, decision.alert.message)
            self._emit(decision.alert)
        if decision.free_target_bytes > 0:
            self._shrink(decision.free_target_bytes // self._share, "pressure")
        over = self._used - self._budget_bytes()
        if over > 0:
            self._shrink(over, "budget")
        return decision

    def _cap_to_store_space(self, decision: BudgetDecision, probed: bool) -> BudgetDecision:
        """The budget never exceeds what is held plus what the store's file system can
        still take (``Store.space_bytes``): a disk cache stops growing before the disk is
        full. Read with each memory probe; in between, the cap stays where it was."""
        if probed:
            space = self.store.space_bytes()
            self._space_cap = None if space is None else self._used * self._share + space
        if self._space_cap is not None and self._space_cap < decision.budget_bytes:
            return replace(decision, budget_bytes=self._space_cap)
        return decision

    def _shrink(self, nbytes: int, reason: str) -> None:
        freed = 0
        while freed < nbytes and self._held:
            key = self.policy.victim()
            if key is None or key not in self._held:
                break
            freed += self._held[key].nbytes
            self._evict(key, reason)

    # ------------------------------------------------------------------ planning

    def _maybe_plan(self) -> None:
        if self._planned or not self.tiers:
            return
        measured = [t for t in self.tiers if self._est[t].samples >= _PLAN_AFTER]
        if not measured:
            return
        self._planned = True
        n = len(self.pipeline)
        budget = self._budget_bytes()
        deepest = self.tiers[0]
        if deepest in measured and self._est[deepest].nbytes * n <= budget:
            order = list(self.tiers)
            plan = (
                f"{deepest} tier for all {n} samples, "
                f"{format_size(self._est[deepest].nbytes * n)} of a {format_size(budget)} budget"
            )
        else:
            order = sorted(
                self.tiers,
                key=lambda t: -(self._est[t].seconds / max(self._est[t].nbytes, 1.0)),
            )
            best = order[0]
            fit = int(budget // max(self._est[best].nbytes, 1.0))
            plan = (
                f"{best} tier (best seconds saved per byte) for about {min(fit, n)} of {n} "
                f"samples within a {format_size(budget)} budget"
            )
        forced = [t for t in order if self._forced(t)]
        self._order = forced + [t for t in order if t not in forced]
        if deepest in measured:  # the most this cache could hold: its share of the node
            self.budget.set_demand(int(max(self._est[t].nbytes for t in measured) * n))
        log.info("%s: cache plan: %s", self.name, plan)
        self.plan_text = plan

    plan_text: str = "not yet measured"

    # ------------------------------------------------------------------ adoption

    def _adopt(self) -> None:
        """Adopt the valid entries of a persistent store; drop the stale ones."""
        valid: dict[str, str] = {}
        for index in range(len(self.pipeline)):
            for tier, key in self.pipeline.keys(index, self.tiers).items():
                valid[key] = tier
        adopted = 0
        for key, nbytes in list(self.store.entries()):
            tier = valid.get(key)
            if tier is None:
                self._delete(key)
                prefix = key.split("-", 1)[0]
                if prefix in self._stats.tiers:
                    self._stats.tier(prefix).evictions["invalid"] += 1
                continue
            info = EntryInfo(key, tier, nbytes, self._est[tier].seconds or 1e-3)
            self._held[key] = info
            self._used += nbytes
            self.policy.on_insert(info)
            ts = self._stats.tier(tier)
            ts.bytes += nbytes
            ts.items += 1
            adopted += 1
        if adopted:
            log.info(
                "%s: adopted %d entries (%s) from %s",
                self.name,
                adopted,
                format_size(self._used),
                self.store.name,
            )
        self._refresh_budget(force=True)

    def prune_views(self) -> None:
        """Let go of mapped entries that other processes removed (called once an epoch)."""
        prune = getattr(self.store, "prune_views", None)
        if prune is not None and self.store.maps:
            try:
                prune()
            except OSError as exc:  # pragma: no cover - stat errors other than "gone"
                log.debug("%s: pruning mapped entries failed: %s", self.name, exc)

    def reconcile(self) -> None:
        """Make the accounting match the store again.

        A worker that dies after writing an entry never reports it: such orphans are
        adopted when the policy would take them, otherwise deleted; entries that
        vanished from the store are dropped from the accounting. Only for a store
        this process is the sole owner of (other ranks' entries are not orphans).
        """
        if not self.enabled or self._share > 1:
            return
        with self._lock:
            sweep = getattr(self.store, "sweep", None)
            try:
                if sweep is not None:
                    sweep()  # temporary files of writers that died
                present = dict(self.store.entries())
            except StoreError as exc:
                # Unreachable is not "every entry vanished": keep the accounting as it is.
                self._store_failed("list", exc)
                return
            self._faults.succeeded("list")
            for key in [k for k in self._held if k not in present]:
                self._evict(key, "invalid")
            budget = self._budget_bytes()
            for key, nbytes in present.items():
                if key in self._held:
                    continue
                tier = key.split("-", 1)[0]
                if tier not in self._est:
                    self._delete(key)
                    continue
                info = EntryInfo(key, tier, nbytes, self._est[tier].seconds or 1e-3)
                if self.policy.admit(info, budget - self._used, budget) == []:
                    self._held[key] = info
                    self._used += nbytes
                    self.policy.on_insert(info)
                    ts = self._stats.tier(tier)
                    ts.insertions += 1
                    ts.bytes += nbytes
                    ts.items += 1
                else:
                    self._delete(key)

    # ------------------------------------------------------------------ reporting

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` for every event (``MemoryAlert``) the cache raises."""
        self._listeners.append(fn)

    def _emit(self, event: MemoryAlert) -> None:
        for fn in list(self._listeners):
            fn(event)

    def local_stats(self) -> CacheStats:
        """This process's statistics (a copy)."""
        with self._lock:
            return CacheStats.from_dict(self._stats.to_dict())

    def stats(self) -> CacheStats:
        """Statistics summed over every process of the node that shares this cache."""
        local = self.local_stats()
        if self._board is None:
            return local
        self._board.publish(local)
        return merge(self._board.read_all())

    def publish(self) -> None:
        if self._board is not None:
            self._board.publish(self.local_stats())

    @property
    def bytes_held(self) -> int:
        return self._used

    def held_keys(self) -> Iterable[str]:
        return list(self._held)

    def clear(self) -> None:
        """Drop every entry this process holds."""
        with self._lock:
            for key in list(self._held):
                self._evict(key, "budget")

    def close(self) -> None:
        """Release the store (a node-shared store is removed by its owner)."""
        self.budget.close()
        self.store.close()

    def __enter__(self) -> AdaptiveCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loader(self, **kwargs: Any):
        """A :class:`~adaptive_cache.loader.CacheLoader` over this cache (DataLoader kwargs)."""
        from adaptive_cache.loader import CacheDataset, CacheLoader

        return CacheLoader(CacheDataset(self), **kwargs)


def pid_namespace(prefix: str) -> str:
    """A namespace unique to this process tree (for tests and one-off caches)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
