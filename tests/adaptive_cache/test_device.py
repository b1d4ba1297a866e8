"""DeviceBatchCache with the CPU as the device (the same code path as CUDA)."""

from __future__ import annotations

import pytest
import torch

from adaptive_cache.clock import FakeClock
from adaptive_cache.config import CacheConfig, Watermarks
from adaptive_cache.device import DeviceBatchCache, batch_nbytes
from adaptive_cache.device_memory import FakeDeviceProbe, HostProbe
from adaptive_cache.memory import MemoryProbe

BATCH_BYTES = 4 * 3 * 8 * 8 + 4 * 8 * 8  # image + gt below


def _batch(value: int = 1) -> dict:
    hwc = torch.full((4, 8, 8, 3), value, dtype=torch.uint8)
    return {
        "image": hwc.permute(0, 3, 1, 2),  # (B, 3, H, W) channels-last view, as collate gives
        "gt": torch.full((4, 1, 8, 8), value, dtype=torch.uint8),
        "meta": [{"file": f"{value}-{i}"} for i in range(4)],
    }


def _cache(free: int, *, total: int = 100_000, share: float = 0.25, **kw) -> DeviceBatchCache:
    probe = FakeDeviceProbe(total, free)
    cache = DeviceBatchCache("cpu", share=share, probe=probe, probe_interval_s=0.0, **kw)
    probe.held = lambda: cache.bytes_held  # the device fills as the cache does
    return cache


def test_batch_nbytes_counts_tensors_only():
    assert batch_nbytes(_batch()) == BATCH_BYTES
    assert batch_nbytes({"a": [torch.zeros(3, dtype=torch.float32)], "b": "x"}) == 12


def test_kept_batch_is_a_copy_with_dtype_and_layout():
    cache = _cache(free=90_000)
    src = _batch(7)
    out = cache.put("k", src)
    assert "k" in cache and cache.bytes_held == BATCH_BYTES
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (4, 3, 8, 8)
    assert out["image"].stride() == src["image"].stride()  # channels-last kept
    assert out["image"].data_ptr() != src["image"].data_ptr()
    src["image"].fill_(0)  # the producer reusing its buffer changes nothing kept
    got = cache.get("k")
    assert int(got["image"].min()) == 7
    got["image"] = got["image"].float()  # a consumer replacing a field (Lightning does)
    assert cache.get("k")["image"].dtype == torch.uint8
    assert cache.stats().hits == 2 and cache.get("missing") is None
    assert cache.stats().misses == 1


def test_never_more_than_share_of_free_memory():
    free = 10 * BATCH_BYTES
    cache = _cache(free=free, total=free, share=0.25)
    kept = [cache.put(str(i), _batch(i)) for i in range(6)]
    assert len(cache) == 2  # 2.5 batches fit in a quarter; never the third
    assert cache.bytes_held <= 0.25 * free
    st = cache.stats()
    assert st.insertions == 2 and st.rejected == 4 and st.budget_bytes == int(0.25 * free)
    assert kept[5]["meta"][0]["file"] == "5-0"  # a rejected batch is passed through as is


def test_pressure_releases_newest_batches_first():
    total = 100 * BATCH_BYTES
    probe = FakeDeviceProbe(total, 80 * BATCH_BYTES)
    cache = DeviceBatchCache(
        "cpu",
        share=1.0,
        probe=probe,
        probe_interval_s=0.0,
        watermarks=Watermarks(low=0.1, high=0.2),
    )
    for i in range(10):
        cache.put(str(i), _batch(i))
    assert len(cache) == 10
    assert cache.relieve() == 0
    # The model grew: 17 batches' worth usable, 20 needed to be above the high watermark.
    probe.free_bytes = 17 * BATCH_BYTES
    released = cache.relieve()
    assert released == 3 * BATCH_BYTES
    assert [str(i) in cache for i in range(10)] == [True] * 7 + [False] * 3
    assert cache.stats().evictions == 3 and cache.stats().items == 7


def test_no_batch_is_admitted_below_the_high_watermark():
    # A quarter of the free memory would fit 3 batches, but taking even one would leave
    # less than 20% of the device free: the next pressure check would give it back.
    cache = _cache(free=12 * BATCH_BYTES, total=60 * BATCH_BYTES, share=0.25)
    cache.put("a", _batch())
    assert len(cache) == 0 and cache.stats().rejected == 1


def test_device_tier_yields_before_the_host_cache():
    # Between the watermarks the host cache keeps its entries; the device tier releases.
    total = 100 * BATCH_BYTES
    probe = FakeDeviceProbe(total, total)
    cache = DeviceBatchCache("cpu", share=1.0, probe=probe, probe_interval_s=0.0)
    cache.put("k", _batch())
    probe.free_bytes = int(0.15 * total)
    assert CacheConfig().watermarks.low < 0.15 < CacheConfig().watermarks.high
    assert cache.relieve() == BATCH_BYTES and len(cache) == 0


def test_readings_are_rate_limited():
    clock = FakeClock()
    probe = FakeDeviceProbe(10**6, 10**6)
    cache = DeviceBatchCache("cpu", probe=probe, probe_interval_s=1.0, clock=clock)
    cache.budget_bytes()
    cache.budget_bytes()
    assert probe.reads == 1
    clock.advance(1.0)
    cache.budget_bytes()
    assert probe.reads == 2
    cache.budget_bytes(force=True)
    assert probe.reads == 3


def test_discard_keeps_only_given_keys():
    cache = _cache(free=90_000)
    for k in "abc":
        cache.put(k, _batch())
    assert cache.discard({"a", "c"}) == BATCH_BYTES
    assert sorted(cache._batches) == ["a", "c"] and cache.stats().items == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes_held == 0


def test_cpu_device_budget_comes_from_real_host_memory():
    r = HostProbe(MemoryProbe(gpus=False)).read()
    cache = DeviceBatchCache("cpu")
    assert 0 < cache.budget_bytes() <= 0.25 * r.total_bytes + 1
    assert cache.put("k", _batch())["image"].device.type == "cpu" and "k" in cache


def test_share_is_validated():
    with pytest.raises(ValueError, match="share"):
        DeviceBatchCache("cpu", share=0.0, probe=FakeDeviceProbe(1, 1))


def test_gpu_config_and_its_tiers_alias():
    assert CacheConfig().gpu.value == "auto" and CacheConfig().gpu_share == 0.25
    cfg = CacheConfig.model_validate({"tiers": {"gpu": "on", "tensor": "off"}})
    assert cfg.gpu.value == "on" and "gpu" not in cfg.tiers and cfg.tiers["tensor"].value == "off"
    cfg = CacheConfig.model_validate({"gpu": "on", "tiers": {"gpu": False}})  # YAML off
    assert cfg.gpu.value == "off"
    with pytest.raises(ValueError, match="gpu_share"):
        CacheConfig(gpu_share=1.5)
