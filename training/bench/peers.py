"""The other contenders' datasets: the seed's dicts, MONAI's CacheDataset, the ideal list.

Each is built over the same :class:`~adaptive_cache.pipeline.Pipeline` as ours, so
every contender computes bit-identical samples from the same files; only where the
results are kept differs.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from adaptive_cache.bench import entry_nbytes
from adaptive_cache.pipeline import Pipeline, Sample


class SharedEpoch:
    """An epoch counter that forked DataLoader workers read (persistent ones too)."""

    def __init__(self) -> None:
        self._value = mp.get_context("fork").Value("i", 0, lock=False)

    def set(self, epoch: int) -> None:
        self._value.value = int(epoch)

    def __call__(self) -> int:
        return int(self._value.value)


class HitCounter:
    """Requests and hits counted across processes (to measure, not part of any design)."""

    def __init__(self) -> None:
        self._counts = mp.get_context("fork").Array("q", 2)

    def add(self, hit: bool) -> None:
        with self._counts.get_lock():
            self._counts[0] += 1
            self._counts[1] += int(hit)

    def read(self) -> tuple[int, int]:
        """``(requests, hits)`` so far."""
        with self._counts.get_lock():
            return int(self._counts[0]), int(self._counts[1])


def sample_nbytes(sample: Sample) -> int:
    """Bytes of a sample's arrays (what a dict or a list holding it keeps alive)."""
    return sum(v.nbytes for v in sample.values() if isinstance(v, np.ndarray))


def run_prefix(pipeline: Pipeline, index: int, epoch: int) -> Sample:
    """The output of the deterministic prefix (what every cache here keeps)."""
    return pipeline.run(index, epoch, upto=pipeline.prefix_len)


def run_suffix(pipeline: Pipeline, index: int, epoch: int, sample: Sample) -> Sample:
    """The random suffix over a prefix output (a no-op when there is none)."""
    if pipeline.prefix_len == len(pipeline.stages):
        return sample
    return pipeline.run(index, epoch, start=pipeline.prefix_len, sample=sample)


class SeedDictDataset(Dataset):
    """The seed project's cache, rebuilt to measure it: a plain dict in the dataset.

    The dict is filled by whichever process runs ``__getitem__``: with DataLoader
    workers each worker fills its own copy (and loses it with the worker when
    workers are not persistent), the main process never sees it, and nothing bounds
    it. It keeps the deterministic prefix's output (uint8 image and maps, the most
    favourable variant: the seed kept float32, four times larger).

    Args:
        pipeline: the sample pipeline.
        epoch_fn: the current epoch (seeds the random suffix).
        counter: where requests and hits are counted, across processes.
    """

    def __init__(self, pipeline: Pipeline, epoch_fn: Callable[[], int], counter: HitCounter):
        self.pipeline = pipeline
        self.epoch_fn = epoch_fn
        self.counter = counter
        self.cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.pipeline)

    def __getitem__(self, index: int) -> Sample:
        epoch = self.epoch_fn()
        sample = self.cache.get(index)
        self.counter.add(sample is not None)
        if sample is None:
            sample = self.cache[index] = run_prefix(self.pipeline, index, epoch)
        return run_suffix(self.pipeline, index, epoch, sample)


class ListDataset(Dataset):
    """Ready samples in a Python list (the ideal loader's dataset)."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class PrepassDataset(Dataset):
    """Item ``i``: ``(final sample of epoch 0, bytes its prefix takes in a page-rounded
    cache store)``; read once to build the ideal list and measure the tensor-tier
    footprint."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.pipeline)

    def __getitem__(self, index: int) -> tuple[Sample, int]:
        prefix = run_prefix(self.pipeline, index, 0)
        return run_suffix(self.pipeline, index, 0, prefix), entry_nbytes(prefix)


def monai_dataset(
    pipeline: Pipeline, epoch_fn: Callable[[], int], cache_rate: float, num_workers: int
) -> Any:
    """MONAI ``CacheDataset`` over the pipeline, as MONAI users would write it.

    The deterministic prefix is one ``monai.transforms.Transform`` (MONAI caches the
    output of every transform before the first ``Randomizable`` one); the random
    suffix is a ``Randomizable`` transform seeded by the pipeline from
    ``(seed, epoch, index)`` like every other contender. The cache is filled at
    construction with ``num_workers`` threads. Items are ``{"index", "sample"}``:
    read ``item["sample"]``.

    Raises:
        ImportError: MONAI is not installed (the caller skips this contender).
    """
    from monai.data import CacheDataset
    from monai.transforms import Compose, Randomizable, Transform

    # Items carry their index: the cached prefix output does not (it depends on content).
    class Prefix(Transform):
        def __call__(self, index: int) -> dict[str, Any]:
            return {"index": int(index), "sample": run_prefix(pipeline, int(index), 0)}

    class Suffix(Randomizable, Transform):
        def randomize(self, data: Any) -> None:
            # Seeded per sample by the pipeline, so all contenders augment alike.
            return None

        def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
            index = item["index"]
            sample = run_suffix(pipeline, index, epoch_fn(), item["sample"])
            return {"index": index, "sample": sample}

    chain = [Prefix()]
    if pipeline.prefix_len < len(pipeline.stages):
        chain.append(Suffix())
    return CacheDataset(
        list(range(len(pipeline))),
        transform=Compose(chain),
        cache_rate=cache_rate,
        num_workers=max(1, num_workers),
        progress=False,
    )
