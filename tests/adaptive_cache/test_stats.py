"""CacheStats: epoch counts, the summary line, and the one merge."""

from __future__ import annotations

from adaptive_cache.stats import CacheStats, merge


def _stats(requests: int, hits: int, *, nbytes: int = 100, budget: int = 1000) -> CacheStats:
    st = CacheStats(requests=requests, hits=hits, budget_bytes=budget)
    t = st.tier("tensor")
    t.hits, t.misses, t.bytes, t.items = hits, requests - hits, nbytes, 1
    t.evictions["budget"] = requests // 10
    return st


def test_since_takes_counters_out_and_keeps_gauges():
    start, now = _stats(10, 0), _stats(30, 20, nbytes=300)
    epoch = now.since(start)
    assert (epoch.requests, epoch.hits, epoch.hit_ratio) == (20, 20, 1.0)
    assert epoch.tiers["tensor"].misses == 0 and epoch.evictions == 2
    assert epoch.bytes == 300 and epoch.budget_bytes == 1000


def test_summary_shows_this_epoch_first_then_all():
    start, now = _stats(10, 0), _stats(30, 20)
    line = now.summary(start)
    assert line.startswith("cache: hit 100.0% this epoch, 66.7% in all (tensor 20/20)")
    assert now.summary().startswith("cache: hit 66.7% (tensor 20/30)")


def test_merge_sums_splits_and_ranks_and_takes_the_budget_once():
    total = merge([_stats(10, 5), _stats(30, 15, budget=800)])
    record = total.record()
    assert (record["hits"], record["misses"], record["hit_ratio"]) == (20, 20, 0.5)
    assert record["bytes"] == 200 and record["budget_bytes"] == 1000
    assert record["by_tier"]["tensor"] == {"hits": 20, "misses": 20, "bytes": 200, "items": 2}
    assert merge([]).record()["hit_ratio"] == 0.0


def test_since_takes_level_counters_out_and_keeps_their_gauges():
    start = CacheStats()
    start.level("disk").hits, start.level("disk").bytes = 3, 100
    now = CacheStats.from_dict(start.to_dict())
    now.level("disk").hits, now.level("disk").bytes = 7, 250
    now.level("disk").evictions["budget"] = 2
    epoch = now.since(start).levels["disk"]
    assert (epoch.hits, epoch.bytes, epoch.evictions["budget"]) == (4, 250, 2)
