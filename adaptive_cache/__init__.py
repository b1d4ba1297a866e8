"""adaptive_cache: a memory-aware cache for PyTorch training data.

Wrap a dataset you already have (the transform is split at its first random step;
the deterministic part is cached, the rest runs every epoch):

    >>> from adaptive_cache import CachedDataset
    >>> train = CachedDataset(ImageFolder("photos/train"), transform=v2.Compose([...]))
    >>> loader = train.loader(batch_size=32, shuffle=True, num_workers=2)

or describe the work as a :class:`Pipeline` of stages and cache that:

    >>> from adaptive_cache import AdaptiveCache, CacheConfig
    >>> cache = AdaptiveCache(pipeline, CacheConfig(), name="train")
    >>> loader = cache.loader(batch_size=32, shuffle=True, num_workers=2)

Everything else lives in the submodules (``adaptive_cache.stats``,
``adaptive_cache.stores``, ``adaptive_cache.transforms``, ...).
"""

from adaptive_cache.config import CacheConfig
from adaptive_cache.dataset import CachedDataset
from adaptive_cache.device_loader import DeviceCachedLoader
from adaptive_cache.engine import AdaptiveCache
from adaptive_cache.loader import CacheLoader
from adaptive_cache.memory import MemoryProbe
from adaptive_cache.pipeline import FunctionStage, Pipeline, Source, Stage
from adaptive_cache.policies import Policy
from adaptive_cache.sources import FileSource
from adaptive_cache.stores.base import StoreError
from adaptive_cache.transforms import deterministic

__all__ = [
    "AdaptiveCache",
    "CacheConfig",
    "CacheLoader",
    "CachedDataset",
    "DeviceCachedLoader",
    "FileSource",
    "FunctionStage",
    "MemoryProbe",
    "Pipeline",
    "Policy",
    "Source",
    "Stage",
    "StoreError",
    "deterministic",
]
