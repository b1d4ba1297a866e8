"""DeviceBatchCache: collated batches kept on the accelerator, within its headroom.

A deterministic split read in a fixed order (validation) gives the same batches every
epoch. Kept on the device, such a batch costs nothing to serve: no worker, no collate,
no host-to-device copy. The device's memory also belongs to the model, so the cache
takes at most ``share`` of what is free and gives batches back first when headroom
falls below the high watermark (the host cache only starts evicting at the low one).

What "free" means on CUDA: memory that no live tensor uses (the driver's free memory
plus the blocks torch's caching allocator holds unused), minus what this process will
need again at its peak (``torch.cuda.max_memory_allocated`` less what is allocated
now, not counting the cache's own tensors). With ``device="cpu"`` the same code runs
on host memory (:class:`~adaptive_cache.memory.MemoryProbe`'s available bytes), which
is how the tests exercise it.

Example:
    >>> cache = DeviceBatchCache("cuda:0", share=0.25)
    >>> batch = cache.get(key) or cache.put(key, host_batch)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from adaptive_cache.config import Watermarks, format_size
from adaptive_cache.device_memory import DeviceMemory, DeviceProbe, default_probe

log = logging.getLogger(__name__)

Batch = Any
"""A collated batch: tensors, possibly inside dicts, lists and tuples, and other values."""


def batch_nbytes(batch: Batch) -> int:
    """Bytes of the tensors in ``batch`` (other values are not counted)."""
    if isinstance(batch, torch.Tensor):
        return batch.element_size() * batch.nelement()
    if isinstance(batch, dict):
        return sum(batch_nbytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(batch_nbytes(v) for v in batch)
    return 0


def to_device(batch: Batch, device: torch.device) -> Batch:
    """A copy of ``batch`` whose tensors live on ``device`` (dtype and strides kept).

    Containers are copied too, so that a consumer replacing ``batch["image"]`` (as
    Lightning's ``on_after_batch_transfer`` does) never changes a kept batch.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, copy=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    if isinstance(batch, tuple):
        return tuple(to_device(v, device) for v in batch)
    return batch


def _shallow(batch: Batch) -> Batch:
    if isinstance(batch, dict):
        return dict(batch)
    if isinstance(batch, list):
        return list(batch)
    return batch


@dataclass
class DeviceStats:
    """Counters of one :class:`DeviceBatchCache` (batches, not samples)."""

    hits: int = 0
    misses: int = 0
    insertions: int = 0
    rejected: int = 0  # batches that did not fit the budget (or the device said no)
    evictions: int = 0  # batches given back under memory pressure
    bytes: int = 0
    items: int = 0
    budget_bytes: int = 0
    usable_bytes: int = 0

    @property
    def hit_ratio(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": self.hit_ratio}

    def summary(self) -> str:
        return (
            f"device tier: hit {100 * self.hit_ratio:.1f}% ({self.hits}/{self.hits + self.misses}"
            f" batches), {self.items} batches, {format_size(self.bytes)} of "
            f"{format_size(self.budget_bytes)}, {self.evictions} released"
        )


class DeviceBatchCache:
    """Collated batches on a device, keyed by the caller, within a share of free memory.

    Admission fills in arrival order and never evicts one batch to admit another: in a
    fixed order every batch comes back once per epoch, so keeping whatever is held is
    optimal (recency carries no signal). Under pressure the newest batches go first.

    Args:
        device: where batches are kept (``"cuda:0"``, or ``"cpu"`` in tests).
        share: the most the cache may hold, as a share of the usable free memory
            (counting its own bytes as free).
        watermarks: below ``high`` (a fraction of the device's total memory) batches
            are given back until usable memory is above it again; the host cache
            evicts only below ``low``, so the device tier yields first.
        probe: where memory readings come from (default: :func:`default_probe`).
        probe_interval_s: at most one reading per this many seconds.
        clock: monotonic seconds (inject a fake clock in tests).
        name: for logs (the split).

    Raises:
        ValueError: ``share`` outside (0, 1].
    """

    def __init__(
        self,
        device: torch.device | str,
        *,
        share: float = 0.25,
        watermarks: Watermarks | None = None,
        probe: DeviceProbe | None = None,
        probe_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        name: str = "device",
    ) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"DeviceBatchCache: share must be in (0, 1], got {share}")
        self.device = torch.device(device)
        self.share = share
        self.watermarks = watermarks or Watermarks()
        self.probe = probe if probe is not None else default_probe(self.device)
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self.name = name
        self._batches: dict[str, Batch] = {}  # insertion order = admission order
        self._sizes: dict[str, int] = {}
        self._stats = DeviceStats()
        self._last_probe: float | None = None
        self._reading: DeviceMemory | None = None

    def __contains__(self, key: str) -> bool:
        return key in self._batches

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def bytes_held(self) -> int:
        return self._stats.bytes

    def stats(self) -> DeviceStats:
        """A copy of the counters."""
        return DeviceStats(**asdict(self._stats))

    def _read(self, *, force: bool = False) -> DeviceMemory:
        now = self._clock()
        due = self._last_probe is None or now - self._last_probe >= self.probe_interval_s
        if force or due or self._reading is None:
            self._reading = self.probe.read()
            self._last_probe = now
        return self._reading

    def _usable(self, reading: DeviceMemory) -> int:
        return reading.usable(self._stats.bytes)

    def budget_bytes(self, *, force: bool = False) -> int:
        """What the cache may hold now: ``share`` of usable memory plus its own bytes."""
        reading = self._read(force=force)
        usable = self._usable(reading)
        budget = int(self.share * (usable + self._stats.bytes))
        self._stats.budget_bytes, self._stats.usable_bytes = budget, usable
        return budget

    def relieve(self, *, force: bool = False) -> int:
        """Give batches back while usable memory is below the high watermark.

        Returns:
            Bytes released. Called by the loader at every epoch start and batch
            (readings are rate-limited); call it from a training loop too, if the
            model's memory may grow between epochs.
        """
        reading = self._read(force=force)
        floor = self.watermarks.high * reading.total_bytes
        usable = self._usable(reading)
        released = 0
        while self._batches and usable + released < floor:
            key = next(reversed(self._batches))
            released += self._drop(key)
            self._stats.evictions += 1
        if released:
            log.warning(
                "%s: device memory low (%s usable of %s): released %s of device batches",
                self.name,
                format_size(usable),
                format_size(reading.total_bytes),
                format_size(released),
            )
            self._reading = None  # the next decision needs a fresh reading
            if self.device.type == "cuda":
                # Hand the blocks to whoever needs them: another process may be the one short.
                torch.cuda.empty_cache()
        return released

    def get(self, key: str) -> Batch | None:
        """The kept batch (a shallow copy of its container), or ``None``; counted."""
        batch = self._batches.get(key)
        if batch is None:
            self._stats.misses += 1
            return None
        self._stats.hits += 1
        return _shallow(batch)

    def peek(self, key: str) -> Batch | None:
        """Like :meth:`get`, without counting."""
        batch = self._batches.get(key)
        return None if batch is None else _shallow(batch)

    def put(self, key: str, batch: Batch) -> Batch:
        """Keep a copy of ``batch`` on the device if it fits; returns what to consume.

        Returns:
            The device copy (a shallow copy of its container) when admitted, else
            ``batch`` unchanged: a batch that does not fit is not copied.
        """
        if key in self._batches:
            return self.peek(key)
        self.relieve()
        nbytes = batch_nbytes(batch)
        budget = self.budget_bytes()
        assert self._reading is not None
        # Never admit what the next pressure check would give back.
        floor = self.watermarks.high * self._reading.total_bytes
        fits = self._stats.bytes + nbytes <= budget and self._stats.usable_bytes - nbytes >= floor
        if nbytes == 0 or not fits:
            self._stats.rejected += 1
            return batch
        try:
            kept = to_device(batch, self.device)
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            # The reading was stale or another process grew: a miss, never an error.
            log.warning("%s: device copy of a batch failed (%s); not kept", self.name, exc)
            self._stats.rejected += 1
            self._reading = None
            return batch
        self._batches[key] = kept
        self._sizes[key] = nbytes
        self._stats.bytes += nbytes
        self._stats.items += 1
        self._stats.insertions += 1
        return _shallow(kept)

    def _drop(self, key: str) -> int:
        self._batches.pop(key)
        nbytes = self._sizes.pop(key)
        self._stats.bytes -= nbytes
        self._stats.items -= 1
        return nbytes

    def discard(self, keys: set[str] | None = None) -> int:
        """Drop the batches whose keys are not in ``keys`` (all with ``None``); returns bytes."""
        freed = 0
        for key in [k for k in self._batches if keys is None or k not in keys]:
            freed += self._drop(key)
        return freed

    def clear(self) -> None:
        """Drop every batch."""
        self.discard()
