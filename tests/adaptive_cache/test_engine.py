"""AdaptiveCache over a generic image pipeline on real files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from adaptive_cache.budget import MemoryAlert
from adaptive_cache.config import CacheConfig
from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.memory import MemoryReading
from adaptive_cache.pipeline import RandomStageError
from adaptive_cache.policies import StaticPolicy
from adaptive_cache.work import WorkOrder, execute
from tests.adaptive_cache.pipelines import image_pipeline, write_images

GiB = 1024**3


class StaticProbe:
    """A probe whose readings the test sets (host memory only)."""

    def __init__(self, total: int = 16 * GiB, available: int = 12 * GiB) -> None:
        self.total = total
        self.available = available

    def read(self) -> MemoryReading:
        return MemoryReading(
            host_total_bytes=self.total,
            host_available_bytes=self.available,
            container_limit_bytes=None,
            container_high_bytes=None,
            container_usage_bytes=None,
        )


def _config(**kw) -> CacheConfig:
    kw.setdefault("store", "local")
    kw.setdefault("probe_interval_s", 0.0)
    kw.setdefault("reserve_bytes", 0)
    return CacheConfig(**kw)


def _cache(root, **kw) -> AdaptiveCache:
    pipe = kw.pop("pipeline", None) or image_pipeline(root, random=kw.pop("random", True))
    probe = kw.pop("probe", None) or StaticProbe()
    # A persistent store is found again by its namespace; others get a fresh one.
    namespace = "t" if kw.get("store") == "disk" else pid_namespace("test")
    return AdaptiveCache(pipe, _config(**kw), name="t", probe=probe, namespace=namespace)


@pytest.mark.parametrize("policy", ["auto", "static", "lru"])
@pytest.mark.parametrize("store", ["local", "shm"])
def test_cached_equals_uncached_bit_for_bit(tmp_path, policy, store):
    write_images(tmp_path / "img", 12, vary=True)
    uncached = image_pipeline(tmp_path / "img")
    with _cache(tmp_path / "img", policy=policy, store=store, max_bytes="40KiB") as cache:
        for epoch in range(3):
            for i in np.random.default_rng(epoch).permutation(12):
                got = cache.get(int(i), epoch)
                want = uncached.run(int(i), epoch)
                assert got["image"].dtype == want["image"].dtype
                np.testing.assert_array_equal(got["image"], want["image"])
        st = cache.stats()
        assert st.hits > 0, "the budget holds part of the data, so some epochs must hit"
        assert cache.bytes_held <= 40 * 1024


def test_random_stage_never_cached(tmp_path):
    write_images(tmp_path / "img", 6)
    with _cache(tmp_path / "img", max_bytes="1GiB") as cache:
        for epoch in range(2):
            for i in range(6):
                cache.get(i, epoch)
        tiers = {key.tier for key in cache.held_keys()}
        assert tiers and tiers <= {"image", "small"}
        # Two epochs of one sample differ (random crop) although the prefix is cached.
        a, b = cache.get(0, 5)["image"], cache.get(0, 6)["image"]
        assert a.shape == b.shape == (24, 24, 3)


def test_forcing_a_random_tier_names_the_stage(tmp_path):
    write_images(tmp_path / "img", 2)
    with pytest.raises(RandomStageError, match="crop"):
        _cache(tmp_path / "img", tiers={"crop": "on"})
    with pytest.raises(ValueError, match="unknown tier"):
        _cache(tmp_path / "img", tiers={"tensor": "on"})


def test_tier_off_is_never_used(tmp_path):
    write_images(tmp_path / "img", 4)
    with _cache(tmp_path / "img", max_bytes="1GiB", tiers={"small": "off"}) as cache:
        for i in range(4):
            cache.get(i)
        assert {k.tier for k in cache.held_keys()} == {"image"}


def test_full_budget_keeps_deepest_tier_and_hits_every_sample(tmp_path):
    write_images(tmp_path / "img", 10)
    with _cache(tmp_path / "img", max_bytes="1GiB") as cache:
        for epoch in range(3):
            for i in range(10):
                cache.get(i, epoch)
        st = cache.stats()
        assert st.tiers["small"].items == 10
        assert st.tiers["small"].hits == 20
        assert st.hits == 20 and st.requests == 30
        assert st.bytes == cache.bytes_held
        assert "small 20/" in st.summary()


def test_keeping_a_deeper_tier_drops_the_shallower_one_of_the_same_sample(tmp_path):
    # Each tier's digest differs: the shallower entry is found through the sample's keys.
    write_images(tmp_path / "img", 2)
    with _cache(tmp_path / "img", max_bytes="1GiB", random=False) as cache:
        keys = cache.pipeline.keys(0, cache.tiers)
        assert keys["image"].digest != keys["small"].digest
        lookup = tuple(keys[t] for t in cache.tiers)
        _, report = execute(cache.pipeline, cache.store, WorkOrder(0, 0, lookup, (keys["image"],)))
        cache.complete(report)
        assert set(cache.held_keys()) == {keys["image"]}
        image_bytes = cache.bytes_held
        _, report = execute(cache.pipeline, cache.store, WorkOrder(0, 0, lookup, (keys["small"],)))
        assert report.hit == keys["image"]  # the deeper tier is computed from the image
        cache.complete(report)
        assert set(cache.held_keys()) == {keys["small"]}
        st = cache.stats()
        assert st.tiers["image"].evictions["replaced"] == 1
        assert st.tiers["image"].items == 0 and st.tiers["image"].bytes == 0
        assert cache.bytes_held == st.tiers["small"].bytes < image_bytes + st.tiers["small"].bytes
        assert not cache.store.contains(str(keys["image"]))


def test_fake_pressure_shrinks_cache_and_alerts(tmp_path):
    write_images(tmp_path / "img", 10)
    probe = StaticProbe(total=16 * GiB, available=12 * GiB)
    alerts: list[MemoryAlert] = []
    with _cache(tmp_path / "img", probe=probe, max_bytes="1GiB") as cache:
        cache.add_listener(alerts.append)
        for i in range(10):
            cache.get(i)
        full = cache.bytes_held
        assert full > 0
        probe.available = int(0.05 * probe.total)  # below the 10% low watermark
        cache.get(0)
        assert cache.bytes_held < full
        st = cache.stats()
        assert sum(t.evictions["pressure"] for t in st.tiers.values()) > 0
        assert alerts and alerts[0].level in ("warning", "critical")
        assert st.alerts[alerts[0].level] >= 1


def test_persistent_store_adopts_and_never_serves_stale(tmp_path):
    paths = write_images(tmp_path / "img", 4)
    disk = str(tmp_path / "disk")
    with _cache(
        tmp_path / "img", store="disk", disk_dir=disk, max_bytes="1GiB", random=False
    ) as cache:
        for i in range(4):
            cache.get(i)
        held = cache.bytes_held
    # Restart: entries are adopted and served.
    with _cache(
        tmp_path / "img", store="disk", disk_dir=disk, max_bytes="1GiB", random=False
    ) as cache:
        assert cache.bytes_held == held
        cache.get(1)
        assert cache.stats().hits == 1
    # The file changes: its old entry must not be served.
    write_images(tmp_path / "new", 1, seed=99)
    os.replace(tmp_path / "new" / "img0000.png", paths[1])
    fresh = image_pipeline(tmp_path / "img", random=False).run(1)
    with _cache(
        tmp_path / "img", store="disk", disk_dir=disk, max_bytes="1GiB", random=False
    ) as cache:
        got = cache.get(1)
        np.testing.assert_array_equal(got["image"], fresh["image"])
        st = cache.stats()
        assert st.hits == 0
        assert sum(t.evictions["invalid"] for t in st.tiers.values()) >= 1
    # The pipeline changes (a stage's parameters): no stale hit either.
    changed = image_pipeline(tmp_path / "img", random=False, resize_version="2")
    with _cache(
        tmp_path / "img", pipeline=changed, store="disk", disk_dir=disk, max_bytes="1GiB"
    ) as cache:
        cache.get(2)
        assert cache.stats().tiers["small"].hits == 0


def test_corrupt_entry_is_a_miss_and_evicted(tmp_path):
    write_images(tmp_path / "img", 3)
    disk = tmp_path / "disk"
    want = image_pipeline(tmp_path / "img", random=False).run(0)
    with _cache(
        tmp_path / "img", store="disk", disk_dir=str(disk), max_bytes="1GiB", random=False
    ) as cache:
        for i in range(3):
            cache.get(i)
        key = cache.pipeline.key(0, "small")
        assert key in set(cache.held_keys())
        for path in disk.rglob(f"*{key}*"):
            path.write_bytes(b"garbage")
        got = cache.get(0)
        np.testing.assert_array_equal(got["image"], want["image"])
        st = cache.stats()
        assert st.tiers["small"].evictions["invalid"] == 1


def test_shm_hits_are_served_in_place_read_only_and_corruption_is_a_miss(tmp_path):
    write_images(tmp_path / "img", 3)
    want = image_pipeline(tmp_path / "img", random=False).run(0)
    with _cache(tmp_path / "img", store="shm", max_bytes="1GiB", random=False) as cache:
        for i in range(3):
            cache.get(i)
        key = cache.final_hit_key(0)
        assert key is not None
        first, second = cache.get(0), cache.get(0)
        np.testing.assert_array_equal(first["image"], want["image"])
        # Both hits read the same mapped bytes; nobody can write into the cache.
        assert np.shares_memory(first["image"], second["image"])
        assert not first["image"].flags.writeable
        with pytest.raises(ValueError):
            first["image"][0, 0, 0] = 1
        first["extra"] = "a caller's own key"
        assert "extra" not in cache.get(0)
        assert cache.stats().tiers["small"].hits == 3
        # Another process replaces the entry with garbage: a miss, evicted, recomputed.
        (cache.store.directory / ".tmp-garbage").write_bytes(b"garbage")
        os.replace(cache.store.directory / ".tmp-garbage", cache.store.directory / str(key))
        got = cache.get(0)
        np.testing.assert_array_equal(got["image"], want["image"])
        st = cache.stats()
        assert st.tiers["small"].evictions["invalid"] == 1
        assert st.tiers["small"].hits == 3


@pytest.mark.parametrize("store", ["shm", "disk"])
def test_entry_gone_from_the_store_is_written_again_by_the_miss_that_finds_it(tmp_path, store):
    write_images(tmp_path / "img", 3)
    want = image_pipeline(tmp_path / "img", random=False).run(0)
    kw = {"disk_dir": str(tmp_path / "disk")} if store == "disk" else {}
    with _cache(tmp_path / "img", store=store, max_bytes="1GiB", random=False, **kw) as cache:
        for i in range(3):
            cache.get(i)
        key = cache.final_hit_key(0)
        os.unlink(cache.store.directory / str(key))  # removed behind the cache's back
        np.testing.assert_array_equal(cache.get(0)["image"], want["image"])
        assert (cache.store.directory / str(key)).is_file(), "written again by that miss"
        hits = cache.stats().tiers["small"].hits
        np.testing.assert_array_equal(cache.get(0)["image"], want["image"])
        st = cache.stats()
        assert st.tiers["small"].hits == hits + 1 and st.tiers["small"].items == 3


def test_an_injected_policy_decides_and_serves_one_cache(tmp_path):
    write_images(tmp_path / "img", 6)
    policy = StaticPolicy()
    with _cache(tmp_path / "img", max_bytes="1GiB", policy=policy) as cache:
        assert cache.policy is policy
        for i in range(6):
            cache.get(i)
        assert len(policy) == 6 and policy.held_bytes == cache.bytes_held
        with pytest.raises(ValueError, match="own policy instance"):
            _cache(tmp_path / "img", policy=policy)


def test_off_policy_caches_nothing(tmp_path):
    write_images(tmp_path / "img", 3)
    with _cache(tmp_path / "img", policy="off") as cache:
        for epoch in range(2):
            for i in range(3):
                cache.get(i, epoch)
        assert cache.bytes_held == 0 and cache.stats().hits == 0


@pytest.mark.slow
def test_real_pressure_from_another_process_shrinks_the_cache(tmp_path):
    import multiprocessing as mp

    from adaptive_cache.memory import MemoryProbe
    from tests.adaptive_cache.test_memory import _hold_memory, _poll

    write_images(tmp_path / "img", 16)
    probe = MemoryProbe(gpus=False)
    reading = probe.read()
    hog = 1 * GiB
    if reading.available_bytes < 3 * hog:
        pytest.skip("not enough free memory for the pressure test")
    # The low watermark sits 0.5 GiB under what is free now: a 1 GiB allocation crosses it.
    low = (reading.available_bytes - GiB // 2) / reading.limit_bytes
    cfg = _config(
        store="shm", max_bytes="1GiB", watermarks={"low": low, "high": min(0.99, low + 0.01)}
    )
    with AdaptiveCache(
        image_pipeline(tmp_path / "img"), cfg, name="t", probe=probe, namespace=pid_namespace("rp")
    ) as cache:
        for i in range(16):
            cache.get(i)
        full = cache.bytes_held
        assert full > 0 and cache.stats().evictions == 0
        ctx = mp.get_context("fork")
        ready, release = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_hold_memory, args=(hog, ready, release))
        child.start()
        try:
            assert ready.wait(60)
            assert _poll(lambda: probe.read().available_bytes < low * reading.limit_bytes)
            cache.get(0)  # any request re-reads the probe
            st = cache.stats()
            assert cache.bytes_held < full
            assert sum(t.evictions["pressure"] for t in st.tiers.values()) > 0
            assert st.alerts["warning"] + st.alerts["critical"] >= 1
        finally:
            release.set()
            child.join(60)
