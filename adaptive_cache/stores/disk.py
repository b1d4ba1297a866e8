"""DiskStore: persistent entries, one file each, in ``{disk_dir}/adaptive-cache-{namespace}``.

Writes go to a temporary file renamed into place (no fsync: a cache entry lost in a
crash is only a miss, and a torn entry is impossible because the rename is atomic).
Keys encode the sample, its file identity and every stage fingerprint, so entries found
at start are valid for the same pipeline: :meth:`entries` lists them for adoption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptive_cache.stores.files import DirectoryStore
from adaptive_cache.stores.keys import check_namespace

PREFIX = "adaptive-cache-"


@dataclass(frozen=True)
class DiskHandle:
    """Opens the same directory in another process."""

    directory: str

    def open(self) -> DiskStore:
        return DiskStore(self.directory)


class DiskStore(DirectoryStore):
    """Persistent store in a local (or shared) file system directory.

    Args:
        directory: where entries live; created if missing (``0700``; an existing one
            is made ``0700``). Temporary files of dead writers found there are removed.
        max_mapped: mappings :meth:`view` keeps (0: views read copies); the owner of a
            disk level maps its entries to serve hits in place.

    Raises:
        StoreError: the directory cannot be created.
    """

    name = "disk"
    shared = True
    persistent = True

    def __init__(self, directory: str | os.PathLike[str], *, max_mapped: int = 0) -> None:
        super().__init__(directory, max_mapped=max_mapped)
        self._make_private()
        self.sweep()

    @classmethod
    def for_namespace(
        cls, disk_dir: str | os.PathLike[str], namespace: str, *, max_mapped: int = 0
    ) -> DiskStore:
        """The store of ``namespace`` under ``disk_dir``."""
        return cls(Path(disk_dir) / f"{PREFIX}{check_namespace(namespace)}", max_mapped=max_mapped)

    def close(self) -> None:
        """Nothing to release: entries stay for the next run."""

    def handle(self) -> DiskHandle:
        return DiskHandle(str(self.directory))

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (DiskStore, (str(self.directory),))
