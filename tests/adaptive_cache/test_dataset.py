"""CachedDataset: datasets people already have, cached, equal to uncached bit for bit."""

from __future__ import annotations

import os
import random

import albumentations as A
import numpy as np
import pytest
import torch

from adaptive_cache import CacheConfig, CachedDataset, deterministic
from adaptive_cache.memory import FakeProbe
from tests.adaptive_cache.torchvision_import import torchvision_or_skip
from tests.adaptive_cache.wrapped import (
    SegmentationDicts,
    TensorPairs,
    TvTensorSamples,
    write_class_folders,
)

EPOCHS = 3


def _wrap(dataset, transform, shm_dir, *, cached=True, **kw):
    config = CacheConfig(
        store="shm",
        shm_dir=str(shm_dir),
        max_bytes="64MiB",
        reserve_bytes=0,
        policy="auto" if cached else "off",
    )
    return CachedDataset(dataset, transform, config=config, seed=3, probe=FakeProbe(), **kw)


def _epochs(ds, workers, **kw):
    """Batches of each epoch (same shuffled order for every loader) and hits per epoch."""
    loader = ds.loader(
        batch_size=3, shuffle=True, num_workers=workers, generator=torch.Generator(), **kw
    )
    out, hits, before = [], [], 0
    for epoch in range(EPOCHS):
        loader.generator.manual_seed(epoch)
        out.append(list(loader))
        total = ds.stats().hits
        hits.append(total - before)
        before = total
    return out, hits


def _same(a, b) -> bool:
    """Equal bit for bit, with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _check_cached_equals_uncached(make, transform, shm_dir, workers, *, random_part=True):
    cached = _wrap(make(), transform, shm_dir)
    plain = _wrap(make(), transform, shm_dir, cached=False)
    with cached, plain:
        got, hits = _epochs(cached, workers)
        want, _ = _epochs(plain, 0)
        for epoch in range(EPOCHS):
            assert _same(got[epoch], want[epoch]), f"epoch {epoch} differs"
        n = len(cached)
        assert hits == [0] + [n] * (EPOCHS - 1)  # every sample hits from epoch 1 on
        if random_part:  # the random part is not cached: epochs differ
            assert not _same(got[0], got[1])
        return got


@pytest.mark.parametrize("workers", [0, 2])
def test_image_folder_with_torchvision_transforms(tmp_path, shm_dir, workers):
    tv = torchvision_or_skip()
    from torchvision.transforms import v2

    root = write_class_folders(tmp_path / "photos")
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(20),
            v2.CenterCrop(20),
            v2.RandomCrop(16),
            v2.RandomHorizontalFlip(),
        ]
    )
    got = _check_cached_equals_uncached(
        lambda: tv.datasets.ImageFolder(root), transform, shm_dir, workers
    )
    images, labels = got[0][0]
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64


def test_image_folder_deterministic_transform_equals_the_plain_dataset(tmp_path, shm_dir):
    tv = torchvision_or_skip()
    from torchvision.transforms import v2

    root = write_class_folders(tmp_path / "photos")
    transform = v2.Compose([v2.ToImage(), v2.Resize(20), v2.CenterCrop(20)])
    plain = tv.datasets.ImageFolder(root, transform=transform)
    with _wrap(tv.datasets.ImageFolder(root), transform, shm_dir) as ds:
        assert ds.pipeline.tiers == ["transformed"]  # a PIL image is not stored
        for _ in range(2):
            for i in range(len(plain)):
                image, label = ds[i]
                ref_image, ref_label = plain[i]
                assert torch.equal(image, ref_image) and label == ref_label
        assert ds.stats().hits == len(plain)


@pytest.mark.parametrize("workers", [0, 2])
def test_tensor_label_tuples_with_a_list_of_callables(shm_dir, workers):
    @deterministic
    def to_float(item):
        image, label = item
        return image.float() / 255, label

    def jitter(item):  # torch, numpy and python randomness: all seeded per sample
        image, label = item
        flip = random.random() < 0.5
        image = image.flip(-1) if flip else image
        return image + torch.rand(1) * 0.1 + float(np.random.rand()), label

    _check_cached_equals_uncached(TensorPairs, [to_float, jitter], shm_dir, workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_albumentations_dict_samples(shm_dir, workers):
    transform = A.Compose(
        [
            A.Resize(24, 24),
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(p=1.0),
        ]
    )
    got = _check_cached_equals_uncached(SegmentationDicts, transform, shm_dir, workers)
    batch = got[0][0]
    assert batch["image"].shape == (3, 24, 24, 3) and batch["mask"].shape == (3, 24, 24)


@pytest.mark.parametrize("workers", [0, 2])
def test_torchvision_v2_on_tv_tensor_dicts(shm_dir, workers):
    torchvision_or_skip()
    from torchvision.transforms import v2

    transform = v2.Compose(
        [v2.Resize((24, 20)), v2.RandomResizedCrop(16, antialias=True), v2.RandomHorizontalFlip()]
    )
    got = _check_cached_equals_uncached(TvTensorSamples, transform, shm_dir, workers)
    batch = got[1][0]
    assert batch["image"].shape == (3, 3, 16, 16) and batch["mask"].shape == (3, 16, 16)


def test_deterministic_only_transform_is_served_whole_from_the_cache(shm_dir):
    @deterministic
    def halve(item):
        image, label = item
        return image[:, ::2, ::2].contiguous(), label

    _check_cached_equals_uncached(TensorPairs, [halve], shm_dir, 0, random_part=False)
    with _wrap(TensorPairs(), [halve], shm_dir) as ds:
        loader = ds.loader(batch_size=4, num_workers=2)
        for _ in range(2):
            batches = list(loader)
        # The second epoch was all hits on the final tier: served without a worker.
        assert loader.last_epoch == {"main_samples": len(ds), "worker_samples": 0}
        assert torch.equal(batches[0][0][1], halve(TensorPairs()[1])[0])


def test_a_custom_collate_gets_the_items_and_may_change_them(shm_dir):
    seen = []

    def collate(items):
        seen.append(items)
        for image, _ in items:
            image.zero_()  # in place: must not reach the cache
        return len(items)

    @deterministic
    def bump(item):
        return item[0] + 1, item[1]

    with _wrap(TensorPairs(), [bump], shm_dir) as ds:
        for _ in range(EPOCHS):
            assert sum(ds.loader(batch_size=4, collate_fn=collate)) == len(ds)
        first = seen[-2][0]  # the last epoch's first batch starts with sample 0
        assert type(first) is tuple and first[1] == 0 and first[0].dtype == torch.uint8
        assert torch.equal(ds[0][0], TensorPairs()[0][0] + 1)  # cache unharmed
        assert ds.stats().hits >= 2 * len(ds)


def test_direct_indexing_draws_afresh_until_an_epoch_is_set(shm_dir):
    def noise(item):
        return item[0].float() + torch.rand(1), item[1]

    with _wrap(TensorPairs(), [noise], shm_dir) as ds:
        assert not torch.equal(ds[0][0], ds[0][0])  # like the plain dataset: never frozen
        ds.set_epoch(4)
        assert torch.equal(ds[0][0], ds[0][0])
        ds.set_epoch(5)
        a = ds[0][0]
        ds.set_epoch(4)
        assert not torch.equal(a, ds[0][0])


def test_a_dataset_whose_own_transform_is_random_is_refused(tmp_path, shm_dir):
    tv = torchvision_or_skip()
    from torchvision.transforms import v2

    root = write_class_folders(tmp_path / "photos")
    dataset = tv.datasets.ImageFolder(root, transform=v2.Compose([v2.ToImage(), v2.RandomCrop(8)]))
    with pytest.raises(ValueError, match=r"ImageFolder.transform has a random step \(torch"):
        _wrap(dataset, None, shm_dir)


def test_nothing_storable_is_a_clear_error_and_uncached_still_works(tmp_path, shm_dir):
    tv = torchvision_or_skip()
    from torchvision.transforms import v2

    root = write_class_folders(tmp_path / "photos")
    # PIL images all the way to the random crop: nothing before it can be stored.
    transform = v2.Compose([v2.Resize(20), v2.RandomCrop(16), v2.PILToTensor()])
    with pytest.raises(ValueError, match=r"item\[0\]: cannot store <class 'PIL.*ToImage"):
        _wrap(tv.datasets.ImageFolder(root), transform, shm_dir)
    with _wrap(tv.datasets.ImageFolder(root), transform, shm_dir, cached=False) as ds:
        assert ds[0][0].shape == (3, 16, 16)


def test_a_changed_transform_is_never_served_stale_and_an_unchanged_one_is_reused(tmp_path):
    def run(size):
        config = CacheConfig(store="disk", disk_dir=str(tmp_path / "cache"), reserve_bytes=0)
        transform = A.Compose([A.Resize(size, size)])
        ds = CachedDataset(
            SegmentationDicts(4), transform, config=config, namespace="seg", probe=FakeProbe()
        )
        with ds:
            shapes = {ds[i]["image"].shape for i in range(len(ds))}
            return shapes, ds.stats().hits

    assert run(16) == ({(16, 16, 3)}, 0)
    assert run(16) == ({(16, 16, 3)}, 4)  # the same keys: the first run's entries adopted
    assert run(12) == ({(12, 12, 3)}, 0)  # a new transform: new keys, nothing stale


def test_items_and_a_load_function_follow_their_files(tmp_path, shm_dir):
    from PIL import Image

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((6, 5, 3), i, np.uint8)).save(path)
        paths.append(str(path))

    def load(path):
        return torch.from_numpy(np.array(Image.open(path)))

    with _wrap(paths, [deterministic(lambda x: x * 2)], shm_dir, load=load) as ds:
        assert int(ds[1][0, 0, 0]) == 2 and int(ds[1][0, 0, 0]) == 2
        assert ds.stats().hits == 1
        Image.fromarray(np.full((6, 5, 3), 7, np.uint8)).save(paths[1])
        stat = (tmp_path / "1.png").stat()
        os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert int(ds[1][0, 0, 0]) == 14  # rewritten file: a new key, a miss
        assert ds.stats().hits == 1
