"""The policy contract: membership kept by the base, budgets held under any sequence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_cache.policies import POLICIES, EntryInfo, Policy, StaticPolicy, make_policy
from tests.adaptive_cache.policies.helpers import RefEngine

# A request carries a cost factor: the engine re-measures rebuild time, so a key's
# worth changes over time (and that is what makes auto replace entries).
_req = st.tuples(st.just("req"), st.integers(0, 24), st.sampled_from([1.0, 1.0, 0.25, 4.0]))
_op = st.one_of(  # mostly requests: the cache must fill before eviction order matters
    *[_req] * 8,
    st.tuples(st.just("resize"), st.integers(0, 400), st.just(1.0)),
    st.tuples(st.just("evict"), st.just(0), st.just(1.0)),
    st.tuples(st.just("epoch"), st.just(0), st.just(1.0)),
)


@pytest.mark.parametrize("name", sorted(POLICIES))
@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=25, max_size=25),
    costs=st.lists(st.floats(0.0, 1.0), min_size=25, max_size=25),
    ops=st.lists(_op, min_size=20, max_size=200),
)
def test_budget_and_accounting_hold_under_any_sequence(name, sizes, costs, ops):
    policy = make_policy(name)
    policy.set_population(25)
    infos = [EntryInfo(f"{i:02x}", "t", sizes[i], costs[i]) for i in range(25)]
    for info in infos:  # as in a first epoch: auto learns its threshold
        policy.observe(info)
    engine = RefEngine(policy, 150)
    for op, arg, factor in ops:
        if op == "req":
            engine.request(EntryInfo(infos[arg].key, "t", sizes[arg], costs[arg] * factor))
        elif op == "resize":
            engine.resize(arg)
        elif op == "epoch":
            policy.start_epoch()
        else:
            engine.evict_one()
        engine.check()


class _Newest(Policy):
    """The smallest policy: admits what fits, evicts nothing to admit."""

    name = "newest"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def admit(self, cand, free_bytes, budget_bytes):
        return [] if cand.nbytes <= free_bytes else None

    def victim(self):
        return next(reversed(list(self)), None)

    def on_insert(self, info):
        self.calls.append(f"insert {info.key}")

    def on_remove(self, info):
        self.calls.append(f"remove {info.key}")

    def on_access(self, info):
        self.calls.append(f"access {info.key}")

    def on_epoch(self):
        self.calls.append("epoch")


def test_the_base_keeps_membership_and_calls_the_hooks():
    policy = _Newest()
    policy.insert(EntryInfo("aa", "t", 10, 1.0))
    policy.insert(EntryInfo("bb", "t", 5, 1.0))
    assert len(policy) == 2 and "aa" in policy and policy.held_bytes == 15
    assert [k for k, _ in policy.entries()] == ["aa", "bb"]
    policy.insert(EntryInfo("aa", "t", 7, 1.0))  # re-inserting replaces
    assert policy.held_bytes == 12 and list(policy) == ["bb", "aa"]
    policy.access("bb")
    policy.access("zz")  # not held: ignored
    policy.start_epoch()
    assert policy.remove("bb").nbytes == 5 and policy.remove("bb") is None
    assert policy.held_bytes == 7 and policy.entry("aa").nbytes == 7
    assert policy.calls == [
        "insert aa",
        "insert bb",
        "remove aa",
        "insert aa",
        "access bb",
        "epoch",
        "remove bb",
    ]


def test_a_policy_serves_one_cache():
    policy = StaticPolicy()

    class Owner:
        pass

    a, b = Owner(), Owner()
    policy.bind(a)
    policy.bind(a)  # the same owner again is fine
    with pytest.raises(ValueError, match="own policy instance"):
        policy.bind(b)


def test_make_policy_lists_known_names():
    assert [make_policy(n).name for n in ("auto", "lru", "off", "static")] == [
        "auto",
        "lru",
        "off",
        "static",
    ]
    with pytest.raises(ValueError, match="auto, lru, off, static"):
        make_policy("fifo")


def test_worth_is_seconds_per_byte():
    assert EntryInfo("aa", "t", 4, 2.0).worth == 0.5
    assert EntryInfo("aa", "t", 0, 2.0).worth == 2.0
