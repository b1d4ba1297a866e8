"""CacheLoader with real DataLoader worker processes."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest

from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.loader import CacheDataset, CacheLoader, find_worker
from adaptive_cache.pipeline import FunctionStage, Pipeline
from adaptive_cache.preload import preload
from tests.adaptive_cache.pipelines import collate, image_pipeline, write_images
from tests.adaptive_cache.test_engine import StaticProbe, _config


def _loader(root, *, workers, random=True, persistent=False, **cfg):
    pipe = image_pipeline(root, random=random)
    cache = AdaptiveCache(
        pipe,
        _config(store="shm", **cfg),
        name="t",
        probe=StaticProbe(),
        namespace=pid_namespace("ldr"),
    )
    loader = CacheLoader(
        CacheDataset(cache),
        batch_size=4,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=persistent and workers > 0,
    )
    return cache, loader


def _footprint(root) -> int:
    cache, loader = _loader(root, workers=0, random=False, max_bytes="1GiB")
    with cache:
        for _ in loader:
            pass
        return cache.bytes_held


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_equal_uncached(tmp_path, workers):
    write_images(tmp_path / "img", 10, vary=True)
    uncached = image_pipeline(tmp_path / "img")
    cache, loader = _loader(tmp_path / "img", workers=workers, max_bytes="1GiB")
    with cache:
        for epoch in range(3):
            loader.set_epoch(epoch)
            order = list(loader.batch_sampler)  # not used for data: shuffle differs per iter
            assert order
            seen = 0
            for batch in loader:
                assert batch.shape[1:] == (24, 24, 3)
                seen += len(batch)
            assert seen == 10
        # Compare sample by sample through the dataset: same (index, epoch) => same bytes.
        ds = loader.dataset
        for i in range(10):
            ds.set_epoch(7)
            np.testing.assert_array_equal(ds[i]["image"], uncached.run(i, 7)["image"])


@pytest.mark.slow
def test_hit_rate_equal_across_worker_counts(tmp_path):
    write_images(tmp_path / "img", 40)
    budget = _footprint(tmp_path / "img") // 2
    rates = {}
    for workers in (0, 2, 4):
        cache, loader = _loader(
            tmp_path / "img", workers=workers, policy="static", max_bytes=budget, persistent=True
        )
        with cache:
            for _ in loader:  # epoch 0 fills
                pass
            before = cache.stats()
            for _ in range(3):
                for _ in loader:
                    pass
            after = cache.stats()
            rates[workers] = (after.hits - before.hits) / (after.requests - before.requests)
    assert abs(rates[0] - rates[2]) <= 0.01 and abs(rates[0] - rates[4]) <= 0.01, rates
    assert 0.35 <= rates[0] <= 0.65, rates


def test_fully_cached_epoch_uses_no_worker(tmp_path):
    write_images(tmp_path / "img", 12)
    cache, loader = _loader(
        tmp_path / "img", workers=2, random=False, max_bytes="1GiB", persistent=True
    )
    with cache:
        for _ in loader:
            pass
        assert loader.last_epoch["worker_samples"] == 12
        for _ in loader:
            pass
        assert loader.last_epoch == {"main_samples": 12, "worker_samples": 0}
        assert cache.stats().hits == 12


def test_random_suffix_runs_in_workers_over_cached_prefix(tmp_path):
    write_images(tmp_path / "img", 8)
    cache, loader = _loader(tmp_path / "img", workers=2, max_bytes="1GiB")
    with cache:
        for _ in range(2):
            for _ in loader:
                pass
        assert loader.last_epoch["worker_samples"] == 8
        st = cache.stats()
        assert st.tiers["small"].hits == 8


def _suicide(s):
    # Kills the DataLoader worker computing img0003 while the flag file exists.
    flag = os.environ.get("AC_TEST_KILL_FLAG")
    if flag and s["path"].endswith("img0003.png") and os.path.exists(flag):
        os.unlink(flag)
        os.kill(os.getpid(), signal.SIGKILL)
    return s


def test_cache_consistent_after_worker_killed(tmp_path, monkeypatch):
    write_images(tmp_path / "img", 12)
    flag = tmp_path / "kill"
    flag.write_text("1")
    monkeypatch.setenv("AC_TEST_KILL_FLAG", str(flag))
    base = image_pipeline(tmp_path / "img", random=False)
    pipe = Pipeline(
        base.source,
        [FunctionStage("check", _suicide), *base.stages],
        {"image": "decode", "small": "resize"},
    )
    cache = AdaptiveCache(
        pipe,
        _config(store="shm", max_bytes="1GiB"),
        name="t",
        probe=StaticProbe(),
        namespace=pid_namespace("kill"),
    )
    loader = CacheLoader(CacheDataset(cache), batch_size=2, num_workers=2, collate_fn=collate)
    with cache:
        with pytest.raises(RuntimeError) as err:
            for _ in loader:
                pass
        # torch names the dead worker by pid only; the loader knows which it was.
        pid = int(re.search(r"pid(?:\(s\))? (\d+)", str(err.value)).group(1))
        record = find_worker(pid)
        assert record is not None and (record.cache, record.pid) == ("t", pid)
        assert record.worker in (0, 1) and record.exitcode == -signal.SIGKILL
        assert find_worker(os.getpid()) is None
        for _ in loader:  # the next epoch works
            pass
        for _ in loader:
            pass
        held = set(cache.held_keys())
        assert held and all(cache.store.contains(str(k)) for k in held)
        sizes = dict(cache.store.entries())
        assert cache.bytes_held == sum(sizes[str(k)] for k in held)
        assert cache.stats().tiers["small"].items == 12


def test_shared_memory_removed_on_close(tmp_path):
    write_images(tmp_path / "img", 4)
    cache, loader = _loader(tmp_path / "img", workers=2, max_bytes="1GiB")
    for _ in loader:
        pass
    directory = cache.store.directory
    assert os.path.isdir(directory)
    cache.close()
    assert not os.path.exists(directory)


@pytest.mark.parametrize("workers", [0, 2])
def test_preload_fills_before_the_first_epoch(tmp_path, workers):
    write_images(tmp_path / "img", 10)
    cache, loader = _loader(tmp_path / "img", workers=workers, max_bytes="1GiB")
    with cache:
        assert preload(cache, num_workers=workers, batch_size=3, progress=False) == 10
        assert cache.stats().tiers["small"].items == 10
        assert preload(cache, num_workers=workers, progress=False) == 0  # nothing left
        before = cache.stats()
        for _ in loader:
            pass
        after = cache.stats()
        assert after.hits - before.hits == 10  # the first epoch is all hits


def test_preload_respects_the_budget(tmp_path):
    write_images(tmp_path / "img", 12)
    budget = _footprint(tmp_path / "img") // 3
    cache, _ = _loader(tmp_path / "img", workers=0, policy="static", max_bytes=budget)
    with cache:
        preload(cache, progress=False)
        assert 0 < cache.bytes_held <= budget


def test_a_private_store_reaches_workers_through_its_handle(tmp_path):
    # The one way a store reaches a worker is its handle; a private store's opens empty
    # there, so workers compute and the owner keeps (and serves) what they hand back.
    write_images(tmp_path / "img", 8)
    uncached = image_pipeline(tmp_path / "img", random=False)
    cache = AdaptiveCache(
        image_pipeline(tmp_path / "img", random=False),
        _config(store="local", max_bytes="1GiB"),
        name="t",
        probe=StaticProbe(),
    )
    loader = CacheLoader(CacheDataset(cache), batch_size=4, num_workers=2, collate_fn=collate)
    with cache:
        first = np.concatenate(list(loader))
        assert loader.last_epoch["worker_samples"] == 8
        second = np.concatenate(list(loader))
        assert loader.last_epoch == {"main_samples": 8, "worker_samples": 0}
        want = np.stack([uncached.run(i)["image"] for i in range(8)])
        np.testing.assert_array_equal(first, want)
        np.testing.assert_array_equal(second, want)
        assert cache.stats().hits == 8
