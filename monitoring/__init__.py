"""Prometheus side of adaptive-cache: metrics, the ``/metrics`` exporter, memory alerts.

Example:
    >>> from monitoring import Exporter, MonitoringConfig
    >>> exporter = Exporter(MonitoringConfig(port=0))
    >>> exporter.add_cache(cache)
    >>> host, port = exporter.start()
"""

from monitoring.alerts import AlertListener
from monitoring.cache_collector import CacheCollector, StatsSource
from monitoring.config import MonitoringConfig
from monitoring.exporter import Exporter
from monitoring.memory_collector import MemoryCollector, MemoryReader
from monitoring.training_metrics import TrainingMetrics

__all__ = [
    "AlertListener",
    "CacheCollector",
    "Exporter",
    "MemoryCollector",
    "MemoryReader",
    "MonitoringConfig",
    "StatsSource",
    "TrainingMetrics",
]
