"""Worker processes that do not outlive the process that started them.

A DataLoader worker checks that its parent is alive only while it waits for work
(every 5 s). One busy in a long stage, or blocked writing a batch into a pipe nobody
reads any more, survives its parent: in a 600 MiB cgroup the trainer was OOM-killed
and a worker (530 MB, blocked on a pipe) lived on for minutes, ignoring SIGTERM.
:class:`WorkerInit` asks the kernel to SIGKILL the worker when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, Linux only), then checks that the parent had not
already died before that took effect.

The signal fires when the *thread* that started the worker exits, not only the
process: a loader iterated from a short-lived thread loses its workers with that
thread (Lightning and plain loops iterate in the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_libc: Any = None


def _prctl() -> Callable[..., int] | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies.

    Args:
        parent_pid: the process that started this one (for the fork server of
            ``forkserver``, the process that asked it to).

    Returns:
        Whether the request was made (``False`` off Linux, or if ``prctl`` failed).
        If ``parent_pid`` has already died, this process kills itself at once.
    """
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    # The parent may have died between the fork and the prctl: then no signal comes.
    # A parent that exits is replaced as our parent at once; with forkserver our
    # parent is the fork server (which exits with the process it serves).
    if os.getppid() != parent_pid and not _alive(parent_pid):
        os.kill(os.getpid(), signal.SIGKILL)
    return True


class WorkerInit:
    """A DataLoader ``worker_init_fn`` that ties the worker's life to its parent's,
    then calls the user's ``worker_init_fn`` (if any).

    Build it in the process that starts the workers (it records that process's pid);
    it pickles, for the ``spawn`` and ``forkserver`` start methods, when ``fn`` does.

    Example:
        >>> DataLoader(ds, num_workers=2, worker_init_fn=WorkerInit(user_fn))
    """

    def __init__(self, fn: Callable[[int], None] | None = None) -> None:
        self.fn = fn
        self.parent_pid = os.getpid()

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.parent_pid)
        if self.fn is not None:
            self.fn(worker_id)
