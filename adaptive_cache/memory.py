"""Memory probes: how much RAM (and GPU memory) is really free for this process.

:class:`MemoryProbe` combines the host's view (``MemAvailable``, what psutil reports as
``available``), the container's cgroup limit and usage (v1 or v2, see
:mod:`adaptive_cache.cgroup`) and per-GPU memory through NVML. :class:`FakeProbe`
returns readings set by hand, for tests and benchmarks.

Example:
    >>> probe = MemoryProbe()
    >>> r = probe.read()
    >>> r.available_bytes <= r.limit_bytes
    True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import psutil

from adaptive_cache.cgroup import KernelFile, open_cgroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuMemory:
    """Memory of one GPU, in bytes."""

    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class MemoryReading:
    """One reading of host, container and GPU memory, in bytes.

    Container fields are ``None`` outside a memory cgroup or when it has no limit.
    """

    host_total_bytes: int
    host_available_bytes: int
    container_limit_bytes: int | None
    container_high_bytes: int | None
    container_usage_bytes: int | None
    gpus: tuple[GpuMemory, ...] = ()

    @property
    def limit_bytes(self) -> int:
        """The most memory this process may use: host total, capped by cgroup max/high."""
        limit = self.host_total_bytes
        for cap in (self.container_limit_bytes, self.container_high_bytes):
            if cap is not None:
                limit = min(limit, cap)
        return limit

    @property
    def available_bytes(self) -> int:
        """Memory that can still be used before hitting the host's or the container's end."""
        available = self.host_available_bytes
        if self.container_usage_bytes is not None:
            available = min(available, self.limit_bytes - self.container_usage_bytes)
        return max(0, min(available, self.limit_bytes))


@runtime_checkable
class Probe(Protocol):
    """Anything that can take a :class:`MemoryReading` (injected into the budget)."""

    def read(self) -> MemoryReading: ...


class _Gpus:
    """Per-GPU memory through NVML, else ``torch.cuda.mem_get_info``, else none.

    NVML is initialised lazily, once per process. The torch fallback is used only when
    torch is already imported and has initialised CUDA itself: calling ``mem_get_info``
    first would create a CUDA context (hundreds of MiB of GPU memory) in a process that
    may never use the GPU, such as a DataLoader worker.
    """

    def __init__(self) -> None:
        self._pid: int | None = None
        self._nvml: Any = None
        self._handles: list[tuple[Any, str]] = []

    def _init(self) -> None:
        self._pid = os.getpid()
        self._nvml, self._handles = None, []
        try:
            import pynvml
        except ImportError:
            log.debug("memory probe: nvidia-ml-py not installed; trying torch.cuda")
            return
        try:
            pynvml.nvmlInit()
            handles = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                handles.append((handle, name.decode() if isinstance(name, bytes) else name))
        except pynvml.NVMLError as exc:  # NVMLError_LibraryNotFound without a driver
            log.debug("memory probe: NVML unavailable (%s); trying torch.cuda", exc)
            return
        self._nvml, self._handles = pynvml, handles

    def read(self) -> tuple[GpuMemory, ...]:
        if self._pid != os.getpid():
            self._init()
        if self._nvml is not None:
            try:
                out = []
                for i, (handle, name) in enumerate(self._handles):
                    info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                    out.append(GpuMemory(i, name, int(info.total), int(info.used), int(info.free)))
                return tuple(out)
            except self._nvml.NVMLError as exc:
                log.debug("memory probe: NVML read failed (%s); no GPU readings", exc)
                self._nvml = None
                return ()
        return _torch_gpus()


def _torch_gpus() -> tuple[GpuMemory, ...]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return ()
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out.append(GpuMemory(i, torch.cuda.get_device_name(i), total, total - free, free))
    return tuple(out)


def _meminfo_field(raw: bytes | None, name: bytes) -> int | None:
    """``MemTotal:  24684096 kB`` -> bytes; ``None`` when absent."""
    if raw is None:
        return None
    pos = raw.find(name)
    if pos < 0:
        return None
    end = raw.find(b"\n", pos)
    fields = raw[pos + len(name) : end if end >= 0 else None].split()
    try:
        return int(fields[0]) * 1024
    except (IndexError, ValueError):
        return None


class MemoryProbe:
    """Reads host, container (cgroup v1/v2) and GPU memory; implements :class:`Probe`.

    A reading costs a handful of ``pread`` calls on files kept open (tens of
    microseconds), so the budget controller can probe often.

    Args:
        cgroup_root: where the cgroup hierarchy is mounted.
        proc_cgroup: the file naming this process's cgroups (``hid:controllers:path``).
        gpus: read GPU memory too (NVML, lazily initialised).
    """

    def __init__(
        self,
        *,
        cgroup_root: str = "/sys/fs/cgroup",
        proc_cgroup: str = "/proc/self/cgroup",
        gpus: bool = True,
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_cgroup = proc_cgroup
        self.gpus = gpus
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._cgroup = open_cgroup(self.cgroup_root, self.proc_cgroup)
        self._meminfo = KernelFile("/proc/meminfo")
        self._gpu_reader = _Gpus() if self.gpus else None

    def __getstate__(self) -> dict[str, Any]:
        # Open descriptors do not travel to another process; reopen there.
        return {"cgroup_root": self.cgroup_root, "proc_cgroup": self.proc_cgroup, "gpus": self.gpus}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def _host(self) -> tuple[int, int]:
        raw = self._meminfo.read()
        total = _meminfo_field(raw, b"MemTotal:")
        avail = _meminfo_field(raw, b"MemAvailable:")
        if total is not None and avail is not None:
            return total, avail
        vm = psutil.virtual_memory()  # not Linux, or a kernel without MemAvailable
        return int(vm.total), int(vm.available)

    def read(self) -> MemoryReading:
        """Take one reading."""
        if self._pid != os.getpid():
            # After fork the descriptors (and their file offsets) are shared with the
            # parent: take our own.
            self.close()
            self._setup()
        total, available = self._host()
        cg = self._cgroup.read() if self._cgroup is not None else None
        return MemoryReading(
            host_total_bytes=total,
            host_available_bytes=available,
            container_limit_bytes=cg.limit_bytes if cg else None,
            container_high_bytes=cg.high_bytes if cg else None,
            container_usage_bytes=cg.usage_bytes if cg else None,
            gpus=self._gpu_reader.read() if self._gpu_reader is not None else (),
        )

    def close(self) -> None:
        """Close the kernel files kept open (a later :meth:`read` reopens them)."""
        if self._cgroup is not None:
            self._cgroup.close()
        self._meminfo.close()


class FakeProbe:
    """A probe returning a reading set by hand; counts how often it was read.

    Example:
        >>> probe = FakeProbe(total_bytes=16 * 2**30, available_bytes=8 * 2**30)
        >>> probe.set(host_available_bytes=1 * 2**30)
        >>> probe.read().available_bytes
        1073741824
    """

    def __init__(
        self,
        reading: MemoryReading | None = None,
        *,
        total_bytes: int = 16 * 2**30,
        available_bytes: int | None = None,
    ) -> None:
        if reading is None:
            reading = MemoryReading(
                host_total_bytes=total_bytes,
                host_available_bytes=total_bytes if available_bytes is None else available_bytes,
                container_limit_bytes=None,
                container_high_bytes=None,
                container_usage_bytes=None,
            )
        self.reading = reading
        self.reads = 0

    def set(self, **fields: Any) -> None:
        """Replace fields of the current reading (names as in :class:`MemoryReading`)."""
        self.reading = dataclasses.replace(self.reading, **fields)

    def read(self) -> MemoryReading:
        self.reads += 1
        return self.reading
