"""preload: fill a cache before the first epoch."""

from __future__ import annotations

from collections.abc import Iterable

from torch.utils.data import DataLoader
from tqdm import tqdm

from adaptive_cache.loader import CacheOwner
from adaptive_cache.orphans import WorkerInit
from adaptive_cache.work import WorkDataset, execute, passthrough


def preload(
    cache: CacheOwner,
    *,
    num_workers: int = 0,
    batch_size: int = 16,
    indices: Iterable[int] | None = None,
    progress: bool = True,
) -> int:
    """Fill ``cache`` before the first epoch, computing only the deterministic prefix.

    Samples already held are skipped; the rest are computed in ``num_workers``
    DataLoader workers (in this process with 0) and offered to the policy as usual,
    so a preload never exceeds the budget. Returns the number of samples computed.
    """
    if not cache.enabled:
        return 0
    todo = [
        i
        for i in (range(len(cache.pipeline)) if indices is None else indices)
        if not cache.holds(i)
    ]
    chunks = [todo[k : k + batch_size] for k in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), desc=f"preload {cache.name}", unit="sample", disable=not progress)
    try:
        if num_workers == 0:
            for chunk in chunks:
                for index in chunk:
                    _, report = execute(
                        cache.pipeline, cache.store, cache.order(index, 0, prefix_only=True)
                    )
                    cache.complete(report)
                    bar.update(1)
            return len(todo)
        # Orders are made lazily, so each sees the admissions reported before it.
        batches = ([cache.order(i, 0, prefix_only=True) for i in chunk] for chunk in chunks)
        loader = DataLoader(
            WorkDataset(cache.pipeline, cache.store),
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=passthrough,
            worker_init_fn=WorkerInit(),
        )
        for results in loader:
            for _, report in results:
                cache.complete(report)
            bar.update(len(results))
        return len(todo)
    finally:
        bar.close()
