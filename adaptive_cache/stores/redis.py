"""RedisStore: entries in a Redis server, shared across nodes.

Keys are ``adaptive-cache:{namespace}:{key}``; values are the raw entry bytes (never
pickle). ``redis://`` and ``rediss://`` (TLS) URLs are accepted; with hiredis installed
redis-py parses replies in C (a 1.2 MB GET costs about half as much). Every Redis
failure becomes a :class:`~adaptive_cache.stores.base.StoreError` naming the URL with
its password masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from adaptive_cache.stores.base import Store, StoreError
from adaptive_cache.stores.keys import check_key, check_namespace

T = TypeVar("T")
_BATCH = 512
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class RedisHandle:
    """Connects to the same server and namespace from another process."""

    url: str
    namespace: str
    timeout_s: float

    def open(self) -> RedisStore:
        return RedisStore(self.url, self.namespace, timeout_s=self.timeout_s)


class RedisStore(Store):
    """Store on a Redis server.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://...``.
        namespace: key prefix part; stores with the same one share entries.
        timeout_s: connect and socket timeout.

    Raises:
        StoreError: the server cannot be reached (checked with a PING).
    """

    name = "redis"
    shared = True
    persistent = True

    def __init__(self, url: str, namespace: str, *, timeout_s: float = 2.0) -> None:
        self.url = url
        self.namespace = check_namespace(namespace)
        self.timeout_s = timeout_s
        self.prefix = f"adaptive-cache:{namespace}:"
        self._match = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "*"
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        except ValueError as exc:
            raise ValueError(f"redis store: bad redis_url {safe_url(url)!r}: {exc}") from None
        self._call(self._client.ping)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise StoreError(f"redis store {safe_url(self.url)}: {exc}") from exc

    def _scan(self) -> Iterator[bytes]:
        # SCAN may return a key twice; the set keeps each once.
        seen = set()
        for raw in self._call(lambda: list(self._client.scan_iter(self._match, count=1000))):
            if raw not in seen:
                seen.add(raw)
                yield raw

    def get(self, key: str) -> bytes | None:
        return self._call(self._client.get, self.prefix + check_key(key))

    def put(self, key: str, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        self._call(self._client.set, self.prefix + check_key(key), view)
        return view.nbytes

    def delete(self, key: str) -> int:
        def run() -> list[int]:
            pipe = self._client.pipeline(transaction=True)
            pipe.strlen(self.prefix + check_key(key))
            pipe.unlink(self.prefix + key)
            return pipe.execute()

        size, removed = self._call(run)
        return int(size) if removed else 0

    def contains(self, key: str) -> bool:
        return bool(self._call(self._client.exists, self.prefix + check_key(key)))

    def keys(self) -> Iterator[str]:
        n = len(self.prefix)
        return iter([raw.decode()[n:] for raw in self._scan()])

    def entries(self) -> Iterator[tuple[str, int]]:
        raws = list(self._scan())
        n = len(self.prefix)
        out = []
        for i in range(0, len(raws), _BATCH):
            batch = raws[i : i + _BATCH]

            def run(batch: list[bytes] = batch) -> list[int]:
                pipe = self._client.pipeline(transaction=False)
                for raw in batch:
                    pipe.strlen(raw)
                return pipe.execute()

            # A key deleted meanwhile shows as 0 bytes; adopting it costs one miss.
            for raw, size in zip(batch, self._call(run), strict=True):
                out.append((raw.decode()[n:], int(size)))
        return iter(out)

    def clear(self) -> None:
        raws = list(self._scan())
        for i in range(0, len(raws), _BATCH):
            self._call(self._client.unlink, *raws[i : i + _BATCH])

    def close(self) -> None:
        self._client.close()

    def handle(self) -> RedisHandle:
        return RedisHandle(self.url, self.namespace, self.timeout_s)

    def __reduce__(self) -> tuple[object, tuple[str, str, float]]:
        return (_reopen, (self.url, self.namespace, self.timeout_s))


def _reopen(url: str, namespace: str, timeout_s: float) -> RedisStore:
    return RedisStore(url, namespace, timeout_s=timeout_s)
