"""In-process memory alerts: a cache listener that counts them for Prometheus.

The engine calls its listeners with events; :class:`AlertListener` acts on memory
alerts (``adaptive_cache.budget.MemoryAlert``: ``level``, ``message``,
``available_bytes``, ``limit_bytes``) and ignores every other event. Each alert
becomes one count on ``adaptive_cache_memory_alerts_total{level}`` and a debug log
line with the running count. The engine logs each alert once, as a warning naming
the cache, when it raises it; warning about it again here would show every alert
twice.

The exporter attaches one listener to every cache it exports, so the counter comes
from here and not from ``CacheStats.alerts`` (counting both would count each alert
twice). Under DDP the counter is rank 0's: every rank of a node watches the same
memory, so rank 0 sees the same pressure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from adaptive_cache.stats import ALERT_LEVELS
from monitoring import metrics as m

logger = logging.getLogger(__name__)


class AlertListener(Collector):
    """Counts memory-alert events by level (and logs each at debug level).

    Args:
        registry: registry to export the counter in; ``None`` only counts.

    Example:
        >>> listener = AlertListener(registry)
        >>> cache.add_listener(listener)
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ALERT_LEVELS, 0)
        if registry is not None:
            registry.register(self)

    def __call__(self, event: Any) -> None:
        """Handle one cache event; anything but a memory alert is ignored."""
        level = getattr(event, "level", None)
        message = getattr(event, "message", None)
        if level not in ALERT_LEVELS or not isinstance(message, str):
            return
        with self._lock:
            self._counts[level] += 1
            n = self._counts[level]
        logger.debug("memory %s alert #%d: %s", level, n, message)

    def counts(self) -> dict[str, int]:
        """Alerts seen so far, by level."""
        with self._lock:
            return dict(self._counts)

    def describe(self) -> Iterator[Metric]:
        yield m.MEMORY_ALERTS.new_family()

    def collect(self) -> Iterator[Metric]:
        family = m.MEMORY_ALERTS.new_family()
        for level, n in self.counts().items():
            family.add_metric([level], n)
        yield family
