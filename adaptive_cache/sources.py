"""FileSource: samples that are files on disk (the common case)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive_cache.pipeline import Sample


class FileSource:
    """One sample per file; ``load`` returns the file's bytes as a uint8 array.

    The identity of a sample is its size and modification time (nanoseconds), so a
    rewritten file gets new cache keys and its old entries are never served.

    Args:
        paths: the files, in sample order.
        root: sample ids are paths relative to this directory (default: common parent).

    Raises:
        ValueError: no files.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
    ) -> None:
        if not paths:
            raise ValueError("FileSource: no files given")
        self.paths = [Path(p) for p in paths]
        self.root = (
            Path(root)
            if root is not None
            else Path(os.path.commonpath([str(p.parent) for p in self.paths]))
        )

    @classmethod
    def glob(cls, root: str | os.PathLike[str], pattern: str = "*") -> FileSource:
        """All files under ``root`` matching ``pattern``, sorted (``ValueError`` if none)."""
        paths = sorted(p for p in Path(root).glob(pattern) if p.is_file())
        if not paths:
            raise ValueError(f"FileSource: no files match {pattern!r} under {root}")
        return cls(paths, root)

    def __len__(self) -> int:
        return len(self.paths)

    def sample_id(self, index: int) -> str:
        p = self.paths[index]
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)

    def identity(self, index: int) -> str:
        st = os.stat(self.paths[index])
        return f"{st.st_size}:{st.st_mtime_ns}"

    def load(self, index: int) -> Sample:
        path = self.paths[index]
        with open(path, "rb") as f:
            data = f.read()
        return {"path": str(path), "data": np.frombuffer(data, dtype=np.uint8)}
