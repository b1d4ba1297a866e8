"""DeviceCachedLoader over a real CacheLoader (real files, real worker processes)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from adaptive_cache.config import TierMode
from adaptive_cache.device import DeviceBatchCache
from adaptive_cache.device_loader import DeviceCachedLoader, device_for
from adaptive_cache.device_memory import FakeDeviceProbe
from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.loader import CacheDataset, CacheLoader
from adaptive_cache.pipeline import RandomStageError
from tests.adaptive_cache.pipelines import image_pipeline, write_images
from tests.adaptive_cache.test_engine import StaticProbe, _config

N, B = 10, 4  # three batches: 4, 4, 2
BATCH_BYTES = B * 32 * 32 * 3


class CountingCollate:
    """A real collate (uint8 tensors, like the OCR one) that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, samples):
        self.calls += 1
        images = np.stack([s["image"] for s in samples])  # (B, H, W, 3)
        return {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2),
            "path": [s["path"] for s in samples],
        }


@pytest.fixture
def root(tmp_path):
    write_images(tmp_path / "img", N)
    return tmp_path / "img"


def _loader(root, *, workers=0, shuffle=False, random=False, collate=None):
    cache = AdaptiveCache(
        image_pipeline(root, random=random),
        _config(store="shm" if workers else "local", max_bytes="1GiB"),
        name="val",
        probe=StaticProbe(),
        namespace=pid_namespace("dev"),
    )
    loader = CacheLoader(
        CacheDataset(cache),
        batch_size=B,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate or CountingCollate(),
        persistent_workers=workers > 0,
    )
    return cache, loader


def _device(share: float) -> tuple[DeviceBatchCache, FakeDeviceProbe]:
    """A device of ten full batches that the cache fills: holds about ``share * 10`` batches."""
    probe = FakeDeviceProbe(10 * BATCH_BYTES, 10 * BATCH_BYTES)
    cache = DeviceBatchCache("cpu", share=share, probe=probe, probe_interval_s=0.0, name="val")
    probe.held = lambda: cache.bytes_held
    return cache, probe


def _reference(root) -> list[torch.Tensor]:
    cache, loader = _loader(root)
    with cache:
        return [b["image"].clone() for b in loader]


def _epoch(loader) -> list[dict]:
    out = []
    for batch in loader:
        out.append({"image": batch["image"].clone(), "path": list(batch["path"])})
        batch["image"] = batch["image"].float()  # a consumer replacing a field (Lightning)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_fully_held_epochs_skip_the_loader(root, workers):
    ref = _reference(root)
    collate = CountingCollate()
    cache, loader = _loader(root, workers=workers, collate=collate)
    dev = DeviceBatchCache("cpu", share=1.0, probe=FakeDeviceProbe(10**9, 10**9))
    with cache:
        val = DeviceCachedLoader(loader, dev)
        assert len(val) == 3
        first = _epoch(val)
        assert val.last_epoch == {"device_batches": 0, "loader_batches": 3}
        calls = collate.calls
        assert calls >= 3
        for _ in range(2):
            again = _epoch(val)
            assert val.last_epoch == {"device_batches": 3, "loader_batches": 0}
            assert collate.calls == calls  # no collate, no worker, no CacheLoader
            for a, b, r in zip(first, again, ref, strict=True):
                assert a["image"].dtype == torch.uint8 and torch.equal(a["image"], r)
                assert torch.equal(b["image"], r) and a["path"] == b["path"]
        assert dev.stats().hits == 6 and dev.stats().misses == 3


def test_partly_held_epochs_read_only_the_rest(root):
    ref = _reference(root)
    cache, loader = _loader(root)
    dev, _ = _device(0.22)  # the two full batches; not the half one
    with cache:
        val = DeviceCachedLoader(loader, dev)
        _epoch(val)
        assert len(dev) == 2  # filled in arrival order, never replaced
        again = _epoch(val)
        assert val.last_epoch == {"device_batches": 2, "loader_batches": 1}
        assert [torch.equal(a["image"], r) for a, r in zip(again, ref, strict=True)] == [True] * 3
        # The batch not held is the last one, served by the loader in its place.
        assert [os.path.basename(p) for p in again[2]["path"]] == ["img0008.png", "img0009.png"]


def test_changed_file_is_never_served_from_the_device(root):
    cache, loader = _loader(root)
    dev, _ = _device(0.3)
    with cache:
        val = DeviceCachedLoader(loader, dev)
        _epoch(val)
        path = sorted(root.glob("*.png"))[5]  # in the second batch
        new = np.full((48, 48, 3), 200, dtype=np.uint8)
        cv2.imwrite(str(path), new)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new identity for sure
        again = _epoch(val)
        assert val.last_epoch == {"device_batches": 2, "loader_batches": 1}
        assert int(again[1]["image"][1].min()) == 200  # the new pixels, not the kept batch
        assert len(dev) == 3 and dev.stats().items == 3  # the stale batch was dropped


def test_batch_released_mid_epoch_is_built_in_the_main_process(root):
    ref = _reference(root)
    cache, loader = _loader(root)
    dev, probe = _device(0.3)
    with cache:
        val = DeviceCachedLoader(loader, dev)
        _epoch(val)
        it = iter(val)
        first = next(it)["image"].clone()
        probe.free_bytes = 0  # pressure after the epoch planned three device hits
        rest = [b["image"].clone() for b in it]
        assert len(dev) == 0 and dev.stats().evictions == 3
        assert [torch.equal(x, r) for x, r in zip([first, *rest], ref, strict=True)] == [True] * 3


def test_shuffled_or_random_splits_are_refused(root):
    cache, loader = _loader(root, shuffle=True)
    with cache, pytest.raises(ValueError, match="fixed batch order"):
        DeviceCachedLoader(loader, _device(1.0)[0])
    cache, loader = _loader(root, random=True)
    with cache, pytest.raises(RandomStageError, match="'crop'"):
        DeviceCachedLoader(loader, _device(1.0)[0])
    plain = DataLoader(list(range(4)), batch_size=2)
    with pytest.raises(ValueError, match="batch_key"):
        DeviceCachedLoader(plain, _device(1.0)[0])


def test_any_fixed_order_loader_with_a_batch_key():
    data = [torch.full((2,), i, dtype=torch.uint8) for i in range(6)]
    dev = DeviceBatchCache("cpu", share=1.0, probe=FakeDeviceProbe(10**9, 10**9))
    val = DeviceCachedLoader(
        DataLoader(data, batch_size=2), dev, batch_key=lambda idx: ",".join(map(str, idx))
    )
    assert [b.tolist() for b in val] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4], [5, 5]]]
    assert [b.tolist() for b in val] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4], [5, 5]]]
    assert val.last_epoch["device_batches"] == 3


def test_device_for_modes(root):
    det, rnd = image_pipeline(root, random=False), image_pipeline(root, random=True)
    assert device_for("off", pipeline=det, shuffle=False, device="cuda") is None
    # auto: only a CUDA device, a deterministic pipeline and a fixed order.
    assert device_for(TierMode.auto, pipeline=det, shuffle=False, device="cpu") is None
    assert device_for("auto", pipeline=det, shuffle=False, device="cuda:0").type == "cuda"
    assert device_for("auto", pipeline=rnd, shuffle=False, device="cuda") is None
    assert device_for("auto", pipeline=det, shuffle=True, device="cuda") is None
    # on: any device (the CPU in tests), a clear error where batches cannot repeat.
    assert device_for("on", pipeline=det, shuffle=False, device="cpu") == torch.device("cpu")
    with pytest.raises(RandomStageError, match=r"cache\.gpu=on.*'crop'"):
        device_for("on", pipeline=rnd, shuffle=False, device="cpu")
    with pytest.raises(ValueError, match="shuffled"):
        device_for("on", pipeline=det, shuffle=True, device="cpu")
