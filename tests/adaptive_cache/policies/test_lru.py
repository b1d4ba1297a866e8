"""LruPolicy: least recently used first."""

from __future__ import annotations

from adaptive_cache.policies import EntryInfo, LruPolicy
from tests.adaptive_cache.policies.helpers import PolicyContract, RefEngine


class TestLru(PolicyContract):
    name = "lru"

    def test_evicts_least_recently_used(self):
        policy = LruPolicy()
        engine = RefEngine(policy, 30)
        for key in ("aa", "bb", "cc"):
            engine.request(EntryInfo(key, "t", 10, 1.0))
        engine.request(EntryInfo("aa", "t", 10, 1.0))  # hit refreshes aa
        assert policy.victim() == "bb"
        assert policy.admit(EntryInfo("dd", "t", 10, 0.0), 0, 30) == ["bb"]
        assert policy.admit(EntryInfo("dd", "t", 20, 0.0), 0, 30) == ["bb", "cc"]
        assert policy.admit(EntryInfo("dd", "t", 5, 0.0), 5, 30) == []
        assert policy.admit(EntryInfo("dd", "t", 31, 0.0), 0, 30) is None
