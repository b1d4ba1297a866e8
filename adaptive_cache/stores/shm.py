"""ShmStore: node-shared entries, one file each in a tmpfs directory (``/dev/shm``).

Every process of the node (DataLoader workers with fork, spawn or forkserver; DDP
ranks) sees the same entries, held once. On tmpfs, deleting a file gives its pages
back to the operating system at once, so eviction really frees memory.

Ownership: the first process to open ``{shm_dir}/adaptive-cache-{namespace}`` owns it
and records its pid (with its start time and pid namespace, so a reused pid is not
mistaken for the owner) in ``.owner``. The owner removes the directory at
:meth:`ShmStore.close`, at exit, or when the store is garbage-collected. Opening a
store first removes every ``adaptive-cache-*`` directory whose owner is dead (killed
with SIGKILL, say), so a restart never fails on leftovers and shared memory never
outlives its owner for long. A process that opens the namespace while the owner lives
(another rank), or through :meth:`ShmStore.handle` (a worker), is not the owner and
never removes the directory. Creation and sweeping happen under an ``flock`` of the
shm directory, so processes starting together agree on one owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from adaptive_cache.stores.files import FILE_MODE, DirectoryStore, pid_alive
from adaptive_cache.stores.keys import check_namespace

log = logging.getLogger(__name__)

PREFIX = "adaptive-cache-"
OWNER_FILE = ".owner"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: Entries a process keeps mapped for :meth:`ShmStore.view` (the kernel allows about
#: 65,000 mappings per process by default; beyond this, views read a copy).
MAX_MAPPED = 16384


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _identity(pid: int) -> str:
    return f"{pid} {psutil.Process(pid).create_time():.3f} {_pid_namespace()}\n"


def owner_alive(directory: Path) -> bool:
    """Whether the process recorded in ``directory/.owner`` still runs.

    A directory without a readable owner record counts as dead (its creator died
    before writing one). An owner in another pid namespace cannot be checked and
    counts as alive.
    """
    try:
        pid_s, start_s, ns = (directory / OWNER_FILE).read_text().split(" ", 2)
        pid, start = int(pid_s), float(start_s)
    except (OSError, ValueError):
        return False
    if ns.strip() != _pid_namespace():
        return True
    if not pid_alive(pid):
        return False
    try:
        return abs(psutil.Process(pid).create_time() - start) < 1.0
    except psutil.NoSuchProcess:
        return False


def _remove_tree(path: str) -> None:
    # Workers may be renaming files in while we delete: retry a few times.
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
    log.warning("shm store: could not remove %s", path)


def _remove_if_owner(path: str, owner_pid: int) -> None:
    # Finalizers are inherited by forked workers; only the owner may remove.
    if os.getpid() == owner_pid:
        _remove_tree(path)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def sweep_leftovers(shm_dir: str | os.PathLike[str]) -> list[str]:
    """Remove ``adaptive-cache-*`` directories in ``shm_dir`` whose owner is dead.

    Returns:
        The removed paths.
    """
    removed = []
    with os.scandir(shm_dir) as it:
        candidates = [Path(e.path) for e in it if e.name.startswith(PREFIX) and e.is_dir()]
    for directory in candidates:
        if not owner_alive(directory):
            _remove_tree(str(directory))
            removed.append(str(directory))
    if removed:
        log.info("shm store: removed %d leftover director(ies) of dead owners", len(removed))
    return removed


@dataclass(frozen=True)
class ShmHandle:
    """Opens the same shm directory in another process (never as its owner)."""

    directory: str

    def open(self) -> ShmStore:
        return ShmStore.attach(self.directory)


class ShmStore(DirectoryStore):
    """Node-shared store in a tmpfs directory; see the module docstring for ownership.

    Entry sizes are reported in whole pages: that is what tmpfs holds and gives back.
    :meth:`view` maps entries and keeps the mappings (see
    :mod:`adaptive_cache.stores.files`): the owner serves hits from them in place.

    Args:
        shm_dir: a tmpfs directory (``config.shm_dir``).
        namespace: names the directory; processes giving the same one share entries.

    Raises:
        StoreError: the directory cannot be created.

    Example:
        >>> store = ShmStore("/dev/shm", "doctest")
        >>> store.put("ab12", b"hello")
        4096
        >>> bytes(store.get("ab12"))
        b'hello'
        >>> store.close()
    """

    name = "shm"
    shared = True
    persistent = False

    def __init__(self, shm_dir: str = "/dev/shm", namespace: str = "default") -> None:
        base = Path(shm_dir)
        super().__init__(
            base / f"{PREFIX}{check_namespace(namespace)}",
            page_size=PAGE_SIZE,
            max_mapped=MAX_MAPPED,
        )
        self._owner_pid: int | None = None
        self._finalizer: weakref.finalize | None = None
        try:
            with _locked(base):
                sweep_leftovers(base)
                if self.directory.exists():
                    log.debug("shm store: joining %s (owner alive)", self.directory)
                    return
                self._make_private()
                fd = os.open(
                    self.directory / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE
                )
                with os.fdopen(fd, "w") as f:
                    f.write(_identity(os.getpid()))
        except OSError as exc:
            raise self._fail("create", self.directory, exc) from exc
        self._owner_pid = os.getpid()
        self._finalizer = weakref.finalize(
            self, _remove_if_owner, str(self.directory), self._owner_pid
        )

    @classmethod
    def attach(cls, directory: str | os.PathLike[str]) -> ShmStore:
        """Open an existing shm directory as a non-owner (what a handle does).

        Never fails: if the owner has removed the directory, reads miss and writes
        raise :class:`~adaptive_cache.stores.base.StoreError`.
        """
        store = cls.__new__(cls)
        DirectoryStore.__init__(store, directory, page_size=PAGE_SIZE, max_mapped=MAX_MAPPED)
        store._owner_pid = None
        store._finalizer = None
        return store

    @property
    def owner(self) -> bool:
        """Whether this process owns (and will remove) the directory."""
        return self._owner_pid == os.getpid()

    def close(self) -> None:
        self.unmap_all()
        if self.owner and self._finalizer is not None:
            self._finalizer()

    def handle(self) -> ShmHandle:
        return ShmHandle(str(self.directory))

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # A copy in another process is never the owner.
        return (ShmStore.attach, (str(self.directory),))
