"""Errors a user sees: what went wrong, in one line, and the exit code.

An error raised in a DataLoader worker reaches the main process re-raised by torch
with the worker's whole traceback as its message; a worker killed by a signal shows
up as a ``RuntimeError`` naming only its pid. :func:`describe` turns both, and the
configuration, input and store errors of a run, into one line (the traceback stays
available to ``--debug``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import signal

from adaptive_cache.loader import find_worker
from adaptive_cache.stores.base import StoreError

EXIT_USAGE = 2
"""Bad configuration or input (a key, a file, a store setting): fix it and rerun."""
EXIT_FAILED = 1
"""The run failed while running (a worker killed, say): nothing to fix in the input."""

_WORKER_TRACEBACK = re.compile(r"^Caught \w+ in DataLoader worker process (\d+)\.\nOriginal ")
_KILLED = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.]+)\.")
_EXITED = re.compile(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly")
_EXITED_CODE = re.compile(r"DataLoader worker \(pid (\d+)\) exited unexpectedly with exit code")


class WorkerDiedError(RuntimeError):
    """A DataLoader worker process died (killed by a signal, or exited) during a run.

    Attributes:
        split: the split whose loader the worker served (None if unknown).
        worker: the worker's id within that loader (None if unknown).
        pid: its process id.
        signal_name: ``SIGKILL`` and the like, or None if it exited without a signal.
        epoch: the epoch the run was in.
    """

    def __init__(
        self,
        *,
        pid: int,
        signal_name: str | None,
        split: str | None,
        worker: int | None,
        epoch: int,
    ) -> None:
        self.pid, self.signal_name, self.split, self.worker, self.epoch = (
            pid,
            signal_name,
            split,
            worker,
            epoch,
        )
        who = f"DataLoader worker {worker} (pid {pid})" if worker is not None else f"pid {pid}"
        where = f"{split} split" if split else "a DataLoader"
        how = f"was killed by signal {signal_name}" if signal_name else "exited unexpectedly"
        hint = (
            " (the kernel's OOM killer sends SIGKILL: see dmesg)"
            if signal_name == "SIGKILL"
            else ""
        )
        super().__init__(
            f"{who} of the {where} {how} in epoch {epoch}{hint}; the run stopped, "
            "its cache was released consistent"
        )


def _signal_name(description: str) -> str | None:
    """``"Killed"`` (torch prints ``strsignal``) -> ``"SIGKILL"``."""
    for sig in signal.Signals:
        if signal.strsignal(sig) == description:
            return sig.name
    return None


def worker_death(exc: BaseException, *, epoch: int) -> WorkerDiedError | None:
    """The :class:`WorkerDiedError` that ``exc`` (torch's report) stands for, else None."""
    if not isinstance(exc, RuntimeError) or isinstance(exc, WorkerDiedError):
        return None
    text = str(exc)
    pid, sig = None, None
    if m := _KILLED.search(text):
        pid, sig = int(m.group(1)), _signal_name(m.group(2)) or m.group(2)
    elif m := (_EXITED.search(text) or _EXITED_CODE.search(text)):
        pid = int(m.group(1).split(",")[0])
    if pid is None:
        return None
    record = find_worker(pid)
    if sig is None and record is not None and record.exitcode is not None and record.exitcode < 0:
        sig = signal.Signals(-record.exitcode).name
    return WorkerDiedError(
        pid=pid,
        signal_name=sig,
        split=record.cache if record else None,
        worker=record.worker if record else None,
        epoch=epoch,
    )


def one_line(exc: BaseException) -> str:
    """The message of ``exc``; for an error re-raised from a DataLoader worker, the
    original error's own message (the last line of the worker's traceback)."""
    text = str(exc)
    if _WORKER_TRACEBACK.match(text):
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), text)
        # "package.module.SomeError: message" -> "message"
        head, sep, message = last.partition(": ")
        return message if sep and re.fullmatch(r"[\w.]+", head) else last
    return text


def describe(exc: BaseException) -> tuple[str, int] | None:
    """``(one line, exit code)`` for an error a user can act on, else None (a bug)."""
    if isinstance(exc, WorkerDiedError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, ValueError | StoreError):
        return one_line(exc), EXIT_USAGE
    return None
