"""MemoryCollector: the probe is read at scrape time; absent things are not exported."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.registry import CollectorRegistry

from adaptive_cache.memory import FakeProbe, GpuMemory, MemoryProbe, MemoryReading
from monitoring.memory_collector import MemoryCollector
from tests.monitoring.helpers import collect, names, value

GiB = 2**30


def _container_reading() -> MemoryReading:
    return MemoryReading(
        host_total_bytes=64 * GiB,
        host_available_bytes=40 * GiB,
        container_limit_bytes=16 * GiB,
        container_high_bytes=14 * GiB,
        container_usage_bytes=10 * GiB,
        gpus=(
            GpuMemory(0, "A", total_bytes=80 * GiB, used_bytes=30 * GiB, free_bytes=50 * GiB),
            GpuMemory(1, "B", total_bytes=24 * GiB, used_bytes=20 * GiB, free_bytes=4 * GiB),
        ),
    )


def test_every_field_of_a_container_reading_is_exported() -> None:
    reading = _container_reading()
    registry = CollectorRegistry()
    MemoryCollector(FakeProbe(reading), registry=registry)
    s = collect(registry)
    assert value(s, "adaptive_cache_host_memory_total_bytes") == 64 * GiB
    assert value(s, "adaptive_cache_host_memory_available_bytes") == 40 * GiB
    assert value(s, "adaptive_cache_container_memory_limit_bytes") == 16 * GiB
    assert value(s, "adaptive_cache_container_memory_high_bytes") == 14 * GiB
    assert value(s, "adaptive_cache_container_memory_usage_bytes") == 10 * GiB
    # The effective view: capped by memory.high, minus what the container uses.
    assert value(s, "adaptive_cache_memory_limit_bytes") == reading.limit_bytes == 14 * GiB
    assert value(s, "adaptive_cache_memory_available_bytes") == reading.available_bytes == 4 * GiB
    assert value(s, "adaptive_cache_gpu_memory_total_bytes", gpu="1") == 24 * GiB
    assert value(s, "adaptive_cache_gpu_memory_used_bytes", gpu="1") == 20 * GiB
    assert value(s, "adaptive_cache_gpu_memory_free_bytes", gpu="0") == 50 * GiB


def test_no_container_and_no_gpu_series_without_them() -> None:
    registry = CollectorRegistry()
    MemoryCollector(FakeProbe(total_bytes=16 * GiB, available_bytes=6 * GiB), registry=registry)
    present = names(collect(registry))
    assert "adaptive_cache_memory_available_bytes" in present
    assert not {n for n in present if "container" in n or "gpu" in n}


def test_probe_is_read_at_every_scrape() -> None:
    probe = FakeProbe(total_bytes=16 * GiB, available_bytes=8 * GiB)
    registry = CollectorRegistry()
    MemoryCollector(probe, registry=registry)
    first = collect(registry)
    probe.set(host_available_bytes=1 * GiB)
    second = collect(registry)
    assert value(first, "adaptive_cache_host_memory_available_bytes") == 8 * GiB
    assert value(second, "adaptive_cache_host_memory_available_bytes") == 1 * GiB
    assert probe.reads == 2


def test_without_a_probe_nothing_is_read_and_the_families_are_empty() -> None:
    registry = CollectorRegistry()
    collector = MemoryCollector(registry=registry)
    assert not [n for n in names(collect(registry)) if n.startswith("adaptive_cache")]
    collector.probe = FakeProbe()
    assert "adaptive_cache_memory_limit_bytes" in names(collect(registry))


def test_a_failing_probe_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Failing:
        def read(self) -> MemoryReading:
            raise PermissionError("/sys/fs/cgroup/memory.max")

    registry = CollectorRegistry()
    MemoryCollector(Failing(), registry=registry)
    with caplog.at_level(logging.ERROR, logger="monitoring.memory_collector"):
        assert not [n for n in names(collect(registry)) if n.startswith("adaptive_cache")]
    assert "memory probe failed" in caplog.text


def test_the_real_probe_exports_host_memory() -> None:
    registry = CollectorRegistry()
    MemoryCollector(MemoryProbe(gpus=False), registry=registry)
    s = collect(registry)
    total = value(s, "adaptive_cache_host_memory_total_bytes")
    assert 0 < value(s, "adaptive_cache_host_memory_available_bytes") <= total
    assert value(s, "adaptive_cache_memory_available_bytes") > 0
    assert value(s, "adaptive_cache_memory_available_bytes") <= value(
        s, "adaptive_cache_memory_limit_bytes"
    )
