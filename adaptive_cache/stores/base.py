"""The store contract: where cache entries live (bytes under file-name-safe keys).

Stores hold bytes only; budgets, accounting and decisions belong to the engine. Any
failure (disk full, server unreachable, ...) is a :class:`StoreError`, which the
engine turns into a miss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Protocol


class StoreError(OSError):
    """A store could not do what was asked; the message names the store and the place."""


class View:
    """One entry as this process sees it: a read-only buffer.

    A store that maps its entries (:class:`~adaptive_cache.stores.shm.ShmStore`) hands
    out the same ``View`` object until the entry changes or the mapping is dropped;
    ``ident`` says which version of the entry it shows (for files: inode, mtime,
    size). A caller may remember what it derives from a view per view object (weakly:
    views support weak references), so that it lives exactly as long as the mapping.
    """

    __slots__ = ("__weakref__", "buffer", "ident")

    def __init__(self, buffer: bytes | bytearray | memoryview, ident: object = None) -> None:
        self.buffer = buffer
        self.ident = ident


class StoreHandle(Protocol):
    """A small picklable reference to a store, to open it in another process."""

    def open(self) -> Store:
        """The store, as seen from this process (never its owner)."""
        ...


class Store(ABC):
    """Bytes under keys (safe file names such as ``tensor-<hex digest>``; see
    :func:`~adaptive_cache.stores.keys.check_key`).

    Attributes:
        name: ``local``, ``shm``, ``disk`` or ``redis``.
        shared: other processes of the node (DataLoader workers, DDP ranks) see entries.
        persistent: entries survive the process (adopt them with :meth:`entries`).
        maps: :meth:`view` maps entries and keeps the mapping (a view is then a
            lookup, not a copy).
    """

    name: str
    shared: bool
    persistent: bool
    maps: bool = False

    @abstractmethod
    def get(self, key: str) -> bytes | bytearray | memoryview | None:
        """The bytes stored under ``key``; ``None`` when absent.

        Raises:
            StoreError: the store failed (not: the key is absent).
        """

    def view(self, key: str) -> View | None:
        """The entry under ``key`` as a :class:`View`; ``None`` when absent.

        The default reads a fresh copy (:meth:`get`) into a new view each time; stores
        that can map entries (``maps``) return the same read-only view while the entry
        is unchanged, which stays valid after the entry is deleted (the pages are
        freed when the last reference to its buffer is dropped).

        Raises:
            StoreError: the store failed (not: the key is absent).
        """
        data = self.get(key)
        return None if data is None else View(data)

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> int:
        """Store ``data`` under ``key`` (replacing any earlier value) as one unit.

        Returns:
            The bytes the entry takes in the store (what :meth:`delete` later frees).

        Raises:
            StoreError: nothing was stored (no partial entry is left behind).
        """

    @abstractmethod
    def delete(self, key: str) -> int:
        """Remove ``key``; returns the bytes freed (0 if it was absent)."""

    @abstractmethod
    def contains(self, key: str) -> bool:
        """Whether ``key`` is stored."""

    @abstractmethod
    def keys(self) -> Iterator[str]:
        """Every stored key (in no particular order)."""

    @abstractmethod
    def entries(self) -> Iterator[tuple[str, int]]:
        """``(key, nbytes)`` of every entry, for adopting a persistent store on restart."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every entry."""

    def space_bytes(self) -> int | None:
        """Bytes the store can still take (its file system's free space less a reserve).

        ``None`` when the store has no limit of its own to report (memory stores are
        bounded by the memory budget; a Redis server by its own ``maxmemory``).
        """
        return None

    def recover(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Try the backing service again at the next call (after an outage); no-op here."""

    @abstractmethod
    def close(self) -> None:
        """Release resources; a node-shared store is removed by its owner."""

    @abstractmethod
    def handle(self) -> StoreHandle:
        """A picklable handle: ``handle.open()`` gives this store as another process
        (a DataLoader worker) sees it. The one way a store reaches a worker: a private
        store's handle opens an empty store there (lookups miss, and the worker hands
        what it computes back to the owner)."""

    def sweep(self) -> int:
        """Remove leftovers of writers that died mid-write; returns how many.

        Called by the owner after an epoch with workers. Default: nothing to sweep.
        """
        return 0

    def prune_views(self) -> int:
        """Drop kept views of entries that changed or vanished; returns how many.

        Called by the owner once an epoch. Default: the store keeps no views.
        """
        return 0
