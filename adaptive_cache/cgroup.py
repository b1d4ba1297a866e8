"""Container memory limits and usage from cgroup v1 or v2 files.

Read by :class:`~adaptive_cache.memory.MemoryProbe`. Which hierarchy applies and where
this process sits in it is worked out once, from ``/proc/self/cgroup``; afterwards each
reading is a few ``pread`` calls on file descriptors kept open (a fresh ``open`` costs
about three times as much, and the probe runs on the cache's hot path).

Usage excludes the inactive file cache (``inactive_file`` in ``memory.stat``), as
Docker and the kubelet compute a container's working set: page cache from reading the
dataset is reclaimable and must not look like pressure. Shared memory (``/dev/shm``)
pages are swap-backed, sit on the anonymous lists and so stay counted as used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The kernel reports "no limit" as a huge number (v1: PAGE_COUNTER_MAX rounded to pages)
# or as the word "max" (v2).
UNLIMITED = 2**62


@dataclass(frozen=True)
class CgroupMemory:
    """One reading of the binding cgroup: ``None`` means unlimited or unknown."""

    limit_bytes: int | None
    high_bytes: int | None
    usage_bytes: int | None


class KernelFile:
    """A small kernel file read with ``pread`` at offset 0 (which regenerates it)."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> bytes | None:
        """The file's content, or ``None`` when it is missing or unreadable."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            return os.pread(self._fd, 65536, 0)
        except OSError:
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def parse_limit(raw: bytes | None) -> int | None:
    """``b"max\\n"``, a huge v1 value or an unreadable file -> ``None``; else bytes."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or text == b"max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def stat_field(raw: bytes | None, name: bytes) -> int | None:
    """The value of ``name`` in a ``memory.stat`` file (``b"name value"`` lines)."""
    if raw is None:
        return None
    key = name + b" "
    if raw.startswith(key):
        pos = 0
    else:
        pos = raw.find(b"\n" + key) + 1
        if pos == 0:
            return None
    end = raw.find(b"\n", pos)
    try:
        return int(raw[pos + len(key) : end if end >= 0 else None])
    except ValueError:
        return None


def _min_opt(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class _V1:
    """cgroup v1: ``memory.limit_in_bytes`` / ``memory.usage_in_bytes`` of one directory.

    ``hierarchical_memory_limit`` in ``memory.stat`` already folds in every ancestor's
    limit, so one directory suffices.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._limit = KernelFile(directory / "memory.limit_in_bytes")
        self._usage = KernelFile(directory / "memory.usage_in_bytes")
        self._stat = KernelFile(directory / "memory.stat")

    def read(self) -> CgroupMemory:
        stat = self._stat.read()
        hierarchical = stat_field(stat, b"hierarchical_memory_limit")
        limit = _min_opt(
            parse_limit(self._limit.read()),
            None if hierarchical is None or hierarchical >= UNLIMITED else hierarchical,
        )
        usage = parse_limit(self._usage.read())
        if usage is not None:
            inactive = stat_field(stat, b"total_inactive_file")
            if inactive is None:
                inactive = stat_field(stat, b"inactive_file")
            usage = max(0, usage - (inactive or 0))
        return CgroupMemory(limit, None, usage)

    def close(self) -> None:
        for f in (self._limit, self._usage, self._stat):
            f.close()


class _V2Level:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.max = KernelFile(directory / "memory.max")
        self.high = KernelFile(directory / "memory.high")
        self.current = KernelFile(directory / "memory.current")
        self.stat = KernelFile(directory / "memory.stat")

    def read(self) -> CgroupMemory:
        usage = parse_limit(self.current.read())
        if usage is not None:
            inactive = stat_field(self.stat.read(), b"inactive_file")
            usage = max(0, usage - (inactive or 0))
        return CgroupMemory(parse_limit(self.max.read()), parse_limit(self.high.read()), usage)

    def close(self) -> None:
        for f in (self.max, self.high, self.current, self.stat):
            f.close()


class _V2:
    """cgroup v2: ``memory.max``/``memory.high``/``memory.current`` of this process's
    cgroup and of each ancestor; the level with the least room left is the one that binds.
    """

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories
        self._levels = [_V2Level(d) for d in directories]

    def read(self) -> CgroupMemory:
        best: CgroupMemory | None = None
        best_room: int | None = None
        own_usage: int | None = None
        for level in self._levels:
            m = level.read()
            if own_usage is None:
                own_usage = m.usage_bytes
            cap = _min_opt(m.limit_bytes, m.high_bytes)
            if cap is None:
                continue
            room = cap - (m.usage_bytes or 0)
            if best_room is None or room < best_room:
                best, best_room = m, room
        return best if best is not None else CgroupMemory(None, None, own_usage)

    def close(self) -> None:
        for level in self._levels:
            level.close()


def _own_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v1 memory path, v2 path) of this process, from ``/proc/self/cgroup`` lines
    ``hierarchy-id:controllers:path``."""
    v1 = v2 = None
    try:
        text = Path(proc_cgroup).read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _inside(root: Path, path: str | None) -> Path | None:
    # Inside a cgroup namespace the recorded path may be the host's: it does not exist
    # under our mount, and the mount root is then our own cgroup.
    if not path or path == "/" or ".." in path.split("/"):
        return None
    candidate = root / path.lstrip("/")
    return candidate if candidate.is_dir() else None


def open_cgroup(cgroup_root: str, proc_cgroup: str) -> _V1 | _V2 | None:
    """The reader for this process's memory cgroup, or ``None`` outside any."""
    root = Path(cgroup_root)
    v1_path, v2_path = _own_paths(proc_cgroup)
    v1_root = root / "memory"
    if (v1_root / "memory.limit_in_bytes").exists():
        directory = _inside(v1_root, v1_path) or v1_root
        log.debug("memory probe: cgroup v1 at %s", directory)
        return _V1(directory)
    if (root / "cgroup.controllers").exists():
        own = _inside(root, v2_path)
        levels: list[Path] = []
        d = own
        while d is not None and d != root:
            levels.append(d)
            d = d.parent
        levels.append(root)
        log.debug("memory probe: cgroup v2 at %s", levels[0])
        return _V2(levels)
    return None
