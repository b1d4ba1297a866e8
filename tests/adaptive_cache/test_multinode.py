"""Several nodes on one machine sharing one Redis level: each sample is built once.

Two "nodes" are two process groups with separate shared-memory namespaces; they
share a real Redis server on loopback. See ``multinode_run.py`` for what each runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
N = 32  # samples; a multiple of 2 nodes x batch 4, so DistributedSampler adds no padding
SIDE = 512  # a 786 KB entry, so one copy per node stands out of PSS noise


def _images(root: Path) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N):
        img = rng.integers(0, 256, size=(SIDE // 8, SIDE // 8, 3), dtype=np.uint8)
        img = cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / f"img{i:03d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def _run_nodes(mode: str, tmp_path: Path, shm_dir: Path, redis_url: str) -> list[dict]:
    _images(tmp_path / "img")
    name = f"mn-{uuid.uuid4().hex[:8]}"
    port = free_port()
    procs, outs = [], []
    for node in range(2):
        out = tmp_path / f"node{node}.json"
        outs.append(out)
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            NODE_RANK=str(node),
            OMP_NUM_THREADS="1",
            # Freed arrays go back to the OS at once, so PSS shows what is held.
            MALLOC_MMAP_THRESHOLD_="65536",
        )
        args = [mode, str(tmp_path / "img"), str(shm_dir), redis_url, name, str(node), str(out)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.adaptive_cache.multinode_run", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a node did not finish in 120 s")
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return [json.loads(o.read_text()) for o in outs]


def test_two_nodes_lightning_ddp_build_each_sample_once(tmp_path, shm_dir, redis_server):
    nodes = _run_nodes("lightning", tmp_path, shm_dir, redis_server)
    assert sorted(n["global_rank"] for n in nodes) == [0, 1]
    assert all(n["world_size"] == 2 for n in nodes)
    epochs = [[n["epochs"][e] for n in nodes] for e in range(3)]
    for e, per_node in enumerate(epochs):
        assert sum(x["requests"] for x in per_node) == N, f"epoch {e}"
    # Epoch 0: each sample built once in the cluster (DistributedSampler partitions it).
    assert sum(x["misses"] for x in epochs[0]) == N
    # Later epochs hand each node samples the other built: Redis has them; no builds.
    for per_node in epochs[1:]:
        assert sum(x["misses"] for x in per_node) == 0
    assert sum(x["redis_hits"] for x in epochs[1]) > 0
    # One copy per node: the cache's pages are counted once (mapped by the node's one
    # owner), and the rest of the process did not grow by another copy of the data.
    for n in nodes:
        start, end, held = n["pss_start"], n["pss_end"], n["bytes_held"]
        assert held >= N // 2 * SIDE * SIDE * 3
        assert 0.9 * held <= end["cache"] - start["cache"] <= held, (end, held)
        rest = end["pss"] - start["pss"] - (end["cache"] - start["cache"])
        print(
            f"node PSS +{(end['pss'] - start['pss']) / 2**20:.1f} MiB: cache files "
            f"+{(end['cache'] - start['cache']) / 2**20:.1f} MiB (holding "
            f"{held / 2**20:.1f} MiB), anonymous +{(end['anon'] - start['anon']) / 2**20:.1f} MiB"
        )
        assert rest < 0.75 * held, "the rest of the process grew by another copy of the data"


def test_two_nodes_reading_the_same_order_build_each_sample_once(tmp_path, shm_dir, redis_server):
    nodes = _run_nodes("race", tmp_path, shm_dir, redis_server)
    assert [n["epochs"][0]["requests"] for n in nodes] == [N, N]
    assert sum(n["epochs"][0]["misses"] for n in nodes) == N  # the claims
    assert sum(n["epochs"][0]["redis_hits"] for n in nodes) == N
