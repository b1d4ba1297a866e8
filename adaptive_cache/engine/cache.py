"""AdaptiveCache: the one object a dataset talks to.

It serves a :class:`~adaptive_cache.pipeline.Pipeline`: for each sample it finds the
deepest cached tier, runs the remaining stages and decides whether to keep what it
computed. This module is the hot path (:meth:`AdaptiveCache.serve`,
:meth:`~AdaptiveCache.order`, :meth:`~AdaptiveCache.complete`) and the wiring; the
parts it composes each own one job:

* :class:`~adaptive_cache.engine.ledger.Ledger`: the held entries and their bytes;
* :class:`~adaptive_cache.engine.costs.CostModel`: per-sample sizes and rebuild times;
* :class:`~adaptive_cache.engine.admission.Admission`: budget, policy and tier modes;
* :mod:`~adaptive_cache.engine.recovery`: adopting and reconciling a store's entries;
* :class:`~adaptive_cache.engine.views.DecodedViews`: hits served in place;
* :class:`~adaptive_cache.engine.reporting.Reporter`: statistics, summary, listeners.

Only the process that owns the engine admits or evicts: DataLoader workers (see
:mod:`adaptive_cache.loader`) execute work orders and report back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from adaptive_cache.budget import BudgetController
from adaptive_cache.config import CacheConfig, TierMode
from adaptive_cache.engine import recovery
from adaptive_cache.engine.admission import Admission, wire
from adaptive_cache.engine.costs import PLAN_AFTER, CostModel
from adaptive_cache.engine.ledger import Ledger
from adaptive_cache.engine.reporting import Listener, Reporter
from adaptive_cache.engine.views import DecodedViews
from adaptive_cache.keys import EntryKey, check_tier
from adaptive_cache.levels import LeveledStore, LevelLedger
from adaptive_cache.loader import CacheDataset, CacheLoader
from adaptive_cache.memory import MemoryProbe, Probe
from adaptive_cache.node import join_node
from adaptive_cache.pipeline import Pipeline, RandomStageError, Sample
from adaptive_cache.policies import Policy, make_policy
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.preload import preload
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores import open_store
from adaptive_cache.stores.base import Store, StoreError
from adaptive_cache.work import WorkOrder, WorkReport, execute

log = logging.getLogger(__name__)


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
        policy: a policy name or instance; overrides ``config.policy``.

    Raises:
        ValueError: a tier in ``config.tiers`` that the pipeline does not have, an
            unknown policy name, or a policy instance that already serves another cache.
        RandomStageError: a tier forced on that names a random stage.

    Example:
        >>> cache = AdaptiveCache(pipeline, CacheConfig(max_bytes="2GiB"), name="val")
        >>> sample = cache.get(0)
        >>> loader = cache.loader(batch_size=16, num_workers=2)
    """

    plan_text: str = "not yet measured"

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
        policy: Policy | str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config = config or CacheConfig()
        self.name = name
        _check_tiers(pipeline, config)
        spec = config.policy if policy is None else policy
        self.enabled = not (isinstance(spec, str) and spec == "off")
        self.policy: Policy = (
            spec
            if isinstance(spec, Policy)
            else make_policy(spec, replace_margin=config.replace_margin)
        )
        self.policy.bind(self)
        # Candidates per epoch: one per sample (a miss offers one tier, see choose_write).
        self.policy.set_population(max(1, len(pipeline)))
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
        self._share = max(1, int(local_world_size))
        self._lock = threading.RLock()
        self._stats = CacheStats()
        for t in self.tiers:
            self._stats.tier(t)
        self.reporter = Reporter(
            self._stats,
            self._lock,
            name=name,
            log_every_n=config.log_every_n,
            stats_dir=stats_dir,
        )
        self.ledger = Ledger(self.policy, self.store, self._stats, name)
        self.costs = CostModel(pipeline)
        self.admission = Admission(
            config,
            pipeline,
            self.ledger,
            self.costs,
            BudgetController(config, self.probe, clock=clock, node=node),
            self._stats,
            share=self._share,
            emit=self.reporter.emit,
            name=name,
        )
        self._views = DecodedViews(self.store, on_error=self._read_failed)
        self._order: list[str] = list(self.tiers)  # tiers in the order they are offered
        self._planned = False
        self._epoch: int | None = None
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
            self.levels.prepare = lambda name: self._views.prepare(EntryKey.parse(name))
            self.admission.levels = self.levels
            levels = self.levels
            self.ledger.demote = lambda info, reason: levels.evicted(wire(info), reason)
        if self.enabled:
            self.admission.refresh(force=True)
            if self.store.persistent:
                self._adopt()
            if self.levels is not None:  # levels: adopt the disk level's valid entries
                self.levels.adopt()

    # The hot path.

    def get(self, index: int, epoch: int = 0) -> Sample:
        """Serve sample ``index`` in this process, admitting what it computes."""
        return self.serve(index, epoch, self.final_hit_key(index))

    def serve(self, index: int, epoch: int, key: EntryKey | None) -> Sample:
        """:meth:`get` for a caller that already looked up :meth:`final_hit_key`.

        A held final-tier entry is served in place; one that vanished, is corrupt or
        unreadable (and any sample without ``key``) takes the general path, which
        counts it and computes it.
        """
        if epoch != self._epoch:
            self.begin_epoch(epoch)
        if key is not None:
            sample = self.serve_held(key)
            if sample is not None:
                return sample
        sample, report = execute(self.pipeline, self.store, self.order(index, epoch))
        self.complete(report)
        return sample

    def serve_held(self, key: EntryKey) -> Sample | None:
        """Serve a final-tier entry (see :meth:`final_hit_key`) in place, or ``None``.

        The hot path of a cached epoch: the entry is decoded once (see
        :class:`~adaptive_cache.engine.views.DecodedViews`), and later hits return the
        same read-only arrays, so a hit costs a lookup and the caller's one copy into
        its batch. ``None`` (the entry vanished, is corrupt, or the store failed) sends
        the caller to the general path, which computes the sample and counts the miss.
        """
        t0 = time.perf_counter()
        sample = self._views.get(key)
        if sample is None:
            return None
        with self._lock:
            if self.enabled and self.admission.budget.probe_due():
                # A hit changes no byte count: only a new memory reading can change
                # the decision, so between probes there is nothing to redo.
                self.admission.refresh()
            self._stats.requests += 1
            seconds = time.perf_counter() - t0
            self._stats.observe_lookup(seconds)
            self._count_hit(key)
            if self.ledger.faults.failing:
                self.ledger.faults.succeeded("read")
            if self.levels is not None and key not in self.ledger:  # levels: served from disk
                self._served_below(key, seconds)
            self.reporter.request_done()
        return dict(sample)

    def _served_below(self, key: EntryKey, seconds: float) -> None:
        """levels: a hit served in place from a lower level (offered to memory)."""
        try:
            view = self.store.view(str(key))
        except StoreError:
            return
        if view is not None and self.levels is not None:
            self.levels.served(str(key), seconds, memoryview(view.buffer))

    def _read_failed(self, exc: StoreError) -> None:
        with self._lock:
            self.ledger.store_failed("read", exc)

    def order(self, index: int, epoch: int, *, prefix_only: bool = False) -> WorkOrder:
        """Decide what to look up and what to write for one sample."""
        if not self.tiers:
            return WorkOrder(index, epoch, prefix_only=prefix_only)
        keys = self.pipeline.keys(index, self.tiers)
        lookup = tuple(keys[t] for t in self.tiers)
        with self._lock:
            if epoch != self._epoch:
                self.begin_epoch(epoch)
            write = self.admission.choose_write(keys, self._order)
            place = None
            if self.levels is not None:  # levels: where the written tier goes below memory
                place = self.levels.place(tuple((k.tier, str(k)) for k in write))
        return WorkOrder(index, epoch, lookup, write, prefix_only, place)

    def complete(self, report: WorkReport) -> None:
        """Account for an executed order: statistics, admissions, withdrawals."""
        with self._lock:
            if self.enabled:
                self.admission.refresh()  # rate-limited by the controller
            st = self._stats
            st.requests += 1
            st.store_errors += report.store_errors
            faults = self.ledger.faults
            for i, (op, message) in enumerate(report.store_failed.items()):
                faults.failed(op, message, report.store_errors if i == 0 else 0)
            for op in report.store_ok:
                faults.succeeded(op)
            st.observe_lookup(report.lookup_seconds)
            if self.levels is not None:  # levels: hits below memory, promotions, timings
                self.levels.on_report(report)
            for tier in report.missed:
                st.tier(tier).misses += 1
            # Corrupt entries were written again by the executor (not deleted here: the
            # store now holds the good bytes) and are re-admitted below; held entries
            # that vanished and could not be rewritten leave the accounting.
            rewritten = {*report.written, *report.payloads}
            for key in report.corrupt:
                self.ledger.discard(key, "invalid", delete=key not in rewritten)
            for key in report.absent:
                if key in self.ledger and key not in rewritten:
                    self.ledger.evict(key, "invalid", delete=False)
            cost_base = self._count_hit(report.hit) if report.hit is not None else 0.0
            measured: dict[EntryKey, tuple[int, bytes | None]] = {
                key: (nbytes, None) for key, nbytes in report.written.items()
            }
            for key, data in report.payloads.items():
                measured[key] = (len(data), data)
            deepest_first = sorted(measured, key=lambda k: -self.pipeline.tier_end(k.tier))
            for key in deepest_first:
                nbytes, data = measured[key]
                seconds = self.costs.rebuild_seconds(report, key.tier, cost_base)
                cand = self.costs.measure(key, nbytes, seconds)
                kept = self.admission.admit(cand, data, written=data is None, siblings=report.keys)
                if kept and key.tier == self._final:
                    self._views.prepare(key)
                if self.levels is not None:  # levels: what the order wrote below memory
                    self.levels.admit(wire(cand), report, kept)
            self.costs.remeasure(report, cost_base, measured, self.ledger)
            self._maybe_plan()
            self.reporter.request_done()

    def final_hit_key(self, index: int) -> EntryKey | None:
        """The key of a held entry that needs no further stage, if any (served in place)."""
        if self._final is None:
            return None
        key = self.pipeline.keys(index, (self._final,))[self._final]
        if self._held_here_or_by_node(key):
            return key
        if self.levels is not None and self.levels.in_place(str(key)):  # levels: mapped disk
            return key
        return None

    def holds(self, index: int) -> bool:
        """Whether any tier of sample ``index`` is kept (by this process or the node)."""
        if not self.tiers:
            return False
        keys = self.pipeline.keys(index, self.tiers).values()
        return any(
            self._held_here_or_by_node(key)
            or (self.levels is not None and self.levels.holds(str(key)))  # levels
            for key in keys
        )

    def _held_here_or_by_node(self, key: EntryKey) -> bool:
        if key in self.ledger:
            return True
        return self.store.shared and self._share > 1 and self._contains(key)

    def _contains(self, key: EntryKey) -> bool:
        try:
            return self.store.contains(str(key))
        except StoreError as exc:
            self._read_failed(exc)
            return False

    def _promote(self, info: EntryInfo, data: bytes | memoryview | None) -> bool:
        """levels: put an entry served from a lower level into memory if the policy admits
        it (``data=None``: the policy only observes it). ``info`` is keyed by store name."""
        key = EntryKey.parse(str(info.key))
        cand = EntryInfo(key, key.tier, info.nbytes, info.seconds)
        if data is None:
            self.policy.observe(cand)
            return False
        if not self.admission.admit(cand, data, written=False):
            return False
        if key.tier == self._final:
            self._views.prepare(key)
        return True

    def _count_hit(self, key: EntryKey) -> float:
        st = self._stats
        st.hits += 1
        info = self.ledger.touch(key)
        # levels: a lower level knows the rebuild seconds of what it holds
        known = self.levels.seconds(str(key)) if info is None and self.levels else None
        saved = info.seconds if info else known or self.costs.tier_seconds(key.tier)
        ts = st.tier(key.tier)
        ts.hits += 1
        ts.saved_seconds += saved
        return saved

    def _maybe_plan(self) -> None:
        if self._planned:
            return
        planned = self.costs.plan(self.tiers, self.admission.budget_bytes(), self.admission.forced)
        if planned is None:
            return
        self._planned = True
        self._order, self.plan_text = planned
        est = self.costs.tiers
        measured = [t for t in self.tiers if est[t].samples >= PLAN_AFTER]
        if self.tiers[0] in measured:  # the most this cache could hold: its share of the node
            need = max(est[t].nbytes for t in measured) * len(self.pipeline)
            self.admission.budget.set_demand(int(need))
        log.info("%s: cache plan: %s", self.name, self.plan_text)

    # Epochs and recovery.

    def begin_epoch(self, epoch: int, *, reconcile: bool = False) -> None:
        """Start a pass over the data (the loader calls this; :meth:`get` notices a new
        epoch number itself).

        Args:
            epoch: the epoch number.
            reconcile: also match the accounting to the store (after an epoch whose
                DataLoader workers may have died; see :meth:`reconcile`).
        """
        with self._lock:
            if reconcile:
                self.reconcile()
            self.store.prune_views()  # mappings of entries other ranks evicted
            self._epoch = epoch
            self.policy.start_epoch()
            self.reporter.begin_epoch()

    def _adopt(self) -> None:
        """Adopt the valid entries of a persistent store; drop the stale ones."""
        valid: set[EntryKey] = set()
        for index in range(len(self.pipeline)):
            valid.update(self.pipeline.keys(index, self.tiers).values())
        recovery.adopt(self.ledger, valid, self.costs.assumed_seconds)
        self.admission.refresh(force=True)

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
            recovery.reconcile(
                self.ledger,
                self.pipeline.tiers,
                self.costs.assumed_seconds,
                self.admission.takes_into_free_space,
            )

    # Reporting.

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` for every event (``MemoryAlert``) the cache raises."""
        self.reporter.add_listener(fn)

    def local_stats(self) -> CacheStats:
        """This process's statistics (a copy)."""
        return self.reporter.local_stats()

    def epoch_stats(self) -> CacheStats:
        """This process's counts since the current epoch started (gauges as now)."""
        return self.reporter.epoch_stats()

    def stats(self) -> CacheStats:
        """Statistics summed over every process of the node that shares this cache."""
        return self.reporter.stats()

    def publish(self) -> None:
        """Publish this process's statistics for the node's sum (with ``stats_dir``)."""
        self.reporter.publish()

    @property
    def budget(self) -> BudgetController:
        """The budget controller (the node's budget, this cache's claim on it)."""
        return self.admission.budget

    @property
    def bytes_held(self) -> int:
        return self.ledger.bytes

    def held_keys(self) -> Iterable[EntryKey]:
        return list(self.ledger)

    def clear(self) -> None:
        """Drop every entry this process holds."""
        with self._lock:
            for key in list(self.ledger):
                self.ledger.evict(key, "budget")

    def close(self) -> None:
        """Release the store (a node-shared store is removed by its owner) and this
        cache's claim on the node budget."""
        self.admission.budget.close()
        self.store.close()

    def __enter__(self) -> AdaptiveCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loader(self, **kwargs: Any) -> CacheLoader:
        """A :class:`~adaptive_cache.loader.CacheLoader` over this cache (DataLoader kwargs)."""
        return CacheLoader(CacheDataset(self), **kwargs)

    def preload(
        self,
        *,
        num_workers: int = 0,
        batch_size: int = 16,
        indices: Iterable[int] | None = None,
        progress: bool = True,
    ) -> int:
        """Fill the cache before the first epoch (see :func:`adaptive_cache.preload.preload`).

        Returns:
            The number of samples computed.
        """
        return preload(
            self,
            num_workers=num_workers,
            batch_size=batch_size,
            indices=indices,
            progress=progress,
        )


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
        check_tier(tier)


def pid_namespace(prefix: str) -> str:
    """A namespace unique to this process tree (for tests and one-off caches)."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
