"""One "node" of the multi-node tests, run as its own process.

``python -m tests.adaptive_cache.multinode_run MODE ROOT SHM_DIR REDIS_URL NAME NODE OUT``

- ``lightning``: Lightning DDP on the CPU (gloo), ``num_nodes=2``, one process per node
  (``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` come from the environment, as on
  a cluster). Each node has its own shared-memory namespace; both share the Redis level.
  Three epochs of a tiny model over the cache's loader (Lightning injects its
  ``DistributedSampler``); per epoch the builds (misses) and hits by level, and the
  node's PSS (``/proc/self/smaps_rollup``) at the start and end of training.
- ``race``: no partition: both nodes read every sample in the same order at the same
  time (after a barrier in Redis); only the claims keep them from building twice.

Writes a JSON report to ``OUT``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import redis
import torch

from adaptive_cache import AdaptiveCache, CacheConfig
from adaptive_cache.pipeline import FunctionStage, Pipeline
from adaptive_cache.sources import FileSource

cv2.setNumThreads(1)


def pipeline(root: Path) -> Pipeline:
    def decode(s):
        return {"image": cv2.imdecode(np.asarray(s["data"]), cv2.IMREAD_COLOR)}

    def blur(s):
        return {"image": cv2.GaussianBlur(s["image"], (5, 5), 0)}

    stages = [FunctionStage("decode", decode), FunctionStage("blur", blur)]
    return Pipeline(FileSource.glob(root, "*.png"), stages, {"image": "decode", "tensor": "blur"})


def pss() -> dict[str, int]:
    """This process's PSS: in all, anonymous, and of the cache's shared-memory files."""
    out = {"pss": 0, "anon": 0, "cache": 0}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["pss"] = int(line.split()[1]) * 1024
        elif line.startswith("Pss_Anon:"):
            out["anon"] = int(line.split()[1]) * 1024
    in_cache = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            in_cache = len(fields) >= 6 and "/adaptive-cache-" in fields[-1]
        elif in_cache and fields[0] == "Pss:":
            out["cache"] += int(fields[1]) * 1024
    return out


def collate(samples):
    return torch.from_numpy(np.stack([s["image"] for s in samples]))


def snapshot(cache: AdaptiveCache) -> dict:
    st = cache.local_stats()
    return {
        "requests": st.requests,
        "misses": st.misses,
        "memory_hits": st.memory_hits,
        "redis_hits": st.level("redis").hits,
        "bytes_held": cache.bytes_held,
    }


def make_cache(root: Path, shm_dir: str, url: str, name: str, node: int) -> AdaptiveCache:
    cfg = CacheConfig(shm_dir=shm_dir, redis_url=url, max_bytes="1GiB", reserve_bytes=0)
    # Separate shared-memory namespaces (as on two machines); one Redis level (by name).
    return AdaptiveCache(pipeline(root), cfg, name=name, namespace=f"{name}-node{node}")


def run_lightning(root: Path, shm_dir: str, url: str, name: str, node: int) -> dict:
    import pytorch_lightning as pl

    cache = make_cache(root, shm_dir, url, name, node)
    loader = cache.loader(batch_size=4, shuffle=True, num_workers=0, collate_fn=collate)
    report: dict = {"epochs": []}

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch, _):
            x = batch.float().mean(dim=(1, 2)) / 255.0  # (B, 3)
            return self.layer(x).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Record(pl.Callback):
        def on_train_start(self, trainer, module):
            report["pss_start"] = pss()
            report["world_size"] = trainer.world_size
            report["global_rank"] = trainer.global_rank

        def on_train_epoch_start(self, trainer, module):
            self.before = snapshot(cache)

        def on_train_epoch_end(self, trainer, module):
            now = snapshot(cache)
            report["epochs"].append({k: now[k] - self.before[k] for k in now if k != "bytes_held"})

        def on_train_end(self, trainer, module):
            report["pss_end"] = pss()
            report["bytes_held"] = cache.bytes_held

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        num_nodes=2,
        strategy="ddp",
        max_epochs=3,
        callbacks=[Record()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), train_dataloaders=loader)
    cache.close()
    return report


def run_race(root: Path, shm_dir: str, url: str, name: str, node: int) -> dict:
    cache = make_cache(root, shm_dir, url, name, node)
    client = redis.Redis.from_url(url)
    barrier = f"{name}-barrier"
    client.incr(barrier)
    deadline = time.monotonic() + 60
    while int(client.get(barrier) or 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(len(cache.pipeline)):
        cache.get(i)
    report = {"epochs": [snapshot(cache)]}
    cache.close()
    return report


def main() -> None:
    mode, root, shm_dir, url, name, node, out = sys.argv[1:8]
    run = run_lightning if mode == "lightning" else run_race
    report = run(Path(root), shm_dir, url, name, int(node))
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    main()
