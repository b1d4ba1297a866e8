"""Lightning callbacks: epoch timing with data-wait, cache statistics, metrics export.

``EpochTimer`` measures per-epoch train and val wall time and how long training steps
waited for their batch (the time between the end of one step and the start of the
next is spent in the data loader). ``CacheStatsCallback`` logs the caches' summary
lines, puts the hit rate in the progress bar and keeps per-epoch records for
``summary.json``. ``MetricsCallback`` feeds the Prometheus exporter.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

from adaptive_cache import AdaptiveCache
from adaptive_cache.stats import CacheStats

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
