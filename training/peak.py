"""Peak memory of a training run, measured so that it compares with the memory limit.

Summing RSS over the trainer and its DataLoader workers counts every page they share
(libraries, copy-on-write data inherited by forked workers) once per process: a run
in a 2 GiB cgroup reported a peak of 2.43 GiB. :class:`PeakSampler` says which
measure it took (``peak_memory_source`` in ``summary.json``; the trainer samples
through :class:`training.callbacks.PeakMemory`):

- ``"cgroup"``: in a memory cgroup with a limit, the cgroup's own usage less its
  inactive page cache (the working set, as the cache's probe and the kubelet count
  it): what the limit is enforced against, every process of the container included;
- ``"pss"``: elsewhere, the proportional set size summed over this process and its
  descendants (a shared page is split between the processes using it, read from
  ``/proc/PID/smaps_rollup``), plus the cache's shared-memory bytes that no process
  maps (tmpfs pages in no process's PSS);
- ``"rss"``: without ``smaps_rollup`` (not Linux), RSS summed as before, an upper
  bound.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from adaptive_cache.memory import MemoryProbe, Probe

#: Seconds between samples taken at batch ends, per source. Reading smaps_rollup
#: costs about 15 us per MiB mapped (30 ms for a 2 GiB trainer), so PSS is sampled
#: less often; every source is also sampled at each epoch end.
INTERVALS = {"cgroup": 0.5, "pss": 5.0, "rss": 0.5}


def smaps_pss(pid: int) -> tuple[int, int] | None:
    """``(Pss, Pss_Shmem)`` of one process in bytes, or ``None`` if unreadable."""
    pss = shmem = None
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss_Shmem:"):
                    shmem = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None if pss is None else (pss, shmem or 0)


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def tree_pss(pid: int | None = None) -> tuple[int, int] | None:
    """``(Pss, Pss_Shmem)`` summed over process ``pid`` (default: this one) and its
    descendants; ``None`` when ``smaps_rollup`` cannot be read for it."""
    root = psutil.Process(pid)
    total = smaps_pss(root.pid)
    if total is None:
        return None
    pss, shmem = total
    for child in _tree(root)[1:]:
        got = smaps_pss(child.pid)
        if got is not None:  # exited since the listing
            pss, shmem = pss + got[0], shmem + got[1]
    return pss, shmem


def tree_rss(pid: int | None = None) -> int:
    """RSS summed over process ``pid`` and its descendants (counts shared pages often)."""
    total = 0
    for proc in _tree(psutil.Process(pid)):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakSampler:
    """Peak memory of the run, from the source that fits where it runs (module doc).

    Args:
        caches: the run's caches; the bytes of shared ones count where no process maps
            them (``pss`` and ``rss`` sources).
        probe: memory probe (the cgroup source reads its container usage).

    Attributes:
        peak: the highest sample, bytes.
        source: ``"cgroup"``, ``"pss"`` or ``"rss"``.
        interval_s: seconds between samples the trainer takes at batch ends.

    Example:
        >>> sampler = PeakSampler(caches)
        >>> sampler.sample(); sampler.peak, sampler.source
    """

    def __init__(self, caches: dict[str, Any], probe: Probe | None = None) -> None:
        self.caches = caches
        self.probe = probe if probe is not None else MemoryProbe(gpus=False)
        reading = self.probe.read()
        limited = reading.limit_bytes < reading.host_total_bytes
        if limited and reading.container_usage_bytes is not None:
            self.source = "cgroup"
        elif smaps_pss(psutil.Process().pid) is not None:
            self.source = "pss"
        else:
            self.source = "rss"
        self.interval_s = INTERVALS[self.source]
        self.peak = 0
        self.sampled_at = -float("inf")

    def _shared_cache_bytes(self) -> int:
        return sum(c.bytes_held for c in self.caches.values() if c.store.shared)

    def measure(self) -> int:
        """Memory in use now, by this source."""
        if self.source == "cgroup":
            usage = self.probe.read().container_usage_bytes
            if usage is not None:
                return usage
        if self.source == "pss":
            got = tree_pss()
            if got is not None:
                pss, mapped_shmem = got
                return pss + max(0, self._shared_cache_bytes() - mapped_shmem)
        return tree_rss() + self._shared_cache_bytes()

    def sample(self) -> None:
        """Take one sample now."""
        self.sampled_at = time.monotonic()
        self.peak = max(self.peak, self.measure())

    def due(self) -> bool:
        """Whether ``interval_s`` has passed since the last sample."""
        return time.monotonic() - self.sampled_at >= self.interval_s
