"""The engine: :class:`AdaptiveCache` and the parts it is made of.

``cache`` (the hot path and the wiring), ``ledger`` (held entries and bytes), ``costs``
(sizes and rebuild times), ``admission`` (budget, policy, tier modes), ``recovery``
(adopting and reconciling a store's entries), ``views`` (hits served in place).
"""

from adaptive_cache.engine.cache import AdaptiveCache, pid_namespace

__all__ = ["AdaptiveCache", "pid_namespace"]
