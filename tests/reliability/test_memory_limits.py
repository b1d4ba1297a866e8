"""Containers and several caches on one node (issue 10, "Memory"), with real processes.

Every case runs real child processes (``tests/reliability/children.py``); those that
need a memory limit run in a real memory cgroup made for the test (v1 or v2, see
``cgroups.py``), and are skipped with the reason where none can be made. Figures the
README quotes are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from adaptive_cache.stores.files import pid_alive
from tests.reliability.cgroups import MemoryCgroup, memory_cgroup

MiB = 1024**2
GiB = 1024**3
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cmd(command: str, args: dict) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.children", command, json.dumps(args)]


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1]), err


def _run_in(cg: MemoryCgroup | None, command: str, args: dict) -> tuple[dict, str]:
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": _env()}
    cmd = _cmd(command, args)
    proc = cg.popen(cmd, **kw) if cg is not None else subprocess.Popen(cmd, **kw)
    return _finish(proc)


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A private directory on the real tmpfs: these caches' node registry is their own."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    path = Path("/dev/shm") / f"pytest-ac-mem-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """The synthetic data of a small run (32 train, 24 val receipts at full size)."""
    from training.data.synthetic import generate

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, n_train=32, n_val=24, seed=0, progress=False)
    return root


def test_two_gib_container_caches_the_whole_val_split_without_oom(small_run, shm_dir):
    with memory_cgroup(2 * GiB) as cg:
        kills, hits = cg.oom_kills(), cg.limit_hits()
        out, _ = _run_in(cg, "ocr", {"root": str(small_run), "shm_dir": str(shm_dir)})
        assert (cg.oom_kills(), cg.limit_hits()) == (kills, hits) == (0, 0)
        kernel_peak = cg.max_usage()
    val = out["val"]
    print(
        f"\n2 GiB {cg.version} cgroup: val budget {val['budget_bytes'] / MiB:.0f} MiB, train "
        f"{out['train']['budget_bytes'] / MiB:.0f} MiB "
        f"(node {val['node_budget_bytes'] / MiB:.0f} MiB; fixed 1 GiB reserve: "
        f"{out['old_rule_budget_bytes']} B), val cached {val['items']}/{val['n']}, "
        f"epoch 2 hits {out['epochs']['val'][1]['hits']}, peak {out['peak_memory_bytes'] / MiB:.0f}"
        f" MiB ({out['peak_memory_source']}), kernel max usage {(kernel_peak or 0) / MiB:.0f} MiB"
    )
    assert out["limit_bytes"] == 2 * GiB  # the child saw its container
    assert out["old_rule_budget_bytes"] == 0  # what a fixed 1 GiB reserve left
    assert val["budget_bytes"] > 0
    first, second = out["epochs"]["val"]
    assert first["samples"] == second["samples"] == val["n"] == 24
    assert first["hits"] == 0
    assert second["hits"] == val["n"] and second["misses"] == 0  # fully cached
    assert val["items"] == val["n"]
    # The node budget is shared by train and val: neither had it all.
    train = out["train"]
    assert val["budget_bytes"] + train["budget_bytes"] <= val["node_budget_bytes"] + 16 * MiB
    # The peak is the container's own usage, which the limit bounds.
    assert out["peak_memory_source"] == "cgroup"
    assert 0 < out["peak_memory_bytes"] <= 2 * GiB


def test_max_bytes_above_the_container_is_clamped_with_one_warning(shm_dir):
    limit = 600 * MiB
    args = {
        "shm_dir": str(shm_dir),
        "n": 160,
        "nbytes": 4 * MiB,  # 640 MiB of samples: more than the container
        "epochs": 2,
        "config": {"max_bytes": "2GiB"},
    }
    with memory_cgroup(limit) as cg:
        out, err = _run_in(cg, "arrays", args)
        assert cg.oom_kills() == 0
    ceiling = int(0.5 * limit) - int(0.1 * limit)
    warnings = [line for line in err.splitlines() if "cache.max_bytes=" in line]
    print(
        f"\n600 MiB cgroup, max_bytes=2GiB: budget {out['budget_bytes'] / MiB:.0f} MiB; {warnings}"
    )
    assert len(warnings) == 1
    assert "cache.max_bytes=2.00 GiB" in warnings[0] and "limit 600.00 MiB" in warnings[0]
    assert out["budget_bytes"] <= ceiling and out["held_bytes"] <= ceiling
    assert out["items"] > 0
    assert all(e["samples"] == 160 for e in out["epochs"])


def test_workers_of_a_killed_parent_exit_at_once(tmp_path, shm_dir):
    stall = tmp_path / "stall"
    stall.mkdir()
    proc = subprocess.Popen(
        _cmd("orphan", {"shm_dir": str(shm_dir), "stall_dir": str(stall)}),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(stall.iterdir())) < 2:  # both workers are inside the long stage
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "workers never started"
            time.sleep(0.05)
        workers = [psutil.Process(int(p.name)) for p in stall.iterdir()]
        assert all(w.ppid() == proc.pid for w in workers)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc.wait()
        alive = list(workers)
        while alive and time.monotonic() - killed < 30:  # bounded: never a hang
            alive = [w for w in alive if pid_alive(w.pid)]  # a zombie has exited
            time.sleep(0.01)
        seconds = time.monotonic() - killed
        print(f"\norphaned workers gone {seconds:.3f} s after their parent was killed")
        assert alive == [], f"workers {[w.pid for w in alive]} outlived their parent"
    finally:
        for p in stall.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p.name), signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _latest_before(probes: list[dict], t: float) -> dict | None:
    earlier = [p for p in probes if p["t"] <= t]
    return earlier[-1] if earlier else None


def test_two_runs_on_one_node_share_one_budget(tmp_path, shm_dir):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    common = {
        "shm_dir": str(shm_dir),
        "barrier": str(barrier),
        "n": 100,
        "nbytes": 4 * MiB,  # 400 MiB each: together more than the node's share
        "epochs": 3,
        "probe_interval_s": 0.05,
    }
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": _env()}
    with memory_cgroup(int(1.5 * GiB)) as cg:
        procs = {
            name: cg.popen(_cmd("node", {**common, "name": name, "sibling": other}), **kw)
            for name, other in (("a", "b"), ("b", "a"))
        }
        outs = {name: _finish(p)[0] for name, p in procs.items()}
        assert cg.oom_kills() == 0
    a, b = outs["a"], outs["b"]
    # Compare while both ran: every probe of one against the other's latest.
    start, end = max(a["start"], b["start"]), min(a["end"], b["end"])
    worst = 0.0
    pairs = 0
    for mine, theirs in ((a, b), (b, a)):
        for p in mine["probes"]:
            q = _latest_before(theirs["probes"], p["t"])
            if q is None or not start <= p["t"] <= end:
                continue
            share = max(p["node"], q["node"])
            total = p["budget"] + q["budget"]
            worst = max(worst, total / share if share else 0.0)
            pairs += 1
            # Within the node's share, give or take what one probe interval can move.
            assert total <= share + 0.01 * cg.limit, (p, q)
            assert p["held"] <= p["budget"] + 8 * MiB
    last_a, last_b = a["probes"][-1], b["probes"][-1]
    print(
        f"\ntwo runs in one 1.5 GiB cgroup: {pairs} probe pairs, sum of budgets at most "
        f"{worst:.3f} of the node's share; last budgets {last_a['budget'] / MiB:.0f} + "
        f"{last_b['budget'] / MiB:.0f} MiB of {last_a['node'] / MiB:.0f} MiB"
    )
    assert pairs >= 10
    # Each had about half, not the whole share it would claim alone.
    assert last_a["budget"] <= 0.55 * last_a["node"] and last_b["budget"] <= 0.55 * last_b["node"]
    assert a["held_bytes"] > 0 and b["held_bytes"] > 0
