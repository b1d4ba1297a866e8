"""LocalStore: entries in a dict of this process (not shared, not persistent)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from adaptive_cache.stores.base import Store
from adaptive_cache.stores.keys import check_key


@dataclass(frozen=True)
class LocalHandle:
    """Opens a new, empty :class:`LocalStore`: a local store is private to its process."""

    def open(self) -> LocalStore:
        return LocalStore()


class LocalStore(Store):
    """In-process dict of bytes; the fastest store, seen by this process only."""

    name = "local"
    shared = False
    persistent = False

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def put(self, key: str, data: bytes | memoryview) -> int:
        # Copy: the caller may reuse a mutable buffer behind a memoryview.
        value = bytes(data)
        self._data[check_key(key)] = value
        return len(value)

    def delete(self, key: str) -> int:
        value = self._data.pop(key, None)
        return 0 if value is None else len(value)

    def contains(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    def entries(self) -> Iterator[tuple[str, int]]:
        return iter([(k, len(v)) for k, v in self._data.items()])

    def clear(self) -> None:
        self._data.clear()

    def close(self) -> None:
        self._data.clear()

    def handle(self) -> LocalHandle:
        return LocalHandle()
