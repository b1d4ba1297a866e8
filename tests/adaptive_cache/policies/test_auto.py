"""AutoPolicy: worth-ordered eviction, learned thresholds, and hit-rate simulations."""

from __future__ import annotations

import math
import random

import pytest

from adaptive_cache.policies import AutoPolicy, EntryInfo, make_policy
from tests.adaptive_cache.policies.helpers import (
    PolicyContract,
    RefEngine,
    knapsack_bound,
    run_epochs,
    unequal,
)


class TestAuto(PolicyContract):
    name = "auto"

    def _full(
        self, worths: list[float], margin: float = 1.25, population: int | None = None
    ) -> tuple[AutoPolicy, RefEngine]:
        policy = AutoPolicy(replace_margin=margin)
        policy.set_population(population or len(worths))
        engine = RefEngine(policy, 10 * len(worths))
        for i, w in enumerate(worths):
            assert engine.request(EntryInfo(f"{i:02x}", "t", 10, w * 10))
        return policy, engine

    def test_victim_is_lowest_worth(self):
        policy, engine = self._full([5.0, 1.0, 3.0, 2.0])
        order = []
        while engine.held:
            order.append(policy.victim())
            engine.evict_one()
        assert order == ["01", "03", "02", "00"]

    def test_free_space_takes_anything_that_fits_from_the_first_candidate(self):
        policy = AutoPolicy()
        policy.set_population(1000)  # 1 of 1000 seen: nothing can be ranked yet
        assert policy.admit(EntryInfo("aa", "t", 10, 1e-9), 100, 100) == []
        assert policy.admit(EntryInfo("aa", "t", 10, 1e-9), 5, 100) is None  # full
        assert policy.admit(EntryInfo("aa", "t", 101, 9.0), 200, 100) is None  # never fits

    def test_while_w_star_is_unknown_only_the_margin_replaces(self):
        # Few of a large population seen: no knapsack threshold yet.
        policy, _ = self._full([4.0, 2.0, 3.0], population=1000)
        assert policy.sketch.threshold(30) is None
        assert policy.admit(EntryInfo("ee", "t", 10, 2.4 * 10), 0, 30) is None  # 1.2x
        assert policy.admit(EntryInfo("ee", "t", 10, 2.6 * 10), 0, 30) == ["01"]  # 1.3x
        # Needing two victims, the candidate must beat the better of them by the margin.
        assert policy.admit(EntryInfo("ee", "t", 20, 3.6 * 20), 0, 30) is None
        assert policy.admit(EntryInfo("ee", "t", 20, 3.8 * 20), 0, 30) == ["01", "02"]

    def test_inside_the_knapsack_displaces_outside_it_without_the_margin(self):
        policy = AutoPolicy(replace_margin=2.0)
        policy.set_population(100)
        for i in range(1, 101):  # worth i / 10 per byte
            policy.observe(EntryInfo(f"c{i:03d}", "t", 10, float(i)))
        # budget 200 = 20 entries: the best 20 have worth 8.1..10.0 per byte (w* = 8.1)
        assert policy.sketch.threshold(200) == pytest.approx(8.1)
        engine = RefEngine(policy, 200)
        for i in range(61, 81):  # arrival order fills it with the 20 just below w*
            assert engine.request(EntryInfo(f"c{i:03d}", "t", 10, float(i)))
        # 8.1 is inside, 6.1 outside: replaced although 8.1 < 2 x 6.1.
        assert policy.admit(EntryInfo("c081", "t", 10, 81.0), 0, 200) == ["c061"]
        assert policy.admit(EntryInfo("c080", "t", 10, 80.0), 0, 200) is None  # outside
        for i in range(81, 101):
            assert engine.request(EntryInfo(f"c{i:03d}", "t", 10, float(i)))
        assert sorted(engine.held) == [f"c{i:03d}" for i in range(81, 101)]
        assert engine.evictions == 20

    def test_equal_worth_never_replaces(self):
        policy, _ = self._full([1.0] * 5)
        assert policy.admit(EntryInfo("ee", "t", 10, 10.0), 0, 50) is None

    def test_only_entries_read_this_epoch_are_displaced(self):
        # Under shuffled epochs an entry not yet read this epoch comes back later in it:
        # displacing it would cost a hit that `static` keeps.
        policy, engine = self._full([1.0, 2.0, 3.0], population=1000)
        policy.start_epoch()
        big = EntryInfo("ee", "t", 10, 100.0)
        assert policy.admit(big, 0, 30) is None  # nothing read yet this epoch
        engine.request(EntryInfo("02", "t", 10, 30.0))  # a hit reads 02 (worth 3)
        assert policy.admit(big, 0, 30) == ["02"]  # the only one read: displaced first
        assert policy.victim() == "00"  # a shrink still takes the lowest worth
        assert engine.request(big)
        assert "02" not in engine.held
        assert policy.admit(EntryInfo("ff", "t", 20, 2000.0), 0, 30) is None  # 01, 00 unread
        engine.request(EntryInfo("00", "t", 10, 10.0))
        assert policy.admit(EntryInfo("ff", "t", 10, 2000.0), 0, 30) == ["00"]

    def test_tolerance_is_the_measurement_noise(self):
        exact = AutoPolicy()
        noisy = AutoPolicy(replace_margin=1.5)
        rng = random.Random(5)
        for _ in range(3):
            for i in range(50):
                exact.observe(EntryInfo(f"{i:02x}", "t", 10, 1.0))
                noisy.observe(EntryInfo(f"{i:02x}", "t", 10, rng.uniform(0.9, 1.1)))
        assert exact.tolerance == 1.0  # repeats that agree: no noise
        # Uniform +-10%: the relative change between two draws has an RMS near 0.08.
        assert 1.08 < noisy.tolerance < 1.3
        capped = AutoPolicy(replace_margin=1.05)
        for r in range(20):
            capped.observe(EntryInfo("aa", "t", 10, 1.0 if r % 2 else 2.0))
        assert capped.tolerance == 1.05

    def test_unknown_margin_is_rejected(self):
        with pytest.raises(ValueError, match="replace_margin"):
            make_policy("auto", replace_margin=0.9)


@pytest.mark.parametrize("f", [0.2, 0.5])
def test_shuffled_epochs_equal_entries_hit_rates(f):
    entries = [EntryInfo(f"{i:04x}", "t", 1000, 0.01) for i in range(1000)]
    budget = int(f * 1000 * 1000)
    for name in ("auto", "static"):
        runs = run_epochs(make_policy(name), entries, budget)
        steady = [hit for hit, _, _ in runs[1:]]
        assert all(abs(hit - f) <= 0.01 for hit in steady), (name, steady)
        assert sum(ev for _, _, ev in runs[1:]) == 0, f"{name} churned"
    lru = [hit for hit, _, _ in run_epochs(make_policy("lru"), entries, budget)[1:]]
    expected = f + (1 - f) * math.log(1 - f)  # 0.021 at f=0.2, 0.153 at f=0.5
    assert abs(sum(lru) / len(lru) - expected) <= 0.015, lru


@pytest.mark.parametrize("f", [0.2, 0.5])
def test_noisy_measurements_fill_the_budget_in_the_first_epoch_and_never_churn_after(f):
    # Equal entries whose timings vary by +-15% per measurement (what a loaded machine
    # gives): a threshold on noisy worths would turn away what belongs in the cache.
    entries = [EntryInfo(f"{i:04x}", "t", 1000, 0.01) for i in range(1000)]
    budget = int(f * 1000 * 1000)
    runs = run_epochs(make_policy("auto"), entries, budget, noise=0.15)
    steady = [hit for hit, _, _ in runs[1:]]
    assert all(hit >= f - 0.01 for hit in steady), steady
    assert sum(ev for _, _, ev in runs[1:]) == 0, "auto churned on noise"


@pytest.mark.parametrize(("kind", "f"), [("lognormal", 0.1), ("lognormal", 0.3), ("bimodal", 0.1)])
def test_unequal_entries_reach_the_knapsack_bound_by_the_first_epoch(kind, f):
    entries = unequal(kind)
    budget = int(f * sum(e.nbytes for e in entries))
    bound = knapsack_bound(entries, budget)
    auto = run_epochs(make_policy("auto"), entries, budget)
    assert all(s >= 0.99 * bound for _, s, _ in auto[1:]), [round(s / bound, 4) for _, s, _ in auto]
    assert sum(ev for _, _, ev in auto[2:]) <= 1, "auto still replaces entries"
    static = run_epochs(make_policy("static"), entries, budget)
    assert static[-1][1] < 0.8 * bound  # filling in arrival order is far from it
    noisy = run_epochs(make_policy("auto"), entries, budget, noise=0.1)
    assert noisy[-1][1] >= 0.98 * bound, [round(s / bound, 4) for _, s, _ in noisy]


@pytest.mark.parametrize("noise", [0.0, 0.15])
@pytest.mark.parametrize(("kind", "f"), [("equal", 0.2), ("equal", 0.5), ("lognormal", 0.1)])
def test_auto_is_never_worse_than_static_in_any_epoch(kind, f, noise):
    if kind == "equal":
        entries = [EntryInfo(f"{i:04x}", "t", 1000, 0.01) for i in range(1000)]
    else:
        entries = unequal(kind)
    budget = int(f * sum(e.nbytes for e in entries))
    auto = run_epochs(make_policy("auto"), entries, budget, noise=noise)
    static = run_epochs(make_policy("static"), entries, budget, noise=noise)
    for (a_hit, a_saved, _), (s_hit, s_saved, _) in zip(auto[1:], static[1:], strict=True):
        assert a_hit >= s_hit - 0.01 and a_saved >= s_saved - 1e-9, (auto, static)
