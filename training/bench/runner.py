"""``adaptive-cache bench``: every workload and contender, then bench.json, bench.md, plots.

Each contender runs in its own forked child (see :mod:`adaptive_cache.bench.isolate`), one
after the other, on the same data with the same workers. ``bench.json`` is
rewritten after every workload, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from adaptive_cache.bench import CacheRun, equal_blocks, run_cache, unequal_blocks
from adaptive_cache.bench import run_isolated as _run_isolated
from adaptive_cache.config import format_size
from training.bench.e2e import TrainJob, compare_precision, mixed_precision, run_train
from training.bench.loaders import (
    LoaderJob,
    run_ideal,
    run_monai,
    run_none,
    run_ours,
    run_seed_dicts,
)
from training.bench.machine import machine_info
from training.bench.report import order_key, render, steady
from training.bench.settings import FULL, QUICK, WORKLOADS, BenchSizes
from training.config import Config, DataConfig

log = logging.getLogger(__name__)

Record = dict[str, Any]
# The fork server imports the benchmark once; each contender's child starts from it.
_PRELOAD = ("training.bench.runner",)


def run_isolated(fn: Any, *args: Any, **kwargs: Any) -> Record:
    """:func:`adaptive_cache.bench.run_isolated` with this benchmark preloaded."""
    return _run_isolated(fn, *args, preload=_PRELOAD, **kwargs)


_MARKER = "bench-data.json"


def _generate(root: Path, spec: dict[str, Any]) -> Record:
    from training.data.synthetic import generate

    report = generate(
        root, n_train=spec["n_train"], n_val=spec["n_val"], seed=spec["seed"], progress=False,
        scale=spec["scale"],
    )  # fmt: skip
    (root / _MARKER).write_text(json.dumps(spec, sort_keys=True))
    return report


def ensure_synthetic(root: Path, *, n_train: int, n_val: int, scale: float, seed: int) -> Path:
    """Generate synthetic receipts in ``root`` unless the same set is already there."""
    spec = {"n_train": n_train, "n_val": n_val, "scale": scale, "seed": seed}
    marker = root / _MARKER
    if marker.exists() and json.loads(marker.read_text()) == spec:
        log.info("bench: reusing %s", root)
        return root
    log.info("bench: generating %d+%d receipts (scale %.2f) in %s", n_train, n_val, scale, root)
    # In a child, so that no OpenCV thread pool exists in this process when it forks.
    run_isolated(_generate, root, spec, label="make-data")
    return root


def _loader_data(config: Config, out_dir: Path, sizes: BenchSizes) -> DataConfig:
    data = config.data.model_copy(deep=True)
    if sizes.image_size is not None:
        data.image_size = sizes.image_size
    root = Path(config.data.root)
    given = config.data.root != DataConfig().root and all(
        (root / config.data.split(s).annotations).exists() for s in ("train", "val")
    )
    if given:
        log.info("bench: loader workloads read the data set in %s", root)
    else:
        root = ensure_synthetic(
            out_dir / "data", n_train=sizes.n, n_val=sizes.n, scale=sizes.scale,
            seed=config.data.synthetic.seed,
        )  # fmt: skip
    data.root = str(root)
    return data


def _namespace() -> str:
    return f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _log(r: Record) -> None:
    if r.get("skipped"):
        log.info("bench %s %s: skipped (%s)", r["workload"], r["contender"], r["skipped"])
        return
    sps = steady(r["epochs"], "samples_per_second")
    hit = steady(r["epochs"], "hit_ratio")
    f = r.get("budget_fraction")
    log.info(
        "bench %s %s%s: epoch 0 %.2f s, epochs 1+ %.0f samples/s, hit %s, peak %s",
        r["workload"], r["contender"], "" if f is None else f" {100 * f:.0f}%",
        r["epochs"][0]["seconds"], sps[0] if sps else 0.0,
        "-" if hit is None else f"{100 * hit[0]:.1f}%", format_size(r.get("peak_memory_bytes", 0)),
    )  # fmt: skip


def _loader_workload(
    config: Config, data: DataConfig, split: str, sizes: BenchSizes
) -> list[Record]:
    job = LoaderJob(
        data=data,
        cache=config.cache_for(split),
        split=split,
        seed=config.seed,
        batch_size=sizes.batch_size,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.persistent_workers,
        epochs=sizes.epochs,
    )
    label = job.workload
    ideal = run_isolated(run_ideal, job, label=f"{label} ideal")
    footprint = int(ideal["footprint_bytes"])
    results = [
        ideal,
        run_isolated(run_none, job, label=f"{label} none"),
        run_isolated(run_seed_dicts, job, False, label=f"{label} seed-dicts"),
        run_isolated(run_seed_dicts, job, True, label=f"{label} seed-dicts-persistent"),
    ]
    if sizes.monai:
        results.append(run_isolated(run_monai, job, 1.0, label=f"{label} monai"))
    for policy, fractions in (
        ("auto", sizes.budgets),
        ("static", sizes.policy_budgets),
        ("lru", sizes.policy_budgets),
    ):
        for f in fractions:
            ns = _namespace()
            shm = Path(job.cache.shm_dir) / f"adaptive-cache-{ns}"
            hit_cost = policy == "auto" and f == 1.0 and split == "val"
            args = (job, policy, f, footprint, ns, hit_cost)
            name = f"{label} {policy} {f:.0%}"
            results.append(run_isolated(run_ours, *args, shm_dirs=[shm], label=name))
    for r in results:
        r["footprint_bytes"] = footprint
        _log(r)
    return sorted(results, key=order_key)


def _cache_runs(config: Config, sizes: BenchSizes, workload: str) -> list[Record]:
    shm_dir = config.cache.shm_dir
    if workload == "hit-rate":
        blocks = equal_blocks(sizes.hit_n, sizes.hit_nbytes, sizes.hit_cost_s)
        grid = [(w, f) for w in sizes.hit_workers for f in sizes.hit_fractions]
        epochs = sizes.hit_epochs
    else:
        blocks = unequal_blocks(sizes.knap_n, sizes.knap_cost_s, config.seed)
        grid = [(0, f) for f in sizes.knap_fractions]
        epochs = sizes.knap_epochs
    results = []
    for workers, f in grid:
        for policy in ("auto", "static", "lru"):
            ns = _namespace()
            run = CacheRun(
                workload, policy, f, workers, epochs, blocks[0], blocks[1], 16, config.seed,
                shm_dir, ns,
            )  # fmt: skip
            shm = Path(shm_dir) / f"adaptive-cache-{ns}"
            name = f"{workload} {policy} {f} w{workers}"
            r = run_isolated(run_cache, run, shm_dirs=[shm], label=name)
            hit = steady(r["epochs"], "hit_ratio")
            log.info(
                "bench %s %s f=%.1f num_workers=%d: steady hit %.3f (expected %s)",
                workload, policy, f, workers, hit[0] if hit else 0.0,
                r.get("expected_hit_ratio", "-"),
            )  # fmt: skip
            results.append(r)
    return results


def _train_workload(config: Config, out_dir: Path, sizes: BenchSizes) -> list[Record]:
    root = ensure_synthetic(
        out_dir / "data-train", n_train=sizes.train_n, n_val=sizes.train_val_n,
        scale=sizes.train_scale, seed=config.data.synthetic.seed,
    )  # fmt: skip
    image_size = sizes.train_image_size
    if torch.cuda.is_available() and config.trainer.accelerator != "cpu":
        # Where a GPU is present, the real model at the configured size (issue 6).
        config = config.model_copy(deep=True)
        config.model.backbone = "resnet18"
        image_size = None
    compared = compare_precision(config)
    runs = [("train", "none", compared, None), ("train", "auto", compared, None)]
    if sizes.precision_compare:
        for precision in dict.fromkeys(["32-true", mixed_precision(config)]):
            runs.append(("precision", precision, precision, 2))
    results = []
    for workload, name, precision, limit in runs:
        job = TrainJob(
            config=config,
            workload=workload,
            contender=name,
            precision=precision,
            data_root=root,
            out_dir=out_dir / "train-runs",
            n_train=sizes.train_n,
            n_val=sizes.train_val_n,
            batch_size=sizes.train_batch,
            epochs=sizes.train_epochs if limit is None else 3,
            image_size=image_size,
            run_id=uuid.uuid4().hex[:12],
            limit_batches=limit,
        )
        r = run_isolated(run_train, job, shm_dirs=job.shm_dirs(), label=f"{workload} {name}")
        _log(r)
        results.append(r)
    return results


def _command(quick: bool, only: list[str]) -> str:
    parts = ["adaptive-cache bench"] + (["--quick"] if quick else [])
    parts += [f"--only {w}" for w in only]
    return " ".join(parts)


def run_bench(
    config: Config,
    out_dir: Path,
    quick: bool = False,
    only: list[str] | None = None,
    *,
    sizes: BenchSizes | None = None,
) -> Path:
    """Run the benchmark and write ``bench.json``, ``bench.md`` and PNG plots in ``out_dir``.

    Args:
        config: the configuration (``data.num_workers``, ``data.persistent_workers``,
            ``seed``, the cache's ``shm_dir``, the model; ``data.root`` when it names a
            data set other than the default, else receipts are generated in
            ``out_dir/data``).
        out_dir: the output directory (created).
        quick: small sizes (:data:`~training.bench.settings.QUICK`).
        only: run only these workloads (see :data:`~training.bench.settings.WORKLOADS`).
        sizes: explicit sizes (tests); overrides ``quick``.

    Returns:
        The path of ``bench.json``.

    Raises:
        ValueError: an unknown workload in ``only``.
        ContenderError: a contender failed (its traceback is in the message).
    """
    only = list(only or [])
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        raise ValueError(
            f"--only {unknown[0]!r}: unknown workload; expected one of {', '.join(WORKLOADS)}"
        )
    sizes = sizes or (QUICK if quick else FULL)
    selected = [w for w in WORKLOADS if not only or w in only]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    doc: Record = {"machine": machine_info(), "results": []}
    command = _command(quick, only)

    def save() -> None:
        doc["machine"]["load_average_end"] = list(os.getloadavg())
        doc["machine"]["seconds"] = time.perf_counter() - t0
        (out_dir / "bench.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")

    loaders = [w for w in selected if w.startswith("loader-")]
    data = _loader_data(config, out_dir, sizes) if loaders else None
    for workload in selected:
        log.info("bench: %s", workload)
        if workload.startswith("loader-"):
            assert data is not None
            split = workload.removeprefix("loader-")
            doc["results"] += _loader_workload(config, data, split, sizes)
        elif workload in ("hit-rate", "knapsack"):
            doc["results"] += _cache_runs(config, sizes, workload)
        else:
            doc["results"] += _train_workload(config, out_dir, sizes)
        save()
    save()
    (out_dir / "bench.md").write_text(render(doc, command) + "\n")
    try:
        from training.bench.plots import write_plots  # matplotlib: the plot extra
    except ImportError as exc:
        log.warning("bench: no plots (%s); pip install 'adaptive-cache[plot]'", exc)
    else:
        for path in write_plots(doc["results"], out_dir):
            log.info("bench: wrote %s", path)
    log.info("bench: %s (%.0f s)", out_dir / "bench.json", time.perf_counter() - t0)
    return out_dir / "bench.json"
