"""Real memory cgroups (v1 or v2) for tests, made under this process's own cgroup.

A test gets one with a limit, starts processes inside it (a shell writes its own pid
to ``cgroup.procs`` and then execs the command, so the command runs in the cgroup
from its first instruction), reads its OOM-kill and limit-hit counters, and removes
it afterwards. Where no cgroup can be made (not root, no writable memory hierarchy,
no memory controller for child cgroups) :func:`memory_cgroup` skips the test with
the reason.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> tuple[str | None, str | None]:
    v1 = v2 = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _parent() -> tuple[str, Path] | tuple[None, str]:
    """``(version, directory to create the test cgroup in)`` or ``(None, why not)``."""
    if os.geteuid() != 0:
        return None, "creating cgroups needs root"
    v1, v2 = _own_paths()
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        base = ROOT / "memory" / (v1 or "/").lstrip("/")
        return ("v1", base) if base.is_dir() else ("v1", ROOT / "memory")
    if (ROOT / "cgroup.controllers").exists() and v2 is not None:
        if "memory" not in (ROOT / "cgroup.controllers").read_text().split():
            return None, "cgroup v2 without the memory controller"
        base = ROOT / v2.lstrip("/")
        return "v2", base if base.is_dir() else ROOT
    return None, "no cgroup v1 memory hierarchy or cgroup v2 mount under /sys/fs/cgroup"


class MemoryCgroup:
    """One memory cgroup with a limit; see :func:`memory_cgroup`."""

    def __init__(self, version: str, path: Path, limit: int) -> None:
        self.version = version
        self.path = path
        self.limit = limit

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def _field(self, name: str, key: str) -> int:
        for line in self._read(name).splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
        return 0

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this cgroup."""
        if self.version == "v1":
            return self._field("memory.oom_control", "oom_kill")
        return self._field("memory.events", "oom_kill")

    def limit_hits(self) -> int:
        """Times usage reached the limit (v1 ``memory.failcnt``, v2 ``max`` events)."""
        if self.version == "v1":
            return int(self._read("memory.failcnt"))
        return self._field("memory.events", "max")

    def max_usage(self) -> int | None:
        """The kernel's own high-water mark of usage (page cache included)."""
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int(self._read(name))
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        return [int(p) for p in self._read("cgroup.procs").split()]

    def popen(self, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``cmd`` inside the cgroup."""
        procs = shlex.quote(str(self.path / "cgroup.procs"))
        script = f"echo $$ > {procs} && exec {shlex.join(cmd)}"
        return subprocess.Popen(["/bin/sh", "-c", script], **kwargs)


def _kill_all(cg: MemoryCgroup) -> None:
    for _ in range(50):
        pids = cg.pids()
        if not pids:
            return
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, 9)
        psutil.wait_procs([p for p in map(_proc, pids) if p is not None], timeout=1)
    time.sleep(0.1)


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


@contextmanager
def memory_cgroup(limit: int) -> Iterator[MemoryCgroup]:
    """A fresh memory cgroup limited to ``limit`` bytes (no swap), removed afterwards.

    Skips the calling test, with the reason, where none can be made.
    """
    version, base = _parent()
    if version is None:
        pytest.skip(f"no memory cgroup for this test: {base}")
    assert isinstance(base, Path)
    path = base / f"ac-test-{uuid.uuid4().hex[:10]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"no memory cgroup for this test: cannot create {path}: {exc}")
    cg = MemoryCgroup(version, path, limit)
    try:
        try:
            if version == "v1":
                (path / "memory.limit_in_bytes").write_text(str(limit))
                swap = path / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(limit))
            else:
                (path / "memory.max").write_text(str(limit))
                (path / "memory.swap.max").write_text("0")
        except OSError as exc:
            pytest.skip(f"no memory cgroup for this test: cannot limit {path}: {exc}")
        yield cg
    finally:
        if path.exists():
            _kill_all(cg)
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
