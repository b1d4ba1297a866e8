"""Computing one sample against a store: the part of the engine that runs anywhere.

The process that owns the cache (the one consuming batches) decides, per sample, which
tiers to look up and which to write; it sends that as a :class:`WorkOrder`. Whoever
executes the order (the owner itself, or a DataLoader worker) reads the deepest tier
that is present, runs the remaining stages, writes the requested tiers to a shared
store and returns the sample with a :class:`WorkReport`. All accounting happens back
in the owner from the report, so nothing is counted in a worker and lost with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adaptive_cache import codec
from adaptive_cache.keys import EntryKey
from adaptive_cache.pipeline import Pipeline, Sample
from adaptive_cache.stores.base import Store, StoreError


@dataclass(frozen=True)
class WorkOrder:
    """What to do for one sample; small and picklable (sent to workers).

    Attributes:
        index: sample index.
        epoch: epoch (seeds random stages).
        lookup: keys to try, deepest tier first (every kept tier of the sample).
        write: keys to write once computed (the owner admits or withdraws them when
            the report comes back).
        prefix_only: stop after the deterministic prefix (preloading).
        place: where a leveled store also writes the ``write`` tiers below memory
            (:class:`~adaptive_cache.levels.Placement`; ``None``: memory only).
    """

    index: int
    epoch: int
    lookup: tuple[EntryKey, ...] = ()
    write: tuple[EntryKey, ...] = ()
    prefix_only: bool = False
    place: Any = None  # levels


@dataclass
class WorkReport:
    """What happened while executing a :class:`WorkOrder`.

    Attributes:
        index: sample index.
        keys: the order's lookup keys (every kept tier of this sample).
        hit: the key that served the sample, if one did.
        missed: tiers looked up and not found.
        corrupt: keys found but not decodable.
        lookup_seconds: time spent looking up.
        start: stages skipped thanks to the hit (0: computed from the source).
        timings: ``timings[0]`` the source read, ``timings[i + 1]`` stage ``i``.
        written: keys written to a shared store, with the bytes each takes there.
        payloads: encoded values for the owner to store (a private store).
        store_errors: store failures (each a miss).
    """

    index: int
    keys: tuple[EntryKey, ...] = ()
    hit: EntryKey | None = None
    missed: tuple[str, ...] = ()
    corrupt: tuple[EntryKey, ...] = ()
    lookup_seconds: float = 0.0
    start: int = 0
    timings: list[float] = field(default_factory=list)
    written: dict[EntryKey, int] = field(default_factory=dict)
    payloads: dict[EntryKey, bytes] = field(default_factory=dict)
    store_errors: int = 0
    #: Keys looked up and not in the store (no error: the store said so).
    absent: tuple[EntryKey, ...] = ()
    #: Kinds of store call (``read``, ``write``) that failed, with the first message.
    store_failed: dict[str, str] = field(default_factory=dict)
    #: Kinds of store call that worked at least once.
    store_ok: set[str] = field(default_factory=set)
    levels: Any = None  # levels: a LevelTrace of what happened below memory

    def failed(self, op: str, exc: StoreError) -> None:
        self.store_errors += 1
        self.store_failed.setdefault(op, str(exc))


def execute(pipeline: Pipeline, store: Store | None, order: WorkOrder) -> tuple[Sample, WorkReport]:
    """Serve one sample: deepest present tier, remaining stages, requested writes.

    A store failure or a corrupt entry is a miss, never an error: the sample is then
    computed from its source, so a cache fault cannot change what training sees. A tier
    found corrupt (checksum, truncation) is written again once computed, as is a tier in
    ``order.write`` that the lookup did not find intact (the owner lists the tier it
    holds there): the next epoch hits again.
    """
    report = WorkReport(
        index=order.index, keys=order.lookup, timings=[0.0] * (len(pipeline.stages) + 1)
    )
    sample: Sample | None = None
    t0 = time.perf_counter()
    missed: list[str] = []
    corrupt: list[EntryKey] = []
    absent: list[EntryKey] = []
    track = getattr(store, "track", None)  # levels: the store records what it does below memory
    if track is not None:
        report.levels = track(order, report.timings)
    if store is not None:
        for key in order.lookup:
            try:
                buf = store.get(str(key))
            except StoreError as exc:
                report.failed("read", exc)
                buf = None
            else:
                report.store_ok.add("read")
                if buf is None:
                    absent.append(key)
            if buf is not None:
                try:
                    sample = codec.decode(buf)
                except codec.CodecError:
                    corrupt.append(key)
                else:
                    report.hit = key
                    report.start = pipeline.tier_end(key.tier)
                    break
            missed.append(key.tier)
    report.lookup_seconds = time.perf_counter() - t0
    report.missed = tuple(missed)
    report.corrupt = tuple(corrupt)
    report.absent = tuple(absent)

    captured: dict[int, Sample] = {}
    wanted = {
        pipeline.tier_end(key.tier): key
        for key in (*order.write, *corrupt)
        if pipeline.tier_end(key.tier) > report.start
    }
    outputs = {end: (lambda s, end=end: captured.__setitem__(end, s)) for end in wanted}
    sample = pipeline.run(
        order.index,
        order.epoch,
        start=report.start,
        sample=sample,
        upto=pipeline.prefix_len,
        timings=report.timings,
        outputs=outputs,
    )
    for end, key in wanted.items():
        data = codec.encode(captured[end])
        if store is not None and store.shared:
            try:
                report.written[key] = store.put(str(key), data)
            except StoreError as exc:
                report.failed("write", exc)
            else:
                report.store_ok.add("write")
        else:
            report.payloads[key] = data
    if not order.prefix_only and pipeline.prefix_len < len(pipeline.stages):
        sample = pipeline.run(
            order.index,
            order.epoch,
            start=pipeline.prefix_len,
            sample=sample,
            timings=report.timings,
        )
    return sample, report


class WorkDataset:
    """Map-style dataset of work orders, executed in DataLoader workers.

    The store reaches a worker as its picklable handle (:meth:`Store.handle`) and is
    opened lazily there, so this object pickles for spawn and forkserver as well as
    fork. A private store's handle opens an empty store: its lookups miss, and what
    the worker computes goes back to the owner in the report.
    """

    def __init__(self, pipeline: Pipeline, store: Store) -> None:
        self.pipeline = pipeline
        self._handle = store.handle()
        self._store: Store | None = None
        self._epoch: int | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def _open(self, epoch: int) -> Store:
        if self._store is None:
            self._store = self._handle.open()
        elif epoch != self._epoch:
            self._store.recover()  # a store that was down is tried again each epoch
        self._epoch = epoch
        return self._store

    def __getitem__(self, order: WorkOrder) -> tuple[Sample, Any]:
        return _to_shared(*execute(self.pipeline, self._open(order.epoch), order))

    def __getitems__(self, orders: list[WorkOrder]) -> list[tuple[Sample, Any]]:
        store = self._open(orders[0].epoch if orders else 0)
        return [_to_shared(*execute(self.pipeline, store, o)) for o in orders]

    def __len__(self) -> int:
        return len(self.pipeline)


def passthrough(items: list[Any]) -> list[Any]:
    """Collate function of the worker loaders: the list of results, as it is."""
    return items


# Arrays above this size leave a worker as torch tensors: the DataLoader hands those over
# as shared-memory segments (one copy) instead of pickling them through a pipe (three).
_SHARE_ABOVE = 64 * 1024


def _to_shared(sample: Sample, report: WorkReport) -> tuple[Sample, WorkReport]:
    out: Sample = {}
    for name, value in sample.items():
        if isinstance(value, np.ndarray) and value.nbytes > _SHARE_ABOVE:
            value = torch.from_numpy(np.require(value, requirements=["C", "W"]))
        out[name] = value
    return out, report


def from_shared(sample: Sample) -> Sample:
    """Undo :func:`_to_shared` in the receiving process (zero-copy numpy views)."""
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
