"""LevelLedger: the owner's accounting of the levels below memory.

The engine keeps governing memory with its own ledger and policy; this object does
the same for each lower level, with the level's own budget, its own ``auto`` policy
(its own worth threshold) and its own cost model. The engine calls it at a few
points (each one line in :mod:`adaptive_cache.engine`):

* ``wants`` / ``place`` when it makes a work order: a tier memory declined is still
  written if a lower level wants it; the :class:`~adaptive_cache.levels.store.Placement`
  says which levels, and raw or compressed;
* ``on_report`` / ``admit`` when a report comes back: hits per level, read and
  compression timings, promotions handed to memory's admission, and each entry
  written below memory admitted by that level's policy or withdrawn;
* ``evicted`` when memory evicts (budget, pressure, replaced): the entry is demoted to
  each level that wants it and does not hold it yet (it is read from memory first);
* ``in_place`` / ``served`` for raw final-tier entries of a level that maps its files
  (disk), which the owner serves where the batch is consumed, as memory hits are.

A level's worth of an entry is ``(rebuild - read - decompress) / stored bytes``: a
lower hit costs a read, not a rebuild, so each level ranks entries by what it really
saves. Promotion is offered to memory's policy with the entry's rebuild seconds, the
same measure every memory candidate has, so memory's ranking stays one knapsack and a
promoted entry replaces a held one only when it is worth clearly more (no ping-pong).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable

from adaptive_cache.config import CacheConfig, format_size
from adaptive_cache.keys import EntryKey
from adaptive_cache.levels import frame as fr
from adaptive_cache.levels.book import LevelBook
from adaptive_cache.levels.store import MEMORY, Level, LeveledStore, LevelTrace, Placement
from adaptive_cache.pipeline import Pipeline
from adaptive_cache.policies.base import EntryInfo
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores.base import StoreError

log = logging.getLogger(__name__)

_PROBE_EVERY = 32  # ... but one in this many is still tried in place, to notice a change
#: Share of the time between hits served in place that promotions may take.
PROMOTE_SHARE = 0.1
_PACE_CAP_S = 0.05  # credit never exceeds this (a pause does not buy a burst)


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``, set by torchrun and Lightning)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


class LevelLedger:
    """Owner-side accounting of every level below memory (see the module docstring).

    Args:
        store: the cache's leveled store.
        pipeline: the pipeline served (keys for adoption, tier ends).
        config: ``disk_max_bytes``, ``disk_free_share``, ``redis_max_bytes``,
            ``compress``, ``replace_margin``.
        tiers: the tiers the cache keeps.
        stats: the engine's statistics; each level counts into ``stats.levels``.
        share: processes of the node sharing the levels (each gets its share).
        clock: monotonic clock (budget refresh).
        promote: ``promote(info, data) -> admitted``: offers an entry served in place
            from a lower level to memory's policy (the engine's admission); with
            ``data=None`` the policy only observes it (learns its worth).
    """

    def __init__(
        self,
        store: LeveledStore,
        pipeline: Pipeline,
        config: CacheConfig,
        *,
        tiers: Iterable[str],
        stats: CacheStats,
        share: int = 1,
        clock: Callable[[], float] = time.monotonic,
        promote: Callable[[EntryInfo, memoryview | None], bool] | None = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.config = config
        self.tiers = list(tiers)
        self.stats = stats
        self.share = max(1, int(share))
        self.clock = clock
        self.population = max(1, len(pipeline))
        self.books = [
            LevelBook(lv, config, stats, share=self.share, population=self.population, clock=clock)
            for lv in store.levels
        ]
        stages = len(pipeline.stages)
        self.final = next((t for t in self.tiers if pipeline.tier_end(t) == stages), None)
        self._by_name = {b.name: b for b in self.books}
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (raw bytes, rebuild s)
        self._tier_avg: dict[str, tuple[float, float]] = {}
        self._declined: str | None = None
        self._promote = promote
        self._credit = 0.0  # seconds promotions may still take (see served)
        self._last_served: float | None = None
        self._observed: set[str] = set()  # keys memory's policy has seen offered
        #: ``prepare(key)``: map and decode an entry now (the engine's decoded views).
        self.prepare: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ adoption

    def adopt(self) -> None:
        """Adopt the valid entries of the persistent node-local levels; delete stale ones.

        Keys cover the sample, its file's identity and every stage up to the tier, so
        an entry whose key the pipeline no longer makes is stale (a changed file or
        stage) and is deleted, never served. Raw entries of the final tier are mapped
        and decoded now (as memory does at admission), so the first epoch serves them in
        place at full speed. With several ranks on the node each adopts its share of the
        keys (by hash). The shared Redis level adopts nothing: other nodes write to it
        too, and its entries are found by lookup.
        """
        books = [b for b in self.books if b.name == "disk"]
        if not books:
            return
        valid: dict[str, str] = {}
        for index in range(len(self.pipeline)):
            for tier, key in self.pipeline.keys(index, self.tiers).items():
                valid[str(key)] = tier
        rank = local_rank() % self.share
        for book in books:
            stale = adopted = 0
            t0 = time.perf_counter()
            try:
                entries = list(book.level.store.entries())
            except StoreError as exc:
                log.warning("level %s: cannot list entries to adopt: %s", book.name, exc)
                continue
            for key, nbytes in entries:
                tier = valid.get(key)
                if tier is None:
                    book.drop(key)
                    stale += 1
                    continue
                if self.share > 1 and zlib.crc32(key.encode()) % self.share != rank:
                    continue
                head = _head(book.level, key)
                if head is None:
                    book.drop(key)
                    stale += 1
                    continue
                book.insert(key, tier, nbytes, head.raw_len, head.seconds, head.codec)
                adopted += 1
                if tier == self.final and head.codec == fr.RAW and book.level.in_place:
                    self._map(key)
            book.refresh_budget(force=True)
            log.info(
                "level %s: adopted %d entries (%s) in %.2f s, deleted %d stale",
                book.name,
                adopted,
                format_size(book.used),
                time.perf_counter() - t0,
                stale,
            )

    def _map(self, key: str) -> None:
        """Map and decode an adopted entry now, as memory does when it admits one: the
        first epoch after a restart then serves it as fast as later ones."""
        if self.prepare is not None:
            self.prepare(key)  # a failure shows again (and is counted) when asked for

    # ------------------------------------------------------------------ orders

    def wants(self, cand: EntryInfo, keys: dict[str, str]) -> bool:
        """Whether a lower level would keep ``cand``, a tier memory just declined.

        ``keys`` are the sample's keys by tier: a level holding a deeper tier of the
        sample wants no shallower one.
        """
        end = self.pipeline.tier_end(cand.tier)
        for book in self.books:
            if any(k in book.held and self.pipeline.tier_end(t) >= end for t, k in keys.items()):
                continue
            codec = book.codec(cand.tier, cand.seconds)
            if codec == "trial" or (
                book.admissible(cand.key, cand.tier, cand.nbytes, cand.seconds, codec) is not None
            ):
                self._declined = cand.key
                return True
        return False

    def place(self, write: tuple[tuple[str, str], ...]) -> Placement | None:
        """Where the order's written tier goes below memory (``None``: memory only)."""
        declined, self._declined = self._declined, None
        if not write:
            return None
        tier, key = write[0]
        seen = self._seen.get(key) or self._tier_avg.get(tier)
        levels = []
        for book in self.books:
            if key in book.held:
                continue
            raw, rebuild = (int(seen[0]), seen[1]) if seen else (0, 0.0)
            codec = book.codec(tier, rebuild)
            # A trial is written whatever the policy says: until it is measured, the
            # level cannot tell what a compressed entry would be worth.
            if (
                seen is None
                or codec == "trial"
                or book.admissible(key, tier, raw, rebuild, codec) is not None
            ):
                levels.append((book.name, book.codec(tier, rebuild, issue=True)))
        promote = key != declined
        if not levels and promote:
            return None
        return Placement(tuple(levels), self.pipeline.tier_end(tier), promote)

    # ------------------------------------------------------------------ reports

    def on_report(self, report) -> None:
        """Count what a report says happened below memory; hand promotions to memory."""
        t = report.levels
        if not isinstance(t, LevelTrace):
            return
        corrupt = {str(k) for k in report.corrupt}
        for key, nbytes in t.promoted.values():
            if key not in corrupt:
                report.written.setdefault(EntryKey.parse(key), nbytes)
        if report.hit is not None:
            where = t.answered.get(str(report.hit))
            if where not in (None, MEMORY) and where in self._by_name:
                self._by_name[where].stats.hits += 1
        for name, stored, raw, read_s, dec_s in t.reads:
            book = self._by_name.get(name)
            if book is not None:
                book.cost.observe_read(stored, raw, read_s, dec_s)
                book.stats.read_bytes += stored
                book.stats.read_seconds += read_s + dec_s
        for name, tier, raw, comp, c_s, d_s in t.trials:
            book = self._by_name.get(name)
            if book is not None:
                book.cost.observe_trial(tier, raw, comp, c_s, d_s)
        for name, key in t.corrupt:
            self._drop(name, key)
        for entry in report.corrupt:  # a valid frame around a corrupt sample
            key = str(entry)
            where = t.answered.get(key)
            if where not in (None, MEMORY):
                self._drop(where, key)
        self.stats.store_errors += t.errors

    def admit(self, info: EntryInfo, report, admitted: bool) -> None:
        """Admit or withdraw what the report wrote below memory for ``info`` (a measured tier)."""
        self._seen[info.key] = (info.nbytes, info.seconds)
        avg = self._tier_avg.get(info.tier)
        self._tier_avg[info.tier] = (
            (float(info.nbytes), info.seconds)
            if avg is None
            else (avg[0] + 0.2 * (info.nbytes - avg[0]), avg[1] + 0.2 * (info.seconds - avg[1]))
        )
        t = report.levels
        if not isinstance(t, LevelTrace):
            return
        promoted = t.promoted.get(info.tier)
        if admitted and promoted is not None and promoted[0] == info.key:
            where = t.answered.get(info.key)
            if where in self._by_name:
                self._by_name[where].stats.promotions += 1
        for key, tier, name, stored, raw, codec_id in t.placed:
            book = self._by_name.get(name)
            if key != info.key or book is None:
                continue
            book.cost.observe_write(tier, raw)
            book.offer(key, tier, stored, raw, info.seconds, codec_id)

    def _drop(self, name: str, key: str) -> None:
        book = self._by_name.get(name)
        if book is not None:
            book.drop(key)

    # ------------------------------------------------------------------ demotion

    def evicted(self, info: EntryInfo, reason: str) -> None:
        """Memory evicts ``info``: demote it to each level that wants it and lacks it."""
        if reason == "invalid":
            return  # the memory copy is bad or gone; a lower copy is checked when read
        data = None
        for book in self.books:
            if info.key in book.held:
                continue
            rebuild = self._seen.get(info.key, (0, info.seconds))[1] or info.seconds
            raw = info.nbytes
            codec = book.codec(info.tier, rebuild)
            if book.admissible(info.key, info.tier, raw, rebuild, codec) is None:
                continue
            codec = book.codec(info.tier, rebuild, issue=True)
            if data is None:
                try:
                    data = self.store.memory.get(info.key)
                except StoreError:
                    data = None
                if data is None:
                    return
            raw = memoryview(data).nbytes
            if codec == "trial":
                t0 = time.perf_counter()
                body = fr.compress(data)
                t1 = time.perf_counter()
                fr.decompress(body, raw)
                book.cost.observe_trial(
                    info.tier, raw, len(body), t1 - t0, time.perf_counter() - t1
                )
            framed = fr.frame(data, zstd=codec == "zstd", seconds=rebuild)
            try:
                stored = book.level.store.put(info.key, framed)
            except StoreError as exc:
                self.stats.store_errors += 1
                log.debug("level %s: demotion of %s failed: %s", book.name, info.key, exc)
                continue
            z = fr.ZSTD if codec == "zstd" else fr.RAW
            if book.offer(info.key, info.tier, stored, raw, rebuild, z):
                book.stats.demotions += 1

    # ------------------------------------------------------------------ serving in place

    def in_place(self, key: str) -> bool:
        """Whether the owner may serve ``key`` from a mapped lower-level file."""
        for book in self.books:
            if not book.level.in_place or book.codecs.get(key, -1) != fr.RAW:
                continue
            if not book.cost.in_place_ok:
                book.slow_hits += 1
                return book.slow_hits % _PROBE_EVERY == 0
            return True
        return False

    def served(self, key: str, seconds: float, buffer: memoryview) -> None:
        """The owner served ``key`` in place from a lower level in ``seconds``.

        It is then offered to memory (promotion). Copying it there costs about as much
        as a few hits, so promotions are paced: they take at most ``PROMOTE_SHARE``
        (10%) of the wall time between hits served this way. A warm restart's first
        epoch runs at close to the speed of a warm one while memory fills over a few
        epochs (in a training loop, where a step takes far longer than a hit, memory
        fills within the first epoch).
        """
        book = next((b for b in self.books if b.level.in_place and key in b.held), None)
        if book is None:
            return
        nbytes = book.held[key].nbytes
        book.stats.hits += 1
        book.stats.read_bytes += nbytes
        book.stats.read_seconds += seconds
        book.cost.observe_in_place(nbytes, seconds)
        if self._promote is None:
            return
        now = time.perf_counter()
        if self._last_served is not None:
            gap = min(now - self._last_served, _PACE_CAP_S)
            self._credit = min(self._credit + PROMOTE_SHARE * gap, _PACE_CAP_S)
        self._last_served = now
        page = getattr(self.store.memory, "page_size", 0)  # what memory will really hold
        size = memoryview(buffer).nbytes
        nbytes = -(-size // page) * page if page > 0 else size
        info = EntryInfo(key, book.held[key].tier, nbytes, book.rebuild.get(key, 0.0))
        if self._credit <= 0:
            if key not in self._observed:  # memory's policy still learns what it could keep
                self._observed.add(key)
                self._promote(info, None)
            return
        self._observed.add(key)
        if self._promote(info, buffer):
            book.stats.promotions += 1
            unmap = getattr(book.level.store, "unmap", None)
            if unmap is not None:
                unmap(key)  # memory serves it now: one mapped copy, not two
        done = time.perf_counter()
        self._credit -= done - now
        self._last_served = done

    def seconds(self, key: str) -> float | None:
        """Rebuild seconds a lower level knows for ``key`` (a hit's saving)."""
        for book in self.books:
            s = book.rebuild.get(key)
            if s is not None:
                return s
        return None

    def deepest(self, keys: dict[str, str]) -> int:
        """Stages covered by the deepest tier of a sample (``keys`` by tier) a level holds."""
        return max((self.pipeline.tier_end(t) for t, k in keys.items() if self.holds(k)), default=0)

    def holds(self, key: str) -> bool:
        return any(key in book.held for book in self.books)

    def bytes_held(self) -> dict[str, int]:
        return {book.name: book.used for book in self.books}


def _head(level: Level, key: str) -> fr.FrameInfo | None:
    """The frame header of a disk entry, reading 64 bytes (not the entry)."""
    directory = getattr(level.store, "directory", None)
    if directory is None:
        return None
    try:
        fd = os.open(os.path.join(directory, key), os.O_RDONLY)
    except OSError:
        return None
    try:
        return fr.read_header(os.pread(fd, fr.FRAME, 0))
    except (OSError, fr.FrameError):
        return None
    finally:
        os.close(fd)
