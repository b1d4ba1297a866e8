"""Device memory readings for the device tier: what is free on a GPU (or the host).

:class:`CudaProbe` reads one CUDA device: the driver's free memory
(``torch.cuda.mem_get_info``, cross-checked with NVML through
:class:`~adaptive_cache.memory.MemoryProbe` where the device mapping is certain) plus
the blocks torch's caching allocator holds unused, and the allocator's current and
peak allocation. :class:`HostProbe` gives the host's available memory in the same
form, for ``device="cpu"``; :class:`FakeDeviceProbe` is set by hand in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from adaptive_cache.memory import MemoryProbe, Probe


@dataclass(frozen=True)
class DeviceMemory:
    """One reading of the device's memory, in bytes.

    Attributes:
        total_bytes: the device's memory (the host's limit for ``cpu``).
        free_bytes: memory no process and no live tensor of this one uses.
        allocated_bytes: bytes of live tensors of this process (0 for ``cpu``).
        peak_allocated_bytes: the most this process had allocated at once (0 for ``cpu``).
    """

    total_bytes: int
    free_bytes: int
    allocated_bytes: int = 0
    peak_allocated_bytes: int = 0

    def usable(self, held: int) -> int:
        """Free bytes left once this process's own peak comes back (``held`` excluded)."""
        comes_back = max(0, self.peak_allocated_bytes - max(0, self.allocated_bytes - held))
        return max(0, self.free_bytes - comes_back)


@runtime_checkable
class DeviceProbe(Protocol):
    """Anything that takes a :class:`DeviceMemory` reading (inject a fake in tests)."""

    def read(self) -> DeviceMemory: ...


class HostProbe:
    """Host memory as a device reading (``device="cpu"``), from a :class:`Probe`."""

    def __init__(self, probe: Probe | None = None) -> None:
        self.probe = probe if probe is not None else MemoryProbe(gpus=False)

    def read(self) -> DeviceMemory:
        r = self.probe.read()
        return DeviceMemory(total_bytes=r.limit_bytes, free_bytes=r.available_bytes)


class CudaProbe:
    """One CUDA device: driver free memory, NVML and the caching allocator's counters.

    ``torch.cuda.mem_get_info`` reads the driver's free memory of exactly this device.
    NVML (through :class:`MemoryProbe`) reads the same numbers but enumerates devices
    in PCI order, while CUDA's index follows ``CUDA_VISIBLE_DEVICES`` and
    ``CUDA_DEVICE_ORDER``; its reading is used (the smaller free value wins) only when
    the mapping is certain: one device on both sides.
    """

    def __init__(self, device: torch.device | str, probe: Probe | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"CudaProbe needs a cuda device, got {self.device}")
        self.probe = probe if probe is not None else MemoryProbe()

    def read(self) -> DeviceMemory:
        free, total = torch.cuda.mem_get_info(self.device)
        gpus = self.probe.read().gpus
        if len(gpus) == 1 and torch.cuda.device_count() == 1:
            free = min(free, gpus[0].free_bytes)
        allocated = torch.cuda.memory_allocated(self.device)
        pool_free = torch.cuda.memory_reserved(self.device) - allocated
        return DeviceMemory(
            total_bytes=int(total),
            free_bytes=int(free + max(0, pool_free)),
            allocated_bytes=int(allocated),
            peak_allocated_bytes=int(torch.cuda.max_memory_allocated(self.device)),
        )


class FakeDeviceProbe:
    """A device probe set by hand, for tests and benchmarks.

    Args:
        total_bytes: the device's memory.
        free_bytes: free memory when nothing is held.
        held: if given, its value is subtracted from ``free_bytes`` at every reading
            (pass ``lambda: cache.bytes_held`` to model a device the cache fills).

    Example:
        >>> probe = FakeDeviceProbe(total_bytes=4096, free_bytes=2048)
        >>> probe.read().free_bytes
        2048
    """

    def __init__(
        self, total_bytes: int, free_bytes: int, *, held: Callable[[], int] | None = None
    ) -> None:
        self.total_bytes = total_bytes
        self.free_bytes = free_bytes
        self.held = held
        self.reads = 0

    def read(self) -> DeviceMemory:
        self.reads += 1
        used = self.held() if self.held is not None else 0
        return DeviceMemory(self.total_bytes, max(0, self.free_bytes - used))


def default_probe(device: torch.device) -> DeviceProbe:
    """:class:`CudaProbe` for a CUDA device, :class:`HostProbe` for anything else."""
    return CudaProbe(device) if device.type == "cuda" else HostProbe()
