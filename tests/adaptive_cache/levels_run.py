"""One run of a cache with a disk level, in its own process (the warm-restart test).

``python -m tests.adaptive_cache.levels_run ROOT SHM_DIR OUT``: two epochs over the
images in ``ROOT/img`` with the disk level in ``ROOT/disk`` and 2 DataLoader workers;
writes per-epoch hits, disk hits and the digest of every sample to ``OUT`` (JSON),
with the digests of the uncached pipeline for comparison.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from adaptive_cache import AdaptiveCache, CacheConfig
from tests.adaptive_cache.pipelines import image_pipeline


def _digest(sample) -> str:
    return hashlib.blake2b(sample["image"].tobytes(), digest_size=8).hexdigest()


def main(root: Path, shm_dir: str, out: Path) -> None:
    pipe = image_pipeline(root / "img", random=False)
    cfg = CacheConfig(
        shm_dir=shm_dir, disk_dir=str(root / "disk"), max_bytes="24KiB", reserve_bytes=0
    )
    cache = AdaptiveCache(pipe, cfg, name="val")
    loader = cache.loader(batch_size=4, num_workers=2, collate_fn=lambda s: s)
    epochs, digests = [], {}
    for _ in range(2):
        before = cache.stats()
        for batch in loader:
            for sample in batch:
                digests[sample["path"]] = _digest(sample)
        st = cache.stats()
        epochs.append(
            {
                "hits": st.hits - before.hits,
                "disk_hits": st.level("disk").hits - before.level("disk").hits,
            }
        )
    cache.close()
    uncached = {}
    for i in range(len(pipe)):
        s = pipe.run(i)
        uncached[s["path"]] = _digest(s)
    out.write_text(json.dumps({"epochs": epochs, "digests": digests, "uncached": uncached}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
