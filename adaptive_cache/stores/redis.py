"""RedisStore: entries in a Redis server, shared across nodes.

Keys are ``adaptive-cache:{namespace}:{key}``; values are the raw entry bytes (never
pickle). ``redis://`` and ``rediss://`` (TLS) URLs are accepted; with hiredis installed
redis-py parses replies in C (a 1.2 MB GET costs about half as much). Every Redis
failure becomes a :class:`~adaptive_cache.stores.base.StoreError` naming the URL with
its password masked. The password may come from the URL or, kept out of configuration
files, from the environment variable ``ADAPTIVE_CACHE_REDIS_PASSWORD``.

A server that is down must not stall training. With a stopped (SIGSTOP) server every
call used to wait its whole timeout (measured: 2.0 s per call, two or three calls per
sample). Now, after a connection failure or a timeout the store fails at once for a back-off
window (0.5 s, doubling up to 30 s) before it tries the server again: such an epoch took
2-4 s (one timeout in each process). :meth:`RedisStore.recover`, called at each epoch
start, ends the window. A connection error is retried once (a pooled connection to a
restarted server fails once); a timeout never is.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from adaptive_cache.redact import masked_url
from adaptive_cache.stores.base import Store, StoreError
from adaptive_cache.stores.keys import check_key, check_namespace

T = TypeVar("T")
_BATCH = 512
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
#: Where a password kept out of the URL (and so out of every config file) is read.
PASSWORD_ENV = "ADAPTIVE_CACHE_REDIS_PASSWORD"
#: Back-off after a failed call: fail fast this long, doubling up to the maximum.
BACKOFF_S = (0.5, 30.0)
# A server that went away: the next call reconnects once (a pooled connection to a
# restarted server fails once); a timeout is never retried (that is what stalls).
_RETRY_ON = (redis.ConnectionError,)


def password_from_env() -> str | None:
    """The Redis password from ``ADAPTIVE_CACHE_REDIS_PASSWORD`` (the one place it is read)."""
    return os.environ.get(PASSWORD_ENV) or None


@dataclass(frozen=True)
class RedisHandle:
    """Connects to the same server and namespace from another process."""

    url: str
    namespace: str
    timeout_s: float

    def open(self) -> RedisStore:
        return RedisStore(self.url, self.namespace, timeout_s=self.timeout_s, check=False)


class RedisStore(Store):
    """Store on a Redis server.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://...``; without a
            password in it, ``ADAPTIVE_CACHE_REDIS_PASSWORD`` is used if set.
        namespace: key prefix part; stores with the same one share entries.
        timeout_s: connect and socket timeout of one call.
        check: PING the server now (a handle opened in a worker does not: a server
            that is down then costs misses, not the worker).

    Raises:
        StoreError: the server cannot be reached (checked with a PING).
        ValueError: a malformed URL (named with its password masked).
    """

    name = "redis"
    shared = True
    persistent = True

    def __init__(
        self, url: str, namespace: str, *, timeout_s: float = 2.0, check: bool = True
    ) -> None:
        self.url = url
        self.namespace = check_namespace(namespace)
        self.timeout_s = timeout_s
        self.prefix = f"adaptive-cache:{namespace}:"
        self._match = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "*"
        self._down_until = 0.0
        self._backoff = 0.0
        extra: dict[str, Any] = {}
        try:
            if urlsplit(url).password is None and password_from_env() is not None:
                extra["password"] = password_from_env()
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1, supported_errors=_RETRY_ON),
                **extra,
            )
        except ValueError as exc:
            raise ValueError(f"redis store: bad redis_url {masked_url(url)!r}: {exc}") from None
        if check:
            self._call(self._client.ping)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        now = time.monotonic()
        if now < self._down_until:
            raise StoreError(
                f"redis store {masked_url(self.url)}: unreachable "
                f"(next try in {self._down_until - now:.1f} s)"
            )
        try:
            out = fn(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            lo, hi = BACKOFF_S
            self._backoff = min(hi, self._backoff * 2) if self._backoff else lo
            self._down_until = time.monotonic() + self._backoff
            raise StoreError(f"redis store {masked_url(self.url)}: {exc}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"redis store {masked_url(self.url)}: {exc}") from exc
        self._backoff = 0.0
        return out

    def recover(self) -> None:
        """End any back-off window: the next call tries the server."""
        self._down_until = 0.0

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
    return RedisStore(url, namespace, timeout_s=timeout_s, check=False)
