"""CachedDataset: any map-style torch dataset, cached, in one line.

    >>> train = CachedDataset(ImageFolder("photos/train"), transform=v2.Compose([...]))
    >>> for batch in train.loader(batch_size=64, shuffle=True, num_workers=4): ...

The transform is split at its first random step (see
:func:`adaptive_cache.transforms.split_transform`): what the dataset returns (tier
``item``) and the output of the deterministic head (tier ``transformed``) may be kept;
the random tail runs every epoch with generators seeded by ``(seed, epoch, index)``,
so a sample is bit-identical whether its head came from the cache or not, and
whichever process computed it. Batches are made by the user's ``collate_fn`` (or the
default one) from exactly what the plain dataset and transform would give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from adaptive_cache import codec
from adaptive_cache.config import CacheConfig
from adaptive_cache.dataset_source import ITEM, DatasetSource, box, unbox
from adaptive_cache.engine import AdaptiveCache
from adaptive_cache.loader import CacheDataset, CacheLoader
from adaptive_cache.memory import Probe
from adaptive_cache.pipeline import Pipeline, Sample, Stage
from adaptive_cache.preload import preload
from adaptive_cache.stats import CacheStats
from adaptive_cache.stores.base import Store
from adaptive_cache.transforms import Part, seeded, split_transform
from adaptive_cache.transforms.fingerprint import fingerprint
from adaptive_cache.work import WorkOrder, execute

log = logging.getLogger(__name__)

ITEM_TIER = "item"
TRANSFORMED_TIER = "transformed"


def own(value: Any, *, tensors: bool = True) -> Any:
    """``value`` with fresh containers and no leaf that may alias a cache entry.

    Read-only numpy arrays are copied; tensors over borrowed memory (a decoded entry,
    numpy) are cloned when ``tensors``. Tensors the process allocated itself are kept.
    """
    t = type(value)
    if t is tuple or t is list:
        return t(own(v, tensors=tensors) for v in value)
    if t is dict:
        return {k: own(v, tensors=tensors) for k, v in value.items()}
    if t is np.ndarray:
        return value if value.flags.writeable else value.copy()
    if tensors and isinstance(value, torch.Tensor) and not value.untyped_storage().resizable():
        return value.clone()
    return value


class _ItemStage(Stage):
    """Names the tier ``item``: what the dataset returned (the source read it)."""

    name = "item"

    def __init__(self, params: object) -> None:
        self._params = params

    def params(self) -> object:
        return self._params

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample


class _PartStage(Stage):
    """Applies one side of the split transform to the item; seeded when random."""

    def __init__(self, name: str, part: Part, *, random: str | None) -> None:
        self.name = name
        self.part = part
        self.deterministic = random is None
        self._random = random

    def params(self) -> object:
        return self.part.fingerprint

    def describe_random(self) -> str:
        return self._random or self.name

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        # The input may be a decoded cache entry: user transforms may work in place.
        item = own(unbox(sample))
        if self.deterministic:
            return box(self.part(item))
        seed = int(rng.integers(0, 2**63 - 1))
        with seeded(seed, self.part.generators):
            if self.part.reseed is not None:
                self.part.reseed(seed % 2**32)
            return box(self.part(item))


class _Collate:
    """Unboxes the pipeline samples of a batch and calls the user's collate function."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        # The default collate copies tensors into the batch and changes none: cached
        # tensors need no copy of their own then (read-only arrays still do: torch
        # warns about them).
        self._tensors = collate_fn is not None

    def __call__(self, samples: list[Sample]) -> Any:
        return self.collate_fn([own(unbox(s), tensors=self._tensors) for s in samples])


class CachedDataset(Dataset):
    """A map-style dataset whose deterministic work is cached by an :class:`AdaptiveCache`.

    Args:
        dataset: any map-style dataset (``__len__`` and ``__getitem__``); with ``load``,
            a sequence of items (paths, records) instead.
        transform: applied to each item: an albumentations ``Compose``, a torchvision
            ``Compose`` (``transforms.v2`` or classic), a list of callables or one
            callable; split at its first random step (a plain callable counts as random
            unless marked with :func:`adaptive_cache.deterministic`). v2 transforms and
            callables get the whole item; a classic torchvision or albumentations
            ``Compose`` gets the image (a tuple's first element; a dict is passed to
            albumentations as keyword arguments).
        load: ``load(dataset[i]) -> item`` when ``dataset`` holds items to load.
        config: cache settings (defaults: automatic size, shared memory).
        name: the cache's name in logs and metrics (default: the dataset's class).
        seed: seeds the random part of ``transform`` per (seed, epoch, index); default
            ``torch.initial_seed()``, so it follows ``torch.manual_seed``.
        store: where entries live (default from ``config``); for tests or sharing.
        probe: memory probe (inject a fake one in tests).
        namespace: store namespace; the same one reopens a persistent store's entries.

    Raises:
        TypeError: ``dataset`` is not map-style, or ``transform`` is not callable.
        ValueError: the dataset is empty; its own ``transform`` attribute holds a random
            step (its output would be frozen: pass the transform here instead); or
            nothing it returns can be stored (the message names the field).

    Sample identity: see :mod:`adaptive_cache.dataset_source`. Give the dataset a
    ``cache_key(i)`` method when samples can change without their files changing.

    Example:
        >>> ds = CachedDataset(ImageFolder(root), v2.Compose([v2.ToImage(),
        ...     v2.Resize(256), v2.CenterCrop(256), v2.RandomCrop(224)]))
        >>> loader = ds.loader(batch_size=32, shuffle=True, num_workers=2)
        >>> for epoch in range(3):
        ...     for images, labels in loader: ...
        >>> ds.stats().summary()
    """

    def __init__(
        self,
        dataset: Any,
        transform: Any = None,
        *,
        load: Callable[[Any], Any] | None = None,
        config: CacheConfig | None = None,
        name: str | None = None,
        seed: int | None = None,
        store: Store | None = None,
        probe: Probe | None = None,
        namespace: str | None = None,
    ) -> None:
        source = DatasetSource(dataset, load)
        if len(source) == 0:
            raise ValueError(f"CachedDataset: {type(dataset).__name__} is empty")
        own_fp = _own_transform(dataset) if load is None else None
        split = split_transform(transform)
        self.split = split
        item_params = (
            type(dataset).__module__,
            type(dataset).__qualname__,
            own_fp,
            fingerprint(load) if load is not None else None,
        )
        stages: list[Stage] = [_ItemStage(item_params)]
        if split.prefix:
            stages.append(_PartStage("transform", split.prefix, random=None))
        if split.suffix:
            stages.append(_PartStage("augment", split.suffix, random=split.first_random))
        config = config or CacheConfig()
        tiers = _storable_tiers(
            source, split.prefix, type(dataset).__name__, required=config.policy != "off"
        )
        self.pipeline = Pipeline(
            source,
            stages,
            tiers,
            seed=int(torch.initial_seed() if seed is None else seed) % 2**63,
        )
        self.cache = AdaptiveCache(
            self.pipeline,
            config,
            name=name or type(dataset).__name__,
            store=store,
            probe=probe,
            namespace=namespace,
        )
        self._epochs = CacheDataset(self.cache)
        self._epoch_given = False
        self._preloaded = False
        log.info(
            "%s: cached %s, random from %s; samples identified by %s",
            self.cache.name,
            " + ".join(sorted(tiers)),
            split.first_random or "nothing",
            source.identity_from,
        )

    def __len__(self) -> int:
        return len(self.pipeline)

    def __getitem__(self, index: int) -> Any:
        """One item, as ``transform(dataset[index])`` would give it (a copy of its own).

        Through :meth:`loader` (or after :meth:`set_epoch`) the random part is seeded by
        ``(seed, epoch, index)``. Read by a plain DataLoader without ``set_epoch`` it
        draws afresh on every call, like the plain dataset (never one frozen draw).
        Only the main process admits entries: with a plain DataLoader and workers
        nothing is cached, so use :meth:`loader`.
        """
        if self._epoch_given or not self.split.suffix:
            epoch = self._epochs.epoch
        else:
            epoch = int(torch.randint(0, 2**62, (1,)))
        if torch.utils.data.get_worker_info() is None:
            sample = self.cache.get(index, epoch)
        else:  # read what is cached, admit nothing: the owner is the main process
            lookup = self.cache.order(index, epoch).lookup
            sample, _ = execute(self.pipeline, self.cache.store, WorkOrder(index, epoch, lookup))
        return own(unbox(sample))

    def set_epoch(self, epoch: int) -> None:
        """Seed the random part for this epoch (the loader counts epochs otherwise)."""
        self._epochs.set_epoch(epoch)
        self._epoch_given = True

    def loader(self, **kwargs: Any) -> CacheLoader:
        """A cached DataLoader over this dataset; takes the usual DataLoader arguments.

        Hits are served in the main process, misses computed in ``num_workers``
        workers; ``collate_fn`` (default: torch's) gets exactly the items the plain
        dataset and transform would give. Each pass over the loader is one epoch
        unless :meth:`set_epoch` says otherwise. With ``config.preload`` the cache is
        filled before this returns.
        """
        collate = _Collate(kwargs.pop("collate_fn", None))
        if self.cache.config.preload and not self._preloaded:
            workers = self.cache.config.preload_workers or kwargs.get("num_workers", 0)
            preload(self.cache, num_workers=workers, progress=False)
            self._preloaded = True
        return CacheLoader(self._epochs, collate_fn=collate, **kwargs)

    def stats(self) -> CacheStats:
        """The cache's statistics (hits, misses, bytes per tier)."""
        return self.cache.stats()

    def close(self) -> None:
        """Release the cache's store."""
        self.cache.close()

    def __enter__(self) -> CachedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _own_transform(dataset: Any) -> str | None:
    """Fingerprint of the dataset's own ``transform``/``target_transform``, checked.

    Raises:
        ValueError: one of them has a random step: caching ``dataset[i]`` would freeze it.
    """
    parts = []
    # Not ``transforms``: torchvision datasets set it to a wrapper of these two.
    for attr in ("transform", "target_transform"):
        t = getattr(dataset, attr, None)
        if t is None:
            continue
        split = split_transform(t)
        if split.suffix:
            raise ValueError(
                f"{type(dataset).__name__}.{attr} has a random step ({split.first_random}); "
                "caching what the dataset returns would freeze one draw per sample. Build "
                f"the dataset without it and pass it here: CachedDataset(dataset, "
                f"transform=...) (mark a deterministic callable with "
                "adaptive_cache.deterministic)"
            )
        parts.append((attr, split.prefix.fingerprint))
    return fingerprint(parts) if parts else None


def _storable_tiers(
    source: DatasetSource, prefix: Part, what: str, *, required: bool
) -> dict[str, str]:
    """The tiers whose value for sample 0 the codec can store (tier -> stage name).

    Raises:
        ValueError: none can (and caching is on); the message names the field and what
            to change.
    """
    item = source.load(0)
    candidates = [(ITEM_TIER, "item", item)]
    if prefix:
        candidates.append((TRANSFORMED_TIER, "transform", box(prefix(unbox(item)))))
    tiers, errors = {}, []
    for tier, stage, value in candidates:
        try:
            codec.encode(value)
        except codec.CodecError as exc:
            errors.append(f"{tier}: {str(exc).replace(f'sample[{ITEM!r}][0]', 'item')}")
            continue
        tiers[tier] = stage
    if prefix and TRANSFORMED_TIER not in tiers and required:
        log.warning("%s: the transformed item cannot be cached: %s", what, errors[-1])
    if not tiers and required:
        raise ValueError(
            f"CachedDataset({what}): nothing can be cached: {'; '.join(errors)}. Convert "
            "to tensors or arrays in the deterministic part of the transform (for example "
            "v2.ToImage() or v2.PILToTensor() before the first random transform), or use "
            "config=CacheConfig(policy='off')"
        )
    return tiers
