"""The loader workloads: every contender iterating the OCR pipeline for a few epochs.

Each ``run_*`` function builds its contender, times every epoch (wall seconds from
``iter(loader)`` to the last batch, worker start-up included, and the CPU seconds of
its whole process tree, which other load on the machine does not change) and
returns one result record; :func:`~adaptive_cache.bench.run_isolated` runs it in a fresh child and
adds the peak memory. Every contender uses the same pipeline, batch size, workers
and shuffling generator, so they read the same samples in the same order.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from adaptive_cache import AdaptiveCache, CacheConfig
from adaptive_cache.bench import checkpoint, measure_hit_cost, tree_cpu_seconds
from adaptive_cache.pipeline import Pipeline
from training.bench.peers import (
    HitCounter,
    ListDataset,
    PrepassDataset,
    SeedDictDataset,
    SharedEpoch,
    monai_dataset,
    run_prefix,
    sample_nbytes,
)
from training.config import DataConfig
from training.data.collate import collate
from training.data.dataset import PipelineDataset
from training.data.pipeline import build_pipeline

Record = dict[str, Any]


@dataclass(frozen=True)
class LoaderJob:
    """What every contender of one loader workload shares."""

    data: DataConfig
    cache: CacheConfig
    split: str
    seed: int
    batch_size: int
    num_workers: int
    persistent_workers: bool
    epochs: int

    @property
    def workload(self) -> str:
        return f"loader-{self.split}"

    @property
    def shuffle(self) -> bool:
        # As in training: the train split is shuffled, validation is read in order.
        return self.split == "train"

    def pipeline(self) -> Pipeline:
        return build_pipeline(self.data, self.split, seed=self.seed)

    def loader_kwargs(self, persistent: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "num_workers": self.num_workers,
            "collate_fn": collate,
            "persistent_workers": persistent and self.num_workers > 0,
        }
        if self.shuffle:
            kw["generator"] = torch.Generator().manual_seed(self.seed)
        return kw

    def result(
        self, contender: str, fraction: float | None, n: int, epochs: list[Record], **extra: Any
    ) -> Record:
        return {
            "workload": self.workload,
            "contender": contender,
            "budget_fraction": fraction,
            "epochs": epochs,
            "bytes_per_sample": extra.pop("bytes_per_sample", None),
            "num_workers": self.num_workers,
            "persistent_workers": extra.pop("persistent_workers", self.persistent_workers),
            "batch_size": self.batch_size,
            "n_samples": n,
            **extra,
        }


def _epochs(
    loader: Any,
    job: LoaderJob,
    n: int,
    *,
    set_epoch: Callable[[int], None],
    hits: Callable[[], tuple[int, int]] | None = None,
    extra: Callable[[], Record] | None = None,
) -> list[Record]:
    out = []
    for epoch in range(job.epochs):
        set_epoch(epoch)
        before = hits() if hits else (0, 0)
        count = 0
        cpu0 = tree_cpu_seconds()
        t0 = time.perf_counter()
        for batch in loader:
            count += int(batch["image"].shape[0])
        seconds = time.perf_counter() - t0
        cpu = tree_cpu_seconds() - cpu0
        if count != n:
            raise RuntimeError(f"{job.workload}: epoch {epoch} served {count} of {n} samples")
        rec: Record = {"epoch": epoch, "seconds": seconds, "samples_per_second": n / seconds}
        rec["cpu_seconds"] = cpu
        rec["cpu_ms_per_sample"] = 1000 * cpu / n
        rec["hit_ratio"] = None
        if hits:
            requests, hit = (a - b for a, b in zip(hits(), before, strict=True))
            rec["hit_ratio"] = hit / requests if requests else 0.0
        if extra:
            rec.update(extra())
        out.append(rec)
        checkpoint()
    return out


def run_none(job: LoaderJob) -> Record:
    """The uncached pipeline with a plain DataLoader (the baseline)."""
    pipe = job.pipeline()
    epoch = SharedEpoch()
    dataset = PipelineDataset(pipe, epoch_fn=epoch)
    loader = DataLoader(dataset, **job.loader_kwargs(job.persistent_workers))
    epochs = _epochs(loader, job, len(pipe), set_epoch=epoch.set)
    return job.result("none", None, len(pipe), epochs)


def run_seed_dicts(job: LoaderJob, persistent: bool) -> Record:
    """The seed's dicts inside the dataset, with non-persistent or persistent workers."""
    pipe = job.pipeline()
    epoch, counter = SharedEpoch(), HitCounter()
    dataset = SeedDictDataset(pipe, epoch, counter)
    loader = DataLoader(dataset, **job.loader_kwargs(persistent))
    epochs = _epochs(loader, job, len(pipe), set_epoch=epoch.set, hits=counter.read)
    name = "seed-dicts-persistent" if persistent else "seed-dicts"
    nbytes = sample_nbytes(run_prefix(pipe, 0, 0))
    return job.result(
        name, None, len(pipe), epochs, bytes_per_sample=nbytes, persistent_workers=persistent
    )


def _collate_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    return collate([item["sample"] for item in items])


def run_monai(job: LoaderJob, fraction: float) -> Record:
    """MONAI's CacheDataset holding ``fraction`` of the samples, filled before epoch 0.

    Epoch 0's seconds include the fill at construction (``setup_seconds``).
    """
    pipe = job.pipeline()
    epoch = SharedEpoch()
    t0 = time.perf_counter()
    try:
        dataset = monai_dataset(pipe, epoch, fraction, job.num_workers)
    except ImportError as exc:
        skipped = f"monai cannot be imported: {exc}"
        return job.result("monai", fraction, len(pipe), [], skipped=skipped)
    setup = time.perf_counter() - t0
    kwargs = job.loader_kwargs(job.persistent_workers)
    kwargs["collate_fn"] = _collate_items
    loader = DataLoader(dataset, **kwargs)
    n = len(pipe)
    epochs = _epochs(loader, job, n, set_epoch=epoch.set)
    for rec in epochs:
        rec["hit_ratio"] = dataset.cache_num / n  # its first cache_num items, every epoch
    epochs[0]["seconds"] += setup
    epochs[0]["samples_per_second"] = n / epochs[0]["seconds"]
    nbytes = sample_nbytes(run_prefix(pipe, 0, 0))
    return job.result(
        "monai", fraction, n, epochs, bytes_per_sample=nbytes, setup_seconds=setup,
        cache_rate=fraction,
    )  # fmt: skip


def run_ideal(job: LoaderJob) -> Record:
    """Ready samples in a Python list, ``num_workers=0``, the same collate: the upper bound.

    A pre-pass (not timed as an epoch; ``setup_seconds``) computes epoch 0's samples
    and measures the tensor-tier footprint: the page-rounded bytes every prefix
    output takes in a cache store (``footprint_bytes``). It runs in this process, so
    that the peak memory is the list's and no worker's.
    """
    pipe = job.pipeline()
    t0 = time.perf_counter()
    pre = PrepassDataset(pipe)
    pairs = [pre[i] for i in range(len(pre))]
    setup = time.perf_counter() - t0
    samples = [sample for sample, _ in pairs]
    footprint = sum(nbytes for _, nbytes in pairs)
    loader = DataLoader(ListDataset(samples), **{**job.loader_kwargs(False), "num_workers": 0})
    epochs = _epochs(loader, job, len(samples), set_epoch=lambda e: None)
    return job.result(
        "ideal",
        None,
        len(samples),
        epochs,
        bytes_per_sample=statistics.fmean(sample_nbytes(s) for s in samples),
        num_workers=0,
        persistent_workers=False,
        setup_seconds=setup,
        footprint_bytes=footprint,
    )


def run_ours(
    job: LoaderJob, policy: str, fraction: float, footprint: int, namespace: str, hit_cost: bool
) -> Record:
    """Our cache (``policy`` at ``fraction`` of the footprint) behind a CacheLoader."""
    pipe = job.pipeline()
    settings = job.cache.model_dump()
    settings.update(
        policy=policy, max_bytes=max(1, int(fraction * footprint)), store="shm", preload=False,
        log_every_n=0,
    )  # fmt: skip
    cfg = CacheConfig.model_validate(settings)
    cache = AdaptiveCache(pipe, cfg, name=job.workload, namespace=namespace)
    try:
        loader = cache.loader(**job.loader_kwargs(job.persistent_workers))

        def hits() -> tuple[int, int]:
            st = cache.local_stats()
            return st.requests, st.hits

        def extra() -> Record:
            return {**loader.last_epoch, "bytes_held": cache.bytes_held}

        epochs = _epochs(loader, job, len(pipe), set_epoch=loader.set_epoch, hits=hits, extra=extra)
        st = cache.local_stats()
        out = job.result(
            policy,
            fraction,
            len(pipe),
            epochs,
            bytes_per_sample=st.bytes / st.items if st.items else None,
            budget_bytes=settings["max_bytes"],
            evictions=st.evictions,
            items_by_tier={name: t.items for name, t in st.tiers.items()},
        )
        if hit_cost:
            out["hit_cost"] = measure_hit_cost(cache)
        return out
    finally:
        cache.close()
