"""Cache statistics: counters per tier, snapshots, merging, the summary line.

All accounting happens in the process that owns the cache's policy (the process
consuming batches); DataLoader workers report what they did with each sample, so
worker statistics are never lost with the worker. DDP ranks of one node publish
snapshots as JSON (see :class:`StatsBoard`). :func:`merge` is the one place where
statistics are summed (ranks of a node, splits of a run), and
:meth:`CacheStats.since` the one place where an epoch's counts are taken out of
running totals.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVICTION_REASONS = ("budget", "pressure", "replaced", "invalid")
ALERT_LEVELS = ("warning", "critical")
# Upper bounds (seconds) of the lookup latency histogram buckets; +Inf is implied.
LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 0.1)


@dataclass
class TierStats:
    """Counters and gauges of one tier."""

    hits: int = 0
    misses: int = 0
    insertions: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVICTION_REASONS, 0))
    bytes: int = 0
    items: int = 0
    saved_seconds: float = 0.0

    def add(self, other: TierStats) -> None:
        self.hits += other.hits
        self.misses += other.misses
        self.insertions += other.insertions
        for reason, n in other.evictions.items():
            self.evictions[reason] = self.evictions.get(reason, 0) + n
        self.bytes += other.bytes
        self.items += other.items
        self.saved_seconds += other.saved_seconds


@dataclass
class LevelStats:
    """Counters and gauges of one level below memory (``disk``, ``redis``).

    ``hits`` counts samples served from the level; ``insertions`` entries written to
    it (write-through and demotions), ``demotions`` those that came from memory,
    ``promotions`` hits put back into memory; ``read_bytes``/``read_seconds`` what
    its hits read (decompression included).
    """

    hits: int = 0
    insertions: int = 0
    demotions: int = 0
    promotions: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVICTION_REASONS, 0))
    bytes: int = 0
    raw_bytes: int = 0
    items: int = 0
    compressed_items: int = 0
    budget_bytes: int = 0
    read_bytes: int = 0
    read_seconds: float = 0.0

    def add(self, other: LevelStats) -> None:
        for name in (
            "hits",
            "insertions",
            "demotions",
            "promotions",
            "bytes",
            "raw_bytes",
            "items",
            "compressed_items",
            "budget_bytes",
            "read_bytes",
            "read_seconds",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.evictions.items():
            self.evictions[reason] = self.evictions.get(reason, 0) + n

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LevelStats:
        s = cls(
            **{k: v for k, v in d.items() if k != "evictions" and k in cls.__dataclass_fields__}
        )
        s.evictions.update({k: int(v) for k, v in d.get("evictions", {}).items()})
        return s


@dataclass
class CacheStats:
    """Everything the cache counts; a snapshot is a deep copy of this.

    ``requests``/``hits`` count samples: a sample is a hit when any tier served it.
    Per tier, ``hits`` counts samples served from that tier and ``misses`` lookups of
    that tier that found nothing.
    """

    requests: int = 0
    hits: int = 0
    tiers: dict[str, TierStats] = field(default_factory=dict)
    budget_bytes: int = 0
    headroom_bytes: int = 0
    store_errors: int = 0
    alerts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALERT_LEVELS, 0))
    lookup_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    lookup_count: int = 0
    lookup_sum_seconds: float = 0.0
    processes: int = 1
    levels: dict[str, LevelStats] = field(default_factory=dict)

    def tier(self, name: str) -> TierStats:
        t = self.tiers.get(name)
        if t is None:
            t = self.tiers[name] = TierStats()
        return t

    def level(self, name: str) -> LevelStats:
        lv = self.levels.get(name)
        if lv is None:
            lv = self.levels[name] = LevelStats()
        return lv

    @property
    def memory_hits(self) -> int:
        """Hits served by the memory level (every hit when there are no lower levels)."""
        return self.hits - sum(lv.hits for lv in self.levels.values())

    @property
    def misses(self) -> int:
        return self.requests - self.hits

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tiers.values())

    @property
    def items(self) -> int:
        return sum(t.items for t in self.tiers.values())

    @property
    def evictions(self) -> int:
        return sum(sum(t.evictions.values()) for t in self.tiers.values())

    def observe_lookup(self, seconds: float) -> None:
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.lookup_buckets[i] += 1
                break
        else:
            self.lookup_buckets[-1] += 1
        self.lookup_count += 1
        self.lookup_sum_seconds += seconds

    def since(self, earlier: CacheStats) -> CacheStats:
        """Counters accumulated since the snapshot ``earlier``; gauges (bytes, items,
        budget, headroom) as they are now."""
        out = CacheStats.from_dict(self.to_dict())
        out.requests -= earlier.requests
        out.hits -= earlier.hits
        out.store_errors -= earlier.store_errors
        out.lookup_count -= earlier.lookup_count
        out.lookup_sum_seconds -= earlier.lookup_sum_seconds
        for level, n in earlier.alerts.items():
            out.alerts[level] = out.alerts.get(level, 0) - n
        out.lookup_buckets = [
            a - b for a, b in zip(out.lookup_buckets, earlier.lookup_buckets, strict=True)
        ]
        for name, t in out.tiers.items():
            b = earlier.tiers.get(name)
            if b is None:
                continue
            t.hits -= b.hits
            t.misses -= b.misses
            t.insertions -= b.insertions
            t.saved_seconds -= b.saved_seconds
            for reason, n in b.evictions.items():
                t.evictions[reason] = t.evictions.get(reason, 0) - n
        for name, lv in out.levels.items():
            b_lv = earlier.levels.get(name)
            if b_lv is None:
                continue
            for counter in ("hits", "insertions", "demotions", "promotions", "read_bytes"):
                setattr(lv, counter, getattr(lv, counter) - getattr(b_lv, counter))
            lv.read_seconds -= b_lv.read_seconds
            for reason, n in b_lv.evictions.items():
                lv.evictions[reason] = lv.evictions.get(reason, 0) - n
        return out

    def record(self) -> dict[str, Any]:
        """The figures of a run summary (``summary.json``): hits, misses, hit ratio,
        bytes, budget, evictions, store errors, and hits, misses, bytes and items per tier."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hit_ratio,
            "bytes": self.bytes,
            "budget_bytes": self.budget_bytes,
            "evictions": self.evictions,
            "store_errors": self.store_errors,
            "by_tier": {
                name: {"hits": t.hits, "misses": t.misses, "bytes": t.bytes, "items": t.items}
                for name, t in self.tiers.items()
            },
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hit_ratio"] = self.hit_ratio
        d["bytes"] = self.bytes
        d["items"] = self.items
        d["evictions_total"] = self.evictions
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheStats:
        s = cls(
            requests=int(d.get("requests", 0)),
            hits=int(d.get("hits", 0)),
            budget_bytes=int(d.get("budget_bytes", 0)),
            headroom_bytes=int(d.get("headroom_bytes", 0)),
            store_errors=int(d.get("store_errors", 0)),
            lookup_count=int(d.get("lookup_count", 0)),
            lookup_sum_seconds=float(d.get("lookup_sum_seconds", 0.0)),
            processes=int(d.get("processes", 1)),
        )
        s.alerts.update({k: int(v) for k, v in d.get("alerts", {}).items()})
        buckets = d.get("lookup_buckets")
        if buckets and len(buckets) == len(s.lookup_buckets):
            s.lookup_buckets = [int(b) for b in buckets]
        for name, t in d.get("tiers", {}).items():
            ts = s.tier(name)
            ts.hits, ts.misses, ts.insertions = (
                int(t["hits"]),
                int(t["misses"]),
                int(t["insertions"]),
            )
            ts.evictions.update({k: int(v) for k, v in t["evictions"].items()})
            ts.bytes, ts.items = int(t["bytes"]), int(t["items"])
            ts.saved_seconds = float(t["saved_seconds"])
        for name, lv in d.get("levels", {}).items():
            s.levels[name] = LevelStats.from_dict(lv)
        return s

    def summary(self, epoch_start: CacheStats | None = None) -> str:
        """One line; with the snapshot taken when this epoch started, this epoch first:

        ``cache: hit 100.0% this epoch, 66.7% in all (tensor 404/404), 0.79 GiB of
        6.10 GiB, 0 evictions`` (tier counts and evictions: this epoch's). Without it,
        ``cache: hit 91.2% (tensor 404/404), 0.79 GiB of 6.10 GiB, 0 evictions``.
        """
        from adaptive_cache.config import format_size

        shown = self if epoch_start is None else self.since(epoch_start)
        parts = [
            f"{name} {t.hits}/{t.hits + t.misses}"
            for name, t in sorted(shown.tiers.items())
            if t.hits or t.misses or t.items
        ]
        tiers = f" ({', '.join(parts)})" if parts else ""
        levels = ""
        if self.levels:
            below = ", ".join(
                f"{name} {lv.hits} ({format_size(lv.bytes)})" for name, lv in self.levels.items()
            )
            levels = f"; hits by level: memory {self.memory_hits}, {below}"
        hit = f"hit {100 * self.hit_ratio:.1f}%"
        if epoch_start is not None:
            hit = f"hit {100 * shown.hit_ratio:.1f}% this epoch, {100 * self.hit_ratio:.1f}% in all"
        return (
            f"cache: {hit}{tiers}, {format_size(self.bytes)} of "
            f"{format_size(self.budget_bytes)}, {shown.evictions} evictions{levels}"
        )


def merge(snapshots: list[CacheStats]) -> CacheStats:
    """Sum statistics: the ranks of a node, or the caches (splits) of a run.

    Counters, bytes and items add up. Budget and headroom are taken once (the largest):
    every rank reports the node's, and every cache measures the same memory.
    """
    out = CacheStats(processes=0)
    for s in snapshots:
        out.requests += s.requests
        out.hits += s.hits
        out.store_errors += s.store_errors
        out.lookup_count += s.lookup_count
        out.lookup_sum_seconds += s.lookup_sum_seconds
        out.processes += s.processes
        # Every rank reports the node's budget and headroom: take them once.
        out.budget_bytes = max(out.budget_bytes, s.budget_bytes)
        out.headroom_bytes = max(out.headroom_bytes, s.headroom_bytes)
        for level, n in s.alerts.items():
            out.alerts[level] = out.alerts.get(level, 0) + n
        out.lookup_buckets = [
            a + b for a, b in zip(out.lookup_buckets, s.lookup_buckets, strict=True)
        ]
        for name, t in s.tiers.items():
            out.tier(name).add(t)
        for name, lv in s.levels.items():
            out.level(name).add(lv)
    return out


class StatsBoard:
    """A directory where each process of a node publishes its latest snapshot.

    One file per publishing process (the cache owners: one per DDP rank, never one per
    DataLoader worker), replaced atomically; files of processes that have exited are
    removed on read, so nothing piles up.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def publish(self, stats: CacheStats, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        tmp = self.dir / f".{pid}.tmp"
        tmp.write_text(json.dumps({"pid": pid, "time": time.time(), "stats": stats.to_dict()}))
        os.replace(tmp, self.dir / f"{pid}.json")

    def read_all(self) -> list[CacheStats]:
        out = []
        for path in self.dir.glob("*.json"):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced or already removed: the next read sees it
            pid = int(doc.get("pid", -1))
            if pid != os.getpid() and not _alive(pid):
                path.unlink(missing_ok=True)
                continue
            out.append(CacheStats.from_dict(doc["stats"]))
        return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
