"""Run each benchmark contender in a forked child and sample its memory from outside.

A contender that ran in the benchmark's own process would leave allocations,
caches and arenas behind for the next one; a forked child starts from the same
clean state every time and gives everything back when it exits, so the peak
memory measured is that contender's alone.

:class:`TreeSampler` watches the child and its DataLoader workers from a thread of
the parent, every 50 ms: the sum of their RSS plus the bytes of the cache's files
in shared memory (tmpfs pages are not mapped by the store, so they are in no RSS;
they are counted once here). RSS counts a page shared by several processes (the
libraries, copy-on-write data inherited by forked workers) once per process;
PSS, which splits such pages between their users, is read every second as well
(it costs about 10 ms per process, too much for every 50 ms on 2 cores), and
whenever the child calls :func:`checkpoint` (at the end of every epoch, outside
the timed part), which waits until the parent has taken that sample.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

# In a contender's child: the connection to the parent (see checkpoint()).
_PARENT: Any = None


def _pss(pid: int) -> int:
    """Proportional set size of one process (``/proc/PID/smaps_rollup``), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def mapped_from(pid: int, directories: Sequence[str]) -> tuple[int, int]:
    """``(rss, pss)`` of the mappings of files in ``directories`` (``/proc/PID/smaps``).

    A cache's owner maps its shared-memory entries to serve hits; those pages are the
    files' own, counted once through ``shm_dirs``, so they are taken out of the RSS and
    PSS of the processes mapping them.
    """
    if not directories:
        return 0, 0
    prefixes = tuple(d.rstrip("/") + "/" for d in directories)
    rss = pss = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(maxsplit=1)[0]
                if not head.endswith(":"):  # a mapping's header: "addr perms off dev inode path"
                    parts = line.split(maxsplit=5)
                    inside = len(parts) == 6 and parts[5].startswith(prefixes)
                elif inside and head == "Rss:":
                    rss += int(line.split()[1]) * 1024
                elif inside and head == "Pss:":
                    pss += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return rss, pss


def dir_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes allocated to the files directly in ``directory`` (0 if it is gone)."""
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue  # removed while we looked
    except OSError:
        return 0
    return total


class TreeSampler:
    """Peak memory of a process and its descendants, sampled in a background thread.

    Args:
        root: pid of the process to watch (with every descendant it starts).
        shm_dirs: directories whose files count too (a cache's shared-memory store);
            pages of those files that a process maps are counted there, not in its
            RSS or PSS (read from ``smaps`` at every PSS sample).
        interval_s: seconds between RSS samples.
        pss_every: take a PSS sample every this many RSS samples.

    Example:
        >>> sampler = TreeSampler(child.pid, shm_dirs=["/dev/shm/adaptive-cache-x"])
        >>> sampler.start(); ...; sampler.stop()
        >>> sampler.peak_bytes, sampler.peak_pss_bytes
    """

    def __init__(
        self,
        root: int,
        *,
        shm_dirs: Sequence[str] = (),
        interval_s: float = 0.05,
        pss_every: int = 20,
    ) -> None:
        self.root = root
        self.shm_dirs = list(shm_dirs)
        self.interval_s = interval_s
        self.pss_every = max(1, pss_every)
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.samples = 0
        self._mapped_rss: dict[int, int] = {}  # pid -> RSS of its shm_dirs mappings
        self._ppid: dict[int, int] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def _members(self) -> list[int]:
        # Only new pids are asked for their parent: listing /proc is cheap, asking
        # psutil for the children of a process reads every process's stat (~5 ms).
        pids = set(psutil.pids())
        for gone in self._ppid.keys() - pids:
            del self._ppid[gone]
            self._procs.pop(gone, None)
        for pid in pids - self._ppid.keys():
            try:
                proc = psutil.Process(pid)
                self._ppid[pid] = proc.ppid()
                self._procs[pid] = proc
            except psutil.Error:
                self._ppid[pid] = -1
        children: dict[int, list[int]] = {}
        for pid, ppid in self._ppid.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            if pid in self._procs:
                out.append(pid)
            todo.extend(children.get(pid, ()))
        return out

    def sample(self, *, pss: bool = False) -> None:
        """Take one sample now (the thread calls this every ``interval_s``)."""
        with self._lock:
            self._sample(pss or self.samples % self.pss_every == 0)

    def _sample(self, pss: bool) -> None:
        members = self._members()
        mapped_pss = 0
        if pss and self.shm_dirs:
            # smaps costs milliseconds: read it at PSS samples only, and reuse the
            # mapped RSS found then for the RSS samples in between.
            self._mapped_rss = {}
            for pid in members:
                m_rss, m_pss = mapped_from(pid, self.shm_dirs)
                self._mapped_rss[pid] = m_rss
                mapped_pss += m_pss
        rss = 0
        for pid in members:
            try:
                rss += self._procs[pid].memory_info().rss - self._mapped_rss.get(pid, 0)
            except psutil.Error:
                continue
        shm = sum(dir_bytes(d) for d in self.shm_dirs)
        self.peak_bytes = max(self.peak_bytes, rss + shm)
        if pss:
            total = sum(_pss(pid) for pid in members) - mapped_pss
            self.peak_pss_bytes = max(self.peak_pss_bytes, total + shm)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process, its live descendants and the children
    it has reaped (DataLoader workers that have exited).

    Unlike wall time, the difference over an epoch does not depend on what else runs
    on the machine: it is the work the contender did.
    """
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue  # exited since the listing: its time is in children_* once reaped
        total += c.user + c.system
    return total


class ContenderError(RuntimeError):
    """A contender failed in its child process; the message carries its traceback."""


def checkpoint() -> None:
    """Have the parent sample this process tree's memory now, PSS included, and wait.

    Call it where memory peaks (the end of an epoch, outside the timed part); it does
    nothing outside a contender's child.
    """
    if _PARENT is not None:
        _PARENT.send(("sample", None))
        _PARENT.recv()


def _child(conn: Any, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    global _PARENT
    _PARENT = conn
    # Started by the fork server; inside, DataLoader workers fork as in a normal run.
    mp.set_start_method("fork", force=True)
    try:
        result = fn(*args)
    except BaseException:  # reported to the parent, which raises it there
        conn.send(("error", traceback.format_exc()))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def run_isolated(
    fn: Callable[..., dict[str, Any]],
    *args: Any,
    shm_dirs: Sequence[str | Path] = (),
    label: str = "contender",
    preload: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``fn(*args)`` in a child process and return its result with peak memory.

    The result gets ``peak_memory_bytes`` (RSS of the child's process tree plus the
    files in ``shm_dirs``, peak over 50 ms samples) and ``peak_pss_bytes`` (the same
    with PSS, sampled every second and at every :func:`checkpoint`), unless ``fn``
    set them itself, and ``load_average_1m`` (the machine's load before and after:
    other processes competing for the cores show there).

    ``preload`` names modules the fork server imports once, before the first
    contender, so that children start fast (it applies when the fork server starts:
    give the same list on every call).

    Raises:
        ContenderError: ``fn`` raised, or the child died without a result.
    """
    load_before = os.getloadavg()[0]
    # Not a plain fork: the caller may hold threads (an exporter, a test's server
    # readers) whose locks a forked child would inherit held; a contender forked that
    # way hung in the full test suite. The fork server is a clean, single-threaded
    # process that has imported the benchmark once, so children still start fast.
    ctx = mp.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(list(preload))
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child_conn, fn, args), name=f"bench-{label}")
    proc.start()
    child_conn.close()
    sampler = TreeSampler(proc.pid, shm_dirs=[str(d) for d in shm_dirs])
    sampler.start()
    try:
        while True:
            status, payload = conn.recv()
            if status != "sample":
                break
            sampler.sample(pss=True)
            conn.send(("sampled", None))
    except EOFError:
        status, payload = "error", "the child process died without a result"
    finally:
        proc.join()
        sampler.stop()
        conn.close()
    if status != "ok":
        raise ContenderError(f"{label} failed (exit code {proc.exitcode}):\n{payload}")
    result = dict(payload)
    result.setdefault("peak_memory_bytes", sampler.peak_bytes)
    result.setdefault("peak_pss_bytes", sampler.peak_pss_bytes)
    result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    return result
