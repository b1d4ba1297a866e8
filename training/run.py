"""``adaptive-cache train``: the main job.

Generates the synthetic receipts when the default data set is missing, then trains
and validates with caching and metrics on, saves checkpoints, prints a table of
epochs and writes ``summary.json`` in the run directory.

A run's outputs are private: while it trains the process umask is ``077``, so the run
directory, checkpoints and logs are ``0700``/``0600`` (they hold the configuration and
a model of data others may not be allowed to read); secrets in the configuration are
masked in ``summary.json`` (see :mod:`adaptive_cache.redact`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from adaptive_cache.config import format_size
from adaptive_cache.stats import merge
from training.callbacks import (
    CacheStatsCallback,
    DeviceTierCallback,
    EpochTimer,
    MetricsCallback,
    PeakMemory,
    SkippedSamples,
)
from training.config import Config
from training.data.device_augment import DeviceAugment
from training.datamodule import OcrDataModule, run_id
from training.module import DBNetModule

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """True in the launching process (Lightning sets LOCAL_RANK/RANK in the others)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("RANK", 0)) == 0


def ensure_data(config: Config) -> None:
    """Generate the synthetic set when ``data.root`` lacks the annotation files."""
    root = Path(config.data.root)
    missing = [
        root / config.data.split(s).annotations
        for s in ("train", "val")
        if not (root / config.data.split(s).annotations).exists()
    ]
    if not missing:
        return
    if "synthetic" not in root.name:
        raise ValueError(
            f"data.root={root}: missing {', '.join(str(m) for m in missing)} "
            "(point data.root at your data set, or at a directory named like 'synthetic' "
            "to have one generated)"
        )
    from training.data.synthetic import generate

    syn = config.data.synthetic
    log.info("generating %d+%d synthetic receipts in %s", syn.n_train, syn.n_val, root)
    generate(root, n_train=syn.n_train, n_val=syn.n_val, seed=syn.seed)


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX).

    Without it, bf16 autocast on the CPU is emulated: measured on the reference
    machine (AMD EPYC, AVX2 only), a DBNet training step took 8-20x longer in
    bf16-mixed than in fp32 (convolutions fall back to ``_slow_conv2d``).
    """
    mkldnn_check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if mkldnn_check is not None:
        try:
            return bool(mkldnn_check())
        except RuntimeError:
            pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(config: Config) -> str:
    """``auto``: 16-mixed on CUDA; bf16-mixed on a CPU with native bf16, else 32-true.

    Any other value is passed to Lightning as given.
    """
    p = config.trainer.precision
    if p != "auto":
        return p
    if torch.cuda.is_available() and config.trainer.accelerator != "cpu":
        return "16-mixed"
    if cpu_has_native_bf16():
        return "bf16-mixed"
    log.info(
        "precision auto: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16-mixed "
        "is emulated and ~20x slower; using 32-true (set trainer.precision=bf16-mixed to force)"
    )
    return "32-true"


def _trainer_kwargs(config: Config, precision: str) -> dict[str, Any]:
    t = config.trainer
    kw: dict[str, Any] = {
        "max_epochs": t.max_epochs,
        "precision": precision,
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": t.strategy,
        "log_every_n_steps": t.log_every_n_steps,
        "check_val_every_n_epoch": t.check_val_every_n_epoch,
        "gradient_clip_val": t.gradient_clip_val,
        "deterministic": t.deterministic,
        "enable_progress_bar": t.enable_progress_bar,
        "num_sanity_val_steps": 0,
    }
    if t.limit_train_batches is not None:
        kw["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kw["limit_val_batches"] = t.limit_val_batches
    kw.update(t.extra)
    return kw


def _local_world(config: Config) -> int:
    """Processes of this node that will share the caches (known before DDP launches)."""
    t = config.trainer
    if "ddp" in t.strategy and isinstance(t.devices, int):
        return t.devices
    return 1


def _start_exporter(config: Config, dm: OcrDataModule) -> Any:
    if not (config.monitoring.enabled and is_rank_zero()):
        return None
    from monitoring.exporter import Exporter

    exporter = Exporter(config.monitoring)
    for split in ("train", "val"):
        exporter.add_cache(dm.cache(split))
    exporter.set_probe(dm.cache("train").probe)
    try:
        host, port = exporter.start()
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    log.info("metrics: http://%s:%d/metrics", host, port)
    return exporter


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files and directories created meanwhile are ``0600``/``0700`` (umask ``077``)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


class _Release:
    """What a run holds outside its run directory, released however the run ends."""

    def __init__(self) -> None:
        self.dm: OcrDataModule | None = None
        self.stats_dir: Path | None = None
        self.exporter: Any = None

    def __call__(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
        if self.dm is not None:
            self.dm.close()  # removes the node-shared memory this process owns
        if self.stats_dir is not None and is_rank_zero():
            shutil.rmtree(self.stats_dir, ignore_errors=True)


def _fit(trainer: pl.Trainer, module: DBNetModule, dm: OcrDataModule) -> None:
    """``trainer.fit``; a DataLoader worker's death becomes a :class:`WorkerDiedError`."""
    from training.errors import worker_death

    try:
        trainer.fit(module, datamodule=dm)
    except RuntimeError as exc:
        died = worker_death(exc, epoch=trainer.current_epoch)
        if died is None:
            raise
        raise died from exc


def train(config: Config) -> Path:
    """Train and validate; returns the path of ``summary.json``.

    Whatever ends the run (an error at start, a killed worker, the exporter failing to
    listen), the node-shared memory and the statistics directory are released. Run
    outputs are private (``0600``/``0700``).
    """
    if is_rank_zero():
        ensure_data(config)
    release = _Release()
    try:
        with private_files():
            return _train(config, release)
    finally:
        release()


def _train(config: Config, release: _Release) -> Path:
    rid = run_id()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    run_dir = Path(config.output_dir) / f"{config.run_name}-{rid}"
    run_dir.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(config)
    stats_dir = Path(tempfile.gettempdir()) / f"adaptive-cache-stats-{rid}"
    release.stats_dir = stats_dir
    dm = OcrDataModule(config, stats_dir=str(stats_dir), local_world_size=_local_world(config))
    release.dm = dm
    dm.setup("fit")
    exporter = release.exporter = _start_exporter(config, dm)
    timer = EpochTimer()
    cache_cb = CacheStatsCallback(dm.caches, every_n_steps=config.cache.log_every_n)
    peak = PeakMemory(dm.caches)
    skipped = SkippedSamples(
        {split: len(cache.pipeline.source.skipped) for split, cache in dm.caches.items()}
    )
    callbacks: list[pl.Callback] = [
        timer,
        cache_cb,
        peak,
        skipped,
        pl.callbacks.ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch{epoch:02d}-hmean{val/hmean:.3f}",
            auto_insert_metric_name=False,
            monitor="val/hmean",
            mode="max",
            save_last=True,
        ),
    ]
    device_cb = DeviceTierCallback(dm.device_caches)
    callbacks.append(device_cb)
    if exporter is not None:
        callbacks.append(MetricsCallback(exporter.training, timer))
    aug = config.data.augment
    module = DBNetModule(
        config.model,
        config.optim,
        channels_last=torch.cuda.is_available(),
        augment=(
            DeviceAugment(aug, config.data.thresh_min, seed=config.seed)
            if aug.enabled and aug.on_device
            else None
        ),
    )
    trainer = pl.Trainer(
        **_trainer_kwargs(config, precision),
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        logger=pl.loggers.CSVLogger(str(run_dir), name="logs"),
    )
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    losses: dict[int, float] = {}
    val: dict[int, dict[str, float]] = {}

    class _Collect(pl.Callback):
        def on_train_epoch_end(self, tr, pm) -> None:
            m = tr.callback_metrics
            if "train/loss_epoch" in m:
                losses[tr.current_epoch] = float(m["train/loss_epoch"])
            elif "train/loss" in m:
                losses[tr.current_epoch] = float(m["train/loss"])

        def on_validation_end(self, tr, pm) -> None:
            # After the module's on_validation_epoch_end has logged hmean (callbacks'
            # epoch-end hooks run before the module's).
            if tr.sanity_checking:
                return
            m = tr.callback_metrics
            val[tr.current_epoch] = {
                k: float(m[f"val/{k}"])
                for k in ("hmean", "precision", "recall", "loss")
                if f"val/{k}" in m
            }

    trainer.callbacks.append(_Collect())
    _fit(trainer, module, dm)
    peak.sample()
    if not trainer.is_global_zero:
        return run_dir / "summary.json"
    summary = _summary(config, precision, trainer, timer, cache_cb, peak, losses, val)
    summary["checkpoint"] = str(trainer.checkpoint_callback.best_model_path or "")
    for e in summary["epochs"]:
        e["skipped"] = skipped.records.get(e["epoch"], {})
        e["device_tier"] = device_cb.records.get(e["epoch"], {})
    if exporter is not None:
        summary["metrics_url"] = "http://{}:{}/metrics".format(*exporter.address)
    path = run_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2))
    print(format_table(summary))
    return path


def _summary(config, precision, trainer, timer, cache_cb, peak, losses, val) -> dict[str, Any]:
    epochs = []
    for epoch in range(trainer.current_epoch + 1):
        t = timer.records.get(epoch)
        if t is None:
            continue
        v = val.get(epoch, {})
        caches = cache_cb.epochs.get(epoch, {})
        epochs.append(
            {
                "epoch": epoch,
                "train_seconds": t["train_seconds"],
                "val_seconds": t["val_seconds"],
                "data_wait_seconds": t["data_wait_seconds"],
                "hmean": v.get("hmean"),
                "precision": v.get("precision"),
                "recall": v.get("recall"),
                "loss": losses.get(epoch),
                "val_loss": v.get("loss"),
                "cache": merge(list(caches.values())).record(),
                "cache_by_split": {split: st.record() for split, st in caches.items()},
            }
        )
    device = str(trainer.strategy.root_device)
    if torch.cuda.is_available() and device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    return {
        "epochs": epochs,
        "store_errors": sum(e["cache"]["store_errors"] for e in epochs),
        "peak_memory_bytes": peak.peak,
        "peak_memory_source": peak.source,  # "cgroup" | "pss" | "rss": see training/peak.py
        "device": device,
        "precision": precision,
        "config": config.resolved(),
    }


def format_table(summary: dict[str, Any]) -> str:
    """The epoch table printed at the end of a run."""
    head = (
        f"{'epoch':>5} {'train s':>8} {'val s':>7} {'wait s':>7} {'hit':>6} "
        f"{'cache':>10} {'loss':>7} {'hmean':>6} {'skipped t/v':>11}"
    )
    lines = [head, "-" * len(head)]
    for e in summary["epochs"]:
        loss = f"{e['loss']:.3f}" if e["loss"] is not None else "-"
        hmean = f"{e['hmean']:.3f}" if e["hmean"] is not None else "-"
        lines.append(
            f"{e['epoch']:>5} {e['train_seconds']:>8.1f} {e['val_seconds']:>7.1f} "
            f"{e['data_wait_seconds']:>7.1f} {100 * e['cache']['hit_ratio']:>5.1f}% "
            f"{format_size(e['cache']['bytes']):>10} {loss:>7} {hmean:>6} "
            f"{_skipped_cell(e.get('skipped', {})):>11}"
        )
    lines.append(
        f"device {summary['device']}, precision {summary['precision']}, "
        f"peak memory {format_size(summary['peak_memory_bytes'])} "
        f"({summary.get('peak_memory_source', 'rss')})"
    )
    return "\n".join(lines)


def _skipped_cell(skipped: dict[str, int]) -> str:
    """``train/val`` samples skipped as bad in one epoch (``-`` for a split not run)."""
    return "/".join(str(skipped[s]) if s in skipped else "-" for s in ("train", "val"))
