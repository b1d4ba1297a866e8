"""CacheLoader.state_dict / load_state_dict: a run resumed mid-epoch continues it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.loader import CacheDataset, CacheLoader
from tests.adaptive_cache.pipelines import collate, image_pipeline, write_images
from tests.adaptive_cache.test_engine import StaticProbe, _config


def _loader(root, *, generator: bool, workers: int = 0) -> tuple[AdaptiveCache, CacheLoader]:
    cache = AdaptiveCache(
        image_pipeline(root),  # a random crop seeded by (epoch, index)
        _config(store="shm", max_bytes="1GiB"),
        name="t",
        probe=StaticProbe(),
        namespace=pid_namespace("state"),
    )
    kwargs = {"generator": torch.Generator().manual_seed(7)} if generator else {}
    loader = CacheLoader(
        CacheDataset(cache),
        batch_size=2,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        **kwargs,
    )
    return cache, loader


@pytest.mark.parametrize(("generator", "workers"), [(True, 0), (False, 0), (True, 2)])
def test_a_loader_resumed_mid_epoch_yields_the_rest_of_that_epoch(tmp_path, generator, workers):
    write_images(tmp_path / "img", 14)
    torch.manual_seed(3)
    cache, loader = _loader(tmp_path / "img", generator=generator, workers=workers)
    with cache:
        for _ in loader:  # epoch 0
            pass
        state_start = torch.get_rng_state()
        want = list(loader)  # epoch 1, uninterrupted
    torch.set_rng_state(state_start)
    cache, loader = _loader(tmp_path / "img", generator=generator, workers=workers)
    with cache:
        for _ in loader:  # epoch 0 again (same generators, same draws)
            pass
        torch.set_rng_state(state_start)
        it = iter(loader)
        head = [next(it) for _ in range(3)]
        state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches"] == 3
    torch.manual_seed(12345)  # the resumed process's generators are elsewhere
    fresh, resumed = _loader(tmp_path / "img", generator=generator, workers=workers)
    with fresh:
        resumed.load_state_dict(state)
        rest = list(resumed)
        after = resumed.state_dict()
    assert len(head) + len(rest) == len(want) == 7
    for got, expected in zip(head + rest, want, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert after["epoch"] == 2 and after["batches"] == 0  # the next pass starts epoch 2


def test_a_malformed_state_names_the_key(tmp_path):
    write_images(tmp_path / "img", 2)
    cache, loader = _loader(tmp_path / "img", generator=True)
    with cache:
        with pytest.raises(ValueError, match="'batches' must be an int >= 0"):
            loader.load_state_dict({"epoch": 1, "batches": -1})
        with pytest.raises(ValueError, match="'epoch'"):
            loader.load_state_dict({"batches": 0})
