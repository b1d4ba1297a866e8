"""LeveledStore: memory on top, then disk, then Redis, behind the one Store contract.

The engine's memory accounting sees only the memory level: :meth:`LeveledStore.put`,
``delete``, ``contains``, ``keys``, ``entries`` and ``clear`` act on it. Reads fall
through: :meth:`LeveledStore.get` tries memory, then each lower level in order, and
unframes (and decompresses) what a lower level holds. Whatever runs a
:class:`~adaptive_cache.work.WorkOrder` (the owner or a DataLoader worker, which opens
the store from its handle) first calls :meth:`LeveledStore.track`; the store then
records in a :class:`LevelTrace` which level answered each key, what it read and how
long that took, what it wrote below memory, and it acts on the order's
:class:`Placement`:

* a tier the owner asked to write is written through to the lower levels the
  placement names, framed raw or compressed as it says (``trial``: stored raw, but
  compressed and decompressed once to time both for the owner's cost model);
* a tier found below memory that the owner asked to write is promoted: put into
  memory as read (the owner admits or withdraws it, as for any write);
* a tier missed everywhere that the placement sends to Redis is claimed there first
  (see :mod:`adaptive_cache.levels.redis_level`), so two nodes do not build it at once.

The owner also serves hits in place from a lower level that maps its entries (the
disk level): :meth:`view` falls back to it for raw entries.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from adaptive_cache.levels import frame as fr
from adaptive_cache.stores.base import Store, StoreError, StoreHandle, View

log = logging.getLogger(__name__)

MEMORY = "memory"


@dataclass(frozen=True)
class Placement:
    """Where the tiers of a work order go below memory (decided by the owner).

    Attributes:
        levels: ``(level name, codec)`` pairs; codec ``raw``, ``zstd`` or ``trial``
            (compressed and decompressed to time it for the cost model, stored raw).
        end: stages the written tier covers (sums the rebuild seconds in its frame).
        promote: put the tier into memory when a lower level has it (``False`` when
            the memory policy declined it and only a lower level wanted it).
    """

    levels: tuple[tuple[str, str], ...] = ()
    end: int = 0
    promote: bool = True


@dataclass
class LevelTrace:
    """What a :class:`LeveledStore` did for one work order (sent back in its report).

    Attributes:
        place: the order's placement; write: the order's ``(tier, key)`` writes.
        timings: the report's stage timings (filled while the order runs).
        answered: key -> level that held it (``memory``, ``disk``, ``redis``) or
            ``None`` when no level did.
        reads: ``(level, stored bytes, raw bytes, read s, decompress s)`` per hit below
            memory.
        placed: ``(key, tier, level, stored bytes, raw bytes, codec)`` per write below
            memory.
        trials: ``(level, tier, raw bytes, compressed bytes, compress s, decompress s)``.
        promoted: tier -> ``(key, bytes)`` put into memory from a lower level.
        corrupt: ``(level, key)`` of entries whose frame was invalid.
        errors: failed level operations (each was a miss or a skipped write).
        waited_s: seconds spent waiting for builds other nodes had claimed.
        claimed: keys this order claimed in Redis (released once written).
    """

    place: Placement = field(default_factory=Placement)
    write: tuple[tuple[str, str], ...] = ()
    timings: list[float] = field(default_factory=list)
    answered: dict[str, str | None] = field(default_factory=dict)
    reads: list[tuple[str, int, int, float, float]] = field(default_factory=list)
    placed: list[tuple[str, str, str, int, int, int]] = field(default_factory=list)
    trials: list[tuple[str, str, int, int, float, float]] = field(default_factory=list)
    promoted: dict[str, tuple[str, int]] = field(default_factory=dict)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    errors: int = 0
    waited_s: float = 0.0
    claimed: list[str] = field(default_factory=list)

    def tier_of(self, key: str) -> str | None:
        return next((t for t, k in self.write if k == key), None)


@dataclass
class Level:
    """One level below memory.

    Attributes:
        name: ``disk`` or ``redis``.
        store: where its entries live (framed).
        in_place: this process maps its entries and may serve raw ones in place.
    """

    name: str
    store: Store
    in_place: bool = False


@dataclass(frozen=True)
class LeveledHandle:
    """Opens the same levels in another process (never mapping, never the owner)."""

    memory: StoreHandle
    levels: tuple[tuple[str, StoreHandle], ...]

    def open(self) -> LeveledStore:
        levels = []
        for name, handle in self.levels:
            try:
                levels.append(Level(name, handle.open()))
            except StoreError as exc:
                # A level that cannot be reached is left out: its reads miss, as they would.
                log.warning("cache level %s unavailable in this process: %s", name, exc)
        return LeveledStore(self.memory.open(), levels)


class LeveledStore(Store):
    """Memory plus lower levels (see the module docstring).

    Args:
        memory: the top store (``shm`` or ``local``), the one the engine budgets.
        levels: lower levels, fastest first.
    """

    persistent = False  # the memory level's; lower levels adopt their entries themselves

    def __init__(self, memory: Store, levels: Sequence[Level]) -> None:
        self.memory = memory
        self.levels = list(levels)
        self.name = "+".join([memory.name, *(lv.name for lv in self.levels)])
        self.shared = memory.shared
        self._by_name = {lv.name: lv for lv in self.levels}
        self._trace: LevelTrace | None = None
        # A lower level's mapped view -> the view of its payload (lives as long as it).
        self._wrapped: weakref.WeakKeyDictionary[View, View] = weakref.WeakKeyDictionary()

    @property
    def maps(self) -> bool:  # type: ignore[override]
        return self.memory.maps

    def level(self, name: str) -> Level | None:
        return self._by_name.get(name)

    # -------------------------------------------------------------- tracing

    def track(self, order: object, timings: list[float] | None = None) -> LevelTrace:
        """Start recording for one work order (``order.place``, ``order.write``)."""
        place = getattr(order, "place", None)
        self._trace = LevelTrace(
            place=place if isinstance(place, Placement) else Placement(),
            write=tuple((k.tier, str(k)) for k in getattr(order, "write", ())),
            timings=timings if timings is not None else [],
        )
        return self._trace

    def end_trace(self) -> None:
        self._trace = None

    # -------------------------------------------------------------- reads

    def get(self, key: str) -> bytes | bytearray | memoryview | None:
        t = self._trace
        try:
            data = self.memory.get(key)
        except StoreError:
            if t is None:
                raise
            t.errors += 1  # the levels below may still have it
            data = None
        if data is not None:
            if t is not None:
                t.answered[key] = MEMORY
            return data
        for level in self.levels:
            payload = self._read(level, key, t)
            if payload is not None:
                return payload
        if t is not None:
            t.answered[key] = None
            return self._claim_or_wait(key, t)
        return None

    def _read(
        self, level: Level, key: str, t: LevelTrace | None, raw: bytes | None = None
    ) -> memoryview | bytes | None:
        t0 = time.perf_counter()
        if raw is None:
            try:
                raw = level.store.get(key)  # type: ignore[assignment]
            except StoreError as exc:
                if t is not None:
                    t.errors += 1
                log.debug("level %s: read of %s failed: %s", level.name, key, exc)
                return None
            if raw is None:
                return None
        t1 = time.perf_counter()
        try:
            payload, info = fr.unframe(raw)
        except fr.FrameError:
            if t is not None:
                t.corrupt.append((level.name, key))
            return None
        if t is not None:
            t.answered[key] = level.name
            t.reads.append((level.name, len(raw), info.raw_len, t1 - t0, time.perf_counter() - t1))
            tier = t.tier_of(key)
            if tier is not None and t.place.promote:
                try:
                    t.promoted[tier] = (key, self.memory.put(key, payload))
                except StoreError:
                    t.errors += 1
            if tier is not None:
                # Levels above the one that answered lack it: copy it there as placed
                # (a Redis hit lands on the local disk, for next time and the next run).
                above = [lv.name for lv in self.levels[: self.levels.index(level)]]
                self._write_through(key, tier, payload, t, only=above, seconds=info.seconds)
        return payload

    def _claim_or_wait(self, key: str, t: LevelTrace) -> memoryview | bytes | None:
        level = self._by_name.get("redis")
        claim = getattr(level.store, "claim", None) if level is not None else None
        if claim is None or t.tier_of(key) is None:
            return None
        if not any(name == "redis" for name, _ in t.place.levels):
            return None
        try:
            if claim(key):
                # Built and released between our miss and our claim? Then it is there now.
                raw = level.store.get(key)  # type: ignore[union-attr]
                if raw is None:
                    t.claimed.append(key)
                    return None  # ours to build; put() releases it
                level.store.release(key)  # type: ignore[union-attr]
                return self._read(level, key, t, raw)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            raw = level.store.wait(key)  # type: ignore[union-attr]
            t.waited_s += time.perf_counter() - t0
        except StoreError:
            t.errors += 1
            return None
        if raw is None:
            return None  # the claim went away without an entry: build it here
        return self._read(level, key, t, raw)  # type: ignore[arg-type]

    def view(self, key: str) -> View | None:
        found = self.memory.view(key)
        if found is not None:
            return found
        for level in self.levels:
            if not level.in_place:
                continue
            inner = level.store.view(key)
            if inner is None:
                continue
            wrapped = self._wrapped.get(inner)
            if wrapped is None:
                try:
                    payload, info = fr.unframe(inner.buffer)
                except fr.FrameError:
                    return View(b"")  # the codec rejects it: the general path handles it
                if info.codec != fr.RAW:
                    return None  # compressed: read (and decompressed) by the general path
                wrapped = self._wrapped[inner] = View(payload, inner.ident)
            return wrapped
        return None

    # -------------------------------------------------------------- writes

    def put(self, key: str, data: bytes | memoryview) -> int:
        t = self._trace
        try:
            return self.memory.put(key, data)
        finally:
            # Below memory even if memory failed: those writes are real, and a claim
            # taken for this key is released here.
            tier = t.tier_of(key) if t is not None else None
            if t is not None and tier is not None and (t.place.levels or t.claimed):
                self._write_through(key, tier, data, t)

    def _write_through(
        self,
        key: str,
        tier: str,
        data: bytes | memoryview,
        t: LevelTrace,
        *,
        only: list[str] | None = None,
        seconds: float | None = None,
    ) -> None:
        if seconds is None:
            seconds = sum(t.timings[: t.place.end + 1])
        raw_len = memoryview(data).nbytes
        for name, codec in t.place.levels:
            level = self._by_name.get(name)
            if level is None or (only is not None and name not in only):
                continue
            if codec == "trial":
                t0 = time.perf_counter()
                body = fr.compress(data)
                t1 = time.perf_counter()
                fr.decompress(body, raw_len)
                t.trials.append((name, tier, raw_len, len(body), t1 - t0, time.perf_counter() - t1))
            # A trial is measured only and stored raw: it never sends a hit the slow way.
            framed = fr.frame(data, zstd=codec == "zstd", seconds=seconds)
            try:
                stored = level.store.put(key, framed)
            except StoreError as exc:
                t.errors += 1
                log.debug("level %s: write of %s failed: %s", name, key, exc)
                continue
            codec_id = fr.ZSTD if codec == "zstd" else fr.RAW
            t.placed.append((key, tier, name, stored, raw_len, codec_id))
        if key in t.claimed:
            t.claimed.remove(key)
            try:
                self._by_name["redis"].store.release(key)  # type: ignore[attr-defined]
            except StoreError:
                t.errors += 1  # the claim expires by itself

    # -------------------------------------------------------------- the memory level

    def delete(self, key: str) -> int:
        return self.memory.delete(key)

    def contains(self, key: str) -> bool:
        return self.memory.contains(key)

    def keys(self) -> Iterator[str]:
        return self.memory.keys()

    def entries(self) -> Iterator[tuple[str, int]]:
        return self.memory.entries()

    def clear(self) -> None:
        self.memory.clear()

    def sweep(self) -> int:
        sweep = getattr(self.memory, "sweep", None)
        return sweep() if sweep is not None else 0

    def prune_views(self) -> int:
        dropped = 0
        for store in [self.memory, *(lv.store for lv in self.levels if lv.in_place)]:
            prune = getattr(store, "prune_views", None)
            if prune is not None:
                dropped += prune()
        return dropped

    def close(self) -> None:
        self.memory.close()
        for level in self.levels:
            level.store.close()

    def handle(self) -> LeveledHandle:
        return LeveledHandle(
            self.memory.handle(), tuple((lv.name, lv.store.handle()) for lv in self.levels)
        )

    def __reduce__(self):  # type: ignore[override]
        return (LeveledHandle.open, (self.handle(),))
