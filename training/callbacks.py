"""Lightning callbacks: epoch timing with data-wait, cache statistics, metrics export.

``EpochTimer`` measures per-epoch train and val wall time and how long training steps
waited for their batch (the time between the end of one step and the start of the
next is spent in the data loader). ``CacheStatsCallback`` logs the caches' summary
lines, puts the hit rate in the progress bar and keeps per-epoch records for
``summary.json``. ``SkippedSamples`` counts samples skipped as bad, per epoch and
split, over every worker and rank. ``DeviceTierCallback`` checks the device tiers'
headroom during training and records them. ``MetricsCallback`` feeds the Prometheus
exporter.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch

from adaptive_cache import AdaptiveCache
from adaptive_cache.device import DeviceBatchCache, DeviceStats
from adaptive_cache.stats import CacheStats
from training.peak import PeakSampler

log = logging.getLogger(__name__)


class EpochTimer(pl.Callback):
    """Per-epoch train/val wall seconds and train data-wait seconds."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, float]] = {}
        self._t_train = 0.0
        self._t_val = 0.0
        self._last_end: float | None = None
        self._wait = 0.0
        self._steps = 0
        self.last_step_seconds = 0.0
        self.last_wait_seconds = 0.0

    def _rec(self, epoch: int) -> dict[str, float]:
        return self.records.setdefault(
            epoch, {"train_seconds": 0.0, "val_seconds": 0.0, "data_wait_seconds": 0.0, "steps": 0}
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_train = time.perf_counter()
        self._last_end = self._t_train
        self._wait = 0.0
        self._steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.last_wait_seconds = now - self._last_end
            self._wait += self.last_wait_seconds
        self._step_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.last_step_seconds = now - self._step_start + self.last_wait_seconds
        self._last_end = now
        self._steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rec = self._rec(trainer.current_epoch)
        # Validation inside the epoch is timed separately and taken out here.
        rec["train_seconds"] = time.perf_counter() - self._t_train - rec["val_seconds"]
        rec["data_wait_seconds"] = self._wait
        rec["steps"] = self._steps

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_val = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        rec = self._rec(trainer.current_epoch)
        rec["val_seconds"] += time.perf_counter() - self._t_val
        # Time spent validating between two train steps is not data wait.
        if self._last_end is not None:
            self._last_end = time.perf_counter()


class CacheStatsCallback(pl.Callback):
    """Logs cache summaries, shows the hit rate in the progress bar, records epochs.

    ``epochs[epoch][split]`` holds the split's statistics over that epoch (counters
    since its start, gauges at its end), summed over the node's processes.
    """

    def __init__(self, caches: dict[str, AdaptiveCache], *, every_n_steps: int = 0) -> None:
        self.caches = caches
        self.every_n_steps = every_n_steps
        self._before: dict[str, CacheStats] = {}
        self.epochs: dict[int, dict[str, CacheStats]] = {}

    def _snapshot(self, split: str) -> CacheStats:
        return self.caches[split].stats()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if "train" in self.caches:
            self._before["train"] = self._snapshot("train")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if "val" in self.caches:
            self._before["val"] = self._snapshot("val")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        cache = self.caches.get("train")
        if cache is None:
            return
        st = cache.local_stats()
        before = self._before.get("train") or CacheStats()
        ratio = st.since(before).hit_ratio
        pl_module.log("cache_hit", ratio, prog_bar=True, on_step=True, on_epoch=False, batch_size=1)
        if self.every_n_steps and (trainer.global_step % self.every_n_steps == 0):
            log.info("train %s", st.summary(before))

    def _end(self, trainer: pl.Trainer, split: str) -> None:
        cache = self.caches.get(split)
        if cache is None:
            return
        now = self._snapshot(split)
        before = self._before.get(split) or CacheStats()
        self.epochs.setdefault(trainer.current_epoch, {})[split] = now.since(before)
        if trainer.is_global_zero:
            log.info("epoch %d %s %s", trainer.current_epoch, split, now.summary(before))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._end(trainer, "val")


class SkippedSamples(pl.Callback):
    """Samples skipped as bad (``data.on_bad_sample=skip``), per epoch and split.

    A bad file is replaced by the next good one wherever the sample is computed (a
    DataLoader worker, the main process, or earlier, for a cached entry); the
    replacement carries ``replaced_from`` into the batch's ``meta``. Counting there,
    in the process consuming batches, sums every worker; the per-epoch total is then
    summed over the ranks. Samples left out before the run (a bad annotation, a
    missing image) are added once per epoch: they are skipped in every epoch too.

    Args:
        left_out: split -> samples left out when the data set was read.

    Attributes:
        records: epoch -> split -> samples skipped.
    """

    def __init__(self, left_out: dict[str, int] | None = None) -> None:
        self.left_out = dict(left_out or {})
        self.records: dict[int, dict[str, int]] = {}
        self._counts = {"train": 0, "val": 0}

    @staticmethod
    def replaced(batch: Any) -> int:
        """Samples of a collated batch that replace a bad one."""
        meta = batch.get("meta", ()) if isinstance(batch, dict) else ()
        return sum(1 for m in meta if "replaced_from" in m)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._counts["train"] = 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._counts["val"] = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._counts["train"] += self.replaced(batch)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not trainer.sanity_checking:
            self._counts["val"] += self.replaced(batch)

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        # A collective under DDP: every rank reaches its epoch end.
        count = torch.tensor(self._counts[split], device=pl_module.device)
        total = trainer.strategy.reduce(count, reduce_op="sum")
        n = int(total) + self.left_out.get(split, 0)
        self.records.setdefault(trainer.current_epoch, {})[split] = n
        if n and trainer.is_global_zero:
            log.warning("epoch %d %s: %d samples skipped as bad", trainer.current_epoch, split, n)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._end(trainer, pl_module, "val")


class DeviceTierCallback(pl.Callback):
    """The device tiers (``cache.gpu``) during training: pressure checks and records.

    The model's memory may grow after the tier filled (a larger batch, another
    process on the GPU): every training step asks each tier to give batches back if
    headroom fell below its watermark (readings are rate-limited, so this is cheap).
    Per validation epoch it records the tier's hits, misses and bytes.

    Args:
        caches: the datamodule's ``device_caches`` (read live: tiers appear when the
            validation loader is first built).
    """

    def __init__(self, caches: dict[str, DeviceBatchCache]) -> None:
        self.caches = caches
        self._before: dict[str, DeviceStats] = {}
        self.records: dict[int, dict[str, dict[str, Any]]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for cache in self.caches.values():
            cache.relieve()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._before = {split: c.stats() for split, c in self.caches.items()}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for split, cache in self.caches.items():
            now, before = cache.stats(), self._before.get(split) or DeviceStats()
            rec = now.to_dict()
            rec["hits"], rec["misses"] = now.hits - before.hits, now.misses - before.misses
            self.records.setdefault(trainer.current_epoch, {})[split] = rec
            if trainer.is_global_zero:
                log.info("epoch %d %s %s", trainer.current_epoch, split, now.summary())


class MetricsCallback(pl.Callback):
    """Feeds the exporter's training metrics (rank 0 only)."""

    def __init__(self, training_metrics: Any, timer: EpochTimer) -> None:
        self.metrics = training_metrics
        self.timer = timer

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.metrics.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.metrics.observe_step(self.timer.last_step_seconds, self.timer.last_wait_seconds)
        self.metrics.set_global_step(trainer.global_step)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.metrics.set_loss("train", float(loss))

    def on_validation_end(self, trainer, pl_module) -> None:
        # Not on_validation_epoch_end: callbacks run before the module logs val/hmean.
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if "val/loss" in m:
            self.metrics.set_loss("val", float(m["val/loss"]))
        if "val/hmean" in m:
            self.metrics.set_val_metrics(
                float(m["val/hmean"]),
                float(m.get("val/precision", 0.0)),
                float(m.get("val/recall", 0.0)),
            )


class PeakMemory(pl.Callback):
    """Samples the run's peak memory at batch ends (every ``interval_s`` of the
    source) and at every epoch end; ``peak`` and ``source`` as :class:`PeakSampler`'s.
    """

    def __init__(self, caches: dict[str, AdaptiveCache]) -> None:
        self.sampler = PeakSampler(caches)

    @property
    def peak(self) -> int:
        return self.sampler.peak

    @property
    def source(self) -> str:
        return self.sampler.source

    def sample(self) -> None:
        self.sampler.sample()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sampler.due():
            self.sampler.sample()

    on_validation_batch_end = on_train_batch_end  # type: ignore[assignment]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.sampler.sample()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.sampler.sample()
