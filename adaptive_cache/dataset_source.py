"""DatasetSource: a map-style dataset (or items plus a load function) as a pipeline source.

The cache key of a sample covers its id, its identity and the fingerprints of the
stages that made it. For a wrapped dataset the id and identity come from, in order:

1. the dataset's own ``cache_key(i)``: the whole identity (it must change whenever the
   sample does);
2. the files the dataset exposes for sample ``i``: ``dataset.samples[i]`` or
   ``dataset.imgs[i]`` (torchvision's ``ImageFolder``/``DatasetFolder``),
   ``dataset.paths[i]`` or ``dataset.files[i]``, or the item itself when items and a
   load function are given; every path found there (also inside tuples, lists and
   dicts) counts with its size and modification time;
3. otherwise the index with the dataset's class and length.

In case 3 (and 2, if a sample also depends on what is not in those files) a sample
that changes while index, class and length stay the same would be served stale by a
cache that outlives the change: a persistent store (``disk``, ``redis``) reopened with
the same namespace, or a dataset changed in place during a run. Give such a dataset a
``cache_key(i)`` method.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from adaptive_cache.pipeline import Sample

RECORD_ATTRS = ("samples", "imgs", "paths", "files")
"""Attributes of a dataset that may list each sample's file(s), in the order tried."""

ITEM = "item"
"""The key of a wrapped dataset's item in the pipeline's sample: ``{"item": (item,)}``."""

_MAX_PATHS = 16  # paths looked for in one record
_MAX_REPR = 512  # characters of an item's repr used as its identity


def box(item: Any) -> Sample:
    """The pipeline sample holding a dataset item.

    A 1-tuple, so that a bare tensor or array is never a top-level field, which the
    loader would convert on its way back from a worker.
    """
    return {ITEM: (item,)}


def unbox(sample: Sample) -> Any:
    """The dataset item held by a pipeline sample (see :func:`box`)."""
    return sample[ITEM][0]


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _paths(record: Any, out: list[str], depth: int = 0) -> list[str]:
    if len(out) >= _MAX_PATHS or depth > 2:
        return out
    if isinstance(record, (str, os.PathLike)):
        out.append(os.fspath(record))
    elif isinstance(record, (tuple, list)):
        for r in record:
            _paths(r, out, depth + 1)
    elif isinstance(record, dict):
        for r in record.values():
            _paths(r, out, depth + 1)
    return out


def _files(record: Any) -> list[str]:
    """``path:size:mtime_ns`` of every existing regular file named in ``record``."""
    found = []
    for path in _paths(record, []):
        try:
            st = os.stat(path)
        except (OSError, ValueError):  # not a path (a label, a sentence), or gone
            continue
        if stat.S_ISREG(st.st_mode):
            found.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return found


class DatasetSource:
    """Reads ``dataset[i]`` (or ``load(items[i])``) and identifies it (see the module doc).

    Args:
        dataset: a map-style dataset (``__len__`` and ``__getitem__``), or the items
            when ``load`` is given.
        load: ``load(items[i]) -> item``; ``None`` reads ``dataset[i]``.

    Raises:
        TypeError: ``dataset`` has no length or no ``__getitem__``, or ``load`` or
            ``cache_key`` is not callable.
    """

    def __init__(self, dataset: Any, load: Callable[[Any], Any] | None = None) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"CachedDataset needs a map-style dataset (with __len__ and __getitem__), "
                f"got {type(dataset).__name__}"
            )
        if load is not None and not callable(load):
            raise TypeError(f"load must be callable, got {load!r}")
        self.dataset = dataset
        self.load_fn = load
        self._n = len(dataset)
        key = getattr(dataset, "cache_key", None) if load is None else None
        if key is not None and not callable(key):
            raise TypeError(f"{type(dataset).__name__}.cache_key must be a method cache_key(i)")
        self._key: Callable[[int], Any] | None = key
        self._records: Sequence[Any] | None = None
        self.identity_from = "class and length"
        if key is not None:
            self.identity_from = "cache_key"
        elif load is not None:
            self._records, self.identity_from = dataset, "items"
        else:
            for attr in RECORD_ATTRS:
                records = getattr(dataset, attr, None)
                if isinstance(records, Sequence) and len(records) == self._n:
                    self._records, self.identity_from = records, f"files in .{attr}"
                    break
        self._fallback = f"{_qualname(dataset)}:{self._n}"

    def __len__(self) -> int:
        return self._n

    def sample_id(self, index: int) -> str:
        if self._key is not None:
            return f"key:{self._key(index)}"
        return str(index)

    def identity(self, index: int) -> str:
        if self._key is not None:
            return ""
        if self._records is None:
            return self._fallback
        record = self._records[index]
        files = _files(record)
        if files:
            return "|".join(files)
        if self.load_fn is not None:  # items that name no file: their own repr
            return repr(record)[:_MAX_REPR]
        return self._fallback

    def load(self, index: int) -> Sample:
        if self.load_fn is not None:
            return box(self.load_fn(self.dataset[index]))
        return box(self.dataset[index])
