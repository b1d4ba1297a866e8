"""``adaptive-cache bench``: our cache against no cache, the seed's dicts, MONAI and an
ideal loader, on the same data with the same workers; plus hit rates against theory
and end-to-end training. See :func:`run_bench`.
"""

from training.bench.runner import run_bench
from training.bench.settings import FULL, QUICK, WORKLOADS, BenchSizes

__all__ = ["FULL", "QUICK", "WORKLOADS", "BenchSizes", "run_bench"]
