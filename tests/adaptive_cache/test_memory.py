"""MemoryProbe: cgroup v1/v2 parsing from fixture trees, real memory pressure, GPUs."""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import sys
import time
from pathlib import Path

import pytest

from adaptive_cache.memory import FakeProbe, MemoryProbe, MemoryReading, Probe

MiB = 1024**2
GiB = 1024**3
FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"


def _probe(name: str) -> MemoryProbe:
    d = FIXTURES / name
    return MemoryProbe(cgroup_root=str(d / "root"), proc_cgroup=str(d / "proc_cgroup"), gpus=False)


@pytest.mark.parametrize(
    ("name", "limit", "high", "usage"),
    [
        # memory.current minus inactive_file, as the kubelet computes a working set
        ("v2_limited", 2 * GiB, int(1.75 * GiB), 1 * GiB - 256 * MiB),
        ("v2_unlimited", None, None, 300 * MiB - 50 * MiB),
        # own cgroup unlimited; the parent (1 GiB, 800 MiB used) has the least room left
        ("v2_nested", 1 * GiB, None, 800 * MiB),
        # recorded path absent under the mount (cgroup namespace): the root is ours
        ("v2_foreign_path", 512 * MiB, None, 128 * MiB),
        # v1 usage includes page cache: subtract total_inactive_file
        ("v1_limited", 4 * GiB, None, 2 * GiB),
        ("v1_unlimited", None, None, 386 * MiB),
        ("v1_hierarchical", 3 * GiB, None, 1 * GiB),
        ("v1_missing", 2 * GiB, None, None),
        ("none", None, None, None),
    ],
)
def test_cgroup_fixtures_parse(name, limit, high, usage):
    r = _probe(name).read()
    assert (r.container_limit_bytes, r.container_high_bytes, r.container_usage_bytes) == (
        limit,
        high,
        usage,
    )
    assert r.host_total_bytes > 0
    assert 0 <= r.available_bytes <= r.limit_bytes <= r.host_total_bytes
    if limit is not None and limit < r.host_total_bytes:
        assert r.limit_bytes == min(limit, high or limit)
        if usage is not None:
            assert r.available_bytes <= min(limit, high or limit) - usage


def test_reading_limit_and_available_take_the_minimum():
    r = MemoryReading(
        host_total_bytes=16 * GiB,
        host_available_bytes=12 * GiB,
        container_limit_bytes=8 * GiB,
        container_high_bytes=6 * GiB,
        container_usage_bytes=5 * GiB,
    )
    assert r.limit_bytes == 6 * GiB
    assert r.available_bytes == 1 * GiB
    over = MemoryReading(16 * GiB, 12 * GiB, 4 * GiB, None, 5 * GiB)
    assert over.available_bytes == 0  # usage above the limit never goes negative
    host_tight = MemoryReading(16 * GiB, 1 * GiB, 8 * GiB, None, 2 * GiB)
    assert host_tight.available_bytes == 1 * GiB


def test_real_probe_reads_this_machine():
    probe = MemoryProbe()
    assert isinstance(probe, Probe)
    r = probe.read()
    assert 0 < r.available_bytes <= r.limit_bytes <= r.host_total_bytes
    # A pickled probe reopens its files in the new process (or here).
    again = pickle.loads(pickle.dumps(probe)).read()
    assert again.host_total_bytes == r.host_total_bytes


def test_no_gpu_is_not_an_error_and_logs_at_most_once(caplog):
    caplog.set_level(logging.DEBUG, logger="adaptive_cache.memory")
    probe = MemoryProbe(gpus=True)
    readings = [probe.read() for _ in range(5)]
    gpu_logs = [rec for rec in caplog.records if rec.name == "adaptive_cache.memory"]
    assert len(gpu_logs) <= 1
    for r in readings:
        for gpu in r.gpus:  # on a GPU machine: sane numbers
            assert gpu.total_bytes > 0 and 0 <= gpu.free_bytes <= gpu.total_bytes


def _hold_memory(nbytes: int, ready, release) -> None:
    import numpy as np

    block = np.ones(nbytes, dtype=np.uint8)  # writes every page
    ready.set()
    release.wait(60)
    del block


def _poll(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_real_pressure_lowers_available_memory():
    size = 1 * GiB
    probe = MemoryProbe(gpus=False)
    before = probe.read().available_bytes
    if before < 4 * size:
        pytest.skip(f"only {before / GiB:.1f} GiB available; the test needs {4 * size / GiB:.0f}")
    ctx = mp.get_context("fork")  # spawn works too; fork starts in a fraction of the time
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_memory, args=(size, ready, release))
    child.start()
    try:
        assert ready.wait(60), "the child did not allocate in time"
        # Other processes on the machine move memory too: poll until the drop shows.
        assert _poll(lambda: before - probe.read().available_bytes >= 0.75 * size), (
            f"available fell by only {(before - probe.read().available_bytes) / MiB:.0f} MiB "
            f"while a child held {size / MiB:.0f} MiB"
        )
        held = probe.read().available_bytes
    finally:
        release.set()
        child.join(60)
    assert _poll(lambda: probe.read().available_bytes - held >= 0.75 * size), (
        "memory did not come back after the child exited"
    )


def test_fake_probe_is_settable_and_counts_reads():
    probe = FakeProbe(total_bytes=8 * GiB, available_bytes=6 * GiB)
    assert isinstance(probe, Probe)
    assert probe.read().available_bytes == 6 * GiB
    probe.set(container_limit_bytes=4 * GiB, container_usage_bytes=3 * GiB)
    r = probe.read()
    assert (r.limit_bytes, r.available_bytes) == (4 * GiB, 1 * GiB)
    assert probe.reads == 2
    with pytest.raises(TypeError):
        probe.set(no_such_field=1)


class _FakeNvml:
    """Stands in for the NVIDIA driver library, which this machine lacks."""

    class NVMLError(Exception):
        pass

    class _Info:
        total, used, free = 80 * GiB, 30 * GiB, 50 * GiB

    def __init__(self) -> None:
        self.inits = 0
        self.fail_reads = False

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"  # older bindings return bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Info:
        if self.fail_reads:
            raise self.NVMLError("GPU is lost")
        return self._Info()


def test_gpu_memory_through_nvml_initialised_once(monkeypatch):
    nvml = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = MemoryProbe(gpus=True)
    for _ in range(3):
        gpus = probe.read().gpus
    assert nvml.inits == 1
    assert [(g.index, g.name, g.total_bytes, g.used_bytes, g.free_bytes) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 80 * GiB, 30 * GiB, 50 * GiB),
        (1, "NVIDIA H100 80GB HBM3", 80 * GiB, 30 * GiB, 50 * GiB),
    ]
    nvml.fail_reads = True  # a failing driver degrades to "no GPU", without an error
    assert probe.read().gpus == ()
