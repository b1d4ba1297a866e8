"""NodeRegistry: claims on real files, liveness of real processes, fair shares."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaptive_cache.config import CacheConfig
from adaptive_cache.node import DIRNAME, NodeRegistry, fair_shares, join_node

GiB = 1024**3


def test_fair_shares_gives_small_demands_and_splits_the_rest():
    assert fair_shares(100, {"a": None, "b": None}) == {"a": 50, "b": 50}
    assert fair_shares(100, {"train": None, "val": 10}) == {"train": 90, "val": 10}
    assert fair_shares(100, {"a": None, "b": 30, "c": None}) == {"a": 35, "b": 30, "c": 35}
    # 40 > 100/3: not served in full; it and the two unbounded split equally
    assert fair_shares(100, {"a": None, "b": 40, "c": None}) == {"a": 33, "b": 33, "c": 33}
    assert fair_shares(100, {"a": 20, "b": 30}) == {"a": 20, "b": 30}
    assert fair_shares(-5, {"a": None}) == {"a": 0}


@given(
    st.integers(0, 10**12),
    st.dictionaries(
        st.text(min_size=1, max_size=3),
        st.none() | st.integers(0, 10**12),
        min_size=1,
        max_size=6,
    ),
)
def test_fair_shares_never_exceed_the_total_or_a_demand(total, demands):
    out = fair_shares(total, demands)
    assert set(out) == set(demands)
    assert sum(out.values()) <= total
    for group, share in out.items():
        assert share >= 0
        if demands[group] is not None:
            assert share <= demands[group]
    # Max-min fairness: a group given less than it asked gets at least every other's share.
    short = [g for g in out if demands[g] is None or out[g] < demands[g]]
    for g in short:
        assert all(out[g] >= out[h] - 1 for h in out)


def test_publish_and_read_back(tmp_path):
    reg = NodeRegistry(tmp_path / DIRNAME)
    slot = reg.join("val-1")
    assert reg.claims() == []  # nothing published yet
    slot.publish(held_bytes=5, demand_bytes=None, budget_bytes=7)
    (claim,) = reg.claims()
    assert (claim.group, claim.pid, claim.held_bytes, claim.demand_bytes, claim.budget_bytes) == (
        "val-1",
        os.getpid(),
        5,
        None,
        7,
    )
    assert not claim.fixed and slot.others() == []
    other = reg.join("train-1", fixed=True)
    other.publish(held_bytes=1, demand_bytes=2, budget_bytes=3)
    assert [c.group for c in slot.others()] == ["train-1"] and slot.others()[0].fixed
    assert oct(os.stat(reg.directory).st_mode & 0o777) == "0o700"
    assert oct(os.stat(slot.path).st_mode & 0o777) == "0o600"
    slot.close()
    assert not slot.path.exists()
    slot.publish(held_bytes=5, demand_bytes=None, budget_bytes=7)  # closed: no-op
    assert [c.group for c in reg.claims()] == ["train-1"]


def test_claim_of_a_killed_process_is_removed(tmp_path):
    directory = tmp_path / DIRNAME
    code = (
        "import sys, time\n"
        "from adaptive_cache.node import NodeRegistry\n"
        f"slot = NodeRegistry({str(directory)!r}).join('dead')\n"
        "slot.publish(held_bytes=1, demand_bytes=None, budget_bytes=1)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        reg = NodeRegistry(directory)
        assert [c.pid for c in reg.claims()] == [child.pid]
        child.send_signal(signal.SIGKILL)  # no finalizer runs: the file stays behind
        child.wait()
        assert len(list(directory.glob("*.json"))) == 1
        assert reg.claims() == []
        assert list(directory.glob("*.json")) == []
    finally:
        child.kill()
        child.wait()


def test_claim_with_a_reused_pid_is_removed(tmp_path):
    reg = NodeRegistry(tmp_path / DIRNAME)
    doc = {
        "group": "g",
        "pid": os.getpid(),  # alive, but started at another time: a reused pid
        "start": time.time() - 3600,
        "held": 1,
        "demand": None,
        "fixed": False,
        "budget": 1,
        "updated": time.time(),
    }
    path = reg.directory / "stale.json"
    path.write_text(json.dumps(doc))
    assert reg.claims() == []
    assert not path.exists()


def _close_in_child(slot) -> None:
    slot.close()


def test_a_forked_child_never_removes_the_owners_claim(tmp_path):
    slot = NodeRegistry(tmp_path / DIRNAME).join("g")
    slot.publish(held_bytes=1, demand_bytes=None, budget_bytes=1)
    child = mp.get_context("fork").Process(target=_close_in_child, args=(slot,))
    child.start()
    child.join()
    assert child.exitcode == 0
    assert slot.path.exists()
    slot.close()


def test_unreadable_or_partial_files_are_skipped(tmp_path):
    reg = NodeRegistry(tmp_path / DIRNAME)
    (reg.directory / "bad.json").write_text("{not json")
    (reg.directory / "half.json").write_text(json.dumps({"group": "g"}))
    (reg.directory / ".x.tmp").write_text("{}")
    assert reg.claims() == []


def test_join_node_only_for_memory_stores_and_warns_once_if_unusable(tmp_path, caplog):
    assert join_node(CacheConfig(shm_dir=str(tmp_path), node_budget=False), "g") is None
    disk = CacheConfig(store="disk", disk_dir=str(tmp_path / "d"), shm_dir=str(tmp_path))
    assert join_node(disk, "g") is None
    slot = join_node(CacheConfig(shm_dir=str(tmp_path), max_bytes="1GiB"), "g")
    assert slot is not None and slot.fixed and slot.registry.directory == tmp_path / DIRNAME
    slot.close()
    if os.geteuid() != 0:
        pytest.skip("needs root to give the registry directory to another user")
    foreign = tmp_path / "foreign"
    (foreign / DIRNAME).mkdir(parents=True)
    os.chown(foreign / DIRNAME, 65534, 65534)
    import adaptive_cache.node as node

    node._warned = False
    with caplog.at_level(logging.WARNING, logger="adaptive_cache.node"):
        for _ in range(3):
            assert join_node(CacheConfig(shm_dir=str(foreign)), "g") is None
    warnings = [r for r in caplog.records if "node registry unusable" in r.getMessage()]
    assert len(warnings) == 1 and f"cache.shm_dir={foreign}" in warnings[0].getMessage()


def test_engine_caches_on_real_memory_join_the_node_and_ranks_are_one_group(tmp_path, shm_dir):
    from adaptive_cache.engine import AdaptiveCache
    from tests.adaptive_cache.pipelines import image_pipeline, write_images
    from tests.adaptive_cache.test_engine import StaticProbe

    write_images(tmp_path / "img", 4)
    cfg = CacheConfig(shm_dir=str(shm_dir), probe_interval_s=0.0)
    # Two DDP ranks of one cache (one namespace) and a second cache of the node.
    ranks = [
        AdaptiveCache(
            image_pipeline(tmp_path / "img"),
            cfg,
            name="val",
            namespace="run-val",
            local_world_size=2,
        )
        for _ in range(2)
    ]
    train = AdaptiveCache(image_pipeline(tmp_path / "img"), cfg, name="train", namespace="run-tr")
    fake = AdaptiveCache(image_pipeline(tmp_path / "img"), cfg, name="f", probe=StaticProbe())
    try:
        assert fake.admission.budget.node is None  # a fake probe is a machine of its own
        registry = NodeRegistry.in_shm_dir(shm_dir)
        assert sorted(c.group for c in registry.claims()) == ["run-tr", "run-val", "run-val"]
        for cache in (*ranks, train):
            cache.admission.budget.update(0, force=True)
        d = ranks[0].admission.budget.update(0, force=True)
        node = d.node_budget_bytes
        # Two groups: the val cache gets half the node (its ranks each admit within half
        # of that, as without the registry), not a third.
        assert d.budget_bytes == pytest.approx(node / 2, rel=0.02)
        ranks[0].get(0)  # the engine takes its group's budget at its next refresh
        assert ranks[0].local_stats().budget_bytes == pytest.approx(node / 2, rel=0.02)
        assert train.budget.update(0, force=True).budget_bytes == pytest.approx(node / 2, rel=0.02)
        train.close()
        assert sorted(c.group for c in registry.claims()) == ["run-val", "run-val"]
        assert ranks[1].budget.update(0, force=True).budget_bytes == pytest.approx(node, rel=0.02)
    finally:
        for cache in (*ranks, train, fake):
            cache.close()
    assert NodeRegistry.in_shm_dir(shm_dir).claims() == []
