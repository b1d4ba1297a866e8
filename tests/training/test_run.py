"""`adaptive-cache train` and `predict` end to end on tiny synthetic data (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config
from training.data.annotations import parse_seed_json
from training.metrics import evaluate_hmean as hmean_of
from training.predict import predict
from training.run import train

TINY = [
    "data.image_size=128",
    "data.synthetic.n_train=8",
    "data.synthetic.n_val=4",
    "data.batch_size=4",
    "data.num_workers=2",
    "data.persistent_workers=true",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "monitoring.port=0",
    "model.box_thresh=0.0",
    "model.bin_thresh=0.05",
    "model.neck_channels=16",
]


def _overrides(tmp: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.root={tmp}/data/synthetic", f"output_dir={tmp}/runs", *extra]


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    os.environ.pop("ADAPTIVE_CACHE_RUN_ID", None)
    path = train(load_config(_overrides(tmp, "run_name=cached")))
    return tmp, json.loads(path.read_text()), path


def test_summary_has_the_documented_shape(cached_run):
    _, summary, _ = cached_run
    assert set(summary) >= {
        "epochs",
        "peak_memory_bytes",
        "peak_memory_source",
        "device",
        "precision",
        "config",
    }
    assert summary["precision"] in ("32-true", "bf16-mixed")
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1]
    for e in summary["epochs"]:
        assert e["train_seconds"] > 0 and e["val_seconds"] > 0 and e["data_wait_seconds"] >= 0
        assert 0.0 <= e["hmean"] <= 1.0 and np.isfinite(e["loss"])
        assert set(e["cache"]) >= {
            "hits",
            "misses",
            "hit_ratio",
            "bytes",
            "budget_bytes",
            "evictions",
            "by_tier",
        }
        assert set(e["cache"]["by_tier"]) == {"image", "maps", "tensor"}
    first, second = summary["epochs"]
    assert first["cache"]["hit_ratio"] == 0.0
    assert second["cache"]["hit_ratio"] == 1.0  # full budget: everything kept in epoch 0
    assert second["cache"]["by_tier"]["tensor"]["items"] == 12
    assert summary["peak_memory_bytes"] > 0
    assert summary["peak_memory_source"] in ("cgroup", "pss")  # never RSS summed on Linux
    assert [e["skipped"] for e in summary["epochs"]] == [{"train": 0, "val": 0}] * 2
    assert summary["metrics_url"].startswith("http://127.0.0.1:")  # monitoring.port=0


def test_cached_and_uncached_runs_give_the_same_losses(cached_run, tmp_path):
    tmp, cached, _ = cached_run
    os.environ.pop("ADAPTIVE_CACHE_RUN_ID", None)
    path = train(load_config(_overrides(tmp, "run_name=uncached", "cache.policy=off")))
    uncached = json.loads(path.read_text())
    assert uncached["epochs"][1]["cache"]["hits"] == 0
    for a, b in zip(cached["epochs"], uncached["epochs"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6, abs=1e-7)
        assert a["hmean"] == pytest.approx(b["hmean"], abs=1e-9)


def test_device_tier_and_device_suffix_change_no_result(tmp_path):
    # The train suffix on the device (here the CPU) and validation batches kept by the
    # device tier (forced on: on a CPU ``auto`` is off) against the same run without
    # the tier: the same losses and hmean, and epoch 1 validates without a DataLoader.
    runs = {}
    for tier in ("on", "off"):
        os.environ.pop("ADAPTIVE_CACHE_RUN_ID", None)
        extra = ("data.augment.on_device=true", f"cache.gpu={tier}", f"run_name=gpu-{tier}")
        runs[tier] = json.loads(train(load_config(_overrides(tmp_path, *extra))).read_text())
    on, off = runs["on"], runs["off"]
    assert on["epochs"][1]["device_tier"]["val"]["hits"] == 1  # 4 val receipts, batch 4
    assert on["epochs"][1]["device_tier"]["val"]["misses"] == 0
    assert off["epochs"][1]["device_tier"] == {}
    assert on["epochs"][1]["cache"]["by_tier"]["tensor"]["items"] == 12  # no suffix in workers
    for a, b in zip(on["epochs"], off["epochs"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6, abs=1e-7)
        assert a["hmean"] == pytest.approx(b["hmean"], abs=1e-9)


def test_predictions_file_reproduces_validation_hmean(cached_run, tmp_path):
    tmp, summary, _ = cached_run
    ckpt = Path(summary["checkpoint"])
    assert ckpt.is_file()
    cfg = load_config(_overrides(tmp))
    out = predict(cfg, ckpt, split="val", out_dir=str(tmp_path / "pred"))
    doc = json.loads((out / "predictions.json").read_text())
    gt = parse_seed_json(Path(cfg.data.root) / cfg.data.val.annotations)
    preds, gts, ignores = [], [], []
    n_det = 0
    for name, entry in gt.images.items():
        words = doc["images"].get(name, {"words": {}})["words"]
        polys = [np.asarray(w["points"], np.float32) for w in words.values()]
        n_det += len(polys)
        preds.append(polys)
        gts.append(entry.polygons)
        ignores.append(entry.ignore)
    result = hmean_of(preds, gts, ignores)
    best = max(summary["epochs"], key=lambda e: e["hmean"])
    assert n_det > 0, "thresholds are low enough that an untrained model detects something"
    assert result["hmean"] == pytest.approx(best["hmean"], abs=1e-3)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "filename,polygons" and len(rows) == 1 + len(gt.images)


def _train_in_subprocess(tmp_path, *extra: str) -> dict:
    """Run ``adaptive-cache train`` in a fresh process (DDP spawns ranks); its summary."""
    env = {k: v for k, v in os.environ.items() if k != "ADAPTIVE_CACHE_RUN_ID"}
    proc = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", *_overrides(tmp_path, *extra)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.strip().splitlines()[-1].removeprefix("summary: "))
    return json.loads(path.read_text())


_DDP = ("trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu")


@pytest.mark.slow
def test_ddp_two_ranks_share_the_node_cache(tmp_path):
    summary = _train_in_subprocess(
        tmp_path, *_DDP, "data.num_workers=0", "data.synthetic.n_train=8"
    )
    second = summary["epochs"][1]["cache_by_split"]["train"]
    # Each rank sees a different half each epoch: only a shared cache hits everything.
    assert second["hit_ratio"] == 1.0
    # Held once per node: 8 train samples, not 16.
    assert second["by_tier"]["tensor"]["items"] == 8


@pytest.mark.slow
def test_ddp_validation_behind_the_device_tier(tmp_path):
    # Not a DataLoader, so Lightning injects no sampler: the datamodule gives each rank
    # its DistributedSampler (no shuffle); each rank holds its own half on its device.
    summary = _train_in_subprocess(
        tmp_path,
        *_DDP,
        "data.num_workers=0",
        "cache.gpu=on",
        "data.augment.on_device=true",
        "data.batch_size=2",
    )
    tier = summary["epochs"][1]["device_tier"]["val"]
    # 2 of the 4 receipts per rank: one batch (two batches without the sampler).
    assert (tier["hits"], tier["misses"], tier["items"]) == (1, 0, 1)
    assert 0.0 <= summary["epochs"][1]["hmean"] <= 1.0
