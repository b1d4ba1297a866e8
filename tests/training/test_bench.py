"""``adaptive-cache bench``: the output's shape (never its speed), memory sampling, report."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from training.bench import QUICK, WORKLOADS, run_bench
from training.bench.report import render, steady, targets
from training.config import load_config

# Smaller than --quick, so that the whole bench runs in well under a minute.
TINY = replace(
    QUICK,
    n=6,
    scale=0.3,
    image_size=96,
    batch_size=4,
    epochs=3,
    budgets=(1.0, 0.5),
    policy_budgets=(0.5,),
    hit_n=40,
    hit_nbytes=4_000,
    hit_cost_s=0.0005,
    hit_fractions=(0.5, 1.0),
    hit_workers=(0, 2),
    hit_epochs=3,
    knap_n=30,
    knap_fractions=(0.2,),
    knap_epochs=3,
    knap_cost_s=0.0005,
    train_n=4,
    train_val_n=2,
    train_batch=2,
    train_epochs=3,
    train_image_size=64,
    train_scale=0.3,
    precision_compare=False,
)
LOADER_CONTENDERS = {
    "none", "seed-dicts", "seed-dicts-persistent", "monai", "auto", "static", "lru", "ideal",
}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _numbers(obj):
    """Every int and float inside a JSON document."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


@pytest.mark.slow
def test_quick_bench_writes_every_workload_table_and_plot(tmp_path):
    config = load_config(["data.num_workers=2", "monitoring.enabled=false"])
    path = run_bench(config, tmp_path / "out", quick=True, sizes=TINY)

    doc = json.loads(path.read_text())
    assert set(doc) == {"machine", "results"}
    machine = doc["machine"]
    for key in ("cpu", "cores", "memory_bytes", "torch", "python", "gpu"):
        assert key in machine
    results = doc["results"]
    assert {r["workload"] for r in results} == set(WORKLOADS)
    for workload in ("loader-val", "loader-train"):
        rows = [r for r in results if r["workload"] == workload]
        assert {r["contender"] for r in rows} == LOADER_CONTENDERS
        budgets = {r["budget_fraction"] for r in rows if r["contender"] == "auto"}
        assert budgets == {1.0, 0.5}
        footprints = {r["footprint_bytes"] for r in rows}
        assert len(footprints) == 1 and footprints.pop() > 0
    assert {(r["contender"], r["num_workers"]) for r in results if r["workload"] == "hit-rate"} == {
        (p, w) for p in ("auto", "static", "lru") for w in (0, 2)
    }
    assert {r["contender"] for r in results if r["workload"] == "train"} == {"none", "auto"}

    for r in results:
        for key in ("workload", "contender", "budget_fraction", "epochs", "peak_memory_bytes",
                    "bytes_per_sample"):  # fmt: skip
            assert key in r, (r["workload"], r["contender"], key)
        if r.get("skipped"):
            continue
        assert len(r["epochs"]) >= 3
        assert r["peak_memory_bytes"] > 0
        for i, e in enumerate(r["epochs"]):
            assert e["epoch"] == i
            assert e["seconds"] > 0 and e["samples_per_second"] > 0
            assert e["hit_ratio"] is None or 0.0 <= e["hit_ratio"] <= 1.0
            if r["workload"].startswith("loader-"):
                assert e["cpu_seconds"] >= 0.0
        if r["contender"] in ("none", "ideal"):
            assert all(e["hit_ratio"] is None for e in r["epochs"])
    assert all(math.isfinite(x) for x in _numbers(doc))

    md = (tmp_path / "out" / "bench.md").read_text()
    for heading in ("## Targets", "## loader-val", "## loader-train", "## hit-rate", "## knapsack",
                    "## train"):  # fmt: skip
        assert heading in md
    assert "| contender | budget | epoch 0 s |" in md
    for name in ("loader-val", "loader-train", "hit-rate", "knapsack", "train"):
        png = tmp_path / "out" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, name


def test_unknown_workload_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown workload; expected one of loader-val"):
        run_bench(load_config([]), tmp_path, only=["loader-test"])
    assert not (tmp_path / "bench.json").exists()


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="multiple of train_batch"):
        replace(QUICK, train_n=5, train_batch=2)
    with pytest.raises(ValueError, match=r"budgets must lie in \(0, 1\]"):
        replace(QUICK, budgets=(0.0,))


def _epochs(*values, key="samples_per_second"):
    return [{"epoch": i, "seconds": 1.0, key: v, "hit_ratio": None} for i, v in enumerate(values)]


def test_steady_state_leaves_out_epoch_zero():
    assert steady(_epochs(1.0, 10.0, 30.0, 20.0), "samples_per_second") == (20.0, 10.0, 30.0)
    assert steady(_epochs(5.0), "samples_per_second") == (5.0, 5.0, 5.0)
    assert steady(_epochs(5.0, 6.0), "hit_ratio") is None


def test_targets_say_what_is_met_and_what_is_missed():
    def loader(workload, contender, fraction, sps):
        return {"workload": workload, "contender": contender, "budget_fraction": fraction,
                "epochs": _epochs(1.0, sps, sps)}  # fmt: skip

    results = [
        loader("loader-val", "none", None, 10.0),
        loader("loader-val", "auto", 1.0, 150.0),
        loader("loader-val", "ideal", None, 300.0),
        {
            "workload": "hit-rate",
            "contender": "auto",
            "budget_fraction": 0.5,
            "num_workers": 2,
            "n_samples": 200,
            "expected_hit_ratio": 0.5,
            "epochs": [{"hit_ratio": 0.0}, {"hit_ratio": 0.3}, {"hit_ratio": 0.495}],
        },
    ]
    checks = {name: (shown, met) for name, shown, met in targets(results)}
    assert checks["val, full budget, epochs 1+: >= 10x uncached"] == ("15.00x", True)
    assert checks["val, full budget, epochs 1+: >= 0.8x ideal"] == ("0.50x", False)
    assert checks["train split, full budget, epochs 1+: >= 2x uncached"] == ("not run", None)
    shown, met = checks["steady hit rate (last epoch; auto, static) >= f - 1 point"]
    assert met is True and "-0.5 points" in shown
    md = render({"machine": {"cpu": "x", "cores": 2, "usable_cores": 2, "memory_bytes": 1,
                             "torch": "t", "pytorch_lightning": "l", "monai": None,
                             "python": "3", "gpu": None}, "results": results}, "cmd")  # fmt: skip
    assert "| val, full budget, epochs 1+: >= 0.8x ideal | 0.50x | **no** |" in md
