"""OffPolicy: caching off."""

from __future__ import annotations

from adaptive_cache.policies import EntryInfo, OffPolicy
from tests.adaptive_cache.policies.helpers import PolicyContract


class TestOff(PolicyContract):
    name = "off"

    def test_rejects_everything(self):
        policy = OffPolicy()
        assert policy.admit(EntryInfo("aa", "t", 1, 1e9), 10**9, 10**9) is None

    def test_adopted_entries_can_be_evicted(self):
        policy = OffPolicy()
        policy.insert(EntryInfo("aa", "t", 1, 1.0))
        assert policy.victim() == "aa"
        policy.remove("aa")
        assert policy.victim() is None
