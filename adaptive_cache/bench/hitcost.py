"""The cost of one hit, against copying the same arrays from the process's own memory."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from adaptive_cache.engine import AdaptiveCache
from adaptive_cache.work import WorkOrder, execute

Record = dict[str, Any]


def measure_hit_cost(cache: AdaptiveCache, repeats: int = 200) -> Record:
    """Median cost of one hit, against copying the same arrays once.

    A batch needs one copy of every sample (``np.stack``), cached or not, so:
    ``get_us``: the whole ``cache.get`` of a held final-tier sample (keys, staleness
    check, lookup, accounting), no copy; ``hit_us``: ``get_us`` plus copying the arrays
    it returns; ``copy_us``: copying the same arrays held privately by the process (all
    an ideal in-memory loader pays); ``overhead_us``: ``hit_us - copy_us``;
    ``read_us``: the general path (read a fresh copy of the entry, decode) for comparison.
    """
    pipe = cache.pipeline
    held = [(i, k) for i in range(len(pipe)) if (k := cache.final_hit_key(i)) is not None]
    if not held:
        return {}
    reads, gets, hits, copies, sizes = [], [], [], [], []
    clock = time.perf_counter

    def arrays(sample: dict[str, Any]) -> list[np.ndarray]:
        return [v for v in sample.values() if isinstance(v, np.ndarray)]

    private = {i: [a.copy() for a in arrays(cache.get(i, 0))] for i, _ in held[:repeats]}
    for r in range(repeats):
        index, key = held[r % len(held)]
        order = WorkOrder(index, 0, (key,))  # the general path: read a copy, decode
        t0 = clock()
        execute(pipe, cache.store, order)
        reads.append(clock() - t0)
        t0 = clock()
        sample = cache.get(index, 0)
        t1 = clock()
        for a in arrays(sample):
            a.copy()
        t2 = clock()
        gets.append(t1 - t0)
        hits.append(t2 - t0)
        own = private[index]
        t0 = clock()
        for a in own:
            a.copy()
        copies.append(clock() - t0)
        sizes.append(sum(a.nbytes for a in own))
    hit_us, copy_us = 1e6 * statistics.median(hits), 1e6 * statistics.median(copies)
    return {
        "read_us": 1e6 * statistics.median(reads),
        "get_us": 1e6 * statistics.median(gets),
        "hit_us": hit_us,
        "copy_us": copy_us,
        "overhead_us": hit_us - copy_us,
        "entry_bytes": statistics.fmean(sizes),
        "repeats": len(gets),
    }
