"""Measure the device tier and the device suffix; one JSON file per run.

    python scripts/device_bench.py cpu --out cpu.json   # the CPU as the device (2 cores)
    python scripts/device_bench.py gpu --out gpu.json   # a CUDA machine (scripts/gpu_check.sh)

Every contender reads the same synthetic receipts (generated once into ``--data``) at
``--size``, batch ``--batch``, ``--workers`` DataLoader workers, for ``--epochs``
epochs; figures are samples/s per epoch and the median of epochs 1+ (epoch 0 fills
the caches). A batch counts as delivered when its image and maps are on the device
(synchronised on CUDA) and, for the train split, augmented. On the CPU the device is
the host, so "to the device" costs nothing.

Contenders:

* ``val_uncached`` (gpu only): the pipeline with the cache off, then the transfer.
* ``val_cacheloader``: CacheLoader hits (main process), then the transfer.
* ``val_device_tier``: the same behind the device tier (DeviceCachedLoader).
* ``train_uncached`` (gpu only): cache off, random suffix in the workers.
* ``train_worker_suffix``: cached prefix, random suffix in the workers.
* ``train_device_suffix``: cached prefix served in the main process, suffix on the
  device (DeviceAugment) after the transfer.
* ``precision`` (gpu only): DBNet training step time, fp32 against 16-mixed
  (autocast + GradScaler, as Lightning's ``16-mixed``), channels-last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2

cv2.setNumThreads(1)  # before any OpenCV call: forked workers of a threaded parent deadlock

import torch  # noqa: E402
from training.bench.isolate import tree_cpu_seconds  # noqa: E402

from adaptive_cache.config import CacheConfig  # noqa: E402
from adaptive_cache.device import DeviceBatchCache  # noqa: E402
from adaptive_cache.device_loader import DeviceCachedLoader  # noqa: E402
from adaptive_cache.engine import AdaptiveCache, pid_namespace  # noqa: E402
from adaptive_cache.loader import CacheDataset, CacheLoader  # noqa: E402
from training.bench.machine import machine_info  # noqa: E402
from training.config import DataConfig, ModelConfig  # noqa: E402
from training.data.collate import collate  # noqa: E402
from training.data.device_augment import DeviceAugment  # noqa: E402
from training.data.pipeline import build_pipeline  # noqa: E402
from training.data.synthetic import generate  # noqa: E402

Record = dict[str, Any]
MAPS = ("image", "gt", "thresh")


def _data(args: argparse.Namespace, *, on_device: bool) -> DataConfig:
    data = DataConfig(root=str(args.data), image_size=args.size, num_workers=args.workers)
    data.augment.on_device = on_device
    return data


def _cache(data: DataConfig, split: str, *, off: bool = False) -> AdaptiveCache:
    cfg = CacheConfig(policy="off" if off else "auto", max_bytes="8GiB", reserve_bytes=0)
    pipeline = build_pipeline(data, split, seed=0)
    return AdaptiveCache(pipeline, cfg, name=split, namespace=pid_namespace(f"devbench-{split}"))


def _loader(cache: AdaptiveCache, args: argparse.Namespace, *, shuffle: bool) -> CacheLoader:
    return CacheLoader(
        CacheDataset(cache),
        batch_size=args.batch,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(0) if shuffle else None,
        num_workers=args.workers,
        collate_fn=collate,
        pin_memory=args.device.type == "cuda",
        persistent_workers=args.workers > 0,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run(
    name: str,
    batches: Callable[[int], Iterable[dict[str, Any]]],
    deliver: Callable[[dict[str, Any], int, int], None],
    args: argparse.Namespace,
) -> Record:
    """Time ``args.epochs`` epochs of ``batches(epoch)``, each batch through ``deliver``."""
    seconds, cpu, samples = [], [], []
    for epoch in range(args.epochs):
        t0, c0, n = time.perf_counter(), tree_cpu_seconds(), 0
        for k, batch in enumerate(batches(epoch)):
            deliver(batch, epoch, k)
            n += batch["image"].shape[0]
        _sync(args.device)
        seconds.append(time.perf_counter() - t0)
        cpu.append(tree_cpu_seconds() - c0)
        samples.append(n)
    rates = [n / s for n, s in zip(samples, seconds, strict=True)]
    rec = {
        "name": name,
        "epoch_seconds": seconds,
        "epoch_cpu_seconds": cpu,
        "samples_per_epoch": samples,
        "samples_per_s": rates,
        "median_samples_per_s_epochs_1plus": statistics.median(rates[1:]),
        "cpu_ms_per_sample_epochs_1plus": 1e3 * sum(cpu[1:]) / max(1, sum(samples[1:])),
        "load_average": list(os.getloadavg()),
    }
    print(
        f"{name:>22}: {rec['median_samples_per_s_epochs_1plus']:8.1f} samples/s (epochs 1+), "
        f"{rec['cpu_ms_per_sample_epochs_1plus']:.2f} ms CPU/sample",
        flush=True,
    )
    return rec


def _to_device(device: torch.device) -> Callable[[dict[str, Any], int, int], dict[str, Any]]:
    def move(batch: dict[str, Any], epoch: int, k: int) -> dict[str, Any]:
        out = dict(batch)
        for key in MAPS:
            out[key] = batch[key].to(device, non_blocking=True)
        return out

    return move


def bench_val(args: argparse.Namespace, *, uncached: bool) -> list[Record]:
    data = _data(args, on_device=False)
    move = _to_device(args.device)
    out = []
    if uncached:
        with _cache(data, "val", off=True) as cache:
            loader = _loader(cache, args, shuffle=False)
            out.append(_run("val_uncached", lambda e: loader, move, args))
    with _cache(data, "val") as cache:
        loader = _loader(cache, args, shuffle=False)
        out.append(_run("val_cacheloader", lambda e: loader, move, args))
    with _cache(data, "val") as cache:
        tier = DeviceBatchCache(args.device, share=args.gpu_share)
        loader = DeviceCachedLoader(_loader(cache, args, shuffle=False), tier)
        rec = _run("val_device_tier", lambda e: loader, move, args)
        rec["device_tier"] = tier.stats().to_dict()
        tier.clear()
        out.append(rec)
    return out


def bench_train(args: argparse.Namespace, *, uncached: bool) -> list[Record]:
    move = _to_device(args.device)
    out = []
    contenders = [("train_worker_suffix", False, False)]
    if uncached:
        contenders.insert(0, ("train_uncached", False, True))
    contenders.append(("train_device_suffix", True, False))
    for name, on_device, off in contenders:
        data = _data(args, on_device=on_device)
        augment = DeviceAugment(data.augment, data.thresh_min, seed=0) if on_device else None

        def deliver(batch, epoch, k, augment=augment):
            batch = move(batch, epoch, k)
            if augment is not None:
                augment(batch, epoch=epoch, batch_idx=k)

        with _cache(data, "train", off=off) as cache:
            loader = _loader(cache, args, shuffle=True)

            def batches(epoch, loader=loader):
                loader.set_epoch(epoch)
                return loader

            out.append(_run(name, batches, deliver, args))
    return out


def bench_precision(args: argparse.Namespace) -> list[Record]:
    """Training step time of DBNet at fp32 and 16-mixed on the device."""
    from training.model.build import build_model
    from training.model.loss import DBLoss

    out = []
    for backbone in ("mobilenet_small", "resnet18"):
        for precision in ("32-true", "16-mixed"):
            torch.manual_seed(0)
            model = build_model(ModelConfig(backbone=backbone)).to(args.device)
            model = model.to(memory_format=torch.channels_last)
            loss_fn = DBLoss()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            mixed = precision == "16-mixed"
            kind = args.device.type
            scaler = torch.amp.GradScaler(kind, enabled=mixed and kind == "cuda")
            b, s = args.batch, args.size
            image = torch.randn(b, 3, s, s, device=args.device).contiguous(
                memory_format=torch.channels_last
            )
            gt = torch.randint(0, 8, (b, 1, s, s), dtype=torch.uint8, device=args.device)
            thresh = torch.randint(0, 256, (b, 1, s, s), dtype=torch.uint8, device=args.device)
            times = []
            for step in range(args.steps + 3):
                _sync(args.device)
                t0 = time.perf_counter()
                half = torch.float16 if kind == "cuda" else torch.bfloat16  # --smoke on a CPU
                with torch.autocast(kind, dtype=half, enabled=mixed):
                    loss = loss_fn(model(image, with_thresh=True), gt, thresh)["loss"]
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                _sync(args.device)
                if step >= 3:  # warm-up (cudnn autotuning, allocator)
                    times.append(time.perf_counter() - t0)
            rec = {
                "name": f"precision_{backbone}_{precision}",
                "step_seconds_median": statistics.median(times),
                "step_seconds": times,
                "batch": b,
                "size": s,
                "peak_memory_bytes": (
                    torch.cuda.max_memory_allocated(args.device) if kind == "cuda" else None
                ),
            }
            print(f"{rec['name']:>34}: {1e3 * rec['step_seconds_median']:.1f} ms/step", flush=True)
            out.append(rec)
            del model, opt
            if kind == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(args.device)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["cpu", "gpu"])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--data", type=Path, default=None, help="synthetic data root (reused)")
    p.add_argument("--n", type=int, default=128, help="receipts per split")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per precision")
    p.add_argument("--gpu-share", type=float, default=0.25)
    p.add_argument("--only", action="append", default=[], choices=["val", "train", "precision"])
    p.add_argument(
        "--smoke", action="store_true", help="gpu mode on the CPU, to check the script itself"
    )
    args = p.parse_args(argv)
    gpu = args.mode == "gpu"
    if gpu and not args.smoke and not torch.cuda.is_available():
        p.error("gpu mode needs a CUDA device (torch.cuda.is_available() is False)")
    args.device = torch.device("cuda" if gpu and not args.smoke else "cpu")
    if args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.data is None:
        args.data = Path(tempfile.gettempdir()) / f"device-bench-data-{args.n}"
    if not (args.data / "jsons" / "val.json").exists():
        generate(args.data, n_train=args.n, n_val=args.n, seed=0, progress=False)
    only = set(args.only) or {"val", "train", "precision"}
    results: list[Record] = []
    if "val" in only:
        results += bench_val(args, uncached=gpu)
    if "train" in only:
        results += bench_train(args, uncached=gpu)
    if "precision" in only and gpu:
        results += bench_precision(args)
    doc = {
        "machine": machine_info(),
        "settings": {
            k: (str(v) if isinstance(v, (Path, torch.device)) else v) for k, v in vars(args).items()
        },
        "results": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
