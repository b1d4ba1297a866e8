"""CacheCollector: the numbers of a CacheStats, read at scrape time."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.registry import CollectorRegistry

from adaptive_cache.stats import LATENCY_BUCKETS, CacheStats
from monitoring import metrics as m
from monitoring.cache_collector import CacheCollector
from tests.monitoring.helpers import StatsHolder, collect, example_stats, value


def _registry(*caches: StatsHolder) -> CollectorRegistry:
    registry = CollectorRegistry()
    CacheCollector(caches, registry=registry)
    return registry


def test_scrape_returns_the_numbers_of_the_stats() -> None:
    stats = example_stats()
    samples = collect(_registry(StatsHolder("train", stats)))
    cache = {"split": "train", "store": "shm"}
    assert value(samples, "adaptive_cache_requests_total", **cache, result="hit") == 750
    assert value(samples, "adaptive_cache_requests_total", **cache, result="miss") == 250
    assert value(samples, "adaptive_cache_budget_bytes", **cache) == 2**30
    assert value(samples, "adaptive_cache_headroom_bytes", **cache) == 5 * 2**30
    assert value(samples, "adaptive_cache_store_errors_total", **cache) == 3
    assert value(samples, "adaptive_cache_processes", **cache) == 2
    for i, tier in enumerate(("image", "maps", "tensor")):
        t = {**cache, "tier": tier}
        assert value(samples, "adaptive_cache_tier_requests_total", **t, result="hit") == 100 + i
        assert value(samples, "adaptive_cache_tier_requests_total", **t, result="miss") == 200 + i
        assert value(samples, "adaptive_cache_insertions_total", **t) == 300 + i
        assert value(samples, "adaptive_cache_held_bytes", **t) == (i + 1) * 2**20
        assert value(samples, "adaptive_cache_held_entries", **t) == 10 + i
        assert value(samples, "adaptive_cache_rebuild_saved_seconds_total", **t) == 0.5 * (i + 1)
        for j, reason in enumerate(("budget", "pressure", "replaced", "invalid")):
            evicted = value(samples, "adaptive_cache_evictions_total", **t, reason=reason)
            assert evicted == 1 + i + j


def test_lookup_histogram_is_cumulative_and_matches_the_stats() -> None:
    stats = example_stats()  # lookups: 20us, 40us, 40us, 3ms, 0.5s
    samples = collect(_registry(StatsHolder("val", stats)))
    cache = {"split": "val", "store": "shm"}

    def bucket(le: str) -> float:
        return value(samples, "adaptive_cache_lookup_seconds_bucket", **cache, le=le)

    assert bucket("2.5e-05") == 1
    assert bucket("5e-05") == 3
    assert bucket("0.0025") == 3
    assert bucket("0.005") == 4
    assert bucket("0.1") == 4
    assert bucket("+Inf") == 5
    assert value(samples, "adaptive_cache_lookup_seconds_count", **cache) == stats.lookup_count
    assert value(samples, "adaptive_cache_lookup_seconds_sum", **cache) == pytest.approx(
        stats.lookup_sum_seconds
    )
    les = [le for (name, labels) in samples for k, le in labels if k == "le"]
    assert len(les) == len(LATENCY_BUCKETS) + 1


def test_stats_are_read_at_each_scrape_not_cached() -> None:
    holder = StatsHolder("train", CacheStats(requests=4, hits=1))
    registry = _registry(holder)
    first = collect(registry)
    holder.current = CacheStats(requests=40, hits=30)
    second = collect(registry)
    key = {"split": "train", "store": "shm", "result": "hit"}
    assert value(first, "adaptive_cache_requests_total", **key) == 1
    assert value(second, "adaptive_cache_requests_total", **key) == 30
    assert holder.reads == 2


def test_two_caches_get_their_own_split_label() -> None:
    train, val = StatsHolder("train", example_stats(1)), StatsHolder("val", example_stats(2))
    samples = collect(_registry(train, val))
    hit = {"store": "shm", "result": "hit"}
    assert value(samples, "adaptive_cache_requests_total", split="train", **hit) == 750
    assert value(samples, "adaptive_cache_requests_total", split="val", **hit) == 1500


def test_every_known_eviction_reason_is_exported_even_at_zero() -> None:
    stats = CacheStats()
    stats.tier("image")
    samples = collect(_registry(StatsHolder("train", stats)))
    reasons = {
        dict(labels)["reason"]
        for name, labels in samples
        if name == "adaptive_cache_evictions_total"
    }
    assert reasons == set(m.LABELS["reason"])


def test_duplicate_cache_is_rejected() -> None:
    collector = CacheCollector([StatsHolder("train")])
    with pytest.raises(ValueError, match=r"'train'.*already exported"):
        collector.add(StatsHolder("train"))


@pytest.mark.parametrize(
    "bad",
    [object(), StatsHolder(""), type("NoStats", (), {"name": "x", "store": StatsHolder("y")})()],
)
def test_objects_without_the_contract_are_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="a cache to export needs"):
        CacheCollector([bad])  # type: ignore[list-item]


def test_a_failing_cache_does_not_hide_the_others(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(StatsHolder):
        def stats(self) -> CacheStats:
            raise OSError("board directory vanished")

    registry = _registry(Broken("train"), StatsHolder("val", example_stats()))
    with caplog.at_level(logging.ERROR, logger="monitoring.cache_collector"):
        samples = collect(registry)
    hit = {"store": "shm", "result": "hit"}
    assert value(samples, "adaptive_cache_requests_total", split="val", **hit) == 750
    train_key = frozenset({"split": "train", **hit}.items())
    assert ("adaptive_cache_requests_total", train_key) not in samples
    assert "'train' failed" in caplog.text


def test_removed_cache_is_no_longer_exported() -> None:
    holder = StatsHolder("train", example_stats())
    registry = CollectorRegistry()
    collector = CacheCollector([holder], registry=registry)
    collector.remove(holder)
    assert not [n for n, _ in collect(registry) if n.startswith("adaptive_cache_requests")]


def test_a_second_collector_in_the_same_registry_is_refused() -> None:
    registry = CollectorRegistry()
    CacheCollector(registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        CacheCollector(registry=registry)
