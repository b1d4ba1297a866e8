"""OcrDataModule: the OCR splits served through adaptive caches.

Each split gets its own :class:`~adaptive_cache.engine.AdaptiveCache` (its own tiers
and budget, ``data.<split>.cache`` overrides) and a
:class:`~adaptive_cache.loader.CacheLoader`, a DataLoader subclass, so Lightning can
inject its ``DistributedSampler`` under DDP. All ranks of a node share one store
namespace per split (derived from the run id in the environment), so a node holds
each entry once.

With the device tier on (``cache.gpu``: ``auto`` on a CUDA device, ``on`` anywhere),
the validation loader is a :class:`~adaptive_cache.device_loader.DeviceCachedLoader`:
its batches are kept on the model's device and later epochs skip the DataLoader. It
is not a DataLoader, so under DDP the datamodule gives the inner loader its
``DistributedSampler`` itself (without shuffling, as Lightning would).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data.distributed import DistributedSampler

from adaptive_cache import AdaptiveCache
from adaptive_cache.device import DeviceBatchCache
from adaptive_cache.device_loader import DeviceCachedLoader, device_for
from adaptive_cache.loader import CacheDataset, CacheLoader
from training.config import Config
from training.data.collate import collate
from training.data.pipeline import build_pipeline

log = logging.getLogger(__name__)

RUN_ID_ENV = "ADAPTIVE_CACHE_RUN_ID"


def run_id() -> str:
    """The id shared by every process of this run (set once, inherited by DDP ranks)."""
    return os.environ.setdefault(RUN_ID_ENV, uuid.uuid4().hex[:12])


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class OcrDataModule(pl.LightningDataModule):
    """Train and val loaders over cached OCR pipelines.

    Args:
        config: the run configuration.
        stats_dir: where cache owners publish statistics so that rank 0 exports the
            node's sum (default: a directory under the run's shared-memory namespace).
    """

    def __init__(
        self, config: Config, *, stats_dir: str | None = None, local_world_size: int | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.stats_dir = stats_dir
        self.local_world_size = local_world_size
        self.caches: dict[str, AdaptiveCache] = {}
        self._preloaded: set[str] = set()
        self._loaders: dict[str, CacheLoader] = {}
        #: Device tiers by split (validation only), created with the first loader.
        self.device_caches: dict[str, DeviceBatchCache] = {}

    def cache(self, split: str) -> AdaptiveCache:
        """The split's cache, created on first use."""
        if split not in self.caches:
            cfg = self.config
            pipeline = build_pipeline(cfg.data, split, seed=cfg.seed)
            local_world = self.local_world_size or _env_int("LOCAL_WORLD_SIZE", 1)
            stats_dir = None
            if self.stats_dir:
                stats_dir = str(Path(self.stats_dir) / split)
            cache_cfg = cfg.cache_for(split)
            # Node-shared memory is per run; a persistent store is found again by split.
            namespace = split if cache_cfg.store == "disk" else f"{run_id()}-{split}"
            self.caches[split] = AdaptiveCache(
                pipeline,
                cache_cfg,
                name=split,
                namespace=namespace,
                local_world_size=local_world,
                stats_dir=stats_dir,
            )
        return self.caches[split]

    def setup(self, stage: str | None = None) -> None:
        splits = ["val"] if stage in ("validate", "predict") else ["train", "val"]
        for split in splits:
            cache = self.cache(split)
            if cache.config.preload and split not in self._preloaded:
                self._preloaded.add(split)
                # Each rank fills its stride of the samples; the store is the node's.
                rank, world = _env_int("RANK", 0), max(1, _env_int("WORLD_SIZE", 1))
                workers = cache.config.preload_workers or self.config.data.num_workers
                n = cache.preload(
                    num_workers=workers, indices=range(rank, len(cache.pipeline), world)
                )
                log.info("%s: preloaded %d samples; %s", split, n, cache.stats().summary())

    def loader(
        self, split: str, *, shuffle: bool | None = None, distributed: bool = False
    ) -> CacheLoader:
        """The split's CacheLoader; ``distributed``: with this rank's DistributedSampler."""
        d = self.config.data
        workers = d.num_workers
        shuffle = (split == "train") if shuffle is None else shuffle
        dataset = CacheDataset(self.cache(split))
        sampler = None
        if distributed:
            kwargs = self.trainer.distributed_sampler_kwargs or {}
            sampler = DistributedSampler(dataset, shuffle=shuffle, **kwargs)
        return CacheLoader(
            dataset,
            batch_size=d.batch_size,
            shuffle=None if sampler is not None else shuffle,
            sampler=sampler,
            drop_last=split == "train" and len(self.cache(split).pipeline) > d.batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=d.pin_memory,
            persistent_workers=d.persistent_workers and workers > 0,
        )

    def _model_device(self) -> torch.device | None:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else None

    def device_loader(self, split: str = "val") -> CacheLoader | DeviceCachedLoader:
        """The split's loader behind its device tier when ``cache.gpu`` turns it on.

        Raises:
            ValueError: ``cache.gpu=on`` for a split with a random stage.
        """
        cfg = self.config.cache_for(split)
        cache = self.cache(split)
        device = device_for(
            cfg.gpu,
            pipeline=cache.pipeline,
            shuffle=False,
            device=self._model_device(),
            what=f"data.{split}.cache.gpu",
        )
        if device is None:
            return self.loader(split, shuffle=False)
        trainer = getattr(self, "trainer", None)
        distributed = trainer is not None and trainer.world_size > 1
        if split not in self.device_caches:
            self.device_caches[split] = DeviceBatchCache(
                device,
                share=cfg.gpu_share,
                watermarks=cfg.watermarks,
                probe_interval_s=cfg.probe_interval_s,
                name=split,
            )
            log.info(
                "%s: device tier on %s (at most %.0f%% of free memory)",
                split,
                device,
                100 * cfg.gpu_share,
            )
        loader = self.loader(split, shuffle=False, distributed=distributed)
        return DeviceCachedLoader(loader, self.device_caches[split])

    def train_dataloader(self) -> CacheLoader:
        return self.loader("train")

    def val_dataloader(self) -> CacheLoader | DeviceCachedLoader:
        return self.device_loader("val")

    def predict_dataloader(self) -> CacheLoader:
        return self.loader("val", shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        # Caches live as long as the module: fit is followed by validate and predict.
        pass

    def close(self) -> None:
        """Release every cache (node-shared memory is removed by its owner)."""
        for device_cache in self.device_caches.values():
            device_cache.clear()
        self.device_caches.clear()
        for cache in self.caches.values():
            cache.close()
        self.caches.clear()
