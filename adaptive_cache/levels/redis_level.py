"""The Redis level: a :class:`~adaptive_cache.stores.redis.RedisStore` that can claim builds.

Several nodes share one Redis level. Within an epoch, ``DistributedSampler`` gives each
rank its own part of the data set, so each sample is built by one rank; the next epoch
hands that sample to another rank, which finds it in Redis because every build is
written through. A claim covers what a partition does not: the same sample missed on
two nodes at once (samplers that do not partition, the padding ``DistributedSampler``
adds). Before building, a worker claims the key (``SET NX`` with a time to live); a
worker that finds the key claimed waits for the entry to appear instead of building it
too, and builds it after all if the claim goes away without an entry (the builder died
or was told not to write it). The URL, password and TLS handling are RedisStore's.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass

from adaptive_cache.stores.keys import check_key
from adaptive_cache.stores.redis import RedisStore

_CLAIM_PREFIX = "adaptive-cache-claim"
_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.05
# Compare-and-delete: a claim that expired and was taken by someone else is not ours.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@dataclass(frozen=True)
class RedisLevelHandle:
    """Connects to the same Redis level from another process."""

    url: str
    namespace: str
    timeout_s: float
    claim_s: float

    def open(self) -> RedisLevelStore:
        return RedisLevelStore(
            self.url, self.namespace, timeout_s=self.timeout_s, claim_s=self.claim_s
        )


class RedisLevelStore(RedisStore):
    """Redis store of the level below disk, with build claims.

    Args:
        url: ``redis://`` or ``rediss://`` URL (see :class:`RedisStore`).
        namespace: shared by every node of the job (not per run).
        timeout_s: connect and socket timeout.
        claim_s: how long a claim holds (its time to live); 0 turns claims off.

    Raises:
        StoreError: the server cannot be reached.
    """

    def __init__(
        self, url: str, namespace: str, *, timeout_s: float = 2.0, claim_s: float = 30.0
    ) -> None:
        super().__init__(url, namespace, timeout_s=timeout_s)
        self.claim_s = float(claim_s)
        self._claims = f"{_CLAIM_PREFIX}:{namespace}:"
        self._token = f"{os.getpid()}-{secrets.token_hex(6)}"

    def claim(self, key: str) -> bool:
        """Claim the build of ``key``; ``False`` when another process holds the claim.

        Raises:
            StoreError: the server failed (callers then build without a claim).
        """
        if self.claim_s <= 0:
            return True
        name = self._claims + check_key(key)
        ms = max(1, int(self.claim_s * 1000))
        return bool(self._call(lambda: self._client.set(name, self._token, nx=True, px=ms)))

    def release(self, key: str) -> None:
        """Drop this process's claim of ``key`` (no-op if it expired or is another's)."""
        if self.claim_s <= 0:
            return
        name = self._claims + check_key(key)
        self._call(lambda: self._client.eval(_RELEASE, 1, name, self._token))

    def wait(self, key: str) -> bytes | None:
        """Wait for another process's claimed build of ``key``; ``None``: build it yourself.

        Polls (GET and the claim in one round trip, backing off to 50 ms) until the
        entry appears, the claim goes away, or ``claim_s`` passes.
        """
        entry, name = self.prefix + check_key(key), self._claims + key
        deadline = time.monotonic() + self.claim_s
        pause = _POLL_FIRST_S

        def poll() -> list:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(entry)
            pipe.exists(name)
            return pipe.execute()

        while True:
            data, claimed = self._call(poll)
            if data is not None:
                return data
            if not claimed or time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(2 * pause, _POLL_MAX_S)

    def handle(self) -> RedisLevelHandle:  # type: ignore[override]
        return RedisLevelHandle(self.url, self.namespace, self.timeout_s, self.claim_s)

    def __reduce__(self):  # type: ignore[override]
        return (RedisLevelHandle.open, (self.handle(),))
