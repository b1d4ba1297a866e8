"""DeviceCachedLoader: a fixed-order loader whose batches kept on the device skip it.

Wraps a ``DataLoader`` (a :class:`~adaptive_cache.loader.CacheLoader` or a plain one)
over a deterministic split read in a fixed order. At each epoch it lists the batches'
sample indices from the loader's batch sampler and keys each batch by every sample's
id and file identity, the pipeline's fingerprint and the collate function: a changed
file or stage makes a new key (the old batch is dropped at the next epoch start), and
the check costs one ``stat`` per sample per epoch. Batches held by the
:class:`~adaptive_cache.device.DeviceBatchCache` are served as they are; only the
others go through a copy of the loader that reads just those batches. An epoch with
every batch held starts no worker and runs no collate.

Example:
    >>> loader = cache.loader(batch_size=16, num_workers=2, collate_fn=collate)
    >>> val = DeviceCachedLoader(loader, DeviceBatchCache("cuda:0"))
    >>> for batch in val: ...        # epoch 1+: device tensors, nothing else runs
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from adaptive_cache.config import TierMode
from adaptive_cache.device import Batch, DeviceBatchCache
from adaptive_cache.pipeline import Pipeline, RandomStageError, stable_hash

log = logging.getLogger(__name__)

BatchKey = Callable[[Sequence[int]], str]


def _qualname(fn: Any) -> str:
    kind = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(kind, '__module__', '')}.{kind.__qualname__}"


def check_deterministic(pipeline: Pipeline, what: str = "device tier") -> None:
    """Raise :class:`RandomStageError` naming the first random stage, if any."""
    if pipeline.prefix_len < len(pipeline.stages):
        rnd = pipeline.stages[pipeline.prefix_len]
        raise RandomStageError(
            f"{what}: the pipeline has the random stage {rnd.name!r} ({rnd.describe_random()});"
            " only batches of a deterministic pipeline are the same every epoch"
        )


def pipeline_batch_key(pipeline: Pipeline, collate_fn: Callable[..., Any]) -> BatchKey:
    """Key of a batch of a deterministic pipeline: samples, files, stages and collate.

    The collate function counts by its name and by its identity in this process (the
    device cache lives only as long as the process), so two lambdas never share keys.

    Raises:
        RandomStageError: the pipeline has a random stage.
    """
    check_deterministic(pipeline)
    head = (pipeline.fingerprint(), _qualname(collate_fn), id(collate_fn))
    src = pipeline.source

    def key(indices: Sequence[int]) -> str:
        return stable_hash(head, [(src.sample_id(i), src.identity(i)) for i in indices])

    return key


def _pipeline_of(dataset: Any) -> Pipeline | None:
    cache = getattr(dataset, "cache", None)
    pipeline = getattr(cache, "pipeline", None) or getattr(dataset, "pipeline", None)
    return pipeline if isinstance(pipeline, Pipeline) else None


def has_fixed_order(loader: DataLoader) -> bool:
    """Whether ``loader`` yields the same batches in the same order every epoch.

    True for a ``BatchSampler`` over a ``SequentialSampler`` or over a
    ``DistributedSampler`` with ``shuffle=False``, and for any batch sampler with a
    true ``fixed_order`` attribute.
    """
    bs = loader.batch_sampler
    if getattr(bs, "fixed_order", False):
        return True
    if not isinstance(bs, BatchSampler):
        return False
    sampler = bs.sampler
    if isinstance(sampler, DistributedSampler):
        return not sampler.shuffle
    return isinstance(sampler, SequentialSampler)


def device_for(
    mode: TierMode | str,
    *,
    pipeline: Pipeline | None,
    shuffle: bool,
    device: torch.device | str | None = None,
    what: str = "cache.gpu",
) -> torch.device | None:
    """Where a split's device tier keeps batches, or ``None`` when it is off.

    ``auto`` is on for a CUDA device, a deterministic pipeline and a fixed order; on a
    CPU the batch already lives in host memory, so ``auto`` is off there. ``on`` keeps
    batches on ``device`` whatever it is (the CPU in tests).

    Args:
        mode: ``auto``, ``on`` or ``off``.
        pipeline: the split's pipeline (``None``: assumed deterministic).
        shuffle: whether the split's batches are shuffled.
        device: where the model runs (default: ``cuda`` when available, else ``cpu``).
        what: the configuration key, for error messages.

    Raises:
        RandomStageError: ``on`` over a pipeline with a random stage.
        ValueError: ``on`` for a shuffled split.
    """
    mode = TierMode(mode)
    if mode is TierMode.off:
        return None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if mode is TierMode.auto:
        deterministic = pipeline is None or pipeline.prefix_len == len(pipeline.stages)
        return dev if dev.type == "cuda" and deterministic and not shuffle else None
    if pipeline is not None:
        check_deterministic(pipeline, f"{what}=on")
    if shuffle:
        raise ValueError(
            f"{what}=on: the split is shuffled, so its batches never repeat; the device tier "
            "keeps batches of a fixed order (set it for the validation split)"
        )
    return dev


class _BatchList(Sampler[list[int]]):
    """The batches of this epoch that the device does not hold."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader_like(loader: DataLoader, batch_sampler: Sampler[list[int]]) -> DataLoader:
    """A loader built like ``loader`` (same class when possible) over other batches."""
    kwargs: dict[str, Any] = {
        "batch_sampler": batch_sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "persistent_workers": loader.persistent_workers,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    try:
        return type(loader)(loader.dataset, **kwargs)
    except TypeError:  # a subclass with another signature
        return DataLoader(loader.dataset, **kwargs)


class DeviceCachedLoader:
    """Iterates ``loader``'s batches, serving those the device holds without it.

    Args:
        loader: a DataLoader in a fixed order over a deterministic dataset.
        cache: where batches are kept.
        batch_key: sample indices -> key; default :func:`pipeline_batch_key` of the
            dataset's pipeline (a :class:`~adaptive_cache.loader.CacheDataset` or any
            dataset with a ``pipeline``).

    Raises:
        ValueError: the loader is shuffled (or its batch sampler is unknown: give it a
            true ``fixed_order`` attribute), or its dataset has no pipeline and no
            ``batch_key`` was given.
        RandomStageError: the pipeline has a random stage.
    """

    def __init__(
        self, loader: DataLoader, cache: DeviceBatchCache, *, batch_key: BatchKey | None = None
    ) -> None:
        if loader.batch_sampler is None:
            raise ValueError("DeviceCachedLoader needs batching (batch_size or batch_sampler)")
        if not has_fixed_order(loader):
            raise ValueError(
                "DeviceCachedLoader needs a fixed batch order (shuffle=False, or a batch "
                f"sampler with fixed_order=True); got {type(loader.batch_sampler).__name__} "
                f"over {type(getattr(loader.batch_sampler, 'sampler', None)).__name__}"
            )
        if batch_key is None:
            pipeline = _pipeline_of(loader.dataset)
            if pipeline is None:
                raise ValueError(
                    f"DeviceCachedLoader: {type(loader.dataset).__name__} has no pipeline; "
                    "pass batch_key (sample indices -> a key that changes with the data)"
                )
            batch_key = pipeline_batch_key(pipeline, loader.collate_fn)
        self.loader = loader
        self.cache = cache
        self.batch_key = batch_key
        self._pending = _BatchList()
        self._rest: DataLoader | None = None
        self.epoch = 0
        self._epoch_set = False
        #: Where the batches of the last epoch came from.
        self.last_epoch: dict[str, int] = {"device_batches": 0, "loader_batches": 0}

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (forwarded to the dataset when it is read)."""
        self.epoch, self._epoch_set = int(epoch), True

    def _next_epoch(self) -> int:
        if self._epoch_set:
            self._epoch_set = False
            return self.epoch
        epoch, self.epoch = self.epoch, self.epoch + 1
        return epoch

    def _direct(self, indices: list[int]) -> Batch:
        # A batch released since the epoch began: built here, from the dataset.
        return self.loader.collate_fn([self.loader.dataset[i] for i in indices])

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._next_epoch()
        batches = [list(b) for b in self.loader.batch_sampler]
        keys = [self.batch_key(b) for b in batches]
        self.cache.discard(set(keys))  # batches of changed files, stages or order
        self.cache.relieve(force=True)
        missing = {k for k, key in enumerate(keys) if key not in self.cache}
        self.last_epoch = {
            "device_batches": len(keys) - len(missing),
            "loader_batches": len(missing),
        }
        rest: Iterator[Batch] | None = None
        if missing:
            self._pending.batches = [batches[k] for k in sorted(missing)]
            if self._rest is None:
                self._rest = _loader_like(self.loader, self._pending)
            set_epoch = getattr(self.loader.dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
            rest = iter(self._rest)
        for k, key in enumerate(keys):
            batch = self.cache.get(key)
            if batch is None:
                if k in missing:
                    assert rest is not None
                    batch = self.cache.put(key, next(rest))
                else:
                    batch = self._direct(batches[k])
            yield batch
            self.cache.relieve()
