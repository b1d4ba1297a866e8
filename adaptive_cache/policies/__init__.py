"""Admission and eviction policies; :func:`make_policy` turns a config name into one.

``auto`` (the default: seconds saved per byte, learned from measurements), ``static``
(fill in arrival order, never evict to admit), ``lru`` and ``off``. Any
:class:`Policy` subclass can be given instead of a name (see
:mod:`adaptive_cache.policies.base` for the contract).
"""

from __future__ import annotations

from adaptive_cache.policies.auto import AutoPolicy
from adaptive_cache.policies.base import EntryInfo, Key, Policy
from adaptive_cache.policies.lru import LruPolicy
from adaptive_cache.policies.off import OffPolicy
from adaptive_cache.policies.static import StaticPolicy

__all__ = [
    "POLICIES",
    "AutoPolicy",
    "EntryInfo",
    "Key",
    "LruPolicy",
    "OffPolicy",
    "Policy",
    "StaticPolicy",
    "check_name",
    "make_policy",
]

POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (AutoPolicy, LruPolicy, OffPolicy, StaticPolicy)
}
"""Policy names a config may give, and their classes."""


def check_name(name: str) -> str:
    """Return ``name`` if it names a policy.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    return name


def make_policy(name: str, *, replace_margin: float = 1.25) -> Policy:
    """A new policy called ``name`` (``auto``, ``lru``, ``off``, ``static``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    cls = POLICIES[check_name(name)]
    if cls is AutoPolicy:
        return AutoPolicy(replace_margin=replace_margin)
    return cls()
