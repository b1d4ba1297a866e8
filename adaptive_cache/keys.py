"""EntryKey: the typed name of one cache entry, a tier of one sample.

A key is ``(tier, digest)``: the tier keeps a listing readable (a persistent store can
be adopted after a restart), and the digest covers the sample id, the identity of its
file(s) and the fingerprints of every stage up to the tier (see
:meth:`~adaptive_cache.pipeline.Pipeline.keys`). Two tiers of one sample have
different digests, so the engine relates them through the sample, never by rewriting
a key. Stores see the wire form ``str(key)``, ``<tier>-<digest>``; :meth:`EntryKey.parse`
reads it back from a listing.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TIER = re.compile(r"[a-z][a-z0-9_]*")
_DIGEST = re.compile(r"[0-9A-Za-z]+")


def check_tier(name: str) -> str:
    """Return ``name`` if it can name a tier (lower-case letters, digits, ``_``).

    Raises:
        ValueError: anything else.
    """
    if not isinstance(name, str) or not _TIER.fullmatch(name):
        raise ValueError(f"tier name {name!r}: expected lower-case letters, digits, '_'")
    return name


class EntryKey(NamedTuple):
    """``(tier, digest)`` of one entry; ``str(key)`` is its name in a store.

    Example:
        >>> key = EntryKey("tensor", "9f2c")
        >>> str(key)
        'tensor-9f2c'
        >>> EntryKey.parse("tensor-9f2c") == key
        True
    """

    tier: str
    digest: str

    def __str__(self) -> str:
        return f"{self.tier}-{self.digest}"

    @classmethod
    def parse(cls, name: str) -> EntryKey:
        """The key a store lists as ``name`` (``<tier>-<digest>``).

        Raises:
            ValueError: ``name`` is not of that form (the message quotes it).
        """
        tier, sep, digest = name.partition("-")
        if not sep or not _TIER.fullmatch(tier) or not _DIGEST.fullmatch(digest):
            raise ValueError(
                f"cache entry name {name!r}: expected '<tier>-<digest>' "
                "(a lower-case tier name, '-', letters and digits)"
            )
        return cls(tier, digest)
