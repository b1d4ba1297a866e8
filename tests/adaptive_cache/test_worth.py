"""WorthSketch: the knapsack threshold learned from a bounded sample."""

from __future__ import annotations

import random

import pytest

from adaptive_cache.worth import WorthSketch


def _true_threshold(items: list[tuple[float, int]], budget: int) -> float:
    total = 0
    for worth, nbytes in sorted(items, reverse=True):
        total += nbytes
        if total >= budget:
            return worth
    return 0.0


def test_exact_when_the_population_fits_in_the_sketch():
    sketch = WorthSketch(capacity=256)
    items = [(float(i), 10) for i in range(1, 101)]
    for i, (w, n) in enumerate(items):
        sketch.add(f"k{i}", w, n)
    assert sketch.population == 100
    assert sketch.threshold(200) == 81.0
    assert sketch.threshold(1000) == 0.0  # everything fits
    assert sketch.knapsack_value(200) == pytest.approx(sum(w * 10 for w in range(81, 101)))


def test_bounded_uniform_sample_estimates_population_and_threshold():
    rng = random.Random(3)
    items = [(rng.lognormvariate(0, 1), rng.randint(1000, 3000)) for _ in range(20_000)]
    sketch = WorthSketch(capacity=1024)
    for i, (w, n) in enumerate(items):
        sketch.add(f"key-{i}", w, n)
    assert len(sketch) == 1024
    assert sketch.population == pytest.approx(20_000, rel=0.1)
    budget = int(0.2 * sum(n for _, n in items))
    sketch.set_population(20_000)
    true = _true_threshold(items, budget)
    assert sketch.threshold(budget) == pytest.approx(true, rel=0.1)


def test_repeated_keys_update_in_place():
    sketch = WorthSketch(capacity=8)
    for epoch in range(5):
        for i in range(4):
            sketch.add(f"k{i}", float(epoch), 10)
    assert len(sketch) == 4 and sketch.population == 4
    assert sketch.threshold(10) == 4.0  # the latest measurements count


def test_too_few_samples_to_rank_gives_none():
    sketch = WorthSketch(min_samples=32)
    sketch.set_population(1000)
    for i in range(10):
        sketch.add(f"k{i}", 1.0, 10)
    assert sketch.threshold(100) is None
    assert sketch.threshold(10_000) == 0.0  # 1000 x 10 bytes fit anyway


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        WorthSketch(capacity=1)
    with pytest.raises(ValueError, match="population"):
        WorthSketch().set_population(-1)
