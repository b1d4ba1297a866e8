"""DecodedViews: held entries decoded once, for as long as the store keeps them mapped.

A store that maps its entries (``shm``) hands out the same
:class:`~adaptive_cache.stores.base.View` of an entry until the entry changes or the
mapping is dropped. The engine decodes a view once and serves later hits from the
same read-only arrays, so a hit costs a lookup and the caller's one copy into its
batch. The decoded arrays live exactly as long as the view: they are remembered per
entry together with a weak reference to the view they came from, so a hit checks it
still has the store's current view, and when the store lets a mapping go (the entry
was rewritten, deleted, evicted by another process, or pushed out by newer mappings)
the arrays go with it and the pages are not pinned by the engine.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from adaptive_cache import codec
from adaptive_cache.keys import EntryKey
from adaptive_cache.pipeline import Sample
from adaptive_cache.stores.base import Store, StoreError, View


class DecodedViews:
    """Decoded samples of a store's views (see the module docstring)."""

    def __init__(self, store: Store, on_error: Callable[[StoreError], None] | None = None) -> None:
        self.store = store
        self.on_error = on_error  # told of a failed read (counted as a store fault)
        # key -> (weak reference to the view, its decoded sample)
        self._decoded: dict[EntryKey, tuple[weakref.ref[View], Sample]] = {}

    def __len__(self) -> int:
        return len(self._decoded)

    def get(self, key: EntryKey) -> Sample | None:
        """The decoded entry (read-only arrays shared by every hit), or ``None`` when it
        is absent, corrupt or the store failed (the caller takes the general path)."""
        try:
            view = self.store.view(str(key))
        except StoreError as exc:
            if self.on_error is not None:
                self.on_error(exc)
            return None
        if view is None:
            return None
        held = self._decoded.get(key)
        if held is not None and held[0]() is view:
            return held[1]
        try:
            sample = codec.decode(view.buffer)
        except codec.CodecError:
            return None
        if self.store.maps:
            self._decoded[key] = (weakref.ref(view, self._forget(key)), sample)
        return sample

    def _forget(self, key: EntryKey) -> Callable[[weakref.ref[View]], None]:
        """A callback dropping ``key``'s arrays once its view is gone (if not replaced)."""
        decoded = self._decoded

        def forget(ref: weakref.ref[View]) -> None:
            held = decoded.get(key)
            if held is not None and held[0] is ref:
                del decoded[key]

        return forget

    def prepare(self, key: EntryKey) -> None:
        """Map and decode a newly kept entry now, in the epoch that computed it.

        Mapping 2 MB costs about as much as copying it; done here, the first epoch of
        hits already runs at the speed of later ones.
        """
        if self.store.maps:
            self.get(key)  # a failure shows again (and is counted) at the next access
