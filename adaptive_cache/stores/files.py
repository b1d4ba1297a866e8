"""DirectoryStore: one file per entry in a directory (the basis of ``shm`` and ``disk``).

A write goes to a temporary name (``.KEY.PID-TOKEN.tmp``) and is renamed into place,
so readers see a whole entry or none, and a writer killed mid-write leaves only a
temporary file, which :meth:`DirectoryStore.sweep` removes once its pid is dead.

:meth:`DirectoryStore.get` is ``open`` + ``fstat`` + one ``read`` into a fresh buffer.
:meth:`DirectoryStore.view` (with ``max_mapped > 0``) maps the file instead and keeps
the mapping, so the process that serves hits reads entries in place, as it would read
its own heap: measured on the 2-core reference container, stacking 16 mapped 1.7 MB
entries into a batch cost 162-188 us per sample against 160-168 us for arrays already
in the process, where ``read`` + decode + stack cost 1,700 us (16 fresh 1.7 MB
buffers per batch, each paying its page faults and a copy) and ``preadv`` straight into
the batch rows 290 us. A mapping is checked against the file's inode, mtime and size
on every view, so an entry rewritten or deleted by another process is never served.
Writers never modify a published file (they rename a new one over it), so a mapping
never sees a truncated file.

Entries may hold anything a dataset reads (private documents, medical images): the
store's directory is ``0700`` and entry files ``0600``, whatever the umask.
:meth:`DirectoryStore.space_bytes` tells the engine how much more the file system can
take, so a disk cache stops growing before the disk is full (see ``FREE_RESERVE``).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import psutil

from adaptive_cache.stores.base import Store, StoreError, View
from adaptive_cache.stores.keys import check_key, is_key

_TEMP = re.compile(r"\..+\.(\d+)-[0-9a-f]+\.tmp")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
# Populate the page tables at map time: one call instead of a fault per 4 KiB page.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
#: Share of the file system a store leaves free for everyone else (like ext4's 5% for
#: root, but for every user): the cache grows only into free space beyond this.
FREE_RESERVE = 0.10
DIR_MODE = 0o700
FILE_MODE = 0o600


# Stores that keep mappings: a forked child (a DataLoader worker) inherits every mapping
# of its parent, and would hold the pages of entries the parent evicts for as long as it
# lives. The child drops its copies at once; it reopens the store from a handle anyway.
_MAPPING_STORES: weakref.WeakSet[DirectoryStore] = weakref.WeakSet()


def _forget_views_after_fork() -> None:
    for store in list(_MAPPING_STORES):
        store._views.clear()


os.register_at_fork(after_in_child=_forget_views_after_fork)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _read_all(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    # A single read returns at most ~2 GiB on Linux; gather the rest.
    chunks = [data]
    got = len(data)
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class DirectoryStore(Store):
    """Entries as files ``directory/KEY``.

    Args:
        directory: where entries live (must exist).
        page_size: when > 0, entry sizes are reported rounded up to this (tmpfs hands
            out whole pages, and that is the memory a deletion gives back).
        max_mapped: mappings :meth:`view` keeps (least recently viewed dropped first;
            each is one of the kernel's ``vm.max_map_count`` areas); 0 never maps.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, page_size: int = 0, max_mapped: int = 0
    ) -> None:
        self.directory = Path(directory)
        self.page_size = page_size
        self.max_mapped = max(0, int(max_mapped))
        self._dir = str(self.directory)
        self._views: OrderedDict[str, View] = OrderedDict()
        if self.max_mapped > 0:
            _MAPPING_STORES.add(self)

    def _size(self, nbytes: int) -> int:
        if self.page_size <= 0:
            return nbytes
        return -(-nbytes // self.page_size) * self.page_size

    def _fail(self, action: str, path: Path | str, exc: OSError) -> StoreError:
        code = errno.errorcode.get(exc.errno or 0)
        reason = f"{exc.strerror} ({code})" if exc.strerror and code else str(exc)
        return StoreError(f"{self.name} store: cannot {action} {path}: {reason}")

    def _make_private(self) -> None:
        """Create the directory (``0700``), or make an existing one ``0700``."""
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if self.directory.stat().st_mode & 0o777 != DIR_MODE:
                os.chmod(self.directory, DIR_MODE)
        except OSError as exc:
            raise self._fail("create", self.directory, exc) from exc

    def space_bytes(self) -> int | None:
        """Free space of the file system beyond ``FREE_RESERVE`` of its size (0 if none).

        ``None`` if the file system cannot be asked (the directory is gone).
        """
        try:
            st = os.statvfs(self._dir)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        reserve = int(FREE_RESERVE * st.f_blocks * st.f_frsize)
        return max(0, free - reserve)

    def get(self, key: str) -> bytes | None:
        path = self.directory / check_key(key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail("read", path, exc) from exc
        try:
            return _read_all(fd, os.fstat(fd).st_size)
        except OSError as exc:
            raise self._fail("read", path, exc) from exc
        finally:
            os.close(fd)

    @property
    def maps(self) -> bool:  # type: ignore[override]
        return self.max_mapped > 0

    def view(self, key: str) -> View | None:
        if self.max_mapped <= 0:
            return super().view(key)
        path = os.path.join(self._dir, check_key(key))  # str, not Path: this is the hit path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._views.pop(key, None)
            return None
        except OSError as exc:
            raise self._fail("read", path, exc) from exc
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._views.get(key)
        if cached is not None and cached.ident == ident:
            self._views.move_to_end(key)
            return cached
        if st.st_size == 0:
            return View(b"", ident)  # nothing to map; the codec rejects it as corrupt
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            self._views.pop(key, None)
            return None
        except OSError as exc:
            raise self._fail("read", path, exc) from exc
        try:
            buf = mmap.mmap(fd, st.st_size, flags=_MAP_FLAGS, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            # Out of map areas (or a file that changed size under us): read a copy.
            self._views.pop(key, None)
            return super().view(key)
        finally:
            os.close(fd)
        view = View(buf, ident)
        self._views[key] = view
        if len(self._views) > self.max_mapped:
            self._views.popitem(last=False)
        return view

    def prune_views(self) -> int:
        """Drop kept mappings whose file was removed or replaced (by another process).

        A view is re-checked whenever it is asked for; this catches the entries that are
        not asked for again (another DDP rank evicted them), so their pages are not held
        here. Returns how many mappings were dropped.
        """
        dropped = 0
        for key, view in list(self._views.items()):
            try:
                st = os.stat(os.path.join(self._dir, key))
                current = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                current = None
            if current != view.ident:
                self._views.pop(key, None)
                dropped += 1
        return dropped

    def unmap(self, key: str) -> None:
        """Drop this process's mapping of ``key`` (if any); the entry stays."""
        self._views.pop(key, None)

    def unmap_all(self) -> None:
        """Drop every mapping this process keeps (pages go once no view is in use)."""
        self._views.clear()

    def put(self, key: str, data: bytes | memoryview) -> int:
        path = self.directory / check_key(key)
        tmp = self.directory / f".{key}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        view = memoryview(data).cast("B")
        try:
            fd = os.open(tmp, _CREATE_FLAGS, FILE_MODE)
            try:
                written = 0
                while written < view.nbytes:
                    written += os.write(fd, view[written:])
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            # Already gone, or the directory itself is: nothing more to undo.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._fail("write", path, exc) from exc
        return self._size(view.nbytes)

    def delete(self, key: str) -> int:
        path = self.directory / check_key(key)
        self._views.pop(key, None)  # a kept mapping would hold the pages
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise self._fail("delete", path, exc) from exc
        return self._size(size)

    def contains(self, key: str) -> bool:
        return (self.directory / check_key(key)).is_file()

    def _scan(self) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as it:
                yield from (e for e in it if is_key(e.name))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("list", self.directory, exc) from exc

    def keys(self) -> Iterator[str]:
        return iter([e.name for e in self._scan()])

    def entries(self) -> Iterator[tuple[str, int]]:
        out = []
        for e in self._scan():
            try:
                out.append((e.name, self._size(e.stat().st_size)))
            except FileNotFoundError:
                continue  # deleted while listing
        return iter(out)

    def clear(self) -> None:
        for key in self.keys():
            self.delete(key)

    def sweep(self) -> int:
        """Remove temporary files left by writers that died; returns how many."""
        removed = 0
        try:
            with os.scandir(self.directory) as it:
                names = [e.name for e in it if e.name.endswith(".tmp")]
        except OSError:
            return 0
        for name in names:
            m = _TEMP.fullmatch(name)
            if m and not pid_alive(int(m.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / name)
                    removed += 1
        return removed
