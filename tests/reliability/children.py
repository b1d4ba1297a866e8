"""The processes the memory reliability tests start (``python -m tests.reliability.children``).

Each command takes one JSON argument and prints one JSON line on stdout at the end
(logs go to stderr):

- ``ocr``: the caches of a small OCR run (train and val, the real pipelines) in the
  memory the process finds itself in; one train epoch, then two val epochs through
  :meth:`AdaptiveCache.loader` with workers; budgets, hits and peak memory;
- ``arrays``: one cache over synthetic arrays, ``epochs`` epochs through the loader;
- ``orphan``: a loader whose workers block in a long stage (the test kills us);
- ``node``: one cache over synthetic arrays that logs its budget at every probe,
  between two barriers shared with a sibling process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_cache.config import CacheConfig
from adaptive_cache.engine import AdaptiveCache, pid_namespace
from adaptive_cache.pipeline import FunctionStage, Pipeline


class ArraySource:
    """``n`` synthetic samples of ``nbytes`` bytes each (filled with the index)."""

    def __init__(self, n: int, nbytes: int) -> None:
        self.n, self.nbytes = n, nbytes

    def __len__(self) -> int:
        return self.n

    def sample_id(self, index: int) -> str:
        return f"s{index}"

    def identity(self, index: int) -> str:
        return str(self.nbytes)

    def load(self, index: int) -> dict[str, Any]:
        return {"x": np.full(self.nbytes, index % 251, np.uint8)}


def _invert(s: dict[str, Any]) -> dict[str, Any]:
    return {"x": 255 - s["x"]}


def _stall(s: dict[str, Any]) -> dict[str, Any]:
    Path(os.environ["AC_STALL_DIR"], str(os.getpid())).touch()
    time.sleep(600)  # a long stage: the worker is busy when its parent dies
    return s


def array_pipeline(n: int, nbytes: int, *, stall: bool = False) -> Pipeline:
    stages = [FunctionStage("invert", _invert)]
    if stall:
        stages.insert(0, FunctionStage("stall", _stall))
    return Pipeline(ArraySource(n, nbytes), stages, {"x": "invert"})


def _list(batch: list[Any]) -> list[Any]:
    return batch


def _epoch(loader, cache: AdaptiveCache, sample=None) -> dict[str, int]:
    before = cache.local_stats()
    n = 0
    for batch in loader:
        n += len(batch["image"]) if isinstance(batch, dict) else len(batch)
        if sample is not None:
            sample()
    after = cache.local_stats()
    hits = after.hits - before.hits
    return {"samples": n, "hits": hits, "misses": after.requests - before.requests - hits}


def _budget(cache: AdaptiveCache) -> dict[str, Any]:
    d = cache.budget.last
    assert d is not None
    return {
        "budget_bytes": d.budget_bytes,
        "node_budget_bytes": d.node_budget_bytes,
        "held_bytes": cache.bytes_held,
        "items": sum(t.items for t in cache.local_stats().tiers.values()),
        "n": len(cache.pipeline),
    }


def ocr(args: dict[str, Any]) -> dict[str, Any]:
    from training.config import load_config
    from training.data.collate import collate
    from training.data.pipeline import build_pipeline
    from training.peak import PeakSampler

    cfg = load_config([f"data.root={args['root']}", f"cache.shm_dir={args['shm_dir']}"])
    caches = {
        split: AdaptiveCache(
            build_pipeline(cfg.data, split, seed=cfg.seed),
            cfg.cache_for(split),
            name=split,
            namespace=pid_namespace(split),
        )
        for split in ("train", "val")
    }
    peak = PeakSampler(caches)
    reading = caches["val"].budget.last.reading
    # What the budget was before the reserve scaled with the limit (a fixed 1 GiB).
    old = max(0, int(cfg.cache.headroom_share * reading.available_bytes) - 2**30)
    out: dict[str, Any] = {
        "limit_bytes": reading.limit_bytes,
        "container_limit_bytes": reading.container_limit_bytes,
        "old_rule_budget_bytes": old,
        "epochs": {},
    }
    for split, epochs in (("train", 1), ("val", 2)):
        loader = caches[split].loader(
            batch_size=4, num_workers=2, collate_fn=collate, shuffle=split == "train"
        )
        out["epochs"][split] = [_epoch(loader, caches[split], peak.sample) for _ in range(epochs)]
        out[split] = _budget(caches[split])
    peak.sample()
    out["peak_memory_bytes"], out["peak_memory_source"] = peak.peak, peak.source
    for cache in caches.values():
        cache.close()
    return out


def arrays(args: dict[str, Any]) -> dict[str, Any]:
    config = CacheConfig(shm_dir=args["shm_dir"], **args.get("config", {}))
    cache = AdaptiveCache(
        array_pipeline(args["n"], args["nbytes"]),
        config,
        name="arrays",
        namespace=pid_namespace("arrays"),
    )
    loader = cache.loader(batch_size=4, num_workers=args.get("workers", 2), collate_fn=_list)
    out = {"epochs": [_epoch(loader, cache) for _ in range(args["epochs"])]}
    out.update(_budget(cache))
    out["limit_bytes"] = cache.budget.last.reading.limit_bytes
    cache.close()
    return out


def orphan(args: dict[str, Any]) -> dict[str, Any]:
    os.environ["AC_STALL_DIR"] = args["stall_dir"]
    cache = AdaptiveCache(
        array_pipeline(16, 1024, stall=True),
        CacheConfig(shm_dir=args["shm_dir"]),
        name="orphan",
        namespace=pid_namespace("orphan"),
    )
    loader = cache.loader(batch_size=2, num_workers=2, collate_fn=_list)
    for _ in loader:  # the first batch never comes: the test kills this process
        pass
    return {}


def _wait_for(directory: Path, names: list[str], limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not all((directory / n).exists() for n in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"sibling never reached {names} in {directory}")
        time.sleep(0.01)


def node(args: dict[str, Any]) -> dict[str, Any]:
    barrier = Path(args["barrier"])
    me, sibling = args["name"], args["sibling"]
    config = CacheConfig(shm_dir=args["shm_dir"], probe_interval_s=args["probe_interval_s"])
    cache = AdaptiveCache(
        array_pipeline(args["n"], args["nbytes"]), config, name=me, namespace=pid_namespace(me)
    )
    probes: list[dict[str, Any]] = []
    update = cache.budget.update

    def logged(cache_bytes: int, *, force: bool = False):
        d = update(cache_bytes, force=force)
        if d.probed:
            probes.append(
                {
                    "t": time.monotonic(),
                    "budget": d.budget_bytes,
                    "node": d.node_budget_bytes,
                    "held": cache_bytes,
                    "available": d.headroom_bytes,
                }
            )
        return d

    cache.budget.update = logged  # type: ignore[method-assign]
    (barrier / f"ready-{me}").touch()
    _wait_for(barrier, [f"ready-{sibling}"])
    start = time.monotonic()
    for _ in range(args["epochs"]):
        for index in range(len(cache.pipeline)):
            cache.get(index)
    end = time.monotonic()
    (barrier / f"done-{me}").touch()
    _wait_for(barrier, [f"done-{sibling}"])
    cache.close()
    return {"start": start, "end": end, "probes": probes, **_budget(cache)}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    command, args = sys.argv[1], json.loads(sys.argv[2])
    result = {"ocr": ocr, "arrays": arrays, "orphan": orphan, "node": node}[command](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
