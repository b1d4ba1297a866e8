"""The hit-rate and knapsack benchmarks: their bounds, a tiny real run, their targets."""

from __future__ import annotations

import itertools
import random
import uuid
from pathlib import Path

import pytest

from adaptive_cache.bench import (
    CacheRun,
    auto_vs_static,
    cache_targets,
    equal_blocks,
    knapsack_bound,
    knapsack_optimum,
    lru_hit_ratio,
    run_cache,
    unequal_blocks,
)


def test_knapsack_optimum_is_the_best_subset_and_below_the_fractional_bound():
    rng = random.Random(4)
    for _ in range(20):
        sizes = [4096 * rng.randint(1, 6) for _ in range(9)]
        costs = tuple(rng.uniform(0.001, 0.01) for _ in range(9))
        budget = 4096 * rng.randint(1, 20)
        brute = max(
            sum(costs[i] for i in subset)
            for k in range(10)
            for subset in itertools.combinations(range(9), k)
            if sum(sizes[i] for i in subset) <= budget
        )
        best = knapsack_optimum(costs, sizes, budget)
        assert best == pytest.approx(brute)
        assert best <= knapsack_bound(costs, sizes, budget) + 1e-12


def test_lru_hit_ratio_is_the_known_formula():
    assert lru_hit_ratio(1.0) == 1.0
    assert lru_hit_ratio(0.5) == pytest.approx(0.5 + 0.5 * -0.6931471805599453)


def _run(shm_dir: Path, workload: str, policy: str, f: float, blocks, workers: int = 0):
    run = CacheRun(
        workload, policy, f, workers, 3, blocks[0], blocks[1], 8, 0, str(shm_dir),
        f"hr-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    return run_cache(run)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_tiny_run_meets_the_engine_targets(shm_dir, workers):
    # Real runs (in this process): equal blocks at half the budget, unequal ones at 20%.
    equal = equal_blocks(40, 4_000, 0.0005)
    unequal = unequal_blocks(40, 0.0005, seed=0)
    results = [_run(shm_dir, "hit-rate", p, 0.5, equal, workers) for p in ("auto", "static", "lru")]
    if workers == 0:
        results += [_run(shm_dir, "knapsack", p, 0.2, unequal) for p in ("auto", "static")]
    for r in results:
        assert [e["epoch"] for e in r["epochs"]] == [0, 1, 2]
        assert all(0.0 <= e["hit_ratio"] <= 1.0 for e in r["epochs"])
    static = next(r for r in results if r["contender"] == "static")
    assert [e["hit_ratio"] for e in static["epochs"][1:]] == [0.5, 0.5]
    gaps = auto_vs_static(results)
    assert len(gaps) == (2 if workers else 4)
    checks = {name: met for name, _, met in cache_targets(results)}
    assert checks["every epoch >= 1: auto hit >= static - 1 point, saved >= static"], gaps
    assert checks["steady hit rate (last epoch; auto, static) >= f - 1 point"]


def test_targets_name_the_worst_epoch():
    def rec(workload, contender, hits, saved):
        epochs = [
            {"epoch": i, "hit_ratio": h, "saved_seconds": s}
            for i, (h, s) in enumerate(zip(hits, saved, strict=True))
        ]
        return {"workload": workload, "contender": contender, "budget_fraction": 0.5,
                "num_workers": 2, "epochs": epochs}  # fmt: skip

    results = [
        rec("hit-rate", "auto", [0.0, 0.0, 0.5], [0.0, 0.0, 0.05]),
        rec("hit-rate", "static", [0.0, 0.5, 0.5], [0.0, 0.05, 0.05]),
    ]
    (_, _, _), (name, shown, met) = cache_targets(results)
    assert name.startswith("every epoch >= 1") and met is False
    assert "worst hit -50.0 points (hit-rate f=0.5 w2 epoch 1)" in shown
