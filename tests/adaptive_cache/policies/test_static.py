"""StaticPolicy: arrival order, never evicts to admit."""

from __future__ import annotations

from adaptive_cache.policies import EntryInfo, StaticPolicy
from tests.adaptive_cache.policies.helpers import PolicyContract, RefEngine


class TestStatic(PolicyContract):
    name = "static"

    def test_fills_in_arrival_order_and_never_evicts_to_admit(self):
        engine = RefEngine(StaticPolicy(), 30)
        for key in ("aa", "bb", "cc"):
            assert engine.request(EntryInfo(key, "t", 10, 1.0))
        assert not engine.request(EntryInfo("dd", "t", 10, 99.0))
        assert set(engine.held) == {"aa", "bb", "cc"}

    def test_pressure_drops_newest_first(self):
        policy = StaticPolicy()
        engine = RefEngine(policy, 30)
        for key in ("aa", "bb", "cc"):
            engine.request(EntryInfo(key, "t", 10, 1.0))
        policy.access("cc")
        assert policy.victim() == "cc"
        engine.resize(10)
        assert set(engine.held) == {"aa"}
