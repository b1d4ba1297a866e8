"""Peak memory: PSS over a real process tree, the cgroup source, shared cache bytes."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest

from adaptive_cache.memory import FakeProbe
from training.peak import PeakSampler, smaps_pss, tree_pss, tree_rss

MiB = 1024**2
GiB = 1024**3

pytestmark = pytest.mark.skipif(
    smaps_pss(os.getpid()) is None, reason="needs /proc/PID/smaps_rollup (Linux)"
)


def _hold(ready, done) -> None:
    ready.set()
    done.wait(60)


def test_pss_counts_pages_shared_by_forked_children_once():
    data = np.ones(256 * MiB, np.uint8)  # touched: resident, then shared copy-on-write
    ctx = mp.get_context("fork")
    done = ctx.Event()
    readies = [ctx.Event() for _ in range(3)]
    children = [ctx.Process(target=_hold, args=(r, done)) for r in readies]
    for c in children:
        c.start()
    try:
        for r in readies:
            assert r.wait(60)
        rss = tree_rss()
        pss, _ = tree_pss()
    finally:
        done.set()
        for c in children:
            c.join()
    # RSS counts the 256 MiB four times; PSS once (split between the four processes).
    assert rss >= 4 * 256 * MiB
    assert 256 * MiB <= pss < rss - 2 * 256 * MiB
    del data


def test_source_is_the_cgroup_where_there_is_a_limit():
    probe = FakeProbe(total_bytes=16 * GiB)
    probe.set(container_limit_bytes=2 * GiB, container_usage_bytes=700 * MiB)
    sampler = PeakSampler({}, probe=probe)
    assert sampler.source == "cgroup"
    sampler.sample()
    probe.set(container_usage_bytes=300 * MiB)
    sampler.sample()
    assert sampler.peak == 700 * MiB
    # A limit above the host's memory binds nothing: PSS of the process tree.
    probe = FakeProbe(total_bytes=16 * GiB)
    probe.set(container_limit_bytes=64 * GiB, container_usage_bytes=1 * GiB)
    assert PeakSampler({}, probe=probe).source == "pss"


class _Store:
    shared = True


class _Cache:
    """What the sampler reads of a cache: its bytes and whether its store is shared."""

    store = _Store()

    def __init__(self, nbytes: int) -> None:
        self.bytes_held = nbytes


def test_pss_adds_the_cache_bytes_no_process_maps():
    sampler = PeakSampler({"val": _Cache(512 * MiB)}, probe=FakeProbe())
    assert sampler.source == "pss"
    pss, shmem = tree_pss()
    measured = sampler.measure()
    assert measured >= pss + 512 * MiB - shmem - 64 * MiB  # this process's PSS moves a bit
    assert measured <= pss + 512 * MiB + 64 * MiB
