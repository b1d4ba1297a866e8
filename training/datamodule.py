"""OcrDataModule: the OCR splits served through adaptive caches.

Each split gets its own :class:`~adaptive_cache.engine.AdaptiveCache` (its own tiers
and budget, ``data.<split>.cache`` overrides) and a
:class:`~adaptive_cache.loader.CacheLoader`, a DataLoader subclass, so Lightning can
inject its ``DistributedSampler`` under DDP. All ranks of a node share one store
namespace per split (derived from the run id in the environment), so a node holds
each entry once.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytorch_lightning as pl

from adaptive_cache import AdaptiveCache, CacheLoader
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

    def loader(self, split: str, *, shuffle: bool | None = None) -> CacheLoader:
        d = self.config.data
        workers = d.num_workers
        return self.cache(split).loader(
            batch_size=d.batch_size,
            shuffle=(split == "train") if shuffle is None else shuffle,
            drop_last=split == "train" and len(self.cache(split).pipeline) > d.batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=d.pin_memory,
            persistent_workers=d.persistent_workers and workers > 0,
        )

    def train_dataloader(self) -> CacheLoader:
        return self.loader("train")

    def val_dataloader(self) -> CacheLoader:
        return self.loader("val")

    def predict_dataloader(self) -> CacheLoader:
        return self.loader("val", shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        # Caches live as long as the module: fit is followed by validate and predict.
        pass

    def close(self) -> None:
        """Release every cache (node-shared memory is removed by its owner)."""
        for cache in self.caches.values():
            cache.close()
        self.caches.clear()
