"""What a sample takes as a cache entry, to size budgets in benchmarks."""

from __future__ import annotations

from adaptive_cache import codec
from adaptive_cache.pipeline import Sample
from adaptive_cache.stores.shm import PAGE_SIZE

__all__ = ["PAGE_SIZE", "entry_nbytes"]


def entry_nbytes(sample: Sample, page_size: int = PAGE_SIZE) -> int:
    """Bytes ``sample`` takes as an entry of a node-shared (``shm``) store: encoded, in
    whole pages (what tmpfs holds and what evicting it gives back)."""
    nbytes = len(codec.encode(sample))
    return -(-nbytes // page_size) * page_size if page_size > 0 else nbytes
