"""Device memory readings: the usable-memory arithmetic, the host and fake probes."""

from __future__ import annotations

import pytest
import torch

from adaptive_cache.device_memory import (
    CudaProbe,
    DeviceMemory,
    DeviceProbe,
    FakeDeviceProbe,
    HostProbe,
    default_probe,
)
from adaptive_cache.memory import FakeProbe, MemoryProbe


def test_usable_memory_leaves_room_for_the_process_peak():
    # 10 GB free; the model peaked at 30 GB and holds 12 GB now, 2 GB of it our batches:
    # 20 GB comes back at its next peak, so nothing is usable.
    r = DeviceMemory(80, free_bytes=10, allocated_bytes=12, peak_allocated_bytes=30)
    assert r.usable(held=2) == 0
    # Between steps of a smaller model: 40 free, peak 10 with 4 allocated (no batches).
    r = DeviceMemory(80, free_bytes=40, allocated_bytes=4, peak_allocated_bytes=10)
    assert r.usable(held=0) == 34
    # Our own batches taken from the allocator's pool do not count as the model's peak.
    r = DeviceMemory(80, free_bytes=40, allocated_bytes=8, peak_allocated_bytes=10)
    assert r.usable(held=4) == 34


def test_host_probe_reads_real_memory():
    r = HostProbe(MemoryProbe(gpus=False)).read()
    assert 0 < r.free_bytes <= r.total_bytes
    assert r.allocated_bytes == r.peak_allocated_bytes == 0
    assert r.usable(held=10**6) == r.free_bytes  # host bytes held are not "allocated"


def test_host_probe_follows_the_memory_probe():
    fake = FakeProbe(total_bytes=8 * 2**30, available_bytes=3 * 2**30)
    assert HostProbe(fake).read() == DeviceMemory(8 * 2**30, 3 * 2**30)


def test_fake_probe_subtracts_what_is_held():
    held = [0]
    probe = FakeDeviceProbe(100, 80, held=lambda: held[0])
    held[0] = 30
    assert probe.read().free_bytes == 50 and probe.reads == 1
    assert isinstance(probe, DeviceProbe)


def test_default_probe_by_device_type():
    assert isinstance(default_probe(torch.device("cpu")), HostProbe)
    with pytest.raises(ValueError, match="cuda"):
        CudaProbe("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_probe_sees_a_tensor_allocated():
    probe = CudaProbe("cuda:0")
    before = probe.read()
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda:0")
    after = probe.read()
    assert after.allocated_bytes - before.allocated_bytes >= x.numel()
    assert after.peak_allocated_bytes >= after.allocated_bytes
    assert 0 < after.free_bytes <= after.total_bytes
