"""Engine-only benchmarks, and the process isolation every benchmark contender runs in.

* :mod:`~adaptive_cache.bench.hitrate`: hit rate and rebuild time saved on synthetic
  blocks of known size and cost, against their theoretical values (``f`` under
  shuffled epochs; the fractional-knapsack bound), and the engine's targets on them;
* :mod:`~adaptive_cache.bench.hitcost`: the cost of one hit against copying its arrays;
* :mod:`~adaptive_cache.bench.isolate`: each contender in a fresh child process, its
  peak memory sampled from outside;
* :mod:`~adaptive_cache.bench.footprint`: what a sample takes as a cache entry.

Imports only ``adaptive_cache``, numpy, torch and psutil; ``adaptive-cache bench``
(in ``training.bench``) runs these beside the OCR workloads.
"""

from adaptive_cache.bench.footprint import PAGE_SIZE, entry_nbytes
from adaptive_cache.bench.hitcost import measure_hit_cost
from adaptive_cache.bench.hitrate import (
    CacheRun,
    auto_vs_static,
    cache_targets,
    equal_blocks,
    knapsack_bound,
    knapsack_optimum,
    lru_hit_ratio,
    run_cache,
    unequal_blocks,
)
from adaptive_cache.bench.isolate import (
    ContenderError,
    TreeSampler,
    checkpoint,
    dir_bytes,
    mapped_from,
    run_isolated,
    tree_cpu_seconds,
)

__all__ = [
    "PAGE_SIZE",
    "CacheRun",
    "ContenderError",
    "TreeSampler",
    "auto_vs_static",
    "cache_targets",
    "checkpoint",
    "dir_bytes",
    "entry_nbytes",
    "equal_blocks",
    "knapsack_bound",
    "knapsack_optimum",
    "lru_hit_ratio",
    "mapped_from",
    "measure_hit_cost",
    "run_cache",
    "run_isolated",
    "tree_cpu_seconds",
    "unequal_blocks",
]
