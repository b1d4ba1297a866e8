"""The end-to-end workload: ``training.run.train`` with the cache off and on.

Every run trains the configured (small) model on the same small synthetic set with
the same seed, validating each epoch; each epoch sees every training receipt, so
the cache can serve all of them from epoch 1 on. Numbers come from the run's own
``summary.json``: train and val seconds, the train loop's data wait, the hit rate.

Precision: the cache comparison trains at the trainer's own choice
(:func:`compare_precision`; on a CPU without bf16 instructions that is fp32, since
emulated ``bf16-mixed`` is several times slower). Two short runs (workload
``precision``, three epochs of two steps) give the step time at fp32 and at mixed
precision (``16-mixed`` on CUDA, ``bf16-mixed`` on a CPU).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import Config
from training.datamodule import RUN_ID_ENV

Record = dict[str, Any]


def compare_precision(config: Config) -> str:
    """The precision of the cache comparison: ``training.run.resolve_precision`` (for
    ``auto``: 16-mixed on CUDA, bf16-mixed on a CPU with native bf16, else 32-true)."""
    from training.run import resolve_precision

    return resolve_precision(config)


def mixed_precision(config: Config) -> str:
    """The mixed precision to time against fp32: ``16-mixed`` on CUDA, else ``bf16-mixed``
    (forced, also where ``auto`` would choose fp32, so that the cost is measured)."""
    cuda = torch.cuda.is_available() and config.trainer.accelerator != "cpu"
    return "16-mixed" if cuda else "bf16-mixed"


@dataclass(frozen=True)
class TrainJob:
    """One ``train`` run of the end-to-end workload.

    Attributes:
        config: the base configuration (the user's, with overrides).
        workload: ``train`` (cache comparison) or ``precision``.
        contender: ``none`` (cache off) or ``auto`` for ``train``; the precision for
            ``precision`` (the cache is on).
        precision: Lightning precision.
        data_root: the small synthetic set.
        out_dir: where the run directories go.
        n_train: training receipts (a multiple of ``batch_size``).
        n_val: validation receipts.
        batch_size: batch size.
        epochs: epochs.
        image_size: canonical size (``None``: the config's).
        run_id: the run id (names the cache's shared-memory directories).
        limit_batches: train and validation batches per epoch (``None``: all).
    """

    config: Config
    workload: str
    contender: str
    precision: str
    data_root: Path
    out_dir: Path
    n_train: int
    n_val: int
    batch_size: int
    epochs: int
    image_size: int | None
    run_id: str
    limit_batches: int | None = None

    def train_config(self) -> Config:
        cfg = self.config.model_copy(deep=True)
        cfg.run_name = f"bench-{self.workload}-{self.contender}"
        cfg.output_dir = str(self.out_dir)
        cfg.data.root = str(self.data_root)
        cfg.data.batch_size = self.batch_size
        if self.image_size is not None:
            cfg.data.image_size = self.image_size
        for split in ("train", "val"):
            # The contender decides the policy, whatever a split's overrides say.
            cfg.data.split(split).cache = {
                k: v for k, v in cfg.data.split(split).cache.items() if k != "policy"
            }
        cfg.cache.policy = "off" if self.contender == "none" else "auto"
        cfg.trainer.precision = self.precision
        cfg.trainer.max_epochs = self.epochs
        cfg.trainer.limit_train_batches = self.limit_batches
        cfg.trainer.limit_val_batches = self.limit_batches
        cfg.trainer.check_val_every_n_epoch = 1
        cfg.trainer.enable_progress_bar = False
        cfg.monitoring.enabled = False
        return cfg

    def shm_dirs(self) -> list[str]:
        base = Path(self.config.cache.shm_dir)
        return [str(base / f"adaptive-cache-{self.run_id}-{split}") for split in ("train", "val")]


def _bytes_per_sample(cache: dict[str, Any]) -> float | None:
    items = sum(t["items"] for t in cache["by_tier"].values())
    return cache["bytes"] / items if items else None


def run_train(job: TrainJob) -> Record:
    """Train and validate (in a child process: it sets the run id in its environment)."""
    from training.run import train

    os.environ[RUN_ID_ENV] = job.run_id
    summary_path = train(job.train_config())
    summary = json.loads(Path(summary_path).read_text())
    steps = job.n_train // job.batch_size
    if job.limit_batches is not None:
        steps = min(steps, job.limit_batches)
    cached = job.contender != "none"
    val_steps = -(-job.n_val // job.batch_size)
    if job.limit_batches is not None:
        val_steps = min(val_steps, job.limit_batches)
    samples = steps * job.batch_size + min(job.n_val, val_steps * job.batch_size)
    epochs = []
    for e in summary["epochs"]:
        seconds = e["train_seconds"] + e["val_seconds"]
        epochs.append(
            {
                "epoch": e["epoch"],
                "seconds": seconds,
                "samples_per_second": samples / seconds,
                "hit_ratio": e["cache"]["hit_ratio"] if cached else None,
                "train_seconds": e["train_seconds"],
                "val_seconds": e["val_seconds"],
                "data_wait_seconds": e["data_wait_seconds"],
                "step_seconds": e["train_seconds"] / steps,
                "hmean": e["hmean"],
                "loss": e["loss"],
            }
        )
    last = summary["epochs"][-1]["cache"] if summary["epochs"] else None
    steady = [e["step_seconds"] for e in epochs[1:]] or [e["step_seconds"] for e in epochs]
    return {
        "workload": job.workload,
        "contender": job.contender,
        "budget_fraction": None,  # automatic sizing: the whole small set fits
        "epochs": epochs,
        "bytes_per_sample": _bytes_per_sample(last) if cached and last else None,
        "precision": summary["precision"],
        "device": summary["device"],
        "num_workers": job.config.data.num_workers,
        "batch_size": job.batch_size,
        "n_samples": samples,
        "steps_per_epoch": steps,
        "n_train": job.n_train,
        "n_val": job.n_val,
        "median_step_seconds": statistics.median(steady),
        "lightning_peak_memory_bytes": summary["peak_memory_bytes"],
        "summary": str(summary_path),
    }
