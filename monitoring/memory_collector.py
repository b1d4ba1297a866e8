"""MemoryCollector: host, container and GPU memory, read from the probe at scrape time.

The probe is :class:`adaptive_cache.memory.MemoryProbe` in a run and a fake in tests;
anything with ``read()`` returning the fields of :class:`MemoryReadingLike` works.
Container series appear only where the probe reports them (a cgroup with a limit),
GPU series only for the GPUs it sees, so an unlimited CPU host exports neither.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from monitoring import metrics as m

logger = logging.getLogger(__name__)

_SPECS = (
    m.MEMORY_AVAILABLE,
    m.MEMORY_LIMIT,
    m.HOST_AVAILABLE,
    m.HOST_TOTAL,
    m.CONTAINER_LIMIT,
    m.CONTAINER_HIGH,
    m.CONTAINER_USAGE,
    m.GPU_TOTAL,
    m.GPU_USED,
    m.GPU_FREE,
)


class GpuMemoryLike(Protocol):
    index: int
    total_bytes: int
    used_bytes: int
    free_bytes: int


class MemoryReadingLike(Protocol):
    """The fields of ``adaptive_cache.memory.MemoryReading`` this collector uses."""

    host_total_bytes: int
    host_available_bytes: int
    container_limit_bytes: int | None
    container_high_bytes: int | None
    container_usage_bytes: int | None
    gpus: Sequence[GpuMemoryLike]

    @property
    def limit_bytes(self) -> int: ...

    @property
    def available_bytes(self) -> int: ...


class MemoryReader(Protocol):
    """Anything with ``read()``; ``adaptive_cache.memory.MemoryProbe`` is one."""

    def read(self) -> MemoryReadingLike: ...


class MemoryCollector(Collector):
    """Exports one fresh probe reading per scrape.

    Args:
        probe: the memory probe; ``None`` exports nothing until :attr:`probe` is set.
        registry: registry to register with; ``None`` leaves registration to the caller.
    """

    def __init__(
        self, probe: MemoryReader | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.probe = probe
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterator[Metric]:
        for spec in _SPECS:
            yield spec.new_family()

    def collect(self) -> Iterator[Metric]:
        families = {spec.name: spec.new_family() for spec in _SPECS}
        probe = self.probe
        if probe is not None:
            try:
                _add_reading(families, probe.read())
            except Exception:
                # Cache metrics must still be scraped when the probe fails.
                logger.exception("reading the memory probe failed")
        yield from families.values()


def _add_reading(fam: dict[str, Metric], r: MemoryReadingLike) -> None:
    fam[m.MEMORY_AVAILABLE.name].add_metric([], r.available_bytes)
    fam[m.MEMORY_LIMIT.name].add_metric([], r.limit_bytes)
    fam[m.HOST_AVAILABLE.name].add_metric([], r.host_available_bytes)
    fam[m.HOST_TOTAL.name].add_metric([], r.host_total_bytes)
    for spec, value in (
        (m.CONTAINER_LIMIT, r.container_limit_bytes),
        (m.CONTAINER_HIGH, r.container_high_bytes),
        (m.CONTAINER_USAGE, r.container_usage_bytes),
    ):
        if value is not None:
            fam[spec.name].add_metric([], value)
    for gpu in r.gpus:
        label = [str(gpu.index)]
        fam[m.GPU_TOTAL.name].add_metric(label, gpu.total_bytes)
        fam[m.GPU_USED.name].add_metric(label, gpu.used_bytes)
        fam[m.GPU_FREE.name].add_metric(label, gpu.free_bytes)
