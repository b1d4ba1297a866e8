"""DecodedViews: decoded once per mapping, released with the mapping."""

from __future__ import annotations

import gc
import os
import uuid

import numpy as np

from adaptive_cache import codec
from adaptive_cache.engine.views import DecodedViews
from adaptive_cache.keys import EntryKey
from adaptive_cache.stores import LocalStore, ShmStore


def test_a_view_is_decoded_once_and_forgotten_with_its_mapping(shm_dir):
    store = ShmStore(str(shm_dir), f"views-{uuid.uuid4().hex[:8]}")
    try:
        key = EntryKey("tensor", "aa")
        store.put(str(key), codec.encode({"x": np.arange(1000, dtype=np.int32)}))
        views = DecodedViews(store)
        first = views.get(key)
        assert views.get(key) is first and len(views) == 1
        assert not first["x"].flags.writeable
        # Another process rewrites the entry: the new bytes are decoded, never the old.
        tmp = store.directory / ".rewrite.tmp"
        tmp.write_bytes(codec.encode({"x": np.zeros(10, dtype=np.int32)}))
        os.replace(tmp, store.directory / str(key))
        second = views.get(key)
        assert second is not first and second["x"].tolist() == [0] * 10
        del first, second
        gc.collect()
        assert len(views) == 1  # the replaced mapping went with its decoded arrays
        # ... and removes it: once the store drops the mapping, so does the engine.
        os.unlink(store.directory / str(key))
        assert store.prune_views() == 1
        gc.collect()
        assert len(views) == 0 and views.get(key) is None
    finally:
        store.close()


def test_a_store_that_does_not_map_is_decoded_on_every_read():
    store = LocalStore()
    key = EntryKey("tensor", "aa")
    store.put(str(key), codec.encode({"x": np.arange(4)}))
    views = DecodedViews(store)
    assert views.get(key)["x"].tolist() == [0, 1, 2, 3]
    assert len(views) == 0  # nothing kept: each view is a fresh copy
    store.put(str(key), b"garbage")
    assert views.get(key) is None  # corrupt: the caller takes the general path
