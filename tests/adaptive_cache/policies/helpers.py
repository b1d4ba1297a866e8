"""A reference engine and the contract suite every policy passes.

The tests own the bytes through a small reference engine, as the real engine does: the
policy only answers admit/victim and hears about inserts, accesses, removals and epochs.
"""

from __future__ import annotations

import random

from adaptive_cache.policies import EntryInfo, Policy, make_policy


class RefEngine:
    """Owns bytes and accounting; checks every answer the policy gives."""

    def __init__(self, policy: Policy, budget: int) -> None:
        self.policy = policy
        self.budget = budget
        self.held: dict[str, EntryInfo] = {}
        self.used = 0
        self.evictions = 0

    def _remove(self, key: str) -> None:
        assert key in self.held, f"policy named {key!r}, which is not held"
        self.used -= self.held.pop(key).nbytes
        self.policy.remove(key)
        self.evictions += 1

    def request(self, info: EntryInfo) -> bool:
        """One access; returns whether it hit."""
        if info.key in self.held:
            self.policy.access(info.key)
            return True
        self.policy.observe(info)
        keys = self.policy.admit(info, self.budget - self.used, self.budget)
        if keys is None:
            return False
        assert len(set(keys)) == len(keys), f"duplicate victims {keys}"
        assert info.key not in keys
        for key in keys:
            self._remove(key)
        assert self.used + info.nbytes <= self.budget, "admitted beyond the budget"
        self.held[info.key] = info
        self.used += info.nbytes
        self.policy.insert(info)
        return True

    def resize(self, budget: int) -> None:
        self.budget = budget
        while self.used > self.budget:
            key = self.policy.victim()
            assert key is not None, "victim() is None while entries are held"
            self._remove(key)

    def evict_one(self) -> None:
        key = self.policy.victim()
        if not self.held:
            assert key is None
        else:
            self._remove(key)

    def check(self) -> None:
        assert self.used == sum(i.nbytes for i in self.held.values())
        assert self.used <= self.budget
        assert self.policy.held_bytes == self.used and len(self.policy) == len(self.held)
        if self.held:
            assert self.policy.victim() in self.held


class PolicyContract:
    """Checks every policy passes (the property test in test_base covers random sequences)."""

    name: str

    def make(self) -> Policy:
        return make_policy(self.name)

    def test_rejects_what_can_never_fit(self):
        engine = RefEngine(self.make(), 10)
        assert not engine.request(EntryInfo("aa", "t", 11, 1.0))
        assert engine.used == 0

    def test_victim_is_none_when_empty(self):
        assert self.make().victim() is None

    def test_admit_changes_nothing_held(self):
        policy = self.make()
        engine = RefEngine(policy, 100)
        for i in range(10):
            engine.request(EntryInfo(f"{i:02x}", "t", 10, 1.0 + i))
        before = (policy.victim(), list(policy), policy.held_bytes)
        policy.admit(EntryInfo("ff", "t", 50, 100.0), 100 - engine.used, 100)
        assert (policy.victim(), list(policy), policy.held_bytes) == before


def run_epochs(
    policy: Policy, entries: list[EntryInfo], budget: int, epochs: int = 6, noise: float = 0.0
) -> list[tuple[float, float, int]]:
    """Shuffled epochs; ``(hit rate, seconds saved, evictions)`` per epoch.

    With ``noise``, each miss measures its cost off by up to that share.
    """
    rng = random.Random(0)
    engine = RefEngine(policy, budget)
    policy.set_population(len(entries))
    order = list(entries)
    out = []
    for _ in range(epochs):
        policy.start_epoch()
        rng.shuffle(order)
        evictions, hits, saved = engine.evictions, 0, 0.0
        for info in order:
            was_held = info.key in engine.held
            if noise and not was_held:
                measured = info.seconds * rng.uniform(1 - noise, 1 + noise)
                info = EntryInfo(info.key, info.tier, info.nbytes, measured)
            engine.request(info)
            if was_held:
                hits += 1
                saved += info.seconds
        out.append((hits / len(entries), saved, engine.evictions - evictions))
    return out


def knapsack_bound(entries: list[EntryInfo], budget: int) -> float:
    """Most seconds per epoch ``budget`` bytes can save (fractional knapsack)."""
    left, value = float(budget), 0.0
    for e in sorted(entries, key=lambda e: e.worth, reverse=True):
        take = min(e.nbytes, left)
        value += e.seconds * take / e.nbytes
        left -= take
        if left <= 0:
            break
    return value


def unequal(kind: str, n: int = 1000, seed: int = 1) -> list[EntryInfo]:
    """Entries of unequal sizes and costs: ``lognormal`` or ``bimodal``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if kind == "lognormal":
            nbytes = int(2e6 * rng.lognormvariate(0, 0.7))
            seconds = 0.01 * rng.lognormvariate(0, 0.7)
        else:  # two sizes, two costs, 10% spread within each class
            nbytes = rng.choice([1_000_000, 3_000_000])
            seconds = rng.choice([0.005, 0.02]) * rng.uniform(0.9, 1.1)
        out.append(EntryInfo(f"{i:04x}", "t", nbytes, seconds))
    return out
