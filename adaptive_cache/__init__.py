"""adaptive_cache: a memory-aware cache for PyTorch training data.

Example:
    >>> from adaptive_cache import AdaptiveCache, CacheConfig
    >>> cache = AdaptiveCache(pipeline, CacheConfig(), name="train")
    >>> loader = cache.loader(batch_size=32, shuffle=True, num_workers=2)
"""

from adaptive_cache.budget import BudgetController, BudgetDecision, MemoryAlert
from adaptive_cache.config import CacheConfig, TierMode, Watermarks, format_size, parse_size
from adaptive_cache.device import DeviceBatchCache, DeviceStats
from adaptive_cache.device_loader import DeviceCachedLoader
from adaptive_cache.device_memory import DeviceMemory, FakeDeviceProbe
from adaptive_cache.engine import AdaptiveCache
from adaptive_cache.loader import CacheDataset, CacheLoader
from adaptive_cache.memory import FakeProbe, GpuMemory, MemoryProbe, MemoryReading, Probe
from adaptive_cache.pipeline import (
    FunctionStage,
    Pipeline,
    RandomStageError,
    Sample,
    Source,
    Stage,
)
from adaptive_cache.policies import EntryInfo, Policy, make_policy
from adaptive_cache.sources import FileSource
from adaptive_cache.stats import CacheStats, StatsBoard, TierStats, merge
from adaptive_cache.stores import open_store
from adaptive_cache.stores.base import Store, StoreError

__all__ = [
    "AdaptiveCache",
    "BudgetController",
    "BudgetDecision",
    "CacheConfig",
    "CacheDataset",
    "CacheLoader",
    "CacheStats",
    "DeviceBatchCache",
    "DeviceCachedLoader",
    "DeviceMemory",
    "DeviceStats",
    "EntryInfo",
    "FakeDeviceProbe",
    "FakeProbe",
    "FileSource",
    "FunctionStage",
    "GpuMemory",
    "MemoryAlert",
    "MemoryProbe",
    "MemoryReading",
    "Pipeline",
    "Policy",
    "Probe",
    "RandomStageError",
    "Sample",
    "Source",
    "Stage",
    "StatsBoard",
    "Store",
    "StoreError",
    "TierMode",
    "TierStats",
    "Watermarks",
    "format_size",
    "make_policy",
    "merge",
    "open_store",
    "parse_size",
]
