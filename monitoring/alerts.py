"""In-process memory alerts: a cache listener that warns, logs and counts.

The engine calls its listeners with events; :class:`AlertListener` acts on memory
alerts (``adaptive_cache.budget.MemoryAlert``: ``level``, ``message``,
``available_bytes``, ``limit_bytes``) and ignores every other event. Each alert
becomes a :class:`MemoryPressureWarning` (so a user can turn it into an error with
``-W error::monitoring.alerts.MemoryPressureWarning``), a debug log line with the
running count, and one count on ``adaptive_cache_memory_alerts_total{level}``. The
budget controller already logs each alert at WARNING/ERROR when it raises it; logging
it again here at that level would print every alert twice.

The exporter attaches one listener to every cache it exports, so the counter comes
from here and not from ``CacheStats.alerts`` (counting both would count each alert
twice). Under DDP the counter is rank 0's: every rank of a node watches the same
memory, so rank 0 sees the same pressure.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from adaptive_cache.stats import ALERT_LEVELS
from monitoring import metrics as m

logger = logging.getLogger(__name__)


class MemoryPressureWarning(UserWarning):
    """The cache measured too little free memory (see the message for the numbers)."""


class AlertListener(Collector):
    """Turns memory-alert events into warnings, log lines and a counter by level.

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
        # stacklevel 2: attribute the warning to the engine code that dispatched it.
        warnings.warn(f"memory {level}: {message}", MemoryPressureWarning, stacklevel=2)

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
