"""The policy contract: a policy decides order, the engine owns the bytes.

As in cachetools, the membership bookkeeping (which entries are held, their sizes, the
bytes they take) is done once, here; a policy only tracks the order it needs and
answers two questions: "admit this candidate, evicting which keys first?" and "which
key goes next when the budget shrinks?".

The engine's calling protocol, for every computed value it could keep:

1. ``observe(cand)`` (a candidate that bypasses ``admit``, such as a forced tier);
2. ``keys = admit(cand, free_bytes, budget_bytes)``;
3. if ``keys`` is not ``None``: ``remove(key)`` for each key, store the value, then
   ``insert(cand)``.

A hit calls ``access(key)``; any other removal (a shrink via ``victim()``, pressure,
an invalid entry) calls ``remove(key)``; the start of each pass over the data calls
``start_epoch()``. ``admit`` must not change what is held, so a store failure between
``admit`` and ``insert`` needs no undo, and ``admit`` may be asked as a pre-check
("would you keep this tier?") before the value is computed.

A policy subclasses :class:`Policy`, implements :meth:`Policy.admit` and
:meth:`Policy.victim`, and overrides the ``on_*`` hooks it needs to keep its order.

Example:
    >>> class Fifo(Policy):
    ...     name = "fifo"
    ...     def admit(self, cand, free_bytes, budget_bytes):
    ...         if cand.nbytes > budget_bytes:
    ...             return None
    ...         out, freed = [], 0
    ...         for key, info in self.entries():  # oldest first
    ...             if free_bytes + freed >= cand.nbytes:
    ...                 break
    ...             out.append(key)
    ...             freed += info.nbytes
    ...         return out
    ...     def victim(self):
    ...         return next(iter(self), None)
    >>> cache = AdaptiveCache(pipeline, CacheConfig(policy=Fifo()))  # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

Key = Hashable
"""What a policy knows an entry by (the engine's :class:`~adaptive_cache.keys.EntryKey`)."""


@dataclass
class EntryInfo:
    """What a policy knows about an entry or a candidate.

    Attributes:
        key: the cache key.
        tier: the tier it belongs to (``image``, ``maps``, ``tensor``, ...).
        nbytes: bytes it takes in the store.
        seconds: measured seconds of rebuilding it that one access saves.
    """

    key: Key
    tier: str
    nbytes: int
    seconds: float

    @property
    def worth(self) -> float:
        """Seconds saved per byte held."""
        return self.seconds / max(self.nbytes, 1)


class Policy(ABC):
    """Orders entries for admission and eviction; see the module docstring.

    Iterating a policy gives the held keys in insertion order; ``key in policy``,
    ``len(policy)`` and :attr:`held_bytes` read the membership the base keeps.
    """

    name: ClassVar[str] = "custom"

    def __init__(self) -> None:
        self._entries: dict[Key, EntryInfo] = {}
        self._bytes = 0
        self._owner: weakref.ref[Any] | None = None

    def bind(self, owner: object) -> None:
        """Serve ``owner`` (a cache); a policy holds one cache's membership.

        Raises:
            ValueError: the policy already serves another owner.
        """
        current = self._owner() if self._owner is not None else None
        if current is not None and current is not owner:
            raise ValueError(
                f"this {type(self).__name__} already serves another cache; give each cache "
                "its own policy instance (or a policy name)"
            )
        self._owner = weakref.ref(owner)

    # Membership, kept here for every policy (the engine calls these).

    def insert(self, info: EntryInfo) -> None:
        """``info`` is now held (a held key is replaced)."""
        if info.key in self._entries:
            self.remove(info.key)
        self._entries[info.key] = info
        self._bytes += info.nbytes
        self.on_insert(info)

    def remove(self, key: Key) -> EntryInfo | None:
        """``key`` is no longer held (whatever the reason); returns what it was."""
        info = self._entries.pop(key, None)
        if info is not None:
            self._bytes -= info.nbytes
            self.on_remove(info)
        return info

    def access(self, key: Key) -> None:
        """A held entry was read (a hit); unknown keys are ignored."""
        info = self._entries.get(key)
        if info is not None:
            self.on_access(info)

    def start_epoch(self) -> None:
        """A new pass over the data begins."""
        self.on_epoch()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def entries(self) -> Iterator[tuple[Key, EntryInfo]]:
        """``(key, info)`` of every held entry, oldest first."""
        return iter(self._entries.items())

    def entry(self, key: Key) -> EntryInfo | None:
        """What is held under ``key``, if anything."""
        return self._entries.get(key)

    @property
    def held_bytes(self) -> int:
        """Bytes of every held entry."""
        return self._bytes

    # Decisions: what a policy implements.

    @abstractmethod
    def admit(self, cand: EntryInfo, free_bytes: int, budget_bytes: int) -> list[Key] | None:
        """Decide on a candidate (not held); must not change what is held.

        Args:
            cand: the candidate.
            free_bytes: ``budget_bytes`` minus bytes held (negative after a shrink).
            budget_bytes: what the cache may hold now.

        Returns:
            ``None`` to reject; else the held keys to evict first (possibly ``[]``) so
            that the candidate fits.
        """

    @abstractmethod
    def victim(self) -> Key | None:
        """The next key to evict when the budget shrinks or under pressure (None: empty)."""

    # Hooks: no-ops unless a policy needs them to keep its order.

    def on_insert(self, info: EntryInfo) -> None:  # noqa: B027
        """Called after ``info`` joined the held entries."""

    def on_remove(self, info: EntryInfo) -> None:  # noqa: B027
        """Called after ``info`` left the held entries."""

    def on_access(self, info: EntryInfo) -> None:  # noqa: B027
        """Called when a held entry was read."""

    def on_epoch(self) -> None:  # noqa: B027
        """Called at the start of every pass over the data."""

    def observe(self, cand: EntryInfo) -> None:  # noqa: B027
        """Every candidate seen, admitted or not (lets a policy learn)."""

    def set_population(self, n_candidates: int) -> None:  # noqa: B027
        """Expected distinct candidates per epoch (the dataset size)."""
