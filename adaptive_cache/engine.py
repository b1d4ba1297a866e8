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
from typing import Any

from adaptive_cache import codec
from adaptive_cache.budget import BudgetController, BudgetDecision, MemoryAlert
from adaptive_cache.config import CacheConfig, TierMode, format_size
from adaptive_cache.keys import EntryKey
from adaptive_cache.memory import MemoryProbe, Probe
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
        self._check_tiers(pipeline, config)
        spec = config.policy if policy is None else policy
        self.enabled = not (isinstance(spec, str) and spec == "off")
        self.tiers: list[str] = [
            t for t in pipeline.tiers if self.enabled and config.tier_mode(t) is not TierMode.off
        ]
        self.policy: Policy = (
            spec
            if isinstance(spec, Policy)
            else make_policy(spec, replace_margin=config.replace_margin)
        )
        self.policy.bind(self)
        self.namespace = namespace or f"{name}-{uuid.uuid4().hex[:12]}"
        self.store: Store = (
            store if store is not None else open_store(config, namespace=self.namespace)
        )
        self.probe: Probe = probe if probe is not None else MemoryProbe()
        self.budget = BudgetController(config, self.probe, clock=clock)
        # Candidates per epoch: one per sample (a miss offers one tier, see _choose_write).
        self.policy.set_population(max(1, len(pipeline)))
        self._share = max(1, int(local_world_size))
        self._lock = threading.RLock()
        self._held: dict[EntryKey, EntryInfo] = {}
        self._used = 0
        self._est = {t: _TierEstimate() for t in pipeline.tiers}
        # key -> (bytes, rebuild seconds) last measured for that sample and tier.
        self._seen: dict[EntryKey, tuple[int, float]] = {}
        self._stats = CacheStats()
        for t in self.tiers:
            self._stats.tier(t)
        self._listeners: list[Listener] = []
        self._decision: BudgetDecision | None = None
        self._order: list[str] = list(self.tiers)  # tiers in the order they are offered
        self._planned = False
        self._board = StatsBoard(stats_dir) if stats_dir else None
        self._final = next(
            (t for t in self.tiers if pipeline.tier_end(t) == len(pipeline.stages)), None
        )
        if self.enabled:
            self._refresh_budget(force=True)
            if self.store.persistent:
                self._adopt()

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

    def serve(self, index: int, epoch: int, key: EntryKey | None) -> Sample:
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

    def serve_held(self, key: EntryKey) -> Sample | None:
        """Serve a final-tier entry (see :meth:`final_hit_key`) in place, or ``None``.

        The hot path of a cached epoch: the store's view of the entry (a mapping kept
        by this process, for ``shm``) is decoded once, and later hits return the same
        read-only array views, so a hit costs a lookup and the caller's one copy into
        its batch. ``None`` (the entry vanished, is corrupt, or the store failed) sends
        the caller to the general path, which computes the sample and counts the miss.
        """
        t0 = time.perf_counter()
        try:
            view = self.store.view(str(key))
        except StoreError:
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
            self._stats.observe_lookup(time.perf_counter() - t0)
            self._count_hit(key)
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
        for key in report.keys:
            end = self.pipeline.tier_end(key.tier)
            if key in written or end <= report.start or key in self._held:
                continue
            prev = self._seen.get(key)
            if prev is None:
                continue  # never written: its size is unknown (it is offered when next missed)
            seconds = cost_base + sum(report.timings[first : end + 1])
            self._seen[key] = (prev[0], 0.5 * (seconds + prev[1]))

    def _prepare_view(self, key: EntryKey) -> None:
        """Map and decode a newly kept final-tier entry now, in the epoch that computed it.

        Mapping 2 MB costs about as much as copying it; done here, the first epoch of
        hits already runs at the speed of later ones.
        """
        if not self.store.maps:
            return
        try:
            view = self.store.view(str(key))
            if view is not None and view.derived is None:
                view.derived = codec.decode(view.buffer)
        except (StoreError, codec.CodecError):
            pass  # served (or found corrupt) by the general path at the next access

    def _count_hit(self, key: EntryKey) -> float:
        st = self._stats
        st.hits += 1
        info = self._held.get(key)
        saved = info.seconds if info else self._est[key.tier].seconds
        ts = st.tier(key.tier)
        ts.hits += 1
        ts.saved_seconds += saved
        if info is not None:
            self.policy.access(key)
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
        lookup = tuple(keys[t] for t in self.tiers)
        with self._lock:
            write = self._choose_write(keys)
        return WorkOrder(index, epoch, lookup, write, prefix_only)

    def final_hit_key(self, index: int) -> EntryKey | None:
        """The key of a held entry that needs no further stage, if any (served in place)."""
        if self._final is None:
            return None
        key = self.pipeline.keys(index, (self._final,))[self._final]
        if key in self._held or (
            self.store.shared and self._share > 1 and self.store.contains(str(key))
        ):
            return key
        return None

    def holds(self, index: int) -> bool:
        """Whether any tier of sample ``index`` is kept (by this process or the node)."""
        if not self.tiers:
            return False
        for key in self.pipeline.keys(index, self.tiers).values():
            if key in self._held or (
                self.store.shared and self._share > 1 and self.store.contains(str(key))
            ):
                return True
        return False

    def _choose_write(self, keys: dict[str, EntryKey]) -> tuple[EntryKey, ...]:
        held_ends = [self.pipeline.tier_end(t) for t, k in keys.items() if k in self._held]
        deepest_held = max(held_ends, default=0)
        budget = self._budget_bytes()
        for tier in self._order:
            if self.pipeline.tier_end(tier) <= deepest_held:
                continue
            seen = self._seen.get(keys[tier])
            if seen is None:
                # Never measured: offer it once, so the policy ranks this sample by its
                # own size and cost rather than by the tier's average.
                return (keys[tier],)
            cand = EntryInfo(keys[tier], tier, max(1, seen[0]), seen[1])
            if (
                self._forced(tier)
                or self.policy.admit(cand, budget - self._used, budget) is not None
            ):
                return (keys[tier],)
        return ()

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
            st.observe_lookup(report.lookup_seconds)
            for tier in report.missed:
                st.tier(tier).misses += 1
            for key in report.corrupt:
                self._evict(key, "invalid", held_only=False)
            cost_base = 0.0
            if report.hit is not None:
                cost_base = self._count_hit(report.hit)
            measured: dict[EntryKey, tuple[int, bytes | None]] = {}
            for key, nbytes in report.written.items():
                measured[key] = (nbytes, None)
            for key, data in report.payloads.items():
                measured[key] = (len(data), data)
            for key, (nbytes, data) in sorted(
                measured.items(), key=lambda kv: -self.pipeline.tier_end(kv[0].tier)
            ):
                tier = key.tier
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
                admitted = self._admit(info, data, written=data is None, siblings=report.keys)
                if admitted and tier == self._final:
                    self._prepare_view(key)
            self._remeasure(report, cost_base, measured)
            self._maybe_plan()
            self._log_every()

    # ------------------------------------------------------------------ admission

    def _budget_bytes(self) -> int:
        decision = self._decision
        return decision.budget_bytes // self._share if decision else 0

    def _admit(
        self,
        cand: EntryInfo,
        data: bytes | None,
        *,
        written: bool,
        siblings: tuple[EntryKey, ...] = (),
    ) -> bool:
        """Keep ``cand`` if the policy takes it; ``siblings``: the sample's other keys."""
        self.policy.observe(cand)
        self._refresh_budget()
        budget = self._budget_bytes()
        if cand.key in self._held:
            return True
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
        if data is not None:
            try:
                self.store.put(str(cand.key), data)
            except StoreError as exc:
                self._stats.store_errors += 1
                log.warning(
                    "%s: cache store %s failed to write; continuing uncached: %s",
                    self.name,
                    self.store.name,
                    exc,
                )
                return False
        self._held[cand.key] = cand
        self._used += cand.nbytes
        self.policy.insert(cand)
        ts = self._stats.tier(cand.tier)
        ts.insertions += 1
        ts.bytes += cand.nbytes
        ts.items += 1
        # The shallower tiers of the same sample are now useless: every lookup finds
        # the deeper one first.
        end = self.pipeline.tier_end(cand.tier)
        for other in siblings:
            if other in self._held and self.pipeline.tier_end(other.tier) < end:
                self._evict(other, "replaced")
        return True

    def _victims_for(self, nbytes: int) -> list[EntryKey]:
        out, freed = [], 0
        for info in sorted(self._held.values(), key=lambda i: i.worth):
            if freed >= nbytes:
                break
            if not self._forced(info.tier):
                out.append(info.key)
                freed += info.nbytes
        return out

    def _evict(self, key: EntryKey, reason: str, *, held_only: bool = True) -> None:
        info = self._held.pop(key, None)
        if info is None:
            if not held_only:  # a corrupt entry another process wrote
                self._delete(key)
                self._stats.tier(key.tier).evictions[reason] += 1
            return
        self._used -= info.nbytes
        self.policy.remove(key)
        ts = self._stats.tier(info.tier)
        ts.evictions[reason] += 1
        ts.bytes -= info.nbytes
        ts.items -= 1
        self._delete(key)

    def _delete(self, key: EntryKey | str) -> None:
        try:
            self.store.delete(str(key))
        except StoreError as exc:
            self._stats.store_errors += 1
            log.debug("%s: delete of %s failed: %s", self.name, key, exc)

    def _refresh_budget(self, *, force: bool = False) -> BudgetDecision:
        decision = self.budget.update(self._used * self._share, force=force)
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
        log.info("%s: cache plan: %s", self.name, plan)
        self.plan_text = plan

    plan_text: str = "not yet measured"

    # ------------------------------------------------------------------ adoption

    def _adopt(self) -> None:
        """Adopt the valid entries of a persistent store; drop the stale ones."""
        valid: set[EntryKey] = set()
        for index in range(len(self.pipeline)):
            valid.update(self.pipeline.keys(index, self.tiers).values())
        adopted = 0
        for name, key, nbytes in self._listing():
            if key is None or key not in valid:
                self._delete(name)
                if key is not None and key.tier in self._stats.tiers:
                    self._stats.tier(key.tier).evictions["invalid"] += 1
                continue
            tier = key.tier
            info = EntryInfo(key, tier, nbytes, self._est[tier].seconds or 1e-3)
            self._held[key] = info
            self._used += nbytes
            self.policy.insert(info)
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

    def _listing(self) -> list[tuple[str, EntryKey | None, int]]:
        """``(name, key, nbytes)`` of every entry in the store; ``key`` is ``None`` for
        a name that is not an entry key (left by something else: deleted)."""
        out = []
        for name, nbytes in self.store.entries():
            try:
                key: EntryKey | None = EntryKey.parse(name)
            except ValueError:
                key = None
            out.append((name, key, nbytes))
        return out

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
            if sweep is not None:
                sweep()  # temporary files of writers that died
            listing = self._listing()
            present = {key for _, key, _ in listing if key is not None}
            for key in [k for k in self._held if k not in present]:
                self._evict(key, "invalid")
            budget = self._budget_bytes()
            for name, key, nbytes in listing:
                if key is not None and key in self._held:
                    continue
                if key is None or key.tier not in self._est:
                    self._delete(name)
                    continue
                tier = key.tier
                info = EntryInfo(key, tier, nbytes, self._est[tier].seconds or 1e-3)
                if self.policy.admit(info, budget - self._used, budget) == []:
                    self._held[key] = info
                    self._used += nbytes
                    self.policy.insert(info)
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

    def held_keys(self) -> Iterable[EntryKey]:
        return list(self._held)

    def clear(self) -> None:
        """Drop every entry this process holds."""
        with self._lock:
            for key in list(self._held):
                self._evict(key, "budget")

    def close(self) -> None:
        """Release the store (a node-shared store is removed by its owner)."""
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
